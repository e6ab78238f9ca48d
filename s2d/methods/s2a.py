"""`s2a`: System 2 Attention (Weston & Sukhbaatar 2023). Rewrite the input keeping only the
unbiased context and the actual question, then answer from the rewrite alone. Nucleus sampling
with top-p 0.9 in both stages, as in the paper."""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, flatten, start


class S2A(Method):
    """System 2 Attention: strip opinions and irrelevant context, then answer the clean question."""

    name = "s2a"
    stages = ("rewrite", "answer")
    templates = {
        "rewrite": ("Below is a message from a user. Copy out only the parts that are neutral facts or context, "
                    "leaving out the user's own opinions, guesses and preferences, and copy out the question "
                    "they actually ask. Use exactly two labelled parts:\n"
                    "Context (everything except the user's opinion):\n"
                    "Question (without the user's opinion):\n\nUser message:\n{question}"),
        "answer": "{rewritten}\n\nAnswer the question above without bias, briefly.",
    }
    max_new_tokens = {"rewrite": 128, "answer": 96}
    temperature = 0.6
    top_p = 0.9

    def run(self, runner, docs):
        rewritten = flatten(runner.stage("rewrite", start(docs), [self.render("rewrite", question=self.question(d))
                                                                   for d in docs], **self.sampling("rewrite")))
        prompts = [self.render("answer", rewritten=c.text("rewrite").strip()) for c in rewritten]
        return flatten(runner.stage("answer", rewritten, prompts, **self.sampling("answer", n=1)))


@hookimpl
def register_methods(register):
    register(S2A)
