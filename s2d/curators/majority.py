"""`majority`: self-consistency (Wang et al. 2022). Keep the answer whose share of the N parsed
samples passes a threshold (default: a strict majority of all N, unparseable samples included)
and, with ``margin``, that leads the runner-up by that many votes; drop ties and sets with no
parseable answer."""

from __future__ import annotations

from s2d.errors import ConfigError
from s2d.curators.base import TARGET_HELP, TARGETS, Curator, Decision, vote
from s2d.hookspecs import hookimpl
from s2d.options import option


class MajorityVote(Curator):
    """Self-consistency: keep the answer more than half of the samples agree on."""

    name = "majority"

    class Options(Curator.Options):
        threshold: float = option(0.5, help=("the top answer's share of all N samples must exceed it "
                                             "(0.5 = strict majority, 0 = plurality)"))
        margin: int = option(0, help=("the top answer must also lead the runner-up by at least this many "
                                      "votes (0: off; with threshold 0 it is the only rule)"))
        target: str = option("answer", choices=TARGETS, help=TARGET_HELP)

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.margin < 0:
            raise ConfigError(f"majority: margin must be a non-negative integer, got {self.margin!r}")
        if not 0 <= self.threshold < 1:  # a share is at most 1: a threshold of 1 or more keeps nothing
            raise ConfigError(f"majority: threshold must be in [0, 1) (0.5: strict majority, 0: plurality), "
                              f"got {self.threshold!r}")

    def curate(self, traces, runner=None):
        out = []
        for t in traces:
            answers = [s["answer"] for s in t["samples"]]
            counts, top, k, tied = vote(answers)
            v = {"counts": dict(counts), "n": len(answers), "unparseable": sum(a is None for a in answers)}
            if top is None:
                out.append(Decision(t["id"], False, "unparseable", vote=v))
            elif tied:
                out.append(Decision(t["id"], False, "tie", vote=v))
            elif k / len(answers) <= float(self.threshold):
                out.append(Decision(t["id"], False, "below_threshold", top, v))
            elif k - runner_up(counts) < int(self.margin):
                out.append(Decision(t["id"], False, "below_margin", top, v))
            else:
                text = self.completion(top, t["samples"])
                out.append(Decision(t["id"], True, f"majority {k}/{len(answers)}", top, v, [(t["prompt"], text)]))
        return out


def runner_up(counts) -> int:
    """The second-highest vote count (0 when only one answer was given)."""
    ranked = counts.most_common(2)
    return ranked[1][1] if len(ranked) > 1 else 0


@hookimpl
def register_curators(register):
    register(MajorityVote)
