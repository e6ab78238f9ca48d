"""`usc`: universal self-consistency (Chen et al. 2023). The model reads the N responses and
writes one final answer consistent with the majority, as "FINAL: ..."; that text is the target.
One batched model call over all inputs (greedy)."""

from __future__ import annotations

import re

from s2d.config import ConfigError
from s2d.curators.base import Curator, Decision, chosen_response
from s2d.hookspecs import hookimpl
from s2d.methods.base import Chain

FINAL = re.compile(r"FINAL\s*:\s*(.+)", re.I)

TEMPLATE = ("Here is a question and {k} answers that were written for it.\n\n[Question]\n{question}\n\n"
            "{responses}\n\nWhich answer do most of the responses agree on? Write that answer as one short "
            "sentence, in the form \"FINAL: <your final answer>\".")


class UniversalSelfConsistency(Curator):
    """Universal self-consistency: the model writes the answer most samples agree on."""

    name = "usc"
    needs_model = True

    @classmethod
    def options(cls):
        # The paper cut 20 answers to 10 when they did not fit the context.
        return {"max_responses": 10, "max_chars": 600, "template": TEMPLATE, "max_new_tokens": 64}

    def curate(self, traces, runner=None):
        if runner is None:
            raise ConfigError("the usc curator asks the model: give it a backend (s2d curate --model ...)")
        todo, prompts, out = [], [], {}
        for t in traces:
            responses = [s["response"].strip() for s in t["samples"] if s["response"].strip()]
            responses = responses[: int(self.max_responses)]
            if not responses:
                out[t["id"]] = Decision(t["id"], False, "no_samples")
                continue
            listed = "\n\n".join(f"[Response {i}]\n{r[: int(self.max_chars)]}" for i, r in enumerate(responses, 1))
            question = t["prompt"][-1]["content"]
            todo.append(t)
            prompts.append(self.template.format(k=len(responses), question=question, responses=listed))
        results = runner.stage("usc", [Chain(i) for i in range(len(todo))], prompts, n=1,
                               max_new_tokens=int(self.max_new_tokens), temperature=0.0) if todo else []
        for t, chains in zip(todo, results):
            text = chains[0].response
            m = FINAL.findall(text)
            final = m[-1].strip() if m else None
            v = {"usc_output": text, "n": len(t["samples"])}
            if not final:
                out[t["id"]] = Decision(t["id"], False, "usc_unparseable", vote=v)
            else:
                # The System 2 text behind the pick: the first sample whose answer is the one USC wrote.
                chosen = chosen_response(t["samples"], self.task.extract(final))
                out[t["id"]] = Decision(t["id"], True, "usc", final, v, [(t["prompt"], final)], [chosen])
        return [out[t["id"]] for t in traces]


@hookimpl
def register_curators(register):
    register(UniversalSelfConsistency)
