"""`system1`: the direct answer, one stage, the task's own System 1 prompt."""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, flatten, start


class System1(Method):
    """Direct answer: the task's System 1 prompt, no intermediate text."""

    name = "system1"
    stages = ("answer",)
    templates = {"answer": "{input}"}
    template_fields = {"answer": ("input",)}
    max_new_tokens = {"answer": None}  # None: the task's budget (lm-eval's max_gen_toks), else 256

    def run(self, runner, docs):
        chains = start(docs)
        prompts = [self.render("answer", input=self.task.system1_prompt(d)) for d in docs]
        return flatten(runner.stage("answer", chains, prompts, **self.sampling("answer")))


@hookimpl
def register_methods(register):
    register(System1)
