"""`perturb`: consistency under an input perturbation. The task supplies the perturbation (the
judge swaps answers A and B) and maps the perturbed answer back; an input is kept only when the
original and the perturbed input give the same answer. Needs traces made with ``--perturb``."""

from __future__ import annotations

from s2d.curators.base import TARGET_HELP, TARGETS, Curator, Decision, chosen_response, vote
from s2d.errors import InputError
from s2d.hookspecs import hookimpl
from s2d.options import option


class PerturbationConsistency(Curator):
    """Keep inputs whose answer survives the task's perturbation (e.g. swapping A and B)."""

    name = "perturb"

    class Options(Curator.Options):
        both_orders: bool = option(True, help="train on the perturbed input too (with its own answer)")
        target: str = option("answer", choices=TARGETS, help=TARGET_HELP)

    def curate(self, traces, runner=None):
        out = []
        for t in traces:
            if "perturbed" not in t:
                raise InputError(f"trace {t['id']!r} has no perturbed samples: run `s2d generate --perturb` "
                                 f"(task {t.get('task')!r} must define a perturbation)")
            _, a, _, tied_a = vote([s["answer"] for s in t["samples"]])
            _, b_raw, _, tied_b = vote([s["answer"] for s in t["perturbed"]["samples"]])
            b = self.task.unperturb_answer(b_raw)
            v = {"original": a, "perturbed": b_raw, "perturbed_mapped": b}
            if a is None or b is None:
                out.append(Decision(t["id"], False, "unparseable", vote=v))
            elif tied_a or tied_b:
                out.append(Decision(t["id"], False, "tie", vote=v))
            elif a != b:
                out.append(Decision(t["id"], False, "inconsistent", a, v))
            else:
                examples = [(t["prompt"], self.completion(a, t["samples"]))]
                responses = [chosen_response(t["samples"], a)]
                if self.both_orders:
                    examples.append((t["perturbed"]["prompt"], self.completion(b_raw, t["perturbed"]["samples"])))
                    responses.append(chosen_response(t["perturbed"]["samples"], b_raw))
                out.append(Decision(t["id"], True, "consistent", a, v, examples, responses))
        return out


@hookimpl
def register_curators(register):
    register(PerturbationConsistency)
