"""Pairwise LLM-as-a-judge on MT-bench turn 1, scored against the human expert votes (Zheng et al.).

Evaluation documents are the 910 (question, model pair) combinations the humans voted on, each in
both answer orders (1,820 documents), so position consistency can be measured (with
``train_source: mt_bench_disjoint``, those of the test half of the questions only).

Metrics (all aggregated over human votes, each order counted once):
  * ``agreement`` -- with ties: the verdict ([[A]], [[B]], [[C]] = tie) equals the vote;
  * ``agreement_no_tie`` -- MT-bench's "w/o tie": only votes and verdicts that are not ties;
  * ``inconsistent`` -- share of pairs whose winner changes when A and B are swapped
    (an unparseable verdict in either order counts as inconsistent);
  * ``agreement_<category>`` -- with ties, per MT-bench category.

Options:
  * ``train_source`` -- where the unlabeled ``train`` pairs come from (labels are never read during
    distillation):
      - ``"gsm8k"`` (default, the first version's): GSM8k train questions, the reference solution
        against a corrupted copy (the final number changed), in a seeded random order. OASST2, the
        paper's source, cannot be reached offline.
      - ``"mt_bench_disjoint"``: in domain. The 80 MT-bench question ids are shuffled with
        ``split_seed`` within each category and dealt into two halves of 40 (5 of each category's
        10). ``train`` is every unordered pair of the six models' turn-1 answers
        (``model_answer/*.jsonl``; 15 pairs) on each train-half question, each in a random A/B order
        seeded by ``seed`` (40 x 15 = 600 documents; a seeded subset when ``train_size`` is smaller);
        the human votes are not opened for it. ``test`` is the human-vote documents of the other
        half only (934 documents, 467 voted pairs, with ``split_seed`` 0), so no question is in both.
  * ``split_seed`` (default 0) -- the question split of ``mt_bench_disjoint`` (ignored otherwise).
  * ``train_size`` (default 2000) -- at most this many train documents.
  * ``prompt`` -- the System 1 judge prompt (also what CoT wraps):
      - ``"s2d"`` (default): this project's short instruction (``JUDGE_PROMPT``);
      - ``"paper"``: the paper's Fig. 13 "Up" input verbatim (``PAPER_PROMPT``; the MT-bench pairwise
        judge instruction with its blank lines and typographic apostrophes, "Assistant A’s Answer").

Verdicts (:meth:`MTBenchJudge.extract`): only the bracketed format the prompts ask for counts,
``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie), upper case, spaces inside allowed, bold or quotes around it
fine. Not verdicts: an echo of the format instruction (``"[[A]]" if A is better``, ``[[C]] for a
tie``), code in backticks, other letters (``[[D]]``). One letter among the verdicts: that letter.
Several different letters ("[[A]] or [[B]]", "A: [[A]] B: [[B]]", "The answer is [[C]] ... The answer
is [[A]]"): the last one marked final ("final verdict", "conclusive judgement", "verdict:"), else
none. Free text without double brackets ("A is better", "Verdict: A", "**A**", a bare "[A]") is not
read as a verdict: the paper's judges answer in brackets, and on the 135M model's replies such text
is mostly noise (lists, restated instructions); tests/data/extractor_corpus/mt_bench_judge.jsonl
holds hand-labelled replies.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict

from s2d.hookspecs import hookimpl
from s2d.tasks.base import Task, data_file

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
# A verdict written as part of the format instruction: '"[[A]]" if A is better', '[[C]] for a tie'.
FORMAT_ECHO = re.compile(r"^[\"'\u201d\u2019*]*\s*(?:[Ii]f\s+(?:[Aa]ssistant\s+)?[A-Z]\b|for\s+a\s+tie|"
                         r"if\s+you\s+(?:determine|find)|in\s+case\s+of\s+a\s+tie)")  # Fig. 9's wording too
# A verdict marked as the final one, on its line before it.
FINAL = re.compile(r"(?:final|conclusive|overall)\s+(?:verdict|judge?ment|decision)|verdict\s*:\W*$", re.I)

JUDGE_PROMPT = """You are judging two AI assistants. Read the user's question and both answers, then decide which answer is better. Consider how helpful, relevant, accurate and detailed each answer is. The order of the answers and their length must not influence you.

[User question]
{question}

[Answer of assistant A]
{answer_a}

[Answer of assistant B]
{answer_b}

Reply with your verdict only: "[[A]]" if A is better, "[[B]]" if B is better, "[[C]]" for a tie."""

# The paper's Fig. 13 (Up) input, verbatim (shared/research/paper-prompts.md section 4.5).
PAPER_PROMPT = """Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user question displayed below. Output your final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.

[User Question]
{question}

[The Start of Assistant A\u2019s Answer]
{answer_a}
[The End of Assistant A\u2019s Answer]

[The Start of Assistant B\u2019s Answer]
{answer_b}
[The End of Assistant B\u2019s Answer]"""
PROMPTS = {"s2d": JUDGE_PROMPT, "paper": PAPER_PROMPT}
TRAIN_SOURCES = ("gsm8k", "mt_bench_disjoint")


def _load_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class MTBenchJudge(Task):
    """Pairwise judge on MT-bench turn 1: agreement with human votes, position consistency."""

    name = "mt_bench_judge"
    splits = ("train", "test")
    metrics = ("agreement", "agreement_no_tie", "inconsistent") + tuple(f"agreement_{c}" for c in CATEGORIES)
    lower_is_better = ("inconsistent",)

    @property
    def aggregations(self):
        return {m: aggregate_inconsistent if m == "inconsistent" else aggregate_ratio for m in self.metrics}

    @classmethod
    def option_ranges(cls):
        # train_size: at most; a larger one takes every pair there is.
        return {"train_size": {"ge": 1}, "train_source": {"choices": TRAIN_SOURCES},
                "prompt": {"choices": tuple(PROMPTS)}}

    def __init__(self, data_dir=None, seed: int = 0, train_size: int = 2000, train_source: str = "gsm8k",
                 split_seed: int = 0, prompt: str = "s2d", **options):
        super().__init__(data_dir, seed, **options)
        self.train_size = int(train_size)
        if train_source not in TRAIN_SOURCES:
            raise ValueError(f"mt_bench_judge: train_source must be one of {', '.join(TRAIN_SOURCES)}, "
                             f"got {train_source!r}")
        if prompt not in PROMPTS:
            raise ValueError(f"mt_bench_judge: prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")
        self.train_source, self.split_seed, self.prompt = train_source, int(split_seed), prompt

    def docs(self, split: str) -> list[dict]:
        self._check_split(split)
        if split == "test":
            return self._test()
        return self._train_mt_bench() if self.train_source == "mt_bench_disjoint" else self._train()

    def _questions(self) -> dict[int, dict]:
        return {q["question_id"]: q for q in _load_jsonl(data_file(self.name, "mt_bench/question.jsonl",
                                                                   self.data_dir))}

    def question_split(self) -> tuple[set[int], set[int]]:
        """(train, test) MT-bench question ids of ``mt_bench_disjoint``: each category's ids shuffled
        with ``split_seed`` and dealt in turn (the first of every category, then the second, ...);
        the first half of that order is train, the rest test (5 and 5 of each category's 10)."""
        by_category: dict[str, list[int]] = defaultdict(list)
        for qid, q in sorted(self._questions().items()):
            by_category[q["category"]].append(qid)
        rng = random.Random(self.split_seed)
        dealt = []
        for rank, category in enumerate(sorted(by_category)):
            ids = by_category[category]
            rng.shuffle(ids)
            dealt += [(i, rank, qid) for i, qid in enumerate(ids)]
        order = [qid for _, _, qid in sorted(dealt)]
        return set(order[:len(order) // 2]), set(order[len(order) // 2:])

    def _answers(self, model: str) -> dict[int, str]:
        path = data_file(self.name, f"mt_bench/model_answer/{model}.jsonl", self.data_dir)
        return {r["question_id"]: r["choices"][0]["turns"][0] for r in _load_jsonl(path)}

    def _train_mt_bench(self) -> list[dict]:
        """Every unordered pair of the six models' answers on the train-half questions, in a seeded
        random order of A/B (the human votes are not read)."""
        questions = self._questions()
        train_ids, _ = self.question_split()
        folder = data_file(self.name, "mt_bench/question.jsonl", self.data_dir).parent / "model_answer"
        models = sorted(p.stem for p in folder.glob("*.jsonl"))
        answers = {m: self._answers(m) for m in models}
        rng = random.Random(self.seed)
        docs = []
        for qid in sorted(train_ids):
            for i, a in enumerate(models):
                for b in models[i + 1:]:
                    if qid not in answers[a] or qid not in answers[b]:
                        continue
                    first, second = (b, a) if rng.random() < 0.5 else (a, b)
                    docs.append({"id": f"{qid}-{first}-{second}", "pair": f"{qid}-{a}-{b}",
                                 "category": questions[qid]["category"], "question": questions[qid]["turns"][0],
                                 "model_a": first, "model_b": second, "answer_a": answers[first][qid],
                                 "answer_b": answers[second][qid]})
        if self.train_size < len(docs):
            keep = set(random.Random(self.seed).sample(range(len(docs)), self.train_size))
            docs = [d for i, d in enumerate(docs) if i in keep]
        return docs

    def _test(self) -> list[dict]:
        questions = self._questions()
        votes = _load_jsonl(data_file(self.name, "mt_bench/human_judgments/human_judgments.jsonl", self.data_dir))
        if self.train_source == "mt_bench_disjoint":  # the other half's questions only
            _, test_ids = self.question_split()
            votes = [v for v in votes if v["question_id"] in test_ids]
        answers: dict[str, dict[int, str]] = {}
        pairs: dict[tuple, list[str]] = defaultdict(list)
        for v in votes:
            a, b = sorted([v["model_a"], v["model_b"]])
            winner = {"model_a": v["model_a"], "model_b": v["model_b"]}.get(v["winner"], "tie")
            pairs[(v["question_id"], a, b)].append(winner)
            for m in (a, b):
                if m not in answers:
                    answers[m] = self._answers(m)
        docs = []
        for (qid, a, b), winners in sorted(pairs.items()):
            q = questions[qid]
            for first, second in ((a, b), (b, a)):
                docs.append({"id": f"{qid}-{first}-{second}", "pair": f"{qid}-{a}-{b}", "category": q["category"],
                             "question": q["turns"][0], "model_a": first, "model_b": second,
                             "answer_a": answers[first][qid], "answer_b": answers[second][qid],
                             "human_winners": winners})
        return docs

    def _train(self) -> list[dict]:
        rows = _load_jsonl(data_file(self.name, "gsm8k/train.jsonl", self.data_dir))
        rng = random.Random(self.seed)
        docs = []
        for i in rng.sample(range(len(rows)), min(self.train_size, len(rows))):
            solution = re.sub(r"<<[^>]*>>", "", rows[i]["answer"])
            body, final = solution.rsplit("####", 1)
            final = final.strip()
            wrong = str(int(final.replace(",", "")) + rng.choice([-3, -2, -1, 1, 2, 5, 10])) \
                if final.replace(",", "").lstrip("-").isdigit() else final + "0"
            good = f"{body.strip()}\nThe answer is {final}."
            bad = f"{body.strip()}\nThe answer is {wrong}."
            swap = rng.random() < 0.5
            docs.append({"id": f"gsm8k-train-{i}", "pair": f"gsm8k-train-{i}", "category": "math",
                         "question": rows[i]["question"], "model_a": "x" if not swap else "y",
                         "model_b": "y" if not swap else "x", "answer_a": bad if swap else good,
                         "answer_b": good if swap else bad})
        return docs

    def system1_prompt(self, doc: dict) -> str:
        return PROMPTS[self.prompt].format(question=doc["question"], answer_a=doc["answer_a"],
                                           answer_b=doc["answer_b"])

    def target(self, answer: str) -> str:
        return f"[[{answer}]]"

    def extract(self, text: str) -> str | None:
        """The verdict: "A", "B", "C" (tie) or None (rules in the module docstring)."""
        verdicts = []  # (letter, marked final?)
        for m in VERDICT.finditer(text):
            before, after = text[:m.start()], text[m.end():]
            if FORMAT_ECHO.match(after) or (before.endswith("`") and after.startswith("`")):
                continue
            line = before[before.rfind("\n") + 1:]
            verdicts.append((m.group(1), bool(FINAL.search(line.strip("*\"' ")))))
        letters = {v for v, _ in verdicts}
        if len(letters) == 1:
            return letters.pop()
        final = [v for v, marked in verdicts if marked]
        return final[-1] if final else None

    # -- consistency curation: the swap ----------------------------------------------------------
    def perturb(self, doc: dict) -> dict:
        return {**doc, "id": doc["id"] + "-swapped", "model_a": doc["model_b"], "model_b": doc["model_a"],
                "answer_a": doc["answer_b"], "answer_b": doc["answer_a"]}

    def unperturb_answer(self, answer: str | None) -> str | None:
        return {"A": "B", "B": "A"}.get(answer, answer)

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, doc: dict, text: str) -> dict:
        verdict = self.extract(text)
        winner = {"A": doc["model_a"], "B": doc["model_b"], "C": "tie"}.get(verdict)
        agree = sum(w == winner for w in doc["human_winners"])
        n = len(doc["human_winners"])
        no_tie = [w for w in doc["human_winners"] if w != "tie"] if winner not in (None, "tie") else []
        out = {"agreement": (agree, n),
               "agreement_no_tie": (sum(w == winner for w in no_tie),
                                    len(no_tie) if winner != "tie" else 0),
               # Per pair, the winner named in each order; aggregate_inconsistent compares them.
               "inconsistent": (doc["pair"], winner)}
        for c in CATEGORIES:
            out[f"agreement_{c}"] = (agree, n) if doc["category"] == c else None
        return out


def aggregate_ratio(items) -> float:
    """Sum of matches over sum of votes, skipping documents a metric does not apply to."""
    items = [i for i in items if i is not None]
    total = sum(n for _, n in items)
    return sum(k for k, _ in items) / total if total else float("nan")


def aggregate_inconsistent(items) -> float:
    by_pair = defaultdict(list)
    for pair, winner in items:
        by_pair[pair].append(winner)
    pairs = [w for w in by_pair.values() if len(w) == 2]
    return sum(a is None or b is None or a != b for a, b in pairs) / len(pairs) if pairs else float("nan")


@hookimpl
def register_tasks(register):
    register(MTBenchJudge)
