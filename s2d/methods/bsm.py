"""`bsm`: Branch-Solve-Merge (Saha et al. 2023) as an LLM judge of two answers.

Branch: up to five evaluation criteria for the user's question. Solve: one request per criterion,
scoring both answers 1-5 on that criterion only. Merge: the per-criterion results in, a verdict
``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie) out. Each stage is one batched call over all pairs.
Needs a pairwise task (documents with ``question``, ``answer_a`` and ``answer_b``).
"""

from __future__ import annotations

import re

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, MethodConfigError, flatten, start

CRITERION = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*\**\s*([A-Za-z][^:\n*]{1,60}?)\s*\**\s*[:\-\u2013]\s*(.*)$")
DEFAULT_CRITERIA = [("Helpfulness", "does it do what the user asked"),
                    ("Accuracy", "are its facts and reasoning correct"),
                    ("Relevance", "does it stay on the question"),
                    ("Depth", "is it detailed enough"),
                    ("Clarity", "is it clear and well organised")]


def parse_criteria(text: str, limit: int = 5) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        m = CRITERION.match(line)
        if m and m.group(1).strip().lower() not in {c.lower() for c, _ in found}:
            found.append((m.group(1).strip(), m.group(2).strip()))
    return found[:limit]


class BranchSolveMerge(Method):
    """Branch-Solve-Merge judge: criteria, a score per criterion, then a merged verdict."""

    name = "bsm"
    stages = ("branch", "solve", "merge")
    templates = {
        "branch": ("A user asked the question below, and two assistants will answer it. Before reading the "
                   "answers, list up to five criteria for judging an answer to this question, one per line, "
                   "as \"1. <criterion>: <what it checks>\". List the criteria only.\n\n[Question]\n{question}"),
        "solve": ("[Question]\n{question}\n\n[Answer of assistant A]\n{answer_a}\n\n[Answer of assistant B]\n"
                  "{answer_b}\n\nJudge the two answers on one criterion only: {criterion} ({description}). "
                  "Explain in one or two sentences, then give each a score from 1 to 5 as "
                  "\"Assistant A: <score>/5, Assistant B: <score>/5\"."),
        "merge": ("[Question]\n{question}\n\nTwo answers, A and B, were judged on several criteria:\n\n"
                  "{evaluations}\n\nWeigh these judgements and decide which answer is better overall. Write one "
                  "short paragraph, then the verdict on its own line: \"[[A]]\" if A is better, \"[[B]]\" if B "
                  "is better, \"[[C]]\" for a tie."),
    }
    max_new_tokens = {"branch": 160, "solve": 96, "merge": 160}

    @classmethod
    def options(cls):
        return {"max_criteria": 5}

    def run(self, runner, docs):
        for d in docs[:1]:
            missing = [k for k in ("question", "answer_a", "answer_b") if k not in d]
            if missing:
                raise MethodConfigError(f"bsm judges pairs of answers; task {self.task.name!r} documents lack "
                                        f"{', '.join(missing)}")
        branched = flatten(runner.stage("branch", start(docs), [self.render("branch", question=d["question"])
                                                                 for d in docs], **self.sampling("branch")))
        # Fan in: every criterion of a chain is one request of the single solve call.
        owners, solve_chains, prompts = [], [], []
        for c_index, chain in enumerate(branched):
            d = docs[chain.doc]
            criteria = parse_criteria(chain.text("branch"), int(self.max_criteria)) or \
                DEFAULT_CRITERIA[: int(self.max_criteria)]
            for name, description in criteria:
                owners.append((c_index, name))
                solve_chains.append(chain)
                prompts.append(self.render("solve", question=d["question"], answer_a=d["answer_a"],
                                           answer_b=d["answer_b"], criterion=name, description=description or name))
        solved = runner.stage("solve", solve_chains, prompts, **self.sampling("solve", n=1))
        steps: list[list] = [[] for _ in branched]
        for (c_index, name), outs in zip(owners, solved):
            steps[c_index].append((name, outs[0].steps[-1]))
        merged_in = [chain.then(*[s for _, s in steps[i]]) for i, chain in enumerate(branched)]
        prompts = [self.render("merge", question=docs[c.doc]["question"],
                               evaluations="\n\n".join(f"Criterion: {name}\n{step.text.strip()}"
                                                       for name, step in steps[i]))
                   for i, c in enumerate(merged_in)]
        return flatten(runner.stage("merge", merged_in, prompts, **self.sampling("merge", n=1)))


@hookimpl
def register_methods(register):
    register(BranchSolveMerge)
