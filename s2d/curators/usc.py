"""`usc`: universal self-consistency (Chen et al. 2023). The model reads the N responses and
writes one final answer consistent with the majority, as "FINAL: ..."; that text is the target.
One batched model call over all inputs (greedy).

``wording``: ``s2d`` (this project's prompt, each response under "[Response i]") or ``paper`` (v1
Fig. 12 verbatim, including "20 answers" and the missing closing quote as printed). The paper does
not say how ``{answers}`` is laid out: here each answer is one line "Answer i: <text>" (its
whitespace runs, line breaks included, folded to single spaces), the list starting and ending with
a line break. ``template`` (with ``{question}`` and ``{answers}``; ``{responses}`` and ``{k}`` too)
overrides either wording's text.

The final answer is the text after the last "FINAL:" label (also "FINAL ANSWER:", "**FINAL:**",
"Final answer -", "Final Answer: **X**"), to the end of its line, or the next line when the label
ends its line; surrounding quotes, brackets and markdown are removed. A label that repeats the
prompt's placeholder ("FINAL: <your final answer>") or carries nothing credits nothing.
"""

from __future__ import annotations

import re

from s2d.errors import ConfigError
from s2d.curators.base import TARGETS, Curator, Decision
from s2d.hookspecs import hookimpl
from s2d.options import check_template, option
from s2d.stages import Chain

TEMPLATE = ("Here is a question and {k} answers that were written for it.\n\n[Question]\n{question}\n\n"
            "{responses}\n\nWhich answer do most of the responses agree on? Write that answer as one short "
            "sentence, in the form \"FINAL: <your final answer>\".")
# v1 Fig. 12, verbatim (the closing quote after <your final answer> is missing as printed).
PAPER_TEMPLATE = ("Read the question: {question}. 20 answers have been provided: {answers} Carefully read all "
                  "answers and compose the final answer such that it is consistent with the majority of variants "
                  "provided. Provide final answer as \"FINAL: <your final answer>")
WORDINGS = {"s2d": TEMPLATE, "paper": PAPER_TEMPLATE}
# What prompt() fills a template with (a user's `template` option may use any of them).
FIELDS = ("answers", "k", "question", "responses")

# The label: FINAL or FINAL ANSWER, in any case, maybe in markdown bold, then ":", "=", a dash with a
# space beside it ("Final answer - X", not "final-year"), "–" or "—".
LABEL = re.compile(r"(?<![A-Za-z])(?:\*\*|__)?[ \t]*final(?:\s+answer)?[ \t]*(?:\*\*|__)?"
                   r"(?:[ \t]*(?::|=|[\u2013\u2014])|[ \t]+-|-(?=[ \t]))[ \t]*(?:\*\*|__)?", re.I)
# What the prompt shows in place of the answer, echoed back: never an answer.
PLACEHOLDER = re.compile(r"^<?\s*(?:your\s+)?(?:final\s+)?answer(?:\s+here)?\s*>?$|^(?:\.\.\.|\u2026)$|^<\s*>$", re.I)
_EDGES = "\"'`*_\u201c\u201d\u2018\u2019 \t"
_QUOTED = re.compile(r"^[\"'\u201c\u2018](.+?)[\"'\u201d\u2019]\s*[.!]?$")


def _clean(text: str) -> str:
    text = text.strip()
    prev = None
    while text != prev:
        prev = text
        quoted = _QUOTED.match(text)
        text = (quoted.group(1) if quoted else text).strip(_EDGES).strip()
        if len(text) >= 2 and (text[0], text[-1]) in {("<", ">"), ("[", "]"), ("(", ")")}:
            inner = text[1:-1].strip()
            if not PLACEHOLDER.match(text):  # "<A.A. Milne>": the answer, kept in the prompt's brackets
                text = inner
    return text


def parse_final(text: str) -> str | None:
    """The final answer in a USC output: the text after the last final-answer label that carries
    one (see the module docstring), or None."""
    for m in reversed(list(LABEL.finditer(text))):
        rest = text[m.end():]
        line, _, after = rest.partition("\n")
        if not line.strip(_EDGES):  # "FINAL ANSWER:\nMilne": the answer on the next non-empty line
            line = next((ln for ln in after.splitlines() if ln.strip()), "")
        raw = line.strip().strip(_EDGES)
        if not raw or PLACEHOLDER.match(raw):
            continue
        answer = _clean(line)
        if answer and not PLACEHOLDER.match(answer) and re.search(r"\w", answer):
            return answer
    return None


def _tokens(text: str) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation, no articles."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def token_recall(answer: str, response: str) -> float:
    """The share of ``answer``'s words (with repeats) that ``response`` contains."""
    from collections import Counter

    ta, tr = Counter(_tokens(answer)), Counter(_tokens(response))
    return sum((ta & tr).values()) / max(1, sum(ta.values()))


def list_answers(responses: list[str]) -> str:
    """``{answers}`` of the paper's prompt: one line per answer, "Answer i: text", with a line
    break before and after the list (not in the paper: our choice)."""
    return "\n" + "\n".join(f"Answer {i}: {' '.join(r.split())}" for i, r in enumerate(responses, 1)) + "\n"


class UniversalSelfConsistency(Curator):
    """Universal self-consistency: the model writes the answer most samples agree on."""

    name = "usc"
    needs_model = True

    class Options(Curator.Options):
        # The paper cut 20 answers to 10 when they did not fit the context.
        max_responses: int = option(10, help="samples shown to the model")
        max_chars: int = option(600, help="each sample cut to this many characters")
        template: str | None = option(None, help="the prompt (null: the wording's)")
        wording: str = option("s2d", help="s2d or the paper's")
        max_new_tokens: int = option(256, help="the model's budget for its choice")
        target: str = option("answer", choices=TARGETS,
                             help=('"answer" (USC\'s own final answer, the "FINAL:" label removed) or '
                                   '"response" (the final-stage text of the sample that agrees with it)'))

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.wording not in WORDINGS:
            raise ConfigError(f"curator 'usc': wording must be one of {', '.join(WORDINGS)}, got {self.wording!r}")
        if self.template is None:
            self.template = WORDINGS[self.wording]
        # Checked now: a stray brace would otherwise fail in curate, after the whole generation.
        check_template(self.template, FIELDS, "curator 'usc': option 'template'", ConfigError)
        if not 1 <= int(self.max_responses) or not 1 <= int(self.max_chars) or not 1 <= int(self.max_new_tokens):
            raise ConfigError("curator 'usc': max_responses, max_chars and max_new_tokens must be positive integers")

    def agreeing_sample(self, samples: list[dict], final: str, question: str = "") -> dict | None:
        """The first sample that gives USC's answer, or None; a sample that disagrees is never
        returned. Where the task parses a short answer (a letter string, yes/no, a number, a
        verdict), the sample's parsed answer must equal the one parsed from USC's text. Where the
        answer is the free text itself (TriviaQA), the words of USC's answer that the question does
        not already hold (so "The father of Christopher Robin is ..." counts only its "...") must
        mostly appear in the sample (at least half), and a task that reads negations
        (``denies``) must not find them denied there."""
        key = self.task.extract(final)
        if key is not None and key != final.strip():  # a short parsed answer: equality, nothing else
            return next((s for s in samples if s.get("answer") == key and s["response"].strip()), None)
        own = [w for w in _tokens(final) if w not in set(_tokens(question))]
        if not own:
            return None
        denies = getattr(self.task, "denies", None)  # tasks that read negations (TriviaQA)
        best, score = None, 0.5
        for s in samples:
            if not s["response"].strip():
                continue
            share = token_recall(" ".join(own), s["response"])
            if denies is not None and share >= score and denies(s["response"], " ".join(own)):
                continue  # "it was not X": the sample denies USC's answer
            if share >= score:
                best, score = s, share + 1e-12  # ties go to the earlier sample
        return best

    def prompt(self, question: str, responses: list[str]) -> str:
        cut = [r[: int(self.max_chars)] for r in responses]
        listed = "\n\n".join(f"[Response {i}]\n{r}" for i, r in enumerate(cut, 1))
        return self.template.format(k=len(cut), question=question, responses=listed, answers=list_answers(cut))

    def curate(self, traces, runner=None):
        if runner is None:
            raise ConfigError("the usc curator asks the model: give it a backend (s2d curate --model ...)")
        todo, prompts, out = [], [], {}
        for t in traces:
            responses = [s["response"].strip() for s in t["samples"] if s["response"].strip()]
            responses = responses[: int(self.max_responses)]
            if not responses:
                out[t["id"]] = Decision(t["id"], False, "no_samples")
                continue
            todo.append(t)
            prompts.append(self.prompt(t["prompt"][-1]["content"], responses))
        results = runner.stage("usc", [Chain(i) for i in range(len(todo))], prompts, n=1,
                               max_new_tokens=int(self.max_new_tokens), temperature=0.0) if todo else []
        for t, chains in zip(todo, results):
            text = chains[0].response
            final = parse_final(text)
            v = {"usc_output": text, "n": len(t["samples"])}
            if not final:
                out[t["id"]] = Decision(t["id"], False, "usc_unparseable", vote=v)
            else:
                # The System 2 text behind the pick: the first sample that gives the answer USC wrote.
                agree = self.agreeing_sample(t["samples"], final, t["prompt"][-1]["content"])
                chosen = agree["response"].strip() if agree else None
                if self.target == "response" and chosen is None:
                    out[t["id"]] = Decision(t["id"], False, "usc_no_agreeing_sample", final, v)
                    continue
                target = chosen if self.target == "response" else final
                out[t["id"]] = Decision(t["id"], True, "usc", final, v, [(t["prompt"], target)], [chosen])
        return [out[t["id"]] for t in traces]


@hookimpl
def register_curators(register):
    register(UniversalSelfConsistency)
