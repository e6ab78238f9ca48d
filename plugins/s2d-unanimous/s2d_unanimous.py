"""`unanimous`: keep an input only when all of its samples (at least `min_samples`) give the same
parsed answer. A complete s2d curator plugin: options, one Decision per trace, the training target
from the task's answer form. It reads traces only, never labels."""

import s2d
from s2d.curators import Curator, Decision, vote


class Unanimous(Curator):
    """Keep inputs whose samples all agree (and parse)."""

    name = "unanimous"

    @classmethod
    def options(cls):
        # min_samples: fewer samples than this never count as agreement.
        return {"min_samples": 2}

    def curate(self, traces, runner=None):
        out = []
        for t in traces:
            answers = [s["answer"] for s in t["samples"]]
            counts, top, k, _ = vote(answers)
            v = {"counts": dict(counts), "n": len(answers)}
            if len(answers) < self.min_samples:
                out.append(Decision(t["id"], False, "too_few_samples", vote=v))
            elif top is None or k < len(answers):
                out.append(Decision(t["id"], False, "disagree", top, v))
            else:
                out.append(Decision(t["id"], True, f"unanimous {k}/{k}", top, v,
                                    [(t["prompt"], self.completion(top, t["samples"]))]))
        return out


@s2d.hookimpl
def register_curators(register):
    register(Unanimous)
