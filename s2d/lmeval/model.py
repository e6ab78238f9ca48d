"""The ``s2d`` model inside lm-eval: every ``generate_until`` request of a run goes, all at once,
through an s2d backend (System 1 prompting; the methods issue adds System 2 methods).

lm-eval hands us the task's ``doc_to_text`` output; we send it as the user turn of a chat, so the
model's chat template applies exactly as with ``lm_eval --model hf --apply_chat_template``.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from s2d.backends.base import Backend, Request


@register_model("s2d")
class S2DLM(LM):
    """Routes lm-eval generation requests through an s2d backend in one batch."""

    def __init__(self, backend: Backend, method: str = "system1", adapter: str | None = None,
                 progress: bool = True, **kwargs: Any):
        super().__init__()
        if method != "system1":
            raise ValueError(f"method {method!r} is not available yet; only system1 runs through s2d eval")
        self.backend, self.method, self.adapter, self.progress = backend, method, adapter, progress
        self.usage: list[dict] = []  # per request: prompt and generated tokens (every stage)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        batch = []
        for inst in requests:
            context, gen_kwargs = inst.args
            gen_kwargs = dict(gen_kwargs or {})
            until = [s for s in (gen_kwargs.pop("until", None) or []) if s]
            do_sample = bool(gen_kwargs.pop("do_sample", False))
            batch.append(Request(
                messages=[{"role": "user", "content": context}],
                max_new_tokens=int(gen_kwargs.pop("max_gen_toks", 256)),
                temperature=float(gen_kwargs.pop("temperature", 1.0 if do_sample else 0.0)) if do_sample else 0.0,
                top_p=float(gen_kwargs.pop("top_p", 1.0)), stop=until, adapter=self.adapter,
                id=f"{inst.task_name}/{inst.doc_id}"))
        outputs = self.backend.generate(batch, progress=self.progress and not disable_tqdm)
        texts = []
        for inst, req, outs in zip(requests, batch, outputs):
            c = outs[0]
            self.usage.append({"task": inst.task_name, "doc_id": inst.doc_id, "prompt_tokens": c.prompt_tokens,
                               "generated_tokens": c.completion_tokens, "stages": {"answer": c.completion_tokens},
                               "finish_reason": c.finish_reason})
            texts.append(c.text)
            self.cache_hook.add_partial("generate_until", inst.args, c.text)
        return texts

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("s2d's lm-eval model generates only; s2d tasks use generate_until")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("s2d's lm-eval model generates only; s2d tasks use generate_until")
