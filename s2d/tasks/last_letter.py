"""Last-letter concatenation (Kojima et al. 2022; the paper's RaR task, 2 words per example)."""

from __future__ import annotations

import random
import re

from s2d.hookspecs import hookimpl
from s2d.tasks.base import Task, data_file, normalize

TEMPLATES = {
    "paper": 'Take the last letters of the words in "{words}" and concatenate them.',
    "kojima": 'Take the last letters of each words in "{words}" and concatenate them.',  # sic, as in their set
}


def names(task: str, data_dir=None) -> list[str]:
    """The 1,000 most frequent US male then female first names (names-dataset 3.1.0), in rank order."""
    out = []
    for part in ("M", "F"):
        path = data_file(task, f"last_letters/us_top1000_{part}.txt", data_dir)
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


class LastLetter(Task):
    """Concatenate the last letters of the words in a short list of names (exact match)."""

    name = "last_letter"

    def __init__(self, data_dir=None, seed: int = 1, words_per_example: int = 2, size: int = 200,
                 template: str = "paper", train_size: int | None = None, **options):
        """``size``: examples per split; ``train_size``: the train split's (unlabeled inputs) when
        it should differ, up to every name the test and validation splits leave unused. The first
        ``size`` train examples are the same whatever ``train_size`` is."""
        super().__init__(data_dir, seed, **options)
        self.k = int(words_per_example)
        self.size = int(size)
        self.sizes = {"test": self.size, "validation": self.size,
                      "train": self.size if train_size is None else int(train_size)}
        if min(self.sizes.values()) < 1:
            raise ValueError(f"last_letter: split sizes must be positive, got {self.sizes}")
        if template not in TEMPLATES:
            raise ValueError(f"last_letter: template must be one of {', '.join(TEMPLATES)}, got {template!r}")
        self.template = TEMPLATES[template]

    def docs(self, split: str) -> list[dict]:
        """Kojima et al.'s generator: shuffle the names with ``random.Random(seed)`` and take
        ``words_per_example`` at a time. The test split is the first ``size`` examples, so
        words_per_example=4, seed=1, size=500, template='kojima' gives the data dir's
        last_letters.json exactly; validation and train follow, skipping any example that shares a
        word with an earlier split, so splits never share words."""
        self._check_split(split)
        pool = names(self.name, self.data_dir)
        random.Random(self.seed).shuffle(pool)
        examples = [pool[i:i + self.k] for i in range(0, len(pool) - self.k + 1, self.k)]
        splits: dict[str, list[list[str]]] = {"test": examples[: self.size]}
        used = {w.lower() for ex in splits["test"] for w in ex}
        rest = iter(examples[self.size:])
        for name in ("validation", "train"):
            chosen = []
            for ex in rest:
                if used.isdisjoint(w.lower() for w in ex):
                    chosen.append(ex)
                    used.update(w.lower() for w in ex)
                    if len(chosen) == self.sizes[name]:
                        break
            splits[name] = chosen
        if len(splits[split]) < self.sizes[split]:
            option = "train_size" if split == "train" else "size"
            raise ValueError(f"last_letter: {option}={self.sizes[split]} is too large: the names list gives at most "
                             f"{len(splits[split])} {split} examples of {self.k} word(s) that share no word with "
                             f"earlier splits")
        return [self._doc(f"{split}-{i}", ex) for i, ex in enumerate(splits[split])]

    def _doc(self, doc_id: str, words: list[str]) -> dict:
        return {"id": doc_id, "question": self.template.format(words=" ".join(words)), "words": words,
                "answer": "".join(w[-1] for w in words)}

    def system1_prompt(self, doc: dict) -> str:
        return doc["question"]

    def worked_example(self, doc: dict) -> tuple[str, str]:
        """A few-shot CoT exemplar: one word per step, then the final-answer line."""
        steps = " ".join(f'The last letter of "{w}" is "{w[-1]}".' for w in doc["words"])
        return doc["question"], f'{steps} Concatenating them gives "{doc["answer"]}".\nFinal answer: {doc["answer"]}'

    def extract(self, text: str) -> str | None:
        # An explicit final answer wins; else the last quoted or bold token; else the last short word.
        m = re.findall(r"(?:final answer|answer is|result is)\s*:?\s*[\"'*]*([A-Za-z]+)", text, flags=re.I)
        if m:
            return normalize(m[-1])
        m = re.findall(r"[\"'*]{1,2}([A-Za-z]{1,8})[\"'*]{1,2}", text)
        if m:
            return normalize(m[-1])
        words = re.findall(r"\b[A-Za-z]+\b", text)
        return normalize(words[-1]) if words else None


@hookimpl
def register_tasks(register):
    register(LastLetter)
