"""Coin flip (Wei et al. 2022; Kojima et al.): is the coin still heads up after some people flip it?"""

from __future__ import annotations

import json
import random
import re

from s2d.hookspecs import hookimpl
from s2d.tasks.base import MAX_GENERATED, Task, data_file
from s2d.tasks.last_letter import names

NOTE = ' Note that "flip" here means "reverse".'
# A statement about the coin's side: "is still heads up", "is now tails up", "lands on tails",
# "will be tails", "is not heads up", "isn't still heads up", "is no longer heads up", "is not
# tails up" (heads up).
ADVERBS = r"(?:(?:still|now|actually|really|indeed|definitely|again|also)\s+)*"
STATE = re.compile(r"(?:(?P<neg>\bnot|n't|\bno longer|\bnever)\s+(?:be\s+)?" + ADVERBS + r")?"
                   r"(?P<verb>\bstill|\bremains?|\bstays?|\bis|\bare|\bwas|\bnow|\bbe|\bback|\blands?(?:\s+on)?"
                   r"|\bend(?:s|ed)?\s+up|\bshows?|\bfacing|\bflipped|\bturned|\blanded|\bleft|'s)\s+" + ADVERBS +
                   r"(?:(?P<neg2>not|no longer)\s+" + ADVERBS + r")?(?P<side>heads|tails)\b(?P<up>[- ]up\b)?",
                   flags=re.I)
# Where a response gives its answer: "Final answer:", "The answer is", "Answer:", \boxed{}, and step 2
# of RaR's original wording: "The answer to the original/rephrased question is (also/indeed)".
MARKER = re.compile(r"\bfinal\s+answer\b|\banswer(?:\s+to\s+(?:the|this|your)\s+(?:(?:original|rephrased)\s+)?"
                    r"question(?:\s*\"[^\"\n]*\")?)?\s*(?:is(?:\s+(?:also|indeed))?|would\s+be|will\s+be|:)"
                    r"|\\boxed\s*\{", flags=re.I)
WRAPPERS = re.compile(r"^(?:[\s:*\"'`$(){}\[\]]|\\[()\[\]]|\\boxed\s*\{|\\text(?:bf)?\s*\{|\bis\b|\bwould be\b)+", re.I)


def statements(text: str, premise: bool = True) -> list[tuple[int, str]]:
    """(position, yes/no) for each statement about the coin in ``text``, in order. A side named
    without a verb ("heads or tails", "a tails-up flip"), or in a conditional or a question ("If the coin
    lands tails up, ...", "Is the coin still heads up?") or a restated premise ("A coin is heads up",
    "The coin starts heads up"; ``premise=False`` keeps "A coin is ...", for a final answer's own
    sentence) asserts nothing and is left out."""
    kept = []
    for m in STATE.finditer(text):
        sentence = re.split(r"[.!?;:\n]", text[:m.start()])[-1]
        # The clause the statement is in: after the last comma or "so"/"therefore" of its sentence
        # ("Since it was initially heads up and flipped twice, it is heads up": the clause asserts).
        clause = re.split(r",|\b(?:so|therefore|thus|hence|then)\b", sentence, flags=re.I)[-1]
        if re.search(r"\b(?:if|whether|when|unless|either|neither|determine|check)\b", sentence, flags=re.I) \
                or re.search(r"\b(?:initially|originally|starts?|started|begins?|initial)\b", clause, flags=re.I) \
                or premise and re.fullmatch(r"\W*(?:\d+\.\s*)?a coin\s*", sentence, flags=re.I):
            continue  # a conditional, or the question's premise restated ("A coin is heads up.")
        if re.match(r"[^.!\n]*\?", text[m.end():]):
            continue
        heads = m.group("side").lower() == "heads"
        negated = bool(m.group("neg")) != bool(m.group("neg2"))
        if premise and heads and not negated and re.fullmatch(r"(?:is|'s)\s+heads[- ]up", m.group(0), flags=re.I) \
                and not re.search(r"\bflip", text[:m.start()], flags=re.I):
            continue  # "1. The coin is heads up." before any flip: the premise, restated
        kept.append((m.start(), "yes" if heads != negated else "no"))
    return kept


def first_statement(text: str) -> str | None:
    """yes/no from the first statement about the coin in ``text``, None where it makes none."""
    found = statements(text)
    return found[0][1] if found else None


def marked_answer(segment: str) -> str | None:
    """What follows an answer marker: yes/no ("**Yes**", "\\boxed{\\text{No}}"), a side ("heads
    up", "still tails", "not heads up") or a statement about the coin in its first sentence ("The
    coin is still heads up."); None for anything else, prose ("the answer is not immediately clear")
    or an answer that is no side ("Final answer: 100%", "The answer is: 1."): what the response says
    about the coin elsewhere then decides."""
    text = WRAPPERS.sub("", segment)
    m = re.match(r"(yes|no)\b", text, flags=re.I)
    if m:
        return m.group(1).lower()
    m = re.match(r"(not\s+|still\s+)?[\"'*]*(heads|tails)\b", text, flags=re.I)
    if m:
        heads = m.group(2).lower() == "heads"
        return "yes" if heads != bool(m.group(1) and m.group(1).lower().startswith("not")) else "no"
    sentence = re.split(r"(?<=[.!?])\s|\n", text, maxsplit=1)[0]
    found = statements(sentence, premise=False)
    return found[0][1] if found else None


class CoinFlip(Task):
    """Track a coin through flips and non-flips; answer yes or no (exact match, unparseable rate)."""

    name = "coin_flip"
    metrics = ("exact_match", "unparseable")

    @classmethod
    def option_ranges(cls):
        # people: more than any paper's chain (2 to 4) and within the names list; sizes: generated.
        size = {"ge": 1, "le": MAX_GENERATED}
        return {"people": {"ge": 1, "le": 100}, "train_size": size, "validation_size": size, "test_size": size,
                "test_source": {"choices": ("coin_val", "generated")}}

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
        """yes/no: what the last answer marker gives ("Final answer: **No**", "The answer is:
        Final answer: tails up", "\\boxed{\\text{Yes}}"); else a leading yes/no ("No, the coin
        ..."); else the last statement about the coin ("Therefore, the coin is still heads up" ->
        yes; "not heads up" / "tails up" -> no), which comes after any restated premise ("The coin
        is heads up. Ann flips it, so it is now tails up." -> no); else a sentence that opens with
        yes or no. None where the response says none of these: small models rarely answer outright."""
        marks = list(MARKER.finditer(text))
        for i in range(len(marks) - 1, -1, -1):
            if '"' in marks[i].group() and not re.search(r"heads[- ]up", marks[i].group(), flags=re.I):
                continue  # 'The answer to the question "Is the coin a physical object?" is ...': another question
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            answer = marked_answer(text[marks[i].end():end])
            if answer:
                return answer
        lead = re.match(r"\W*(yes|no)\b", text, flags=re.I)
        if lead:
            return lead.group(1).lower()
        side = re.match(r"\W*(?:it is\s+|it's\s+)?(heads|tails)[- ]up\W*$", text, flags=re.I)
        if side:  # a bare side: "Heads up."
            return "yes" if side.group(1).lower() == "heads" else "no"
        stated = statements(text)
        if not stated and len(re.findall(r"[.!?](?:\s|$)", text.strip())) <= 1:
            stated = statements(text, premise=False)  # a one-sentence answer: "The coin is heads up."
        if stated:
            return stated[-1][1]
        found = re.findall(r"(?:^|[.!?]\s+)(yes|no)\b", text, flags=re.I)
        return found[0].lower() if found else None

    def score(self, doc: dict, text: str) -> dict[str, float]:
        pred = self.extract(text)
        return {"exact_match": float(pred == doc["answer"]), "unparseable": float(pred is None)}


@hookimpl
def register_tasks(register):
    register(CoinFlip)
