"""The `hf` backend: transformers on CPU or GPU, batched, with LoRA adapters through PEFT.

We run our own decode loop over the model's forward instead of ``model.generate`` because three
things the contract needs are not in ``generate``:
  * the n samples of a request share one prefill (``num_return_sequences`` prefills n copies);
  * a seed per sample, so a sample does not change with what else is in the batch;
  * finished rows leave the batch (the KV cache is compacted), so long tails don't pay for short ones.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Any, Sequence

from s2d.backends.base import Backend, Completion, Request, check_context, cpu_dtype, cut_at_stop, sample_seed
from s2d.errors import ConfigError, ModelError
from s2d.hookspecs import hookimpl


def _torch_dtype(torch, name: str, device: str):
    if name == "auto":
        if device == "cpu":
            return getattr(torch, cpu_dtype())
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use auto, bfloat16, float16 or float32") from None


def render(tokenizer, request: Request) -> list[int]:
    """Token ids of a request's prompt: chat messages through the model's chat template, raw text
    as is (with the tokenizer's usual special tokens)."""
    if request.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError("this model has no chat template; send raw 'prompt' text instead of 'messages'")
        text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(request.prompt)["input_ids"]


class HFBackend(Backend):
    """transformers: batched with left padding, n samples share one prefill, LoRA through PEFT."""

    name = "hf"

    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "auto", device: str | None = None,
                 batch_size: int | None = None, threads: int | None = None,
                 trust_remote_code: bool = False, max_model_len: int | None = None, **options: Any):
        # engine_options: one device, so no parallel sizes; vLLM's memory and graph options
        # (gpu_memory_utilization, enforce_eager) mean nothing to transformers and are left aside.
        self.check_engine_options(options)
        for key in ("gpu_memory_utilization", "enforce_eager"):
            options.pop(key, None)
        super().__init__(model_path, seed=seed, dtype=dtype, **options)
        self.max_model_len = max_model_len  # engine_options.max_model_len: the context, at most the model's
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Rows (sequences) decoded together. On a 2-core CPU throughput flattens past ~64 rows.
        self.batch_size = int(batch_size or (64 if self.device == "cpu" else 256))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=_torch_dtype(torch, dtype, self.device),
            trust_remote_code=trust_remote_code, use_safetensors=True).to(self.device)
        self.model.eval()
        self.dtype = str(self.model.dtype).removeprefix("torch.")  # resolved: records and cache keys name it
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._peft = None
        self._adapters: dict[str, str] = {}

    @classmethod
    def check_engine_options(cls, options: dict, *, devices: bool = True) -> None:
        """The `hf` backend runs on one device: a parallel size above 1 (or an executor) is refused."""
        parallel = [f"{k}={options[k]}" for k in ("tensor_parallel_size", "data_parallel_size", "pipeline_parallel_size")
                    if (options.get(k) or 1) != 1]
        if options.get("distributed_executor_backend") is not None:
            parallel.append(f"distributed_executor_backend={options['distributed_executor_backend']}")
        if parallel:
            raise ConfigError(f"engine_options {', '.join(parallel)}: the hf backend runs on one device; "
                              f"parallel generation needs the vllm backend (--backend vllm)")

    def versions(self) -> dict:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    # -- adapters --------------------------------------------------------------------------------
    @contextmanager
    def _adapter_context(self, adapter: str | None):
        """Yield the model to run with a LoRA adapter selected (None: the base model)."""
        if adapter is None:
            with self._peft.disable_adapter() if self._peft is not None else nullcontext():
                yield self.model
            return
        path = os.path.abspath(adapter)
        if path not in self._adapters:
            from peft import PeftModel

            key = f"a{len(self._adapters)}"
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, path, adapter_name=key)
                self._peft.eval()
            else:
                self._peft.load_adapter(path, adapter_name=key)
            self._adapters[path] = key
        self._peft.set_adapter(self._adapters[path])
        yield self._peft

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[list[Completion]]:
        from tqdm.auto import tqdm

        prompts = [render(self.tokenizer, r) for r in requests]
        context = getattr(self.model.config, "max_position_embeddings", None)
        if self.max_model_len:
            context = min(context or self.max_model_len, self.max_model_len)
        check_context(prompts, requests, context)
        # Group by adapter, then by prompt length, so micro-batches pad little.
        order = sorted(range(len(requests)), key=lambda i: (requests[i].adapter or "", len(prompts[i])))
        batches, current, rows = [], [], 0
        for i in order:
            if current and (rows + requests[i].n > self.batch_size
                            or requests[i].adapter != requests[current[0]].adapter):
                batches.append(current)
                current, rows = [], 0
            current.append(i)
            rows += requests[i].n
        if current:
            batches.append(current)

        results: list[list[Completion] | None] = [None] * len(requests)
        total = sum(r.n for r in requests)
        with tqdm(total=total, desc=progress if isinstance(progress, str) else "generate", unit="sample",
                  disable=not progress) as bar:
            for batch in batches:
                with self._adapter_context(requests[batch[0]].adapter) as model:
                    outs = self._generate_batch(model, [requests[i] for i in batch], [prompts[i] for i in batch],
                                                batch)
                for i, out in zip(batch, outs):
                    results[i] = out
                bar.update(sum(requests[i].n for i in batch))
        return results  # type: ignore[return-value]

    def _generate_batch(self, model, reqs: list[Request], prompts: list[list[int]],
                        indices: list[int]) -> list[list[Completion]]:
        torch = self.torch
        dev = self.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, width - len(p):] = torch.tensor(p)
            mask[b, width - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        # Row r of the decode batch is sample s of request owner[r].
        owner = [b for b, r in enumerate(reqs) for _ in range(r.n)]
        sample = [s for r in reqs for s in range(r.n)]
        n_rows = len(owner)
        temps = torch.tensor([reqs[b].temperature for b in owner], dtype=torch.float32, device=dev)
        top_ps = torch.tensor([reqs[b].top_p for b in owner], dtype=torch.float32, device=dev)
        gens = []
        for b, s in zip(owner, sample):
            if reqs[b].greedy:
                gens.append(None)
            else:
                g = torch.Generator(device="cpu")
                g.manual_seed(sample_seed(self.seed, reqs[b], indices[b], reqs[b].first_sample + s))
                gens.append(g)
        max_new = max(r.max_new_tokens for r in reqs)
        limits = [reqs[b].max_new_tokens for b in owner]

        from transformers import DynamicCache

        with torch.inference_mode():
            cache = DynamicCache()
            # logits_to_keep=1: the vocabulary projection of every prompt position would cost more
            # than the rest of the prefill (49k x 576 per token for SmolLM2) and is never used.
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            # Share the prefill: repeat each request's KV rows n times.
            expand = torch.tensor(owner, device=dev)
            cache.batch_select_indices(expand)
            logits = out.logits[:, -1, :].float()[expand]
            mask = mask[expand]
            next_pos = positions[expand, -1] + 1

            active = list(range(n_rows))  # global row id of each live batch position
            generated: list[list[int]] = [[] for _ in range(n_rows)]
            finish = ["length"] * n_rows
            texts: list[str | None] = [None] * n_rows
            want_logprobs = any(reqs[b].logprobs for b in owner)
            logprob = [0.0] * n_rows
            for step in range(max_new):
                tokens = self._pick(logits, temps[active], top_ps[active], [gens[r] for r in active])
                if want_logprobs:  # of the unprocessed distribution, as vLLM reports it
                    picked = torch.log_softmax(logits, dim=-1).gather(1, tokens.view(-1, 1)).view(-1).tolist()
                    for r, lp in zip(active, picked):
                        logprob[r] += lp
                done_now = []
                stop_check = []
                for j, (r, tok) in enumerate(zip(active, tokens.tolist())):
                    generated[r].append(tok)
                    if tok in self.eos_ids:
                        finish[r] = "stop"
                        done_now.append(j)
                    elif reqs[owner[r]].stop:
                        stop_check.append(j)
                    elif len(generated[r]) >= limits[r]:
                        done_now.append(j)
                if stop_check:
                    decoded = self.tokenizer.batch_decode([generated[active[j]] for j in stop_check],
                                                          skip_special_tokens=True)
                    for j, text in zip(stop_check, decoded):
                        r = active[j]
                        cut, hit = cut_at_stop(text, reqs[owner[r]].stop)
                        if hit:
                            finish[r], texts[r] = "stop", cut
                            done_now.append(j)
                        elif len(generated[r]) >= limits[r]:
                            done_now.append(j)
                if len(done_now) == len(active) or step == max_new - 1:
                    break
                if done_now:
                    finished = set(done_now)
                    keep = [j for j in range(len(active)) if j not in finished]
                    sel = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(sel)
                    mask, next_pos, tokens = mask[sel], next_pos[sel], tokens[sel]
                    active = [active[j] for j in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                out = model(input_ids=tokens.view(-1, 1), attention_mask=mask,
                            position_ids=next_pos.view(-1, 1), past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_pos = next_pos + 1

        results: list[list[Completion]] = [[] for _ in reqs]
        for r in range(n_rows):
            toks = generated[r]
            text = texts[r]
            if text is None:
                body = toks[:-1] if finish[r] == "stop" and toks and toks[-1] in self.eos_ids else toks
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                if reqs[owner[r]].stop:  # a stop string completed on the very last token
                    text, hit = cut_at_stop(text, reqs[owner[r]].stop)
                    finish[r] = "stop" if hit else finish[r]
            results[owner[r]].append(Completion(text=text, prompt_tokens=len(prompts[owner[r]]),
                                                completion_tokens=len(toks), finish_reason=finish[r],
                                                logprob=logprob[r] if reqs[owner[r]].logprobs else None))
        return results

    def _pick(self, logits, temps, top_ps, gens):
        """Next token per row: argmax for greedy rows, else top-p sampling from the row's own
        generator (inverse-CDF draw, so one uniform number per row and step)."""
        torch = self.torch
        greedy = temps == 0
        tokens = logits.argmax(dim=-1)
        if bool(greedy.all()):
            return tokens
        rows = (~greedy).nonzero().view(-1)
        lg = logits[rows] / temps[rows].unsqueeze(1)
        probs = torch.softmax(lg, dim=-1)
        sorted_p, sorted_i = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(dim=-1)
        sorted_p = sorted_p * ((cum - sorted_p) < top_ps[rows].unsqueeze(1))
        cum = sorted_p.cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=gens[int(j)]) for j in rows]).to(logits.device)
        pick = torch.searchsorted(cum, (u * cum[:, -1]).unsqueeze(1)).clamp(max=cum.shape[1] - 1)
        tokens[rows] = sorted_i.gather(1, pick).view(-1)
        return tokens


@hookimpl
def register_backends(register):
    register(HFBackend)
