"""`route`: System 1 first, System 2 only when unsure. The distilled model (a LoRA adapter) answers
every input directly; where its confidence is below ``threshold`` the System 2 method answers
instead, with the base weights. Every generated token of both stages counts.

Confidence: ``logprob`` (the direct answer's mean token log-probability, one greedy sample) or
``agreement`` (the share of ``samples`` extra samples at ``agreement_temperature`` that give the
greedy answer). ``from_run`` names a `s2d distill` run folder: its adapter is the distilled model and
its System 2 row (method and evaluation options) the fallback; ``adapter``, ``fallback`` and
``fallback_options`` set them directly instead. ``s2d route RUN`` picks the threshold on the
validation split and reports the accuracy/cost curve. The fallback always runs on the base
weights: for a round r > 1 it is the System 2 of round 1, not of round r's teacher.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s2d.config import RunConfig
from s2d.hookspecs import hookimpl
from s2d.methods.base import Chain, Method, MethodConfigError, flatten, start
from s2d.options import option
from s2d.plugins import build
from s2d.store import RunFolder

CONFIDENCES = ("logprob", "agreement")


def run_settings(folder: str | Path, round_: int | None = None) -> dict:
    """What `route` takes from a distill run folder: the adapter, the fallback method and its options."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise MethodConfigError(f"route: {folder} is not a `s2d distill` run folder (no config.json)")
    settings = json.loads(path.read_text())["settings"]
    cfg = RunConfig.build(settings)
    rounds = int(cfg["rounds"] or 1)
    r = rounds if round_ is None else round_
    if not isinstance(r, int) or not 1 <= r <= rounds:
        raise MethodConfigError(f"route: {folder} has rounds 1..{rounds}, not {r!r}")
    adapter = RunFolder(folder, settings).adapter(r)
    if not (adapter / "adapter_config.json").is_file():
        raise MethodConfigError(f"route: {adapter} is not a trained LoRA adapter (route switches between the "
                                f"adapter and the base weights in one engine; a `full` student cannot be routed)")
    return {"adapter": str(adapter), "fallback": cfg["method"], "fallback_options": cfg.eval_method_options(),
            "config": cfg}


class Route(Method):
    """System 1 first: the distilled model answers, System 2 only where it is unsure."""

    name = "route"
    stages = ("direct", "check")
    templates = {"direct": "{input}", "check": "{input}"}
    template_fields = {"direct": ("input",), "check": ("input",)}
    max_new_tokens = {"direct": None, "check": None}  # None: the task's budget, as for System 1

    class Options(Method.Options):
        from_run: str | None = option(None, help="a `s2d distill` run folder: its adapter and System 2 row")
        round: int | None = option(None, help="the run's round (null: the last)")
        adapter: str | None = option(None, help="the distilled adapter (instead of from_run)")
        fallback: str | None = option(None, help="the System 2 method (instead of from_run)")
        fallback_options: dict | None = option(None, help="the fallback's options (null: the run's)")
        # Any: a number checked below, infinities included (`s2d route` asks for both answers with inf)
        threshold: Any = option(None, help="keep the direct answer when its confidence reaches it (a number)")
        confidence: str = option("logprob", help="logprob or agreement")
        samples: int = option(4, help="agreement: samples checked against the direct answer")
        agreement_temperature: float = option(0.7, help="agreement: the samples' temperature")

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.confidence not in CONFIDENCES:
            raise MethodConfigError(f"route: confidence must be one of {', '.join(CONFIDENCES)}, "
                                    f"got {self.confidence!r}")
        if self.threshold is None or isinstance(self.threshold, bool) or \
                not isinstance(self.threshold, (int, float)) or math.isnan(self.threshold):
            raise MethodConfigError("route: set threshold, a number (the direct answer is kept when its confidence "
                                    "is at least that; `s2d route RUN` picks one on the validation split)")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise MethodConfigError(f"route: samples must be a positive integer, got {self.samples!r}")
        from_run = run_settings(self.from_run, self.round) if self.from_run is not None else {}
        self.adapter = self.adapter or from_run.get("adapter")
        fallback = self.fallback or from_run.get("fallback")
        if not self.adapter or not fallback:
            raise MethodConfigError("route: name a distill run (from_run: FOLDER), or both adapter and fallback")
        if fallback == self.name:
            raise MethodConfigError("route: the fallback cannot be route itself")
        options = from_run.get("fallback_options", {}) if self.fallback_options is None else self.fallback_options
        self.system2 = build("methods", fallback, options, task)
        if self.stage_options:  # route decodes as its rule says; a per-stage setting would go unused
            raise MethodConfigError("route: stage_options are not used (direct is greedy, check samples at "
                                    "agreement_temperature); set the fallback's in fallback_options")

    def decoding(self) -> dict[str, dict]:
        """What route's stages really use, and the fallback method's own decoding."""
        budget = self.budgets.get("direct")
        return {"direct": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": budget},
                "check": {"temperature": float(self.agreement_temperature), "top_p": 1.0, "max_new_tokens": budget},
                "fallback": self.system2.decoding()}

    def run(self, runner, docs):
        if runner.adapter is not None:
            raise MethodConfigError("route: the distilled adapter comes from the method's options (from_run or "
                                    "adapter) and System 2 runs on the base weights; drop --adapter")
        prompts = [self.render("direct", input=self.task.system1_prompt(d)) for d in docs]
        budget = self.budgets.get("direct")
        logprob = self.confidence == "logprob"
        direct = flatten(runner.stage("direct", start(docs), prompts, n=1, temperature=0.0, max_new_tokens=budget,
                                      logprobs=logprob, adapter=self.adapter))
        checks = [[] for _ in docs]
        if not logprob:
            outs = runner.stage("check", start(docs), prompts, n=self.samples,
                                temperature=float(self.agreement_temperature), max_new_tokens=budget,
                                adapter=self.adapter)
            checks = [[c.steps[-1] for c in group] for group in outs]
        first: list[Chain] = []
        for i, chain in enumerate(direct):
            step = chain.steps[-1]
            answer = self.task.extract(step.text)
            if logprob:
                conf = step.mean_logprob
                if conf is None and runner.record is None:  # show-prompts generates nothing
                    raise MethodConfigError(f"route: backend {runner.backend.name!r} returned no log-probability; "
                                            f"use confidence: agreement")
            else:
                agree = [self.task.extract(s.text) for s in checks[i]]
                conf = sum(a is not None and a == answer for a in agree) / len(agree)
            # The check samples come first, so the chain's response stays the direct answer.
            first.append(Chain(i, checks[i] + [step], {"route": "system1", "confidence": conf}))
        sure = [c for c in first if c.state["confidence"] is not None and c.state["confidence"] >= self.threshold]
        unsure = [c for c in first if c not in sure]
        out = list(sure)
        if unsure:
            # The fallback runs on the base weights under its own name, so it shares the cache with
            # its own runs (the distill run's round-1 System 2 row).
            with as_method(runner, self.system2.name):
                chains = self.system2.run(runner, [docs[c.doc] for c in unsure])
            for chain in chains:
                head = unsure[chain.doc]
                steps = head.steps + chain.steps if chain.index == 0 else chain.steps
                out.append(Chain(head.doc, steps, {**chain.state, "route": "system2",
                                                   "confidence": head.state["confidence"]}, chain.index))
        return out

    def answer(self, doc, chain):
        if chain.state.get("route") == "system2":
            return self.system2.answer(doc, chain)
        return self.task.extract(chain.response)

    def sample_record(self, doc, chain):
        return {"route": chain.state.get("route"), "confidence": chain.state.get("confidence")}


@contextmanager
def as_method(runner, name: str):
    """Run stages as method ``name`` on the base weights (its cache keys), then restore the runner."""
    saved = runner.method, runner.adapter, runner.adapter_id
    runner.method, runner.adapter, runner.adapter_id = name, None, None
    try:
        yield runner
    finally:
        runner.method, runner.adapter, runner.adapter_id = saved


@hookimpl
def register_methods(register):
    register(Route)
