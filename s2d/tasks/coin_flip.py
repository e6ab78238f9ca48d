"""Coin flip (Wei et al. 2022; Kojima et al.): is the coin still heads up after some people flip it?"""

from __future__ import annotations

import json
import random
import re

from s2d.hookspecs import hookimpl
from s2d.tasks.base import Task, data_file
from s2d.tasks.last_letter import names

NOTE = ' Note that "flip" here means "reverse".'
NEGATIVE = re.compile(r"\b(?:not|no longer|isn't|is not)\s+(?:still\s+)?heads[- ]up\b|\btails[- ]up\b|\blands? on tails\b",
                      flags=re.I)
POSITIVE = re.compile(r"\b(?:still|remains|is)\s+heads[- ]up\b", flags=re.I)


def first_statement(text: str) -> str | None:
    """yes/no from the first statement about the coin in ``text``, None where it makes none."""
    statements = [(m.start(), "no") for m in NEGATIVE.finditer(text)] + \
                 [(m.start(), "yes") for m in POSITIVE.finditer(text)]
    return min(statements)[1] if statements else None


class CoinFlip(Task):
    """Track a coin through flips and non-flips; answer yes or no (exact match, unparseable rate)."""

    name = "coin_flip"
    metrics = ("exact_match", "unparseable")

    def __init__(self, data_dir=None, seed: int = 0, people: int = 2, train_size: int = 2000,
                 validation_size: int = 500, test_size: int = 1333, test_source: str = "coin_val",
                 note: bool = False, **options):
        """``test_source``: ``coin_val`` reads the 1,333-example set of the data dir (the split the
        paper's test size matches); ``generated`` draws it like the other splits. The paper's sizes
        are train 20,000, validation 3,330, test 1,333."""
        super().__init__(data_dir, seed, **options)
        if test_source not in ("coin_val", "generated"):
            raise ValueError(f"coin_flip: test_source must be coin_val or generated, got {test_source!r}")
        self.people, self.note, self.test_source = int(people), bool(note), test_source
        self.sizes = {"train": int(train_size), "validation": int(validation_size), "test": int(test_size)}

    def docs(self, split: str) -> list[dict]:
        self._check_split(split)
        if split == "test" and self.test_source == "coin_val":
            return self._coin_val()
        pool = names(self.name, self.data_dir)
        # One generator per split, so changing one split's size never changes another split.
        rng = random.Random(f"{self.seed}-{split}")
        docs = []
        for i in range(self.sizes[split]):
            people = rng.sample(pool, self.people)
            flips = [rng.randint(0, 1) for _ in people]
            docs.append(self._doc(f"{split}-{i}", people, flips))
        return docs

    def _doc(self, doc_id, people, flips) -> dict:
        steps = " ".join(f"{p} {'flips' if f else 'does not flip'} the coin." for p, f in zip(people, flips))
        question = f"A coin is heads up. {steps} Is the coin still heads up?" + (NOTE if self.note else "")
        return {"id": doc_id, "question": question, "answer": "no" if sum(flips) % 2 else "yes"}

    def _coin_val(self) -> list[dict]:
        path = data_file(self.name, "coin_flip/coin_val.json", self.data_dir)
        records = json.loads(path.read_text(encoding="utf-8"))
        docs = []
        for i, r in enumerate(records[: self.sizes["test"]]):
            q = re.sub(r"\s+", " ", r["inputs"]).strip()
            q = re.sub(r"^Q:\s*", "", q)
            docs.append({"id": f"test-{i}", "question": q + (NOTE if self.note else ""), "answer": r["targets"]})
        return docs

    def system1_prompt(self, doc: dict) -> str:
        return doc["question"]

    def target(self, answer: str) -> str:
        return answer.capitalize()

    def worked_example(self, doc: dict) -> tuple[str, str] | None:
        """A few-shot CoT exemplar: one flip per step, then the final-answer line."""
        steps = re.findall(r"(\w[\w' -]*?) (flips|does not flip) the coin\.", doc["question"])
        if not steps:
            return None
        state, lines = "heads", []
        for person, act in steps:
            if act == "flips":
                state = "tails" if state == "heads" else "heads"
                lines.append(f"{person} flips the coin, so it is now {state} up.")
            else:
                lines.append(f"{person} does not flip the coin, so it stays {state} up.")
        answer = "Yes" if state == "heads" else "No"
        return doc["question"], "The coin starts heads up. " + " ".join(lines) + f"\nFinal answer: {answer}"

    def extract(self, text: str) -> str | None:
        """yes/no from an explicit answer, a statement about the coin after the last "final
        answer" ("Final answer: tails up" -> no), a leading yes/no, or the first statement about
        the coin ("is still heads up" -> yes, "not heads up" / "tails up" -> no): small models
        rarely say yes or no outright. The final answer's statement comes before the first one: a
        model that reasons restates the premise ("The coin is heads up") before it concludes."""
        marked = re.findall(r"(?:final answer|answer is|answer)\s*:?\s*\**\s*(yes|no)\b", text, flags=re.I)
        if marked:
            return marked[-1].lower()
        final = list(re.finditer(r"final answer", text, flags=re.I))
        concluded = first_statement(text[final[-1].end():]) if final else None
        if concluded:
            return concluded
        lead = re.match(r"\W*(yes|no)\b", text, flags=re.I)
        if lead:
            return lead.group(1).lower()
        stated = first_statement(text)
        if stated:
            return stated
        found = re.findall(r"(?:^|[.!?]\s+)(yes|no)\b", text, flags=re.I)
        return found[0].lower() if found else None

    def score(self, doc: dict, text: str) -> dict[str, float]:
        pred = self.extract(text)
        return {"exact_match": float(pred == doc["answer"]), "unparseable": float(pred is None)}


@hookimpl
def register_tasks(register):
    register(CoinFlip)
