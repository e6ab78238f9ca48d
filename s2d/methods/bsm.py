"""`bsm`: Branch-Solve-Merge (Saha et al. 2023) as an LLM judge of two answers.

Branch: up to five evaluation criteria for the user's question. Solve: one request per criterion,
scoring both answers 1-5 on that criterion only, the scores first. Merge: a verdict ``[[A]]``,
``[[B]]`` or ``[[C]]`` (tie), either written by the model from the solve outputs (``merge: llm``)
or computed from the mean of the per-criterion scores (``merge: average``, the distillation
paper's Sec. 4.4: "the scores from each branch are averaged"; no model call, 0 tokens). Each
model stage is one batched call over all pairs. Needs a pairwise task (documents with
``question``, ``answer_a`` and ``answer_b``).

Wordings: ``s2d`` (this project's prompts) and ``paper`` (v1 Figs. 7-9 verbatim, the paper's field
names: ``{user_query}`` = question, ``{response_a}``/``{response_b}`` = answer_a/answer_b,
``{eval_criterion}`` = the criterion's line of the branch output, ``{criterion_name}`` = its name,
``{solve_output}`` = the solve outputs, each under "<i>. <criterion name>:", joined by blank lines
(the paper does not say how; docs/methods.md). The s2d names stay available under every wording.
"""

from __future__ import annotations

import re

from s2d.hookspecs import hookimpl
from s2d.methods.base import Method, MethodConfigError, flatten, start
from s2d.options import option
from s2d.stages import Step

CRITERION = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*\**\s*([A-Za-z][^:\n*]{1,60}?)\s*\**\s*[:\-\u2013]\s*(.*)$")
# Without a list marker ("Helpfulness: does it ..."), read only when no line has one; a description is required.
BARE_CRITERION = re.compile(r"^\s*\**\s*([A-Za-z][A-Za-z /&'-]{1,40}?)\s*\**\s*[:\u2013]\s*(\S.*)$")
DEFAULT_CRITERIA = [("Helpfulness", "does it do what the user asked"),
                    ("Accuracy", "are its facts and reasoning correct"),
                    ("Relevance", "does it stay on the question"),
                    ("Depth", "is it detailed enough"),
                    ("Clarity", "is it clear and well organised")]

# Score ranges and denominators that are not scores: "1-5", "1 to 5", "(out of 5)".
# An echoed placeholder ("Assistant A: <score>/5", "X/5") and a denominator ("/5", "out of 5") are
# not scores either: only the number before them is.
_NOT_A_SCORE = re.compile(r"\b1\s*(?:-|\u2013|to)\s*5\b|<[^<>\n]{0,20}>\s*/\s*5\b|\bX\s*/\s*5\b|/\s*5\b|"
                          r"\bout\s+of\s+5\b", re.I)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?!\d|\.\d)")
_LIST_MARKER = re.compile(r"^\s*(?:\d+\s*[.)]\s+|[-*\u2022]\s+)")


def _labelled(text: str, who: str) -> float | None:
    m = re.search(rf"(?:Assistant|Response|Answer)\s*{who}\b[^\d\n]{{0,40}}?(\d+(?:\.\d+)?)", text, re.I)
    if m and 1 <= float(m.group(1)) <= 5:
        return float(m.group(1))
    return None


def score_in_line(line: str) -> float | None:
    """The first number 1-5 in ``line`` that is a score (not a "1 to 5" range, not a list number)."""
    line = _NOT_A_SCORE.sub(" ", line)
    unmarked = _LIST_MARKER.sub("", line, count=1)
    for text in (unmarked, line) if unmarked != line else (line,):
        for m in _NUMBER.finditer(text):
            if 1 <= float(m.group(1)) <= 5:
                return float(m.group(1))
    return None


def parse_scores(text: str, *, first_lines: bool) -> tuple[float, float] | None:
    """(score of A, score of B) in a solve output, or None unless both parse.

    ``first_lines`` (the paper's solve, Fig. 8: "In the first line, provide a score ... for
    Assistant A's response. In the second line, ... for Assistant B's"): only the first two
    non-empty lines are read, labelled ("Assistant A: 4/5") or else by position. Otherwise (the
    s2d solve, "Assistant A: <score>/5, Assistant B: <score>/5"): the first labelled score of each
    anywhere in the text."""
    if first_lines:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()][:2]
        head = _NOT_A_SCORE.sub(" ", "\n".join(lines))
        a, b = _labelled(head, "A"), _labelled(head, "B")
        if a is None or b is None:
            if len(lines) < 2:
                return None
            a, b = score_in_line(lines[0]), score_in_line(lines[1])
    else:
        clean = _NOT_A_SCORE.sub(" ", text)
        a, b = _labelled(clean, "A"), _labelled(clean, "B")
    return None if a is None or b is None else (a, b)


def parse_criteria(text: str, limit: int = 5) -> list[tuple[str, str]]:
    """(name, description) of each criterion line of a branch output, in order, without repeats."""
    return [(name, desc) for name, desc, _ in criteria_lines(text, limit)]


def criteria_lines(text: str, limit: int = 5) -> list[tuple[str, str, str]]:
    """(name, description, the whole line stripped) of each criterion of a branch output: the
    list lines ("1. Accuracy: ...", "- Accuracy: ..."); if there are none, the bare "Name:
    description" lines."""
    for pattern in (CRITERION, BARE_CRITERION):
        found: list[tuple[str, str, str]] = []
        for line in text.splitlines():
            m = pattern.match(line)
            if m and m.group(1).strip().lower() not in {c.lower() for c, _, _ in found}:
                found.append((m.group(1).strip(), m.group(2).strip(), line.strip()))
        if found:
            return found[:limit]
    return []


def fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


class BranchSolveMerge(Method):
    """Branch-Solve-Merge judge: criteria, a score per criterion, then a merged verdict."""

    name = "bsm"
    stages = ("branch", "solve", "merge")
    template_fields = {"branch": ("question", "user_query"),
                       "solve": ("question", "answer_a", "answer_b", "criterion", "description", "user_query",
                                 "response_a", "response_b", "eval_criterion", "criterion_name"),
                       "merge": ("question", "user_query", "evaluations", "solve_output")}
    templates = {
        "branch": ("A user asked the question below, and two assistants will answer it. Before reading the "
                   "answers, list up to five criteria for judging an answer to this question, one per line, "
                   "as \"1. <criterion>: <what it checks>\". List the criteria only.\n\n[Question]\n{question}"),
        # Scores first: a long explanation cut at the token cap must not lose them.
        "solve": ("[Question]\n{question}\n\n[Answer of assistant A]\n{answer_a}\n\n[Answer of assistant B]\n"
                  "{answer_b}\n\nJudge the two answers on one criterion only: {criterion} ({description}). "
                  "On the first line, give each a score from 1 to 5 as \"Assistant A: <score>/5, Assistant B: "
                  "<score>/5\". Then explain the scores in one or two sentences."),
        "merge": ("[Question]\n{question}\n\nTwo answers, A and B, were judged on several criteria:\n\n"
                  "{evaluations}\n\nWeigh these judgements and decide which answer is better overall. Write one "
                  "short paragraph, then the verdict on its own line: \"[[A]]\" if A is better, \"[[B]]\" if B "
                  "is better, \"[[C]]\" for a tie."),
    }
    wordings = {
        "paper": {
            # v1 Fig. 7 ("descrition" is the paper's spelling).
            "branch": ("We want to evaluate the quality of the responses provided by two AI assistants to the user "
                       "question displayed below. Your task is to propose an evaluation plan that can be executed "
                       "to compare the two responses. The evaluation plan should consist of a list of up to five "
                       "factors that one should consider such as helpfulness, relevance, accuracy, etc. In each "
                       "line, write an evaluation criterion along with a short descrition of how we should "
                       "evaluate that criterion.\nUser Question: {user_query}\nEvaluation Plan:"),
            # v1 Fig. 8.
            "solve": ("You are given a user question and responses provided by two AI assistants. Your task is to "
                      "evaluate and score the quality of the responses based on a single evaluation criterion "
                      "displayed below. Make sure to evaluate only based on the criterion specified and none "
                      "other. In the first line, provide a score between 1 to 5 for Assistant A’s response. In "
                      "the second line, provide a score between 1 to 5 for Assistant B’s response.\n\n"
                      "[User Question]\n{user_query}\n[The Start of Assistant A’s Answer]\n{response_a}\n"
                      "[The End of Assistant A’s Answer]\n[The Start of Assistant B’s Answer]\n{response_b}\n"
                      "[The End of Assistant B’s Answer]\n[Evaluation Criterion]\n{eval_criterion}\n"
                      "[End of Evaluation Criterion] Evaluation of {criterion_name}:"),
            # v1 Fig. 9.
            "merge": ("{solve_output}\n\nInstruction: You are requested to combine the five points that were "
                      "previously discussed. For each point, provide a concise explanation to clarify its "
                      "relevance. Also, include the respective score for each point to ensure a thorough "
                      "understanding. Once you’ve done this, please draft a summary paragraph that encapsulates "
                      "an overall evaluation based on these five points. Finally, present your conclusive "
                      "judgement. Use the format \"[[A]]\" if you determine assistant A to be superior, \"[[B]]\" "
                      "if you find assistant B to be better, and \"[[C]]\" in case of a tie."),
        },
    }
    max_new_tokens = {"branch": 512, "solve": 512, "merge": 1024}
    MERGES = ("llm", "average")

    class Options(Method.Options):
        max_criteria: int = option(5, help="criteria the branch stage may list")
        merge: str = option("llm", help='"llm" (a model call writes the verdict) or "average" (from the mean scores)')

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.merge not in self.MERGES:
            raise MethodConfigError(f"bsm: merge must be one of {', '.join(self.MERGES)}, got {self.merge!r}")

    # -- parsing ----------------------------------------------------------------------------------
    def scores(self, solve_text: str) -> tuple[float, float] | None:
        """A solve output's (A, B) scores: the first two lines under the paper's wording, the
        labelled "Assistant A: x/5, Assistant B: y/5" otherwise; None unless both parse."""
        return parse_scores(solve_text, first_lines=self.wording == "paper")

    def average_verdict(self, named: list[tuple[str, str]]) -> str:
        """The computed merge: each criterion's scores, their means, and "Conclusive judgement:
        [[A]]" (A's mean higher), "[[B]]" (lower) or "[[C]]" (equal); with no parsed solve, no verdict.
        ``named``: (criterion name, solve output) pairs."""
        parsed = [(name, s) for name, s in ((n, self.scores(t)) for n, t in named)]
        got = [s for _, s in parsed if s is not None]
        listed = ", ".join(f"{name} {fmt(s[0])}/{fmt(s[1])}" if s else f"{name} unparsed" for name, s in parsed)
        if not got:
            return f"Criterion scores (A/B): {listed or 'none'}\nNo solve output gave both scores: no verdict."
        mean_a, mean_b = sum(a for a, _ in got) / len(got), sum(b for _, b in got) / len(got)
        verdict = "A" if mean_a > mean_b + 1e-9 else "B" if mean_b > mean_a + 1e-9 else "C"
        return (f"Criterion scores (A/B): {listed}\nMean over {len(got)} criteria: A {fmt(mean_a)}, "
                f"B {fmt(mean_b)}\nConclusive judgement: [[{verdict}]]")

    def stats(self, samples: list[dict]) -> dict:
        """Parse rates over finished samples: ``solve_scores_parsed``, the share of solve outputs
        whose two scores parse; ``verdict_parsed``, the share of final responses with a verdict."""
        solves = [st["text"] for s in samples for st in s.get("stages", []) if st.get("stage") == "solve"]
        out = {}
        if solves:
            out["solve_scores_parsed"] = sum(self.scores(t) is not None for t in solves) / len(solves)
        if samples:
            out["verdict_parsed"] = sum(self.task.extract(s.get("response") or "") is not None
                                        for s in samples) / len(samples)
        return out

    # -- the program ------------------------------------------------------------------------------
    def run(self, runner, docs):
        for d in docs[:1]:
            missing = [k for k in ("question", "answer_a", "answer_b") if k not in d]
            if missing:
                raise MethodConfigError(f"bsm judges pairs of answers; task {self.task.name!r} documents lack "
                                        f"{', '.join(missing)}")
        branched = flatten(runner.stage("branch", start(docs), [
            self.render("branch", question=d["question"], user_query=d["question"]) for d in docs],
            **self.sampling("branch")))
        # Fan in: every criterion of a chain is one request of the single solve call.
        owners, solve_chains, prompts = [], [], []
        for c_index, chain in enumerate(branched):
            d = docs[chain.doc]
            criteria = criteria_lines(chain.text("branch"), int(self.max_criteria)) or \
                [(n, desc, f"{n}: {desc}") for n, desc in DEFAULT_CRITERIA[: int(self.max_criteria)]]
            for name, description, line in criteria:
                owners.append((c_index, name))
                solve_chains.append(chain)
                prompts.append(self.render(
                    "solve", question=d["question"], answer_a=d["answer_a"], answer_b=d["answer_b"],
                    criterion=name, description=description or name, user_query=d["question"],
                    response_a=d["answer_a"], response_b=d["answer_b"], eval_criterion=line, criterion_name=name))
        solved = runner.stage("solve", solve_chains, prompts, **self.sampling("solve", n=1))
        steps: list[list] = [[] for _ in branched]
        for (c_index, name), outs in zip(owners, solved):
            steps[c_index].append((name, outs[0].steps[-1]))
        merged_in = [chain.then(*[s for _, s in steps[i]]) for i, chain in enumerate(branched)]
        if self.merge == "average":
            note = ("(computed, no model call: the mean of each answer's solve scores; [[A]] if A's is higher, "
                    "[[B]] if lower, [[C]] if equal)")
            if getattr(runner, "record", None) is not None:
                runner.record("merge", [note] * len(merged_in))
            return [c.then(Step("merge", note, self.average_verdict([(n, s.text) for n, s in steps[i]]), 0, 0,
                                "computed")) for i, c in enumerate(merged_in)]
        prompts = []
        for i, c in enumerate(merged_in):
            q = docs[c.doc]["question"]
            prompts.append(self.render(
                "merge", question=q, user_query=q,
                evaluations="\n\n".join(f"Criterion: {name}\n{step.text.strip()}" for name, step in steps[i]),
                solve_output="\n\n".join(f"{k}. {name}:\n{step.text.strip()}"
                                         for k, (name, step) in enumerate(steps[i], 1))))
        return flatten(runner.stage("merge", merged_in, prompts, **self.sampling("merge", n=1)))


@hookimpl
def register_methods(register):
    register(BranchSolveMerge)
