"""`cot`: Chain-of-Thought, zero-shot ("step by step", then "Final answer: ...") or few-shot
(``shots=k`` worked examples from the task's train split, as earlier chat turns)."""

from __future__ import annotations

import random

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, MethodConfigError, flatten, start


class ChainOfThought(Method):
    """Chain-of-Thought: reason step by step, then "Final answer: ..." (zero- or few-shot)."""

    name = "cot"
    stages = ("reason",)
    templates = {
        "reason": ("Question: {question}\n\nWork through the problem step by step. Then, on the last line, "
                   "write the answer in the form \"Final answer: <answer>\".\n\nSolution:"),
        # The judge's input already asks for a verdict format; keep it, only ask for reasons first.
        "reason@mt_bench_judge": ("{question}\n\nBefore the verdict, compare the two answers step by step "
                                  "in a few sentences. Finish with the verdict on its own line."),
    }
    max_new_tokens = {"reason": 256}

    @classmethod
    def options(cls):
        return {"shots": 0, "shot_seed": 0}

    def __init__(self, task, **options):
        super().__init__(task, **options)
        self.examples: list[tuple[str, str]] = []
        if self.shots:
            worked = getattr(task, "worked_example", None)
            pool = [ex for ex in (worked(d) for d in task.docs("train")) if ex] if worked else []
            if len(pool) < int(self.shots):
                raise MethodConfigError(f"cot shots={self.shots}: task {task.name!r} offers {len(pool)} worked "
                                        f"examples in its train split")
            self.examples = random.Random(int(self.shot_seed)).sample(pool, int(self.shots))

    def messages(self, doc) -> list[dict]:
        msgs = []
        for question, solution in self.examples:
            msgs += [{"role": "user", "content": self.render("reason", question=question)},
                     {"role": "assistant", "content": solution}]
        return msgs + [{"role": "user", "content": self.render("reason", question=self.question(doc))}]

    def run(self, runner, docs):
        return flatten(runner.stage("reason", start(docs), [self.messages(d) for d in docs], **self.sampling("reason")))


@hookimpl
def register_methods(register):
    register(ChainOfThought)
