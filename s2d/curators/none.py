"""`none`: no curation (the paper's ablation). Keep the first sample of every input: its answer in
the task's answer-only form, or its raw response when no answer can be parsed."""

from __future__ import annotations

from s2d.curators.base import TARGETS, Curator, Decision
from s2d.hookspecs import hookimpl
from s2d.options import option


class NoCuration(Curator):
    """No curation: train on the first sample of every input."""

    name = "none"

    class Options(Curator.Options):
        target: str = option("answer", choices=TARGETS,
                             help=('"answer" (the task\'s answer-only form; the raw response when none parses) '
                                   'or "response" (the first sample\'s final-stage text)'))

    def curate(self, traces, runner=None):
        out = []
        for t in traces:
            s = t["samples"][0] if t["samples"] else None
            if s is None or not (s["answer"] or s["response"].strip()):
                out.append(Decision(t["id"], False, "empty"))
                continue
            text = s["response"].strip() if self.target == "response" or s["answer"] is None \
                else self.task.target(s["answer"])
            out.append(Decision(t["id"], True, "first_sample", s["answer"], {"n": len(t["samples"])},
                                [(t["prompt"], text)], [s["response"]]))
        return out


@hookimpl
def register_curators(register):
    register(NoCuration)
