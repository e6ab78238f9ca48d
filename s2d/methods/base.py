"""What a method is: a program of prompting stages over a whole set of inputs.

A method never talks to the engine per example. Its :meth:`Method.run` calls
``runner.stage(name, chains, prompts)`` once per stage with the prompts of *every* live chain; the
:class:`~s2d.stages.StageRunner` turns that into one batched backend call (split only into large
chunks, so a kill loses at most one chunk), reads and writes the generation cache, and counts tokens.

A *chain* is one sample's path through the stages: fanning out (n samples of a stage) copies a
chain, fanning in (BSM's per-criterion solves feeding one merge) adds several steps to one chain.
At the end each chain is one sample of the method: its final response, the answer the task parses
from it, every intermediate text, and generated tokens per stage.

Prompt templates are ``str.format`` strings with named fields. Users override them (and sampling
settings) from a config file: ``templates: {rephrase: "..."}``; a key ``stage@task`` overrides a
stage for one task only. ``wording`` picks a set of templates a method ships (``s2d``, its own;
``paper``, the paper's appendix verbatim; ``original``, where the method's original code differs),
and ``stage_options`` sets decoding per stage (``{rephrase: {temperature: 0.7}, respond:
{temperature: 0}}``), over the method-wide ``temperature``, ``top_p`` and ``max_new_tokens``.
"""

from __future__ import annotations

from typing import Any, Sequence

from s2d.errors import MethodConfigError
from s2d.options import Options as BaseOptions
from s2d.options import apply_options, check_template, options_from_model
# The chains and the stage runner live in s2d.stages; flatten and start are imported here for
# plugins too (docs/plugins.md: `from s2d.methods.base import Method, flatten, start`).
from s2d.stages import Chain, StageRunner, flatten, start  # noqa: F401


STAGE_KEYS = ("temperature", "top_p", "max_new_tokens")
# What every method takes besides its own options() (named in the error for an unknown option).
BASE_OPTIONS = ("n", "temperature", "top_p", "max_new_tokens", "templates", "wording", "stage_options")


def _is_number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_stage_options(method: str, stages: Sequence[str], stage_options: Any) -> dict[str, dict]:
    """``stage_options`` checked: a mapping stage -> {temperature, top_p, max_new_tokens}, each
    value in range; the error names the method, the stage and the key."""
    if stage_options is None:
        return {}
    if not isinstance(stage_options, dict):
        raise MethodConfigError(f"method {method!r}: stage_options must be a mapping stage -> "
                                f"{{{', '.join(STAGE_KEYS)}}}, got {stage_options!r}")
    out = {}
    for stage, opts in stage_options.items():
        where = f"method {method!r}: stage_options.{stage}"
        if stage not in stages:
            raise MethodConfigError(f"{where}: no such stage; stages: {', '.join(stages)}")
        if not isinstance(opts, dict):
            raise MethodConfigError(f"{where} must be a mapping of {', '.join(STAGE_KEYS)}, got {opts!r}")
        unknown = sorted(set(opts) - set(STAGE_KEYS))
        if unknown:
            raise MethodConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; keys: {', '.join(STAGE_KEYS)}")
        t, p, m = opts.get("temperature"), opts.get("top_p"), opts.get("max_new_tokens")
        if t is not None and (not _is_number(t) or t < 0):
            raise MethodConfigError(f"{where}.temperature must be a number >= 0, got {t!r}")
        if p is not None and (not _is_number(p) or not 0 < p <= 1):
            raise MethodConfigError(f"{where}.top_p must be a number in (0, 1], got {p!r}")
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise MethodConfigError(f"{where}.max_new_tokens must be a positive integer, got {m!r}")
        out[stage] = {k: v for k, v in opts.items() if v is not None}
    return out


class Method:
    """Base class for method plugins: set ``name``, a docstring, ``templates`` and ``run``.

    Options every method takes: ``n`` (samples of the first stage), ``temperature`` (default: 0 for
    n=1, else 0.7), ``top_p``, ``max_new_tokens`` (per stage: an int, or a dict stage -> int),
    ``templates`` (stage -> template overrides), ``wording`` (one of ``s2d`` and the method's
    :attr:`wordings`), ``stage_options`` (stage -> {temperature, top_p, max_new_tokens}, over the
    method-wide values). Subclasses add their own keyword options.
    """

    name: str = ""
    stages: tuple[str, ...] = ()
    templates: dict[str, str] = {}
    # stage -> the fields run() renders its template with: every template of the stage (any wording,
    # a user's override) is checked against them when the method is built, before any model loads.
    # A stage not listed is checked for syntax only (a stray brace, a positional {0}).
    template_fields: dict[str, tuple[str, ...]] = {}
    # Other wordings of the templates: wording -> {stage or stage@task: template}. A stage a wording
    # names replaces every s2d template of that stage (its per-task variants too).
    wordings: dict[str, dict[str, str]] = {}
    # Decoding a wording brings (the paper's S2A: top-p 0.9), under the user's stage_options.
    wording_stage_options: dict[str, dict[str, dict]] = {}
    max_new_tokens: dict[str, int | None] = {}
    temperature: float | None = None  # None: greedy for n=1, 0.7 for n>1
    top_p: float = 1.0

    def __init__(self, task, *, n: int = 1, temperature: float | None = None, top_p: float | None = None,
                 max_new_tokens: int | dict | None = None, templates: dict | None = None,
                 wording: str = "s2d", stage_options: dict | None = None, **options: Any):
        self.task = task
        if not isinstance(n, int) or n < 1:
            raise MethodConfigError(f"method {self.name!r}: n must be a positive integer, got {n!r}")
        self.n = n
        if temperature is None:
            temperature = self.temperature if self.temperature is not None else (0.0 if n == 1 else 0.7)
        top_p = self.top_p if top_p is None else top_p
        if not _is_number(temperature) or temperature < 0:
            raise MethodConfigError(f"method {self.name!r}: temperature must be a finite number >= 0, got {temperature!r}")
        if not _is_number(top_p) or not 0 < top_p <= 1:
            raise MethodConfigError(f"method {self.name!r}: top_p must be a number in (0, 1], got {top_p!r}")
        self.sampling_temperature = float(temperature)
        self.sampling_top_p = float(top_p)
        budgets = dict(self.max_new_tokens)
        if isinstance(max_new_tokens, dict):
            check_stage_options(self.name, self.stages, {s: {"max_new_tokens": v} for s, v in max_new_tokens.items()})
            budgets.update(max_new_tokens)
        elif max_new_tokens is not None:
            if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
                raise MethodConfigError(f"method {self.name!r}: max_new_tokens must be a positive integer or a "
                                        f"mapping stage -> integer, got {max_new_tokens!r}")
            budgets = {s: int(max_new_tokens) for s in self.stages}
        self.budgets = budgets
        if not isinstance(wording, str) or wording != "s2d" and wording not in self.wordings:
            raise MethodConfigError(f"method {self.name!r}: wording must be one of "
                                    f"{', '.join(['s2d', *self.wordings])}, got {wording!r}")
        self.wording = wording
        given = check_stage_options(self.name, self.stages, stage_options)
        base = self.wording_stage_options.get(wording, {})
        self.stage_options = {s: {**base.get(s, {}), **given.get(s, {})} for s in self.stages
                              if base.get(s) or given.get(s)}
        self._templates = dict(self.templates)
        for key, value in self.wordings.get(wording, {}).items():
            stage = key.partition("@")[0]
            for old in [k for k in self._templates if k.partition("@")[0] == stage and k not in self.wordings[wording]]:
                del self._templates[old]
            self._templates[key] = value
        task_name = getattr(task, "name", "")
        for key, value in (templates or {}).items():
            stage, _, only = key.partition("@")
            if stage not in self.stages:
                raise MethodConfigError(f"method {self.name!r} has no stage {stage!r} (template key {key!r}); "
                                        f"stages: {', '.join(self.stages)}")
            if not only:
                # A user's plain override beats the built-in per-task variants of that stage.
                for builtin in [k for k in self._templates if k.startswith(stage + "@")]:
                    if builtin not in (templates or {}):
                        del self._templates[builtin]
                self._templates[key] = value
            elif only == task_name:
                self._templates[key] = value
        # The user's templates for other tasks too: a typo there fails now, not on that task's run.
        for key, value in {**self._templates, **(templates or {})}.items():
            check_template(value, self.template_fields.get(key.partition("@")[0]),
                           f"method {self.name!r}: template {key!r}", MethodConfigError)
        apply_options(self, "method", options, MethodConfigError, also=BASE_OPTIONS)

    class Options(BaseOptions):
        """Method-specific options (a subclass declares ``name: type = option(default, ...)``);
        those every method takes are :data:`BASE_OPTIONS`, the constructor's own arguments."""

    # Method-specific options and their defaults, from ``Options`` (a plugin may instead override
    # this classmethod with a dict of defaults: see s2d.options, the shim).
    options = options_from_model()

    # -- helpers for run() ------------------------------------------------------------------------
    def template(self, stage: str) -> str:
        task_name = getattr(self.task, "name", "")
        return self._templates.get(f"{stage}@{task_name}") or self._templates[stage]

    def render(self, stage: str, **fields) -> str:
        try:
            return self.template(stage).format(**fields)
        except KeyError as exc:
            raise MethodConfigError(f"method {self.name!r}, stage {stage!r}: the template uses {{{exc.args[0]}}}, "
                                    f"which is not one of {', '.join(sorted(fields))}") from None

    def sampling(self, stage: str, n: int | None = None) -> dict:
        """A stage's decoding: its ``stage_options``, else the method-wide values."""
        own = self.stage_options.get(stage, {})
        return {"n": self.n if n is None else n,
                "temperature": float(own.get("temperature", self.sampling_temperature)),
                "top_p": float(own.get("top_p", self.sampling_top_p)),
                "max_new_tokens": own.get("max_new_tokens", self.budgets.get(stage))}

    def decoding(self) -> dict[str, dict]:
        """Every stage's resolved decoding (temperature, top_p, max_new_tokens; None: the task's
        budget), as records and traces store it."""
        return {s: {k: v for k, v in self.sampling(s).items() if k != "n"} for s in self.stages}

    def question(self, doc: dict) -> str:
        """The bare input of ``doc`` (the task's :meth:`~s2d.tasks.base.Task.question`)."""
        return self.task.question(doc)

    def answer_format(self, doc: dict) -> str:
        """The task's own answer-format line for ``doc`` ("" when its System 1 prompt has none)."""
        return self.task.answer_format(doc)

    # -- the program ------------------------------------------------------------------------------
    def run(self, runner: StageRunner, docs: list[dict]) -> list[Chain]:
        """Run every stage over all ``docs``; return the finished chains (any order)."""
        raise NotImplementedError

    def answer(self, doc: dict, chain: Chain) -> str | None:
        """The parsed answer of a finished chain (default: the task's extraction of the response)."""
        return self.task.extract(chain.response)

    def sample_record(self, doc: dict, chain: Chain) -> dict:
        """Extra fields of a finished chain's sample in the trace (cot: which exemplars it saw)."""
        return {}


def run_method(method: Method, runner: StageRunner, docs: list[dict]) -> list[list[dict]]:
    """Run ``method`` on ``docs``; per doc, its samples as plain dicts (response, answer, stages, tokens)."""
    chains = method.run(runner, docs) if docs else []
    per_doc: list[list[dict]] = [[] for _ in docs]
    for chain in chains:
        tokens = chain.tokens()
        per_doc[chain.doc].append({
            "response": chain.response,
            "answer": method.answer(docs[chain.doc], chain),
            "stages": [s.as_dict() for s in chain.steps],
            "tokens": tokens,
            "total_tokens": sum(tokens.values()),
            **method.sample_record(docs[chain.doc], chain),
        })
    return per_doc


def cap_hits(samples: list[dict]) -> dict[str, list[int]]:
    """Per stage, [steps that ended at the token cap (finish_reason ``length``), steps], over every
    sample of a document."""
    out: dict[str, list[int]] = {}
    for sample in samples:
        for st in sample["stages"]:
            row = out.setdefault(st["stage"], [0, 0])
            row[0] += st.get("finish_reason") == "length"
            row[1] += 1
    return out


def cap_shares(caps: dict[str, list[int]]) -> dict[str, float]:
    """Per stage, the share of steps cut by the cap, from :func:`cap_hits`' [hit, steps] counts."""
    return {k: hit / steps for k, (hit, steps) in caps.items() if steps}
