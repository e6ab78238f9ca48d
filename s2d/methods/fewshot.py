"""`fewshot`: System 1 with k answer-only exemplars from the task's train split, as earlier chat
turns: the paper's GSM8k System 1 row ("Few (8)-shot (no CoT)", v1 Table 4). Each exemplar is a train
question in the task's System 1 prompt and its final-answer line (the reference, as any few-shot
prompt shows it), so the model is shown answering directly, with no intermediate text. The paper's
eight exemplars are not printed; these are drawn from the train split with ``shot_seed``, and an
input never sees its own answer (cot's exemplar rules)."""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.methods.cot import ChainOfThought
from s2d.options import option


class FewShot(ChainOfThought):
    """Direct answer after ``shots`` solved train examples (question -> final answer only)."""

    name = "fewshot"
    stages = ("answer",)
    templates = {"answer": "{input}"}
    template_fields = {"answer": ("input",)}
    wordings = {}
    max_new_tokens = {"answer": None}  # the task's budget, as system1's

    class Options(ChainOfThought.Options):
        shots: int = option(8, help="worked train examples (answers only) before the question")

    def example_maker(self, task):
        def example(doc: dict) -> tuple[str, str] | None:
            if doc.get("answer") is None:
                return None
            return task.system1_prompt(doc), task.target(str(doc["answer"]))

        return example

    def messages(self, doc, sample: int = 0) -> list[dict]:
        msgs = []
        for _, (prompt, answer) in self.exemplars(doc, sample):
            msgs += [{"role": "user", "content": self.render("answer", input=prompt)},
                     {"role": "assistant", "content": answer}]
        return msgs + [{"role": "user", "content": self.render("answer", input=self.task.system1_prompt(doc))}]


@hookimpl
def register_methods(register):
    register(FewShot)
