"""What a curator is, and the trace and training-set formats around it.

A *trace* (one JSONL line per input, written by ``s2d generate``) holds the System 1 prompt, every
sample of the method (response, parsed answer, stage texts, tokens) and, with ``--perturb``, the
same for the perturbed input. A curator reads traces only -- never labels -- and returns one
:class:`Decision` per input. :func:`write_curated` turns decisions into TRL's conversational
prompt-completion JSONL (``prompt``: the System 1 input, ``completion``: the final answer only) with
provenance under ``s2d``, plus the dropped inputs and a summary beside it. Each kept record also
carries ``system2_completion``: the chosen sample's whole final-stage text (its reasoning and its
answer line), for trainers that learn from the reasoning (``stepwise``); answer-only trainers read
``completion`` alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2d.errors import ConfigError
from s2d.files import write_json, write_jsonl
from s2d.options import Options as BaseOptions
from s2d.options import apply_options, options_from_model

# The help of the ``target`` option the built-in curators share.
TARGETS = ("answer", "response")  # what a curated record trains on: the answer-only form or the final-stage text
TARGET_HELP = ('"answer" (the task\'s answer-only form) or "response" (the final-stage text of the first '
               'sample that gave the kept answer)')


@dataclass
class Decision:
    id: str
    kept: bool
    reason: str
    answer: str | None = None
    vote: dict = field(default_factory=dict)
    # (prompt messages, completion text) pairs to train on; the perturb curator adds both orders
    examples: list[tuple[list[dict], str]] = field(default_factory=list)
    # the System 2 text behind each example (None: the first sample that gave ``answer``)
    responses: list[str | None] | None = None


class Curator:
    """Base class for curator plugins: set ``name``, a docstring and :meth:`curate`.

    ``needs_model``: the curator calls the model itself (USC); it then gets a stage runner.
    """

    name: str = ""
    needs_model: bool = False

    def __init__(self, task, **options: Any):
        self.task = task
        apply_options(self, "curator", options, ConfigError)

    class Options(BaseOptions):
        """The curator's options (a subclass declares ``name: type = option(default, ...)``)."""

    # The options and their defaults, from ``Options`` (or a plugin's own dict: the shim).
    options = options_from_model()

    def curate(self, traces: list[dict], runner=None) -> list[Decision]:
        raise NotImplementedError

    def completion(self, answer: str, samples: list[dict]) -> str:
        """The training target for a kept answer. ``target: answer`` (default): the task's
        answer-only form. ``target: response``: the final-stage text of the first sample whose
        parsed answer is the kept one (the paper's target for RaR, S2A and BSM: the last stage's
        response, intermediate stages dropped); a sample that disagrees is never the target."""
        if getattr(self, "target", "answer") == "response":
            text = chosen_response(samples, answer)
            if text is not None and text.strip():
                return text.strip()
            raise ValueError(f"curator {self.name!r}: no sample gave the kept answer {answer!r}")
        return self.task.target(answer)


def vote(answers: list[str | None]) -> tuple[Counter, str | None, int, bool]:
    """Counts of parsed answers, the top answer, its count, and whether the top is tied."""
    counts = Counter(a for a in answers if a is not None)
    ranked = counts.most_common()
    if not ranked:
        return counts, None, 0, False
    top, k = ranked[0]
    return counts, top, k, len(ranked) > 1 and ranked[1][1] == k


def majority_sample(samples: list[dict]) -> dict:
    """The sample an evaluation scores: the only one, or (n > 1) the first giving the most common
    answer."""
    if len(samples) == 1:
        return samples[0]
    _, top, _, _ = vote([s["answer"] for s in samples])
    return next((s for s in samples if s["answer"] == top), samples[0])


def chosen_response(samples: list[dict], answer: str | None) -> str | None:
    """The final-stage text of the first sample whose parsed answer is ``answer``."""
    return next((s["response"] for s in samples if answer is not None and s["answer"] == answer), None)


def task_judge(task) -> Callable[[dict, str], bool | None]:
    """``judge`` for :func:`write_curated`: whether ``task``'s own scorer credits a target (its first
    metric above 0) on the trace's document, looked up by id in the trace's split (built once, on
    first use). None where it cannot say: no such document, or a metric that is not a number (the
    judge's unlabeled train pairs). Analysis only: what a curator kept is decided before this runs."""
    by_split: dict[str, dict[str, dict]] = {}  # split -> {document id: document}

    def judge(trace: dict, target: str) -> bool | None:
        split = trace.get("split") or "train"
        if split not in by_split:
            try:
                by_split[split] = {str(d["id"]): d for d in task.docs(split)}
            except (ValueError, OSError, KeyError):  # no such split or data: no column, not a failed curation
                by_split[split] = {}
        doc = by_split[split].get(str(trace["id"]))
        if doc is None:
            return None
        try:
            value = next(iter(task.score(doc, target).values()), None)
        except (KeyError, TypeError, ValueError):
            return None
        return value > 0 if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return judge


def write_curated(out: str | Path, traces: list[dict], decisions: list[Decision], *, curator: str,
                  extra: dict | None = None, judge: Callable[[dict, str], bool | None] | None = None) -> dict:
    """Write OUT (kept, TRL prompt-completion), OUT.dropped.jsonl and OUT.summary.json; return the summary.
    Target accuracy (analysis only) compares a kept answer with the trace's string reference; where a
    trace has none, ``judge(trace, target)`` (the task's own scorer on the input's first target, None
    when it cannot say) decides: TriviaQA's references are lists of aliases, credited by mention."""
    out = Path(out)
    by_id = {t["id"]: t for t in traces}
    if len(by_id) < len(traces):  # load_traces refuses these; a caller's own list may not have been checked
        repeated = next(k for k, c in Counter(t["id"] for t in traces).items() if c > 1)
        raise ValueError(f"duplicate trace id {repeated!r}: one trace per input")
    kept, dropped = [], []
    reasons: Counter = Counter()
    correct = judged = 0
    for d in decisions:
        t = by_id[d.id]
        provenance = {
            "id": d.id, "task": t.get("task"), "method": t.get("method"), "curator": curator,
            "reason": d.reason, "answer": d.answer, "vote": d.vote,
            "samples": [{"response": s["response"], "answer": s["answer"], "tokens": s.get("total_tokens")}
                        for s in t["samples"]],
        }
        if d.kept:
            if d.responses is not None and len(d.responses) != len(d.examples):
                raise ValueError(f"curator {curator!r}, input {d.id!r}: {len(d.examples)} examples but "
                                 f"{len(d.responses)} responses (one System 2 text per example, or none)")
            responses = d.responses or [chosen_response(t["samples"], d.answer)] + [None] * len(d.examples)
            for (prompt, completion), response in zip(d.examples, responses):
                record = {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}
                if response:
                    record["system2_completion"] = [{"role": "assistant", "content": response.strip()}]
                kept.append({**record, "s2d": provenance})
            ref = t.get("reference")
            if isinstance(ref, str) and d.answer is not None:  # analysis only: curators never saw it
                judged += 1
                correct += str(d.answer).strip().lower() == ref.strip().lower()
            elif ref is None and judge is not None and d.examples:
                right = judge(t, d.examples[0][1])
                if right is not None:
                    judged += 1
                    correct += bool(right)
        else:
            dropped.append({"prompt": t["prompt"], "s2d": provenance})
            reasons[d.reason] += 1
    summary = {
        "curator": curator, "inputs": len(decisions), "kept_inputs": sum(d.kept for d in decisions),
        "records": len(kept), "dropped": sum(reasons.values()), "dropped_by_reason": dict(reasons.most_common()),
        "target_accuracy": correct / judged if judged else None, "targets_judged": judged,
        "target_accuracy_note": "against the split's reference answers, over the kept inputs whose target could be "
                                "judged (targets_judged: an answer that parsed, or the task's scorer), for analysis "
                                "only; curation never reads them",
        "out": out.name, **(extra or {}),  # beside this summary: no machine's absolute path in results
    }
    write_jsonl(out, kept)
    write_jsonl(out.with_name(out.stem + ".dropped.jsonl"), dropped)
    write_json(out.with_name(out.stem + ".summary.json"), summary)
    return summary
