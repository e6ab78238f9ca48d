"""GSM8k (Cobbe et al. 2021): grade-school math; the paper's case where distillation fails."""

from __future__ import annotations

import json
import math
import re

from s2d.hookspecs import hookimpl
from s2d.tasks.base import Task, TaskDataError, data_dir, data_file

# A number as written in a response: 1,080.00, -3, .5, 3/4 (digit groups of three after a comma, so
# "1,2 and 3" is three numbers).
WRITTEN = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?!\.\d))?|-?\.\d+"
# Where a response says its answer: "Final answer", "The answer is", "Answer:", "The answer to this
# question is", GSM8k's "####".
MARKER = re.compile(r"\b(?:final\s+)?answer(?:\s+to\s+(?:the|this|your)\s+(?:question|problem)(?:\s*\"[^\"\n]*\")?)?"
                    r"\s*(?:is|would\s+be|will\s+be|=|:)|\bfinal\s+answer\b|####", re.I)
BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
# LaTeX, markdown and currency around an answer: \( \[ $ ** \text{...} \dfrac.
LATEX = re.compile(r"\\[()\[\]]|\\[,;! ]|\*\*|\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\\%|\\\$|\$")


def to_number(text: str) -> str | None:
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    if "/" in text:  # a fraction: its value
        num, _, den = text.partition("/")
        try:
            value = float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            return None
    else:
        try:
            value = float(text)
        except ValueError:
            return None
    if not math.isfinite(value):
        return None
    value = round(value, 6)
    return str(int(value)) if value == int(value) else repr(value)


def _plain(text: str) -> str:
    """Text with LaTeX fractions as a/b and markup, currency and thin spaces dropped."""
    text = re.sub(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = text.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    return LATEX.sub(" ", text)


def clause_number(clause: str) -> str | None:
    """The number a clause gives: the result after its last "=" ("4 * 300 = 1200" -> 1200), else
    its first number ("18 apples" -> 18)."""
    clause = _plain(clause)
    if "=" in clause:
        after = re.findall(WRITTEN, clause.rsplit("=", 1)[1])
        if after:
            return to_number(after[0])
    found = re.findall(WRITTEN, clause)
    return to_number(found[0]) if found else None


def boxed_number(content: str) -> str | None:
    """The number in a \\boxed{}; None for an expression in a variable ("L - 8")."""
    plain = _plain(content)
    if "=" not in plain and re.match(r"[^\d]*[A-Za-z]", plain.replace("/", " ")) and re.search(r"\d", plain):
        return None
    return clause_number(content)


def marked_number(segment: str) -> str | None:
    """The number stated right after an answer marker (its first clause), or None when the marker
    is prose ("to find the final answer, we ...", "the final answer.") or names no number."""
    boxed = BOXED.match(re.sub(r"^(?:[\s:=*$]|\\[(\[]|\b(?:is|would be|will be)\b)+", "", segment, flags=re.I))
    if boxed:
        return boxed_number(boxed.group(1))
    if re.match(r"\s*(?:[,.;]|(?:by|to|of|for|we|and)\b)", segment, flags=re.I):
        return None
    text = _plain(segment)
    text = re.sub(r"^[\s:=*\"'`]+", "", text)
    text = re.sub(r"^(?:is|would be|will be)\b[\s:=*\"']*", "", text, flags=re.I)
    clause = re.split(r"(?<!\d)\.(?!\d)|\.(?=\s)|\n|;|\?|!", text, maxsplit=1)[0]
    return clause_number(clause)


def finished(text: str) -> bool:
    """Whether a response ends on a complete statement: one short line, or a text whose last line
    ends a sentence (a truncated one ends mid-sentence or mid-number, on an empty list item "14.",
    inside an open LaTeX group, or repeating itself)."""
    text = text.rstrip()
    if not text:
        return False
    if text.count("{") > text.count("}") or text.count("\\(") > text.count("\\)") \
            or text.count("\\[") > text.count("\\]"):
        return False
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1]
    if len(lines) == 1 and len(text) <= 200:  # one short line: an answer, too short to be cut off
        return True
    if re.fullmatch(r"(?:\d+\.|[-*]|Step \d+:?)", last) or last[-1] not in ".!?)]}%*\"'":
        return False
    sentences = [re.sub(r"^\s*(?:\d+\.|[-*]|Step \d+:)\s*", "", x).strip().lower()
                 for x in re.split(r"(?<=[.!?])\s+|\n", text) if x.strip()]
    return sentences.count(sentences[-1]) < 3  # a loop repeats its last sentence


def stated_number(text: str) -> str | None:
    """The number a response states as its answer: after the last answer marker ("Final answer:
    $1,080.00", "**Final answer:** 18", "The answer is: 18", "#### 18") or in the last numeric
    ``\\boxed{}``, whichever comes last; None when it states none."""
    candidates = []
    marks = list(MARKER.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = marked_number(text[m.end():end])
        if value is not None:
            candidates.append((m.start(), value))
    for m in BOXED.finditer(text):
        value = boxed_number(m.group(1))
        if value is not None:
            candidates.append((m.start(), value))
    return max(candidates)[1] if candidates else None


def extract_number(text: str) -> str | None:
    """The number a response gives as its final answer: the one it states (:func:`stated_number`);
    else, when it ends on a complete statement and boxes nothing, the result of its last sentence
    ("... so she has 5 + 3 = 8 apples." -> 8); else None (a truncated response, "\\boxed{L - 8}")."""
    stated = stated_number(text)
    if stated is not None:
        return stated
    if BOXED.search(text) or not finished(text):
        return None
    last = [x for x in re.split(r"(?<=[.!?])\s+|\n", _plain(text).strip()) if x.strip()]
    return clause_number(last[-1]) if last else None


class GSM8k(Task):
    """Grade-school math word problems: the number a response states as its final answer."""

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
        return extract_number(text)

    def score(self, doc: dict, text: str) -> dict[str, float]:
        return {"exact_match": float(self.extract(text) == doc["answer"])}


@hookimpl
def register_tasks(register):
    register(GSM8k)
