"""`s2a`: System 2 Attention (Weston & Sukhbaatar 2023). Rewrite the input keeping only the
unbiased context and the actual question, then answer from the rewrite alone.

Wordings: ``s2d`` (this project's own prompts) and ``paper`` (v1 Fig. 6 verbatim: stage 1
regenerates the context, stage 2 is the stage-1 output followed by "Answer in an unbiased way.").
Both stages accept the paper's field name ``{input}`` beside the s2d names: stage 1's ``{input}``
is ``{question}`` (the task's input, for TriviaQA the biased prompt), stage 2's is ``{rewritten}``
(the stage-1 output, stripped; nothing else is removed, as v1 states no post-processing).
Decoding, every wording: nucleus sampling with top-p 0.9 in both stages (paper A.2) at temperature
0.6 (the S2A paper's setting; v1 states none).
"""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, flatten, start


class S2A(Method):
    """System 2 Attention: strip opinions and irrelevant context, then answer the clean question."""

    name = "s2a"
    stages = ("rewrite", "answer")
    template_fields = {"rewrite": ("question", "input"), "answer": ("rewritten", "input", "question")}
    templates = {
        "rewrite": ("Below is a message from a user. Copy out only the parts that are neutral facts or context, "
                    "leaving out the user's own opinions, guesses and preferences, and copy out the question "
                    "they actually ask. Use exactly two labelled parts:\n"
                    "Context (everything except the user's opinion):\n"
                    "Question (without the user's opinion):\n\nUser message:\n{question}"),
        "answer": "{rewritten}\n\nAnswer the question above without bias, briefly.",
    }
    wordings = {
        "paper": {
            # v1 Fig. 6, top box (typographic quotes and apostrophe as printed).
            "rewrite": ("Given the following text by a user, extract the part that is unbiased and not their "
                        "opinion, so that using that text alone would be good context for providing an unbiased "
                        "answer to the question portion of the text. Please include the actual question or query "
                        "that the user is asking. Separate this into two categories labeled with \u201cUnbiased "
                        "text context (includes all content except user\u2019s bias):\u201d and \u201cQuestion/"
                        "Query (does not include user bias/preference):\u201d.\nText by User: {input}"),
            # v1 Fig. 6, bottom box; {input} is the stage-1 output.
            "answer": "{input}\nAnswer in an unbiased way.",
        },
    }
    max_new_tokens = {"rewrite": 512, "answer": 512}
    # Class defaults, so every wording gets them and a user's method-wide temperature/top_p still wins.
    temperature = 0.6
    top_p = 0.9

    def run(self, runner, docs):
        prompts = []
        for d in docs:
            q = self.question(d)
            prompts.append(self.render("rewrite", question=q, input=q))
        rewritten = flatten(runner.stage("rewrite", start(docs), prompts, **self.sampling("rewrite")))
        prompts = []
        for c in rewritten:
            r = c.text("rewrite").strip()
            prompts.append(self.render("answer", rewritten=r, input=r, question=self.question(docs[c.doc])))
        return flatten(runner.stage("answer", rewritten, prompts, **self.sampling("answer", n=1)))


@hookimpl
def register_methods(register):
    register(S2A)
