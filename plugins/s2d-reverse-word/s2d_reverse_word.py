"""`reverse_word`: spell a name backwards. A complete s2d task plugin: splits, the System 1 prompt,
answer extraction, scoring and a worked example for few-shot CoT. No lm-eval files are needed:
`s2d eval --task reverse_word` builds the lm-eval config from this class, and
`s2d lm-eval-tasks DIR` writes files stock `lm_eval --include_path DIR` runs."""

import random
import re

import s2d
from s2d.tasks import Task, data_file, normalize


class ReverseWord(Task):
    """Spell a first name backwards (exact match, case-insensitive)."""

    name = "reverse_word"
    max_gen_toks = 64  # the budget of a System 1 answer in lm-eval

    def __init__(self, data_dir=None, seed: int = 0, size: int = 100):
        super().__init__(data_dir, seed)
        self.size = size

    def docs(self, split):
        self._check_split(split)
        names = data_file(self.name, "last_letters/us_top1000_M.txt", self.data_dir).read_text().split()
        random.Random(self.seed).shuffle(names)
        start = {"test": 0, "validation": self.size, "train": 2 * self.size}[split]
        return [{"id": f"{split}-{i}", "word": w, "question": f'Spell the word "{w}" backwards.',
                 "answer": w[::-1].lower()} for i, w in enumerate(names[start:start + self.size])]

    def system1_prompt(self, doc):
        return doc["question"] + ' Answer with the reversed word only, in the form "Answer: <word>".'

    def question(self, doc):
        return doc["question"]

    def worked_example(self, doc):
        letters = list(doc["word"].lower())
        return doc["question"], f"The letters are {', '.join(letters)}. Backwards: {', '.join(letters[::-1])}.\nFinal answer: {doc['answer']}"

    def extract(self, text):
        m = re.findall(r"(?:final answer|answer)\s*:?\s*[\"'*]*([A-Za-z]+)", text, flags=re.I)
        if m:
            return normalize(m[-1])
        words = re.findall(r"[A-Za-z]+", text)
        return normalize(words[-1]) if words else None


@s2d.hookimpl
def register_tasks(register):
    register(ReverseWord)
