"""What a task gives s2d: splits of documents, the System 1 prompt, answer extraction and scoring,
and (where the paper uses one) an input perturbation for consistency curation.

A document is a plain dict with at least ``id`` and the fields its prompt needs; evaluation splits
also carry the gold answer. The ``train`` split is used unlabeled: distillation never reads its
answers. lm-eval task files under ``tasks/`` call these same functions, so s2d and the stock
``lm_eval`` CLI score identically.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

from s2d.errors import TaskDataError

# The most documents a task generates for one split: the paper's largest split is 20,000, and a
# million already takes hours to sample; more is a typo (size=10**9 would never finish).
MAX_GENERATED = 1_000_000


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory: an explicit setting, else ``S2D_DATA_DIR``, else None."""
    value = explicit or os.environ.get("S2D_DATA_DIR")
    return Path(value).expanduser() if value else None


def data_file(task: str, relative: str, explicit: str | os.PathLike | None = None) -> Path:
    root = data_dir(explicit)
    if root is None:
        raise TaskDataError(
            f"task {task!r} reads {relative} from the data directory, and none is set: set S2D_DATA_DIR "
            f"(or pass data_dir=...) to a folder holding {relative} (this project's shared/data has it)")
    path = root / relative
    if not path.is_file():
        raise TaskDataError(f"task {task!r}: {path} is missing (S2D_DATA_DIR={root}); the folder must hold "
                            f"{relative}")
    return path


class Task:
    """Base class for task plugins (``name`` plus a docstring, like every plugin object)."""

    name: str = ""
    splits: tuple[str, ...] = ("train", "validation", "test")
    metrics: tuple[str, ...] = ("exact_match",)
    # metric -> how lm-eval aggregates its per-document values (default: the mean), and the
    # metrics where lower is better.
    aggregations: dict = {}
    lower_is_better: tuple[str, ...] = ()

    def __init__(self, data_dir: str | os.PathLike | None = None, seed: int = 0, **options: Any):
        self.data_dir = data_dir
        self.seed = seed
        self.options = options

    @classmethod
    def option_ranges(cls) -> dict[str, dict]:
        """Each constructor option's range beside its type (the type is its default's; the range is
        spelled as :func:`s2d.options.check_range` reads it), checked before the task is built."""
        return {}

    @property
    def lm_eval_name(self) -> str:
        return f"s2d_{self.name}"

    def docs(self, split: str) -> list[dict]:
        raise NotImplementedError

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")

    def system1_prompt(self, doc: dict) -> str:
        """The user message a System 1 model (and the distilled model) sees."""
        raise NotImplementedError

    def question(self, doc: dict) -> str:
        """The bare input a System 2 method wraps in its own prompts (default: the System 1 prompt)."""
        return self.system1_prompt(doc)

    def answer_format(self, doc: dict) -> str:
        """The System 1 prompt's instruction on how to answer (what it adds after :meth:`question`;
        "" when it adds nothing), for methods that want the task's own answer form."""
        full, bare = self.system1_prompt(doc), self.question(doc)
        return full[len(bare):].strip() if full.startswith(bare) else ""

    def target(self, answer: str) -> str:
        """The training completion for a curated answer: the answer alone, in the form the System 1
        prompt asks for, so the distilled model's direct answer parses the same way."""
        return answer

    def extract(self, text: str) -> str | None:
        """The answer in a model's free text, or None when none can be found."""
        raise NotImplementedError

    def score(self, doc: dict, text: str) -> dict[str, float]:
        """Per-document metrics; lm-eval averages them."""
        pred = self.extract(text)
        return {"exact_match": float(pred is not None and pred == normalize(str(doc["answer"])))}

    def perturb(self, doc: dict) -> dict | None:
        """A variant of ``doc`` whose answer should agree with the original's, or None."""
        return None

    def unperturb_answer(self, answer: str | None) -> str | None:
        """Map an answer to the perturbed doc back to the original's terms."""
        return answer


def subset(docs: list[dict], size: int, seed: int = 0) -> list[dict]:
    """A seeded random subset of at least ``size`` documents, in their original order. Documents of
    one group (``pair``: the two orders of a judged pair) are taken or left together."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        groups.setdefault(str(d.get("pair", d.get("id", i))), []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    for g in order:
        if len(chosen) >= size:
            break
        chosen += groups[g]
    return [docs[i] for i in sorted(chosen)]


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())
