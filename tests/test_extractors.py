"""The answer extractors against hand-labelled responses (the issue "Faithful to the paper", item 1).

Each line of ``tests/data/extractor_corpus/<task>.jsonl`` is a response the embedded 135M model or
the opt-in 1.5B model wrote in a committed sample log (``source``: file and line at the commit that
added the corpus), verbatim, with the answer a careful reader finds in it as its final answer
(``label``, normalised the way the task compares answers; null where it gives none) and why
(``note``). A wrong final answer is labelled with that wrong answer: the corpus checks reading, not
arithmetic. The extractors must agree with every label.
"""

import json
import re
from pathlib import Path

import pytest

from s2d.tasks.coin_flip import CoinFlip
from s2d.tasks.gsm8k import GSM8k, to_number
from s2d.tasks.last_letter import LastLetter

CORPUS = Path(__file__).parent / "data" / "extractor_corpus"
TASKS = {"last_letter": LastLetter, "coin_flip": CoinFlip, "gsm8k": GSM8k}


def load(task: str) -> list[dict]:
    text = (CORPUS / f"{task}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


CASES = [pytest.param(task, row, id=f"{task}-{i}") for task in TASKS for i, row in enumerate(load(task), 1)]


@pytest.mark.parametrize(("task", "row"), CASES)
def test_the_extractor_reads_the_hand_labelled_answer(task, row):
    assert TASKS[task]().extract(row["text"]) == row["label"], f'{row["source"]}: {row["note"]}'


@pytest.mark.parametrize("task", list(TASKS))
def test_each_corpus_is_large_distinct_and_labelled_as_the_task_compares(task):
    rows = load(task)
    assert len(rows) >= 60
    assert len({r["text"] for r in rows}) == len(rows)  # no response twice
    assert all(set(r) == {"text", "label", "source", "note"} and r["note"] for r in rows)
    assert all(re.fullmatch(r"results/\S+\.samples\.jsonl:\d+", r["source"]) for r in rows)
    # Both models, and responses that give no answer as well as ones that do.
    assert any("/smollm2-135m/" in r["source"] for r in rows)
    assert any("/qwen2.5-coder-1.5b/" in r["source"] for r in rows)
    labels = [r["label"] for r in rows]
    assert None in labels and len({x for x in labels if x is not None}) > 1
    for label in filter(None, labels):
        if task == "last_letter":
            assert label == re.sub(r"\s+", " ", label.strip().lower())
        elif task == "coin_flip":
            assert label in ("yes", "no")
        else:
            assert to_number(label) == label
