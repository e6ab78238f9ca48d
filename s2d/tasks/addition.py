"""Multi-digit addition: a generated task where a column-by-column chain of thought helps and an
answer-only student has to carry in its head (the setting of stepwise internalization, Deng et
al. 2024). No data files: every split is drawn from a seeded generator."""

from __future__ import annotations

import random
import re

from s2d.hookspecs import hookimpl
from s2d.tasks.base import MAX_GENERATED, Task
from s2d.tasks.gsm8k import stated_number

PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands"]


def column_steps(a: int, b: int) -> list[str]:
    """One sentence per column, right to left, with the carry: the worked CoT."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        place = PLACES[i] if i < len(PLACES) else f"column {i + 1}"
        extra = f" + {carry}" if carry else ""
        steps.append(f"{place.capitalize()}: {x} + {y}{extra} = {total}, write {total % 10}, carry {total // 10}.")
        carry = total // 10
    if carry:
        steps.append(f"Write the final carry {carry}.")
    return steps


def place_value_steps(a: int, b: int) -> list[str]:
    """One sentence per place, left to right, then a running total: the digits are read in the
    order they are written (a small model copies the wrong digit when it must read right to left)."""
    width = max(len(str(a)), len(str(b)))
    parts = []
    for i in range(width - 1, -1, -1):
        x, y = (a // 10 ** i) % 10 * 10 ** i, (b // 10 ** i) % 10 * 10 ** i
        parts.append((x, y, x + y))
    steps = [f"{x} + {y} = {s}." for x, y, s in parts]
    total = parts[0][2]
    for _, _, s in parts[1:]:
        steps.append(f"{total} + {s} = {total + s}.")
        total += s
    return steps


WORKED = {"columns": column_steps, "place_value": place_value_steps}


class Addition(Task):
    """Add two multi-digit numbers (exact match on the sum)."""

    name = "addition"

    @classmethod
    def option_ranges(cls):
        size = {"ge": 1, "le": MAX_GENERATED}  # and at most half the pairs of `digits` digits (below)
        return {"digits": {"ge": 1, "le": 12}, "size": size, "train_size": size, "worked": {"choices": tuple(WORKED)}}

    def __init__(self, data_dir=None, seed: int = 0, digits: int = 3, size: int = 200,
                 train_size: int = 2000, worked: str = "columns", **options):
        """``digits``: digits of each operand (the first is never 0); ``size``: the test and
        validation splits; ``train_size``: the unlabeled train inputs. Splits never share a pair.
        ``worked``: the few-shot CoT's steps, ``columns`` (right to left with the carry) or
        ``place_value`` (each place's value left to right, then a running total)."""
        super().__init__(data_dir, seed, **options)
        if worked not in WORKED:
            raise ValueError(f"addition: worked must be one of {', '.join(WORKED)}, got {worked!r}")
        self.worked = worked
        self.digits = int(digits)
        if not 1 <= self.digits <= 12:
            raise ValueError(f"addition: digits must be between 1 and 12, got {digits!r}")
        self.sizes = {"test": int(size), "validation": int(size), "train": int(train_size)}
        if min(self.sizes.values()) < 1:
            raise ValueError(f"addition: split sizes must be positive, got {self.sizes}")
        low, high = 10 ** (self.digits - 1), 10 ** self.digits - 1
        pairs = (high - low + 1) ** 2
        if sum(self.sizes.values()) > pairs // 2:  # draws by rejection: keep the space far from full
            raise ValueError(f"addition: {sum(self.sizes.values())} examples ask for too many of the {pairs} "
                             f"pairs of {self.digits}-digit numbers; lower size/train_size or raise digits")

    def docs(self, split: str) -> list[dict]:
        """Test, validation, then train from one seeded stream, so a split's documents do not depend
        on later splits' sizes, and a pair (in either order) appears in one split only."""
        self._check_split(split)
        rng = random.Random(f"addition-{self.seed}-{self.digits}")
        low, high = 10 ** (self.digits - 1), 10 ** self.digits - 1
        seen: set[tuple[int, int]] = set()
        for name in ("test", "validation", "train"):
            docs = []
            while len(docs) < self.sizes[name]:
                a, b = rng.randint(low, high), rng.randint(low, high)
                key = (min(a, b), max(a, b))
                if key in seen:
                    continue
                seen.add(key)
                docs.append({"id": f"{name}-{len(docs)}", "a": a, "b": b,
                             "question": f"What is {a} + {b}?", "answer": str(a + b)})
            if name == split:
                return docs
        raise AssertionError("unreachable")

    def question(self, doc: dict) -> str:
        return doc["question"]

    def system1_prompt(self, doc: dict) -> str:
        return f"{doc['question']}\nGive only the sum, in the form \"Final answer: <number>\"."

    def target(self, answer: str) -> str:
        return f"Final answer: {answer}"

    def worked_example(self, doc: dict) -> tuple[str, str]:
        """A few-shot CoT exemplar: one place per step (see ``worked``), then the final-answer line."""
        steps = " ".join(WORKED[self.worked](doc["a"], doc["b"]))
        return doc["question"], f"{steps}\nFinal answer: {doc['answer']}"

    def extract(self, text: str) -> str | None:
        """The sum a response states (GSM8k's reading: "Final answer: 1,123.", "**Final answer:**
        1123", "\\boxed{1123}", "The answer is 478 + 645 = 1123"), else its last number."""
        stated = stated_number(text)
        if stated is not None:
            return stated
        numbers = re.findall(r"-?\d[\d,]*", text)
        return numbers[-1].replace(",", "") if numbers else None

    def score(self, doc: dict, text: str) -> dict[str, float]:
        return {"exact_match": float(self.extract(text) == doc["answer"])}


@hookimpl
def register_tasks(register):
    register(Addition)
