"""Rephrase and Respond (Deng et al. 2023): `rar1` rephrases and answers in one prompt; `rar2`
rephrases first, then answers the rephrased question (this paper's 2-step variant).

Wordings (``wording: s2d | paper | original``; docs/methods.md has the table and sources):

* ``s2d`` -- this project's own prompts, which ask for "Final answer: ..." so answers parse.
* ``paper`` -- the distillation paper's appendix verbatim (v1 Figs. 3-5; the transcription is
  shared/research/paper-prompts.md section 1). rar2's step 1 and 2 have per-task figures for last
  letter (Fig. 4) and coin flip (Fig. 5); on other tasks, which the paper does not cover, step 1 is
  the original repository's rephrase prompt (with its quote stripping) and step 2 is the rephrased
  question alone, as in Fig. 4.
* ``original`` -- the RaR repository's ``main.py`` as it runs for a gpt-4 model (paper-prompts.md
  section 2): the question wrapped in ASCII double quotes, surrounding quotes stripped from the
  rephrasing, step 2 showing both questions, and the task's ``SPEC`` ("Answer the Yes or No
  question." for coin flip, nothing otherwise) joined without a space or newline, as the code does.
"""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, flatten, start
from s2d.options import option

ANSWER_FORMAT = "End with the answer in the form \"Final answer: <answer>\"."

# The RaR repository's task suffix (config.json): coin_val's, and "" for last letter and the rest.
ORIGINAL_SPEC = {"coin_flip": "Answer the Yes or No question."}
# main.py, refine_question: the question in ASCII double quotes, then the instruction.
ORIGINAL_REPHRASE = ('"{question}"\nGiven the above question, rephrase and expand it to help you do better '
                     'answering. Maintain all information in the original question.')
# main.py, get_result (gpt-4 branch); {spec} is SPEC with no separator after it ("question.Use").
_ORIGINAL_RESPOND = ("(original) {{question}}\n(rephrased) {{rephrased}}\n{spec}Use your answer for the rephrased "
                     "question to answer the original question.")
# main.py, get_result_onestep (gpt-4 branch; the trailing space is the code's).
_ORIGINAL_ONESTEP = '"{{question}}"\nRephrase and expand the question, and respond. {spec}'


def strip_quotes(text: str) -> str:
    """The RaR repository's post-processing of a rephrasing: ``.strip()``, then one pair of
    surrounding ASCII double quotes removed."""
    text = text.strip()
    if text and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    return text


class RaR1(Method):
    """1-step Rephrase and Respond: reword and expand the question, then answer it, in one reply."""

    name = "rar1"
    stages = ("rephrase_respond",)
    template_fields = {"rephrase_respond": ("question",)}
    templates = {"rephrase_respond": ("{question}\n\nFirst restate this question in your own words, adding any "
                                      "detail that makes it clearer. Then answer it. " + ANSWER_FORMAT)}
    wordings = {
        # v1 Fig. 3 (Table 7 uses it for coin flip; the paper has no separate last-letter figure).
        "paper": {"rephrase_respond": "{question}\n\nReword and elaborate on the inquiry, then provide an answer."},
        "original": {"rephrase_respond": _ORIGINAL_ONESTEP.format(spec=""),
                     **{f"rephrase_respond@{t}": _ORIGINAL_ONESTEP.format(spec=s) for t, s in ORIGINAL_SPEC.items()}},
    }
    max_new_tokens = {"rephrase_respond": 1024}

    def run(self, runner, docs):
        prompts = [self.render("rephrase_respond", question=self.question(d)) for d in docs]
        return flatten(runner.stage("rephrase_respond", start(docs), prompts, **self.sampling("rephrase_respond")))


class RaR2(Method):
    """2-step Rephrase and Respond: rephrase the question, then answer the rephrased question."""

    name = "rar2"
    stages = ("rephrase", "respond")
    template_fields = {"rephrase": ("question",), "respond": ("rephrased", "question", "rephrased question")}
    templates = {
        "rephrase": ("{question}\n\nRewrite this question so that it is clearer and more detailed, keeping every "
                     "fact in it. Reply with the rewritten question only, without answering it."),
        "rephrase@last_letter": ("{question}\n\nRewrite this request so that it is clearer and more detailed. "
                                 "Keep the words in quotes separate and exactly as they are. Reply with the "
                                 "rewritten request only, without answering it."),
        "respond": "{rephrased}\n\n" + ANSWER_FORMAT,
        "respond@coin_flip": "{rephrased}\n\nAnswer the Yes or No question. " + ANSWER_FORMAT,
    }
    wordings = {
        "paper": {
            # Tasks the paper has no RaR prompt for: the original repository's step 1.
            "rephrase": ORIGINAL_REPHRASE,
            # v1 Fig. 4, top box.
            "rephrase@last_letter": ("{question}\n\nBased on the details given in the initial inquiry, could you "
                                     "kindly rephrase the question and separate these 2 words in the revised "
                                     "question? Please ensure these 2 words remain unchanged from the original "
                                     "question."),
            # v1 Fig. 5, top box.
            "rephrase@coin_flip": ("{question}\n\nBased on the information provided in the original query, could "
                                   "you please rephrase it and expand it to help you do better answering. Please "
                                   "ensure that your response solely includes the reformulated question, "
                                   "excluding any introductory phrases or explanatory remarks, while preserving "
                                   "all the details from the original query."),
            # v1 Fig. 4, bottom box ({rephrased question} = {rephrased}); also the other tasks' step 2.
            "respond": "{rephrased}",
            # v1 Fig. 5, bottom box (one space, as printed).
            "respond@coin_flip": "{rephrased} Answer the Yes or No question.",
        },
        "original": {
            "rephrase": ORIGINAL_REPHRASE,
            "respond": _ORIGINAL_RESPOND.format(spec=""),
            **{f"respond@{t}": _ORIGINAL_RESPOND.format(spec=s) for t, s in ORIGINAL_SPEC.items()},
        },
    }
    max_new_tokens = {"rephrase": 512, "respond": 1024}

    class Options(Method.Options):
        # The paper sampled 8 per stage for coin flip: n=8 rephrasings x respond_n answers each.
        respond_n: int = option(1, help="answers per rephrasing (n rephrasings x respond_n samples)")

    def rephrasing(self, text: str) -> str:
        """The rephrased question step 2 sees: the text stripped; with the original repository's
        rephrase prompt (``original``, and ``paper`` on tasks the paper does not cover), also one
        pair of surrounding double quotes removed, as its code does."""
        return strip_quotes(text) if self.template("rephrase") == ORIGINAL_REPHRASE else text.strip()

    def run(self, runner, docs):
        chains = start(docs)
        rephrased = flatten(runner.stage("rephrase", chains, [self.render("rephrase", question=self.question(d))
                                                              for d in docs], **self.sampling("rephrase")))
        prompts = []
        for c in rephrased:
            r = self.rephrasing(c.text("rephrase"))
            # {rephrased question} is the paper's own name for the field, so its figure can be pasted as is.
            prompts.append(self.render("respond", rephrased=r, question=self.question(docs[c.doc]),
                                       **{"rephrased question": r}))
        return flatten(runner.stage("respond", rephrased, prompts,
                                    **self.sampling("respond", n=int(self.respond_n))))


@hookimpl
def register_methods(register):
    register(RaR1)
    register(RaR2)
