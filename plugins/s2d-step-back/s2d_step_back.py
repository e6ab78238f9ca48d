"""Step-Back prompting (Zheng et al. 2023, arXiv:2310.06117) as an s2d method plugin.

Stage 1 ("abstract") asks for the general principle or concept behind the question; stage 2
("answer") answers the original question with that principle in view. Each stage is one batched
call over all inputs: the method only builds prompts, s2d's stage runner does the rest (batching,
caching, token counting).
"""

import s2d
from s2d.methods.base import Method, flatten, start


class StepBack(Method):
    """Step-Back prompting: name the principle behind the question, then answer with it."""

    name = "step-back"
    stages = ("abstract", "answer")
    templates = {
        "abstract": ("{question}\n\nDo not answer yet. Take a step back: what general rule, principle or "
                     "concept does this question depend on? State it in one or two sentences."),
        "answer": ("Principle: {principle}\n\nUsing the principle above, answer this question:\n{question}\n\n"
                   "End with the answer in the form \"Final answer: <answer>\"."),
    }
    max_new_tokens = {"abstract": 96, "answer": 256}

    def run(self, runner, docs):
        questions = [self.question(d) for d in docs]
        abstracted = flatten(runner.stage("abstract", start(docs),
                                          [self.render("abstract", question=q) for q in questions],
                                          **self.sampling("abstract")))
        prompts = [self.render("answer", principle=c.text("abstract").strip(), question=questions[c.doc])
                   for c in abstracted]
        return flatten(runner.stage("answer", abstracted, prompts, **self.sampling("answer", n=1)))


@s2d.hookimpl
def register_methods(register):
    register(StepBack)
