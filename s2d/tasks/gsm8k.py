"""GSM8k (Cobbe et al. 2021): grade-school math; the paper's case where distillation fails."""

from __future__ import annotations

import json
import re

from s2d.hookspecs import hookimpl
from s2d.tasks.base import Task, TaskDataError, data_dir, data_file

NUMBER = r"-?[\d,]*\.?\d+"


def to_number(text: str) -> str | None:
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


class GSM8k(Task):
    """Grade-school math word problems: the number after "Final answer:" (else the last number)."""

    name = "gsm8k"
    splits = ("train", "test")

    def docs(self, split: str) -> list[dict]:
        self._check_split(split)
        if data_dir(self.data_dir) is not None:
            path = data_file(self.name, f"gsm8k/{split}.jsonl", self.data_dir)
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            rows = self._hub(split)
        return [{"id": f"{split}-{i}", "question": r["question"],
                 "answer": to_number(r["answer"].split("####")[-1]),
                 "solution": re.sub(r"<<[^>]*>>", "", r["answer"].split("####")[0]).strip()}
                for i, r in enumerate(rows)]

    def _hub(self, split: str) -> list[dict]:
        try:
            import datasets

            return list(datasets.load_dataset("openai/gsm8k", "main", split=split))
        except Exception as exc:  # noqa: BLE001 - offline, no datasets, hub down: one clear message
            raise TaskDataError(f"task 'gsm8k': no data dir (set S2D_DATA_DIR to a folder holding gsm8k/{split}.jsonl) "
                                f"and the hub dataset openai/gsm8k could not be loaded ({exc})") from None

    def question(self, doc: dict) -> str:
        return doc["question"]

    def target(self, answer: str) -> str:
        return f"Final answer: {answer}"

    def worked_example(self, doc: dict) -> tuple[str, str] | None:
        """A few-shot CoT exemplar: the reference solution, then the final-answer line."""
        if not doc.get("solution") or doc.get("answer") is None:
            return None
        return doc["question"], f"{doc['solution']}\nFinal answer: {doc['answer']}"

    def system1_prompt(self, doc: dict) -> str:
        return f"{doc['question']}\nGive only the final answer as a number, in the form \"Final answer: <number>\"."

    def extract(self, text: str) -> str | None:
        marked = re.findall(r"final answer\s*(?:is)?\s*:?\s*\$?\s*(" + NUMBER + ")", text, flags=re.I)
        if marked:
            return to_number(marked[-1])
        numbers = re.findall(NUMBER, text)
        return to_number(numbers[-1]) if numbers else None

    def score(self, doc: dict, text: str) -> dict[str, float]:
        return {"exact_match": float(self.extract(text) == doc["answer"])}


@hookimpl
def register_tasks(register):
    register(GSM8k)
