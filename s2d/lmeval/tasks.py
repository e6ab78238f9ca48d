"""Glue between lm-eval task files (tasks/<name>/utils.py) and s2d's task plugins.

Each task folder's utils.py is one line: ``load, doc_to_text, doc_to_target, process_results =
bind("<task>")``. The functions build the task plugin from the options lm-eval passes
(``dataset_kwargs`` in the YAML, or ``--metadata`` / ``TaskManager(metadata=...)``), so s2d and the
stock ``lm_eval`` CLI load the same documents and score them the same way.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path


def tasks_path() -> str:
    """The folder of s2d's lm-eval task files, for ``lm_eval --include_path``."""
    import s2d.lm_eval_tasks

    return str(Path(s2d.lm_eval_tasks.__file__).parent)


@lru_cache(maxsize=None)
def _task_class(name: str):
    from s2d.plugins import get_plugins

    return get_plugins().get("tasks", name).obj


def task_options(cls) -> dict:
    """A task class's options and defaults: its constructor's named parameters."""
    params = inspect.signature(cls.__init__).parameters
    return {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in params.items()
            if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_task_options(cls, options: dict) -> dict:
    """``options`` checked against the task's declared ones: an unknown key or a value of another
    type than its default is an error naming the task, the key and the allowed keys."""
    from s2d.options import check_type

    declared = task_options(cls)
    unknown = sorted(set(options) - set(declared) - {"subset", "subset_seed"})
    if unknown:
        raise ValueError(f"task {cls.name!r}: unknown option(s) {', '.join(unknown)}; options: "
                         f"{', '.join(sorted(declared))}, subset, subset_seed")
    return {k: check_type(v, declared[k], f"task {cls.name!r}: option {k!r}") if k in declared else v
            for k, v in options.items()}


def build_task(name: str, strict: bool = False, **options):
    """The task plugin ``name`` built with ``options``. ``strict`` (s2d's own commands): unknown or
    mistyped options are an error; otherwise (lm-eval's metadata, which carries its own keys such
    as ``version``) only what the task's constructor takes is passed."""
    cls = _task_class(name)
    if strict:
        options = {k: v for k, v in check_task_options(cls, options).items() if k not in ("subset", "subset_seed")}
        return cls(**options)
    known = {k: v for k, v in options.items() if k in task_options(cls)}
    return cls(**known)


def bind(name: str):
    """The four functions a task YAML refers to."""
    state = {}

    def task():
        if "task" not in state:
            state["task"] = build_task(name)
        return state["task"]

    def load(**options):
        import datasets

        from s2d.tasks.base import subset

        size, seed = options.pop("subset", None), options.pop("subset_seed", 0)
        t = build_task(name, **options)
        state["task"] = t
        # lm-eval reads only the test split (the YAML's test_split); train is for distillation.
        docs = t.docs("test")
        if size:
            docs = subset(docs, int(size), int(seed))
        return {"test": datasets.Dataset.from_list(docs)}

    def doc_to_text(doc):
        return task().system1_prompt(doc)

    def doc_to_target(doc):
        return str(doc.get("answer", ""))

    def process_results(doc, results):
        return task().score(doc, results[0])

    return load, doc_to_text, doc_to_target, process_results


def mean_ignore_none(items) -> float:
    items = [i for i in items if i is not None]
    return sum(items) / len(items) if items else float("nan")
