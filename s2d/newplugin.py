"""`s2d new-plugin NAME --kind KIND`: a ready-to-install plugin package (pyproject with the entry
point, the class, a fast test on the scripted backend, a README), the way datasette and llm offer
plugin templates. Kept to string templates: no cookiecutter dependency for five small files."""

from __future__ import annotations

import re
from pathlib import Path

KINDS = ("method", "curator", "task", "trainer", "backend")

PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An s2d {kind} plugin: {name}."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["s2d"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.s2d]
{module} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]
'''

README = '''# {dist}

An s2d {kind} plugin: `{name}`.

```bash
pip install -e '.[test]'
s2d plugins            # {module} listed with its hooks
s2d list {kind}s       # {name}
pytest                 # the fast test, on s2d's scripted backend
```

Write it: s2d's docs/plugins.md, the section on {kind}s.
'''

CODE = {
    "method": '''"""`{name}`: an s2d method plugin. One batched engine call per stage over every input."""

import s2d
from s2d.methods import Method, flatten, start


class {cls}(Method):
    """{title}: think about the question, then answer it."""

    name = "{name}"
    stages = ("think", "answer")
    templates = {{
        "think": "{{question}}\\n\\nThink about what this question needs, in a few sentences. Do not answer yet.",
        "answer": "{{question}}\\n\\nNotes: {{notes}}\\n\\nNow answer. End with \\"Final answer: <answer>\\".",
    }}
    max_new_tokens = {{"think": 128, "answer": 256}}

    def run(self, runner, docs):
        questions = [self.question(d) for d in docs]
        thought = flatten(runner.stage("think", start(docs), [self.render("think", question=q) for q in questions],
                                       **self.sampling("think")))
        prompts = [self.render("answer", question=questions[c.doc], notes=c.text("think").strip()) for c in thought]
        return flatten(runner.stage("answer", thought, prompts, **self.sampling("answer", n=1)))


@s2d.hookimpl
def register_methods(register):
    register({cls})
''',
    "curator": '''"""`{name}`: an s2d curator plugin. Reads traces only, never labels."""

import s2d
from s2d.curators import Curator, Decision, vote
from s2d.options import option


class {cls}(Curator):
    """{title}: keep inputs whose top answer has at least `min_votes` votes."""

    name = "{name}"

    class Options(Curator.Options):  # checked when the curator is built (docs/plugins.md)
        min_votes: int = option(2, ge=1, help="votes the top answer needs")

    def curate(self, traces, runner=None):
        out = []
        for t in traces:
            counts, top, k, tied = vote([s["answer"] for s in t["samples"]])
            v = {{"counts": dict(counts)}}
            if top is None or tied or k < self.min_votes:
                out.append(Decision(t["id"], False, "too_few_votes", top, v))
            else:
                out.append(Decision(t["id"], True, f"{{k}} votes", top, v,
                                    [(t["prompt"], self.completion(top, t["samples"]))]))
        return out


@s2d.hookimpl
def register_curators(register):
    register({cls})
''',
    "task": '''"""`{name}`: an s2d task plugin. `s2d eval --task {name}` scores it through lm-eval."""

import random
import re

import s2d
from s2d.tasks import Task, normalize


class {cls}(Task):
    """{title}: add two small numbers (exact match)."""

    name = "{name}"

    def __init__(self, data_dir=None, seed: int = 0, size: int = 50):
        super().__init__(data_dir, seed)
        self.size = size

    def docs(self, split):
        self._check_split(split)
        rng = random.Random(f"{{self.seed}}-{{split}}")
        out = []
        for i in range(self.size):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            out.append({{"id": f"{{split}}-{{i}}", "question": f"What is {{a}} + {{b}}?", "answer": str(a + b)}})
        return out

    def system1_prompt(self, doc):
        return doc["question"] + " Answer with the number only."

    def question(self, doc):
        return doc["question"]

    def extract(self, text):
        m = re.findall(r"-?\\d+", text)
        return normalize(m[-1]) if m else None


@s2d.hookimpl
def register_tasks(register):
    register({cls})
''',
    "trainer": '''"""`{name}`: an s2d trainer plugin. Reuses s2d's LoRA trainer with other defaults."""

import s2d
from s2d.options import option
from s2d.trainers.lora import LoraTrainer


class {cls}(LoraTrainer):
    """{title}: LoRA with a small rank and one epoch."""

    name = "{name}"

    class Options(LoraTrainer.Options):  # LoRA's options, three defaults changed
        rank: int = option(4, ge=1, help="the adapter's rank")
        alpha: int = option(8, gt=0, help="LoRA's scaling numerator")
        epochs: int = option(1, ge=1, help="passes over the curated set")


@s2d.hookimpl
def register_trainers(register):
    register({cls})
''',
    "backend": '''"""`{name}`: an s2d backend plugin. Answers every request with its prompt, upper-cased."""

import s2d
from s2d.backends import Backend, Completion


class {cls}(Backend):
    """{title}: echo the prompt in capitals (a template for a real engine)."""

    name = "{name}"

    def generate(self, requests, *, progress=True):
        out = []
        for r in requests:
            text = r.prompt if r.prompt is not None else r.messages[-1]["content"]
            words = text.upper().split()[: r.max_new_tokens]
            out.append([Completion(" ".join(words), len(text.split()), len(words), "stop") for _ in range(r.n)])
        return out


@s2d.hookimpl
def register_backends(register):
    register({cls})
''',
}

TEST = {
    "method": '''def test_{module}_runs_one_batched_call_per_stage():
    from s2d.backends.scripted import ScriptedBackend
    from s2d.methods.base import run_method
    from s2d.plugins import get_plugins
    from s2d.traces import make_runner

    from {module} import {cls}

    class Doc:  # a task stand-in: no data needed
        name = "toy"

        def question(self, doc):
            return doc["q"]

        def extract(self, text):
            return text.rsplit(":", 1)[-1].strip() or None

    backend = ScriptedBackend(script=lambda request, sample: "notes" if "Do not answer" in request.messages[-1]["content"]
                              else "Final answer: 4")
    samples = run_method({cls}(Doc(), n=2), make_runner(backend, "{name}"), [{{"q": "2+2?"}}, {{"q": "1+3?"}}])
    assert [len(call) for call in backend.calls] == [2, 4]  # think: 2 inputs (n=2 each); answer: 4 chains
    assert all(s["answer"] == "4" for per_doc in samples for s in per_doc)
    assert "{name}" in {{e.name for e in get_plugins().entries("methods")}}
''',
    "curator": '''def test_{module}_keeps_and_drops():
    from s2d.plugins import get_plugins

    from {module} import {cls}

    class Toy:
        def target(self, answer):
            return answer

    def trace(i, answers):
        return {{"id": str(i), "prompt": [{{"role": "user", "content": "q"}}],
                 "samples": [{{"response": a, "answer": a}} for a in answers]}}

    decisions = {cls}(Toy()).curate([trace(1, ["a", "a", "b"]), trace(2, ["a", "b", "c"])])
    assert [(d.kept, d.answer) for d in decisions] == [(True, "a"), (False, "a")]
    assert "{name}" in {{e.name for e in get_plugins().entries("curators")}}
''',
    "task": '''def test_{module}_scores_its_own_answers():
    from s2d.plugins import get_plugins

    from {module} import {cls}

    task = {cls}(size=5)
    doc = task.docs("test")[0]
    assert task.score(doc, f"It is {{doc['answer']}}.")["exact_match"] == 1.0
    assert task.score(doc, "no idea")["exact_match"] == 0.0
    assert task.docs("train") != task.docs("test")
    assert "{name}" in {{e.name for e in get_plugins().entries("tasks")}}
''',
    "trainer": '''def test_{module}_options():
    from s2d.plugins import get_plugins

    from {module} import {cls}

    assert {cls}().rank == 4 and {cls}(epochs=2).epochs == 2
    assert "{name}" in {{e.name for e in get_plugins().entries("trainers")}}
''',
    "backend": '''def test_{module}_answers_every_request():
    from s2d.backends import Request
    from s2d.plugins import get_plugins

    from {module} import {cls}

    out = {cls}("none").generate([Request(prompt="hello there", n=2)])
    assert [c.text for c in out[0]] == ["HELLO THERE", "HELLO THERE"]
    assert "{name}" in {{e.name for e in get_plugins().entries("backends")}}
''',
}


def new_plugin(name: str, kind: str, out_dir: str | Path) -> Path:
    """Write the package ``s2d-NAME`` under ``out_dir``; refuse to write into an existing folder."""
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not re.fullmatch(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*", name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits, '-' or '_' (e.g. least-to-most)")
    module = "s2d_" + name.replace("-", "_")
    dist = "s2d-" + name.replace("_", "-")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    folder = Path(out_dir) / dist
    if folder.exists():
        raise ValueError(f"{folder} exists; choose another name or folder")
    fields = {"name": name, "module": module, "dist": dist, "cls": cls, "kind": kind,
              "title": name.replace("-", " ").replace("_", " ").capitalize()}
    (folder / "tests").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (folder / "README.md").write_text(README.format(**fields))
    (folder / f"{module}.py").write_text(CODE[kind].format(**fields))
    (folder / "tests" / f"test_{module}.py").write_text(TEST[kind].format(**fields))
    return folder
