"""The ``s2d`` model inside lm-eval: every ``generate_until`` request of a run goes, all at once,
through an s2d method (System 1 or a System 2 program of stages) and backend.

lm-eval hands us each request's document; the method builds its own prompts from it through the
task plugin, so System 1 sees exactly the task file's ``doc_to_text`` as the user turn (the model's
chat template applies, as with ``lm_eval --model hf --apply_chat_template``) and System 2 methods
wrap the same input in their stages. The response lm-eval scores is the method's final response;
usage records generated tokens per stage, every stage counted.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from s2d.backends.base import Backend
from s2d.curators.base import majority_sample
from s2d.lmeval.tasks import build_task, s2d_name
from s2d.methods.base import cap_hits, run_method
from s2d.plugins import get_plugins
from s2d.traces import build_method, make_runner


class S2DModel:
    """Routes lm-eval generation requests through an s2d method and backend, one batch per stage.
    :func:`lm_class` makes it lm-eval's ``LM``: lm_eval is imported only when an evaluation runs."""

    def __init__(self, backend: Backend, method: str = "system1", adapter: str | None = None,
                 progress: bool = True, method_options: dict | None = None, task_options: dict | None = None,
                 cache=None, seed: int = 0, **kwargs: Any):
        super().__init__()
        get_plugins().get("methods", method)  # fail early on an unknown method
        self.backend, self.method, self.adapter, self.progress = backend, method, adapter, progress
        self.method_options = dict(method_options or {})
        self.task_options = dict(task_options or {})
        self.cache, self.seed = cache, seed
        self.usage: list[dict] = []  # per request: prompt and generated tokens (every stage)
        self.cache_stats = {"generated": 0, "reused": 0}  # samples made by the engine / read from the cache
        # A method's own parse rates (BSM: solve scores and verdicts parsed), weighted by samples.
        self.method_stats: dict[str, list[float]] = {}

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        texts: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, inst in enumerate(requests):
            _, gen_kwargs = inst.args
            gen_kwargs = dict(gen_kwargs or {})
            until = tuple(s for s in (gen_kwargs.get("until") or []) if s)
            groups[(inst.task_name, int(gen_kwargs.get("max_gen_toks", 256)), until)].append(i)
        for (task_name, max_gen, until), members in groups.items():
            options = {k: v for k, v in self.task_options.items() if k not in ("subset", "subset_seed")}
            task = build_task(s2d_name(task_name), **options)
            method = build_method(self.method, task, **self.method_options)
            # The task file's budget and stop strings apply wherever a stage sets none (System 1).
            runner = make_runner(self.backend, self.method, cache=self.cache, seed=self.seed, adapter=self.adapter,
                                 progress=self.progress and not disable_tqdm,
                                 defaults={"max_new_tokens": max_gen, "stop": list(until)})
            docs = [requests[i].doc for i in members]
            per_doc = run_method(method, runner, docs)
            samples_all = [x for samples in per_doc for x in samples]
            for key, value in (method.stats(samples_all) if hasattr(method, "stats") else {}).items():
                total = self.method_stats.setdefault(key, [0.0, 0])
                total[0] += float(value) * len(samples_all)
                total[1] += len(samples_all)
            self.cache_stats["generated"] += runner.generated
            self.cache_stats["reused"] += runner.reused
            for i, samples in zip(members, per_doc):
                inst, s = requests[i], majority_sample(samples)
                texts[i] = s["response"]
                stages: dict[str, int] = {}
                for sample in samples:  # with n > 1 (majority at test time) every sample's tokens count
                    for k, v in sample["tokens"].items():
                        stages[k] = stages.get(k, 0) + v
                capped = cap_hits(samples)
                self.usage.append({"task": inst.task_name, "doc_id": inst.doc_id,
                                   "prompt_tokens": sum(st["prompt_tokens"] for x in samples for st in x["stages"]),
                                   "generated_tokens": sum(stages.values()), "stages": stages, "samples": len(samples),
                                   "finish_reason": s["stages"][-1]["finish_reason"] if s["stages"] else None,
                                   # Per stage: [steps that stopped at the token cap, steps]; the
                                   # scored sample's own cut stages in "cut".
                                   "cap_hits": capped,
                                   "cut": [st["stage"] for st in s["stages"] if st["finish_reason"] == "length"],
                                   # For --log-samples: the scored sample's parsed answer and every
                                   # stage's rendered prompt and text.
                                   "answer": s["answer"],
                                   "steps": [{"stage": st["stage"], "prompt": st["prompt"], "text": st["text"]}
                                             for st in s["stages"]]})
                self.cache_hook.add_partial("generate_until", inst.args, s["response"])
        return texts  # type: ignore[return-value]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("s2d's lm-eval model generates only; s2d tasks use generate_until")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("s2d's lm-eval model generates only; s2d tasks use generate_until")


_LM_CLASS: type | None = None


def lm_class() -> type:
    """``S2DLM``, lm-eval's model ``s2d``: :class:`S2DModel` as an ``lm_eval.api.model.LM``, made and
    registered on first use (lm_eval imports numpy, requests and more: `s2d --help` must not)."""
    global _LM_CLASS
    if _LM_CLASS is None:
        from lm_eval.api.model import LM
        from lm_eval.api.registry import register_model

        @register_model("s2d")
        class S2DLM(S2DModel, LM):
            __doc__ = S2DModel.__doc__

        _LM_CLASS = S2DLM
    return _LM_CLASS
