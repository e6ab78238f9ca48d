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


# Where a response gives its answer: "Final answer:", "The answer is", "The answer to this question
# is:", "The answer to the original question is" (RaR's step 2), "the result is", "Answer:", what
# code "will output:", "La respuesta es".
MARKER = re.compile(r"\bfinal\s+answer\b|\banswer(?:\s+to\s+(?:the|this|your)\s+(?:(?:original|rephrased)\s+)?"
                    r"(?:question|problem)(?:\s*\"[^\"\n]*\")?)?\s*(?:is(?:\s+indeed)?|would\s+be|will\s+be|:)"
                    r"|\bresult\s+is|\boutput\s*(?:is|will\s+be)?\s*:|\brespuesta(?:\s+final)?\s*(?:es|:)", flags=re.I)
BOXED = re.compile(r"\\boxed\s*\{(?:\\text\s*\{)?([^{}]*)\}")
# A quoted or bold answer after a concluding verb: 'gives "ey"', 'we get "er"', 'are "Ty"',
# '= ya', 'ends with "ck"' ("The last letter of "Omar" is "r"" is a step, not a conclusion).
QUOTE = r"(?:\*\*|[\"'“”‘’`])"
ITEM = QUOTE + r"+\s*[A-Za-z][A-Za-z ,+.-]*?\s*[.!]?" + QUOTE + r"+"
QUOTED_LIST = ITEM + r"(?:\s*(?:,|\+|\band\b|,\s*and\b)\s*" + ITEM + r")*"
CONCLUSION = re.compile(r"(?:\b(?:gives?|giving|get|gets|got|obtain(?:s|ed)?|becomes?|results?\s+in|yields?|forms?|"
                        r"is|are|es|equals?|ends?\s+with|spells?)\s+(?:us\s+)?"
                        r"(?:the\s+(?:(?:new|single|final|resulting)\s+)?(?:string|word|result|letters?)\s+)?"
                        r"|\s[-–—→]\s*|->\s*)(" + QUOTED_LIST + r")"
                        r"|=\s*" + QUOTE + r"*([A-Za-z]+)\b" + QUOTE + r"*", flags=re.I)
STEP = re.compile(r"\blast\s+letter\s+(?:of|in)\s+(?:the\s+(?:word|name)\s+)?" + QUOTE + r"?[\w'-]+" + QUOTE
                  + r"?\s*$", flags=re.I)
# An unquoted conclusion ending its line: "Concatenating them gives rb.", "they form ya".
UNQUOTED = re.compile(r"\b(?:gives?|giving|get|gets|got|forms?|becomes?|results?\s+in|yields?)\s+(?:us\s+)?"
                      r"(?:the\s+(?:string|word|result|letters?)\s+)?([A-Za-z]{1,8})\s*[.!]?[ \t]*$", flags=re.I | re.M)
NOT_ANSWERS = {"answer", "result", "string", "word", "letters", "letter", "them", "us", "me", "you", "one", "two"}
MAX_WORDS = 4  # an answer longer than this is a sentence (marked, concluded or on the first line)
# Words of a sentence, not of an answer ("Final answer: The last letters are ...", "Sounds like a
# challenge."); alone, each but "final" and "answer" (a marker cut short) can be an answer.
PROSE = {"a", "the", "this", "that", "these", "those", "it", "its", "we", "i", "you", "to", "in", "of", "for", "by",
         "an", "like", "with", "as", "at", "on", "be", "was", "has", "have", "final", "answer", "step", "let", "so",
         "therefore", "thus", "here", "there", "is", "are", "not", "concatenating", "concatenate", "taking", "first",
         "since"}


def letters(phrase: str) -> str | None:
    """An answer phrase as the task compares it: lowercase, spaces collapsed, hyphenated spelling
    joined ("DEN-E-S-E" -> "denese"), and single letters spelled apart joined ("Y and E", "e, e, e"
    -> "ye", "eee")."""
    phrase = re.sub(r"\s+", " ", phrase.strip(" \t\n.,;:!?\"'*`“”‘’-")).lower()
    phrase = re.sub(r"(?<=[a-z])\s*-\s*(?=[a-z])", "", phrase)
    if not phrase:
        return None
    parts = [p for p in re.split(r"\s*(?:,|\+|-|&|\.|\band\b|\s)\s*", phrase) if p]
    if len(parts) > 1 and all(len(p) == 1 for p in parts):
        return "".join(parts)
    return phrase


def marked_letters(segment: str) -> str | None:
    """The answer right after a marker: a short phrase of letters on the same line (or the next,
    after "Final answer:" alone), unwrapped from quotes, bold, \\boxed{} and code fences; None when
    what follows is prose ("the final answer.", "The answer is: ...") or a placeholder."""
    if re.match(r"\s*[.,]", segment):
        return None
    text = re.sub(r"^(?:\s|[:*\"'`“”‘’$]|\\[(\[]|\\boxed\s*\{|\\text\s*\{|```\w*|\bis\b|\bare\b|\bwould be\b|"
                  r"\bwill be\b)+", "", segment, flags=re.I)
    line = text.split("\n", 1)[0]
    m = re.match(r"([A-Za-z]+(?:(?:\s*[,+&-]\s*|\s+(?:and\s+)?)[A-Za-z]+)*)"
                 r"\s*[.!]?[\"'*`”’}\\)]*(?:[.!]?\s*$|[.!,]\s|\s*\(|\s+[-\u2013\u2014]\s)", line)
    if not m:
        return None
    phrase = m.group(1)
    words = [w.lower() for w in phrase.replace(",", " ").split() if w.lower() != "and"]
    if len(words) > 1 and PROSE.intersection(words) and "," in phrase:  # "ya, which is ..."
        phrase = phrase.split(",", 1)[0]
        words = phrase.lower().split()
    if len(words) > MAX_WORDS or words[0] in {"final", "answer"} or len(words) > 1 and PROSE.intersection(words):
        return None
    return letters(phrase)


def extract_letters(text: str) -> str | None:
    """The letters a response gives as its answer: what the last answer marker or \\boxed{} gives
    ("Final answer is: ee", "\\boxed{jc}", "Final answer: **ya**"); else the last concluding quote
    ('Concatenating them gives "ey".', 'The last letters of "Isa" are "I".'); else a response that
    opens with a short answer of its own ("Patrick", "jg\\n\\nThis is ..."). None when it gives
    none: no marker, no conclusion and prose from the start."""
    candidates = []
    for m in MARKER.finditer(text):
        answer = marked_letters(text[m.end():])
        if answer:
            candidates.append((m.start(), answer))
    for m in BOXED.finditer(text):
        answer = letters(m.group(1))
        if answer:
            candidates.append((m.start(), answer))
    if candidates:
        return max(candidates)[1]
    concluded = [m for m in CONCLUSION.finditer(text) if not STEP.search(text[:m.start()])
                 and not re.match(r"\s*(?:,|\+)\s*" + QUOTE + r"+\s*[A-Za-z]*\s*$", text[m.end():])]  # a list cut short
    # A quoted sentence ('The rephrased question is "To solve this, let's ..."') is no answer.
    answers = [letters(re.sub(QUOTE, " ", m.group(1)) if m.group(1) else m.group(2)) for m in concluded]
    answers = [a for a in answers if a and len(a.split()) <= MAX_WORDS]
    if answers:
        return answers[-1]
    bare = [m.group(1) for m in UNQUOTED.finditer(text) if m.group(1).lower() not in PROSE | NOT_ANSWERS]
    if bare:  # "Concatenating them gives rb." at the end of a line
        return letters(bare[-1])
    first = next((line for line in text.splitlines() if line.strip()), "")
    word = r"[A-Za-z]+(?:-[A-Za-z]+)*"  # "DEN-E-S-E": a word spelled with hyphens
    m = re.fullmatch(r"\s*[\"'*`“”‘’]*\s*(" + word + r"(?:(?:\s*,\s*|\s+)" + word + f"){{0,{MAX_WORDS - 1}}}"
                     r"|[A-Za-z](?:\s*(?:[,+&.-]|\band\b|\s)\s*[A-Za-z])+)[\"'*`“”‘’]*\s*[.!]?\s*", first)
    if not m:
        return None
    words = re.split(r"[\s,]+", m.group(1).lower().strip())
    if len(words) > 1 and PROSE.intersection(words) and not all(len(w) == 1 for w in words):
        return None  # a sentence ("Rina, a Spanish footballer."), not an answer
    return letters(m.group(1))



class LastLetter(Task):
    """Concatenate the last letters of the words in a short list of names (exact match)."""

    name = "last_letter"

    @classmethod
    def option_ranges(cls):
        # The upper end is the names list's: docs() says how many examples it gives.
        return {"words_per_example": {"ge": 1}, "size": {"ge": 1}, "train_size": {"ge": 1},
                "template": {"choices": tuple(TEMPLATES)}}

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
        return extract_letters(text)


@hookimpl
def register_tasks(register):
    register(LastLetter)
