"""Rephrase and Respond (Deng et al. 2023): `rar1` rephrases and answers in one prompt; `rar2`
rephrases first, then answers the rephrased question alone (this paper's 2-step variant)."""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, MethodConfigError, flatten, start

ANSWER_FORMAT = "End with the answer in the form \"Final answer: <answer>\"."


class RaR1(Method):
    """1-step Rephrase and Respond: reword and expand the question, then answer it, in one reply."""

    name = "rar1"
    stages = ("rephrase_respond",)
    templates = {"rephrase_respond": ("{question}\n\nFirst restate this question in your own words, adding any "
                                      "detail that makes it clearer. Then answer it. " + ANSWER_FORMAT)}
    max_new_tokens = {"rephrase_respond": 256}

    def run(self, runner, docs):
        prompts = [self.render("rephrase_respond", question=self.question(d)) for d in docs]
        return flatten(runner.stage("rephrase_respond", start(docs), prompts, **self.sampling("rephrase_respond")))


class RaR2(Method):
    """2-step Rephrase and Respond: rephrase the question, then answer the rephrased question."""

    name = "rar2"
    stages = ("rephrase", "respond")
    templates = {
        "rephrase": ("{question}\n\nRewrite this question so that it is clearer and more detailed, keeping every "
                     "fact in it. Reply with the rewritten question only, without answering it."),
        "rephrase@last_letter": ("{question}\n\nRewrite this request so that it is clearer and more detailed. "
                                 "Keep the words in quotes separate and exactly as they are. Reply with the "
                                 "rewritten request only, without answering it."),
        "respond": "{rephrased}\n\n" + ANSWER_FORMAT,
        "respond@coin_flip": "{rephrased}\n\nAnswer the Yes or No question. " + ANSWER_FORMAT,
    }
    max_new_tokens = {"rephrase": 128, "respond": 192}

    # The paper's step 2 (Figs. 4-5): the rephrased question alone (coin flip: plus "Answer the Yes or
    # No question."); the answer is then parsed from free text.
    PAPER_RESPOND = {"respond": "{rephrased}", "respond@coin_flip": "{rephrased}\n\nAnswer the Yes or No question."}

    @classmethod
    def options(cls):
        # The paper sampled 8 per stage for coin flip: n=8 rephrasings x respond_n answers each.
        # wording: "s2d" asks for "Final answer: ..." in step 2; "paper" is the paper's step 2.
        return {"respond_n": 1, "wording": "s2d"}

    def __init__(self, task, templates: dict | None = None, **options):
        super().__init__(task, templates=templates, **options)
        if self.wording not in ("s2d", "paper"):
            raise MethodConfigError(f"rar2: wording must be 's2d' or 'paper', got {self.wording!r}")
        if self.wording == "paper":
            own = {k for k in (templates or {}) if k.partition("@")[0] == "respond"}
            for key, value in self.PAPER_RESPOND.items():
                if not own:  # a user's own respond template wins
                    self._templates[key] = value

    def run(self, runner, docs):
        chains = start(docs)
        rephrased = flatten(runner.stage("rephrase", chains, [self.render("rephrase", question=self.question(d))
                                                              for d in docs], **self.sampling("rephrase")))
        prompts = [self.render("respond", rephrased=c.text("rephrase").strip(), question=self.question(docs[c.doc]))
                   for c in rephrased]
        return flatten(runner.stage("respond", rephrased, prompts,
                                    **self.sampling("respond", n=int(self.respond_n))))


@hookimpl
def register_methods(register):
    register(RaR1)
    register(RaR2)
