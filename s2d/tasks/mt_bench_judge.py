"""Pairwise LLM-as-a-judge on MT-bench turn 1, scored against the human expert votes (Zheng et al.).

Evaluation documents are the 910 (question, model pair) combinations the humans voted on, each in
both answer orders (1,820 documents), so position consistency can be measured.

Metrics (all aggregated over human votes, each order counted once):
  * ``agreement`` -- with ties: the verdict ([[A]], [[B]], [[C]] = tie) equals the vote;
  * ``agreement_no_tie`` -- MT-bench's "w/o tie": only votes and verdicts that are not ties;
  * ``inconsistent`` -- share of pairs whose winner changes when A and B are swapped
    (an unparseable verdict in either order counts as inconsistent);
  * ``agreement_<category>`` -- with ties, per MT-bench category.

The unlabeled ``train`` split must not share questions with MT-bench, and OASST2 cannot be reached
offline, so it is built from GSM8k train questions: the reference solution against a corrupted one
(the final number changed), in a seeded random order. Labels are never read during distillation.
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

JUDGE_PROMPT = """You are judging two AI assistants. Read the user's question and both answers, then decide which answer is better. Consider how helpful, relevant, accurate and detailed each answer is. The order of the answers and their length must not influence you.

[User question]
{question}

[Answer of assistant A]
{answer_a}

[Answer of assistant B]
{answer_b}

Reply with your verdict only: "[[A]]" if A is better, "[[B]]" if B is better, "[[C]]" for a tie."""


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

    def __init__(self, data_dir=None, seed: int = 0, train_size: int = 2000, **options):
        super().__init__(data_dir, seed, **options)
        self.train_size = int(train_size)

    def docs(self, split: str) -> list[dict]:
        self._check_split(split)
        return self._test() if split == "test" else self._train()

    def _test(self) -> list[dict]:
        questions = {q["question_id"]: q for q in _load_jsonl(data_file(self.name, "mt_bench/question.jsonl",
                                                                        self.data_dir))}
        votes = _load_jsonl(data_file(self.name, "mt_bench/human_judgments/human_judgments.jsonl", self.data_dir))
        answers: dict[str, dict[int, str]] = {}
        pairs: dict[tuple, list[str]] = defaultdict(list)
        for v in votes:
            a, b = sorted([v["model_a"], v["model_b"]])
            winner = {"model_a": v["model_a"], "model_b": v["model_b"]}.get(v["winner"], "tie")
            pairs[(v["question_id"], a, b)].append(winner)
            for m in (a, b):
                if m not in answers:
                    path = data_file(self.name, f"mt_bench/model_answer/{m}.jsonl", self.data_dir)
                    answers[m] = {r["question_id"]: r["choices"][0]["turns"][0] for r in _load_jsonl(path)}
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
        return JUDGE_PROMPT.format(question=doc["question"], answer_a=doc["answer_a"], answer_b=doc["answer_b"])

    def target(self, answer: str) -> str:
        return f"[[{answer}]]"

    def extract(self, text: str) -> str | None:
        found = VERDICT.findall(text)
        return found[-1] if found else None

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
