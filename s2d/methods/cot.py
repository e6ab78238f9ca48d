"""`cot`: Chain-of-Thought, zero-shot ("step by step", then "Final answer: ...") or few-shot
(``shots=k`` worked examples from the task's train split, as earlier chat turns).

Wordings: ``s2d`` (this project's prompt) and ``paper`` (v1 Fig. 10 verbatim, zero-shot; its
``{input}`` is the question, and ``{question}`` works too). The paper's CoT judge prompts (Table 3)
are not printed, so on ``mt_bench_judge`` the ``paper`` wording keeps the s2d judge variant. Few-shot
exemplars, under either wording, are rendered with the same template (the paper's 8-shot prompt is
not printed either).
"""

from __future__ import annotations

import random

from s2d.hookspecs import hookimpl
from s2d.methods.base import Chain, Method, MethodConfigError, flatten, start
from s2d.options import option


class ChainOfThought(Method):
    """Chain-of-Thought: reason step by step, then "Final answer: ..." (zero- or few-shot)."""

    name = "cot"
    stages = ("reason",)
    template_fields = {"reason": ("question", "input")}
    templates = {
        "reason": ("Question: {question}\n\nWork through the problem step by step. Then, on the last line, "
                   "write the answer in the form \"Final answer: <answer>\".\n\nSolution:"),
        # The judge's input already asks for a verdict format; keep it, only ask for reasons first.
        "reason@mt_bench_judge": ("{question}\n\nBefore the verdict, compare the two answers step by step "
                                  "in a few sentences. Finish with the verdict on its own line."),
    }
    wordings = {
        "paper": {
            # v1 Fig. 10 (typographic apostrophe as printed).
            "reason": ("Your task is to answer the question below. Give step by step reasoning before you answer, "
                       "and when you’re ready to answer, please use the format \"Final answer: ...\"\n"
                       "Question: {input}\nSolution:"),
            # NOT FOUND in the paper: the judge keeps the s2d variant.
            "reason@mt_bench_judge": templates["reason@mt_bench_judge"],
        },
    }
    max_new_tokens = {"reason": 1024}

    class Options(Method.Options):
        shots: int = option(0, help="worked train examples before the question")
        shot_seed: int = option(0, help="which ones")
        shots_resample: bool = option(False, help=(
            "sample j of every input sees its own exemplar set (drawn with seed shot_seed + j), so the "
            "samples differ by their prompts and can stay greedy; sample 0 sees the shots_resample=false set"))
        shot_pool: int | None = option(None, help=(
            "draw from the first N train documents only (null: the whole split), so a larger train "
            "split does not change the prompts"))

    def __init__(self, task, **options):
        super().__init__(task, **options)
        self.pool: list[tuple[str, tuple[str, str]]] = []  # (train doc id, (question, solution))
        self._sets: dict[int, tuple[list, list]] = {}
        if self.shots:
            if not isinstance(self.shots, int) or self.shots < 0:
                raise MethodConfigError(f"{self.name}: shots must be a non-negative integer, got {self.shots!r}")
            if self.shot_pool is not None and (not isinstance(self.shot_pool, int) or self.shot_pool < 1):
                raise MethodConfigError(f"{self.name}: shot_pool must be a positive integer or null, got {self.shot_pool!r}")
            worked = self.example_maker(task)
            train = task.docs("train")[: self.shot_pool] if worked else []
            self.pool = [(str(d["id"]), ex) for d, ex in ((d, worked(d)) for d in train) if ex]
            if len(self.pool) < self.shots + 1:
                raise MethodConfigError(f"{self.name} shots={self.shots}: task {task.name!r} offers {len(self.pool)} worked "
                                        f"examples in its train split (needs shots + 1)")

    @property
    def examples(self) -> list[tuple[str, str]]:
        """The exemplars of sample 0 (the System 2 evaluation's prompt)."""
        return [ex for _, ex in self.exemplars({"id": None}, 0)]

    def exemplars(self, doc: dict, sample: int) -> list[tuple[str, tuple[str, str]]]:
        """The (train id, worked example) pairs that ``sample`` of ``doc`` sees. An input of the train
        split never sees its own worked example (its answer): a spare exemplar of the set replaces it."""
        if not self.shots:
            return []
        j = sample if self.shots_resample else 0
        if j not in self._sets:
            rng = random.Random(int(self.shot_seed) + j)
            chosen = rng.sample(self.pool, int(self.shots))
            spares = [ex for ex in rng.sample(self.pool, int(self.shots) + 1) if ex not in chosen]
            self._sets[j] = (chosen, spares)
        chosen, spares = self._sets[j]
        own, question = str(doc.get("id")), doc.get("question")

        def is_own(item):  # the same document, or the same question under another id
            return item[0] == own or (question is not None and item[1][0] == question)

        if not any(is_own(x) for x in chosen):
            return chosen
        extra = iter([x for x in spares + self.pool if not is_own(x) and x not in chosen])
        return [next(extra) if is_own(x) else x for x in chosen]

    def messages(self, doc, sample: int = 0) -> list[dict]:
        msgs = []
        for _, (question, solution) in self.exemplars(doc, sample):
            msgs += [{"role": "user", "content": self.render("reason", question=question, input=question)},
                     {"role": "assistant", "content": solution}]
        q = self.question(doc)
        return msgs + [{"role": "user", "content": self.render("reason", question=q, input=q)}]

    def example_maker(self, task):
        """doc -> (question, worked solution) or None: what an exemplar shows."""
        return getattr(task, "worked_example", None)

    def run(self, runner, docs):
        stage = self.stages[0]  # "reason"; fewshot's "answer"
        sampling = self.sampling(stage)
        if not (self.shots and self.shots_resample) or sampling["n"] == 1:
            return flatten(runner.stage(stage, start(docs), [self.messages(d) for d in docs], **sampling))
        # One chain per (input, sample), each with its own exemplars; sample j stays sample j in the
        # cache whatever n is, so n=4 reuses the first four of an n=8 run.
        chains = [Chain(i, index=j) for i in range(len(docs)) for j in range(sampling["n"])]
        prompts = [self.messages(docs[c.doc], c.index) for c in chains]
        return flatten(runner.stage(stage, chains, prompts, **{**sampling, "n": 1}))

    def sample_record(self, doc, chain) -> dict:
        if not self.shots:
            return {}
        return {"exemplars": [i for i, _ in self.exemplars(doc, chain.index if self.shots_resample else 0)]}


@hookimpl
def register_methods(register):
    register(ChainOfThought)
