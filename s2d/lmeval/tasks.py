"""Glue between lm-eval task files (tasks/<name>/utils.py) and s2d's task plugins.

Each task folder's utils.py is one line: ``load, doc_to_text, doc_to_target, process_results =
bind("<task>")``. The functions build the task plugin from the options lm-eval passes
(``dataset_kwargs`` in the YAML, or ``--metadata`` / ``TaskManager(metadata=...)``), so s2d and the
stock ``lm_eval`` CLI load the same documents and score them the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from s2d.errors import ConfigError
from s2d.options import Option, check_range, signature_defaults, validate_options
from s2d.plugins import build, get_plugins
from s2d.tasks.base import Task, subset


def tasks_path() -> str:
    """The folder of s2d's lm-eval task files, for ``lm_eval --include_path``."""
    # find_spec, not an import: the folder is all lm-eval needs, and nothing of it runs here.
    spec = importlib.util.find_spec("s2d.lm_eval_tasks")
    if spec is not None and spec.origin:
        return str(Path(spec.origin).parent)
    # A source checkout on PYTHONPATH, never installed (a lent GPU machine): the package is only
    # the top-level tasks/ folder mapped at install time, so take that folder beside s2d/.
    folder = Path(__file__).resolve().parents[2] / "tasks"
    if not (folder / "__init__.py").is_file():
        raise ModuleNotFoundError("s2d.lm_eval_tasks: s2d's lm-eval task files are not installed "
                                  f"and there is no {folder} beside the package")
    return str(folder)


def _task_class(name: str):
    """The task class the current plugin set registers as ``name`` (never one of an earlier set)."""
    return get_plugins().get("tasks", name).obj


def task_options(cls) -> dict:
    """A task class's options and defaults: its constructor's named parameters."""
    return signature_defaults(cls)


# The evaluation's own task options (a seeded subset of the test split, read by lm-eval's loader and
# s2d's routing), not the task's: checked beside the task's own in its options model; null: no subset.
EVAL_RANGES = {"subset": {"ge": 1}}
EVAL_FIELDS = {
    "subset": Option("subset", int | None, None, "score a seeded subset of this many test documents", EVAL_RANGES["subset"]),
    "subset_seed": Option("subset_seed", int | None, 0, "the subset's seed"),
}


def check_task_options(cls, options: dict) -> dict:
    """``options`` checked against the task's declared ones: an unknown key, a value of another
    type than its default or outside the task's :meth:`~s2d.tasks.base.Task.option_ranges` is an
    error naming the task, the key and the allowed keys or range."""
    checked = validate_options(cls, "task", cls.name, options, ConfigError, extra=EVAL_FIELDS)
    return {k: checked[k] for k in options}


def check_task_ranges(cls, options: dict) -> dict:
    """``options`` if each lies in its range (the task's own and the evaluation's), else ConfigError."""
    ranges = {**getattr(cls, "option_ranges", dict)(), **EVAL_RANGES}
    for k, v in options.items():
        if k in ranges:
            check_range(v, ranges[k], f"task {cls.name!r}: option {k!r}", ConfigError)
    return options


def task_kwargs(cls, options: dict) -> dict:
    """The constructor arguments of task class ``cls`` for ``options``, checked (the evaluation's
    ``subset``/``subset_seed`` are not the task's own and are left out)."""
    return {k: v for k, v in check_task_options(cls, options).items() if k not in ("subset", "subset_seed")}


def build_task(name: str, strict: bool = False, **options):
    """The task plugin ``name`` built with ``options``. ``strict`` (s2d's own commands): unknown or
    mistyped options are an error; otherwise (lm-eval's metadata, which carries its own keys such
    as ``version``) only what the task's constructor takes is passed."""
    cls = _task_class(name)
    if strict:  # made through plugins.build: an error of the task's constructor is a ConfigError naming it
        kwargs = task_kwargs(cls, options)
        return _built(cls, kwargs, lambda: build("tasks", name, kwargs))
    # lm-eval's metadata: its own keys left out, the task's still in range
    kwargs = check_task_ranges(cls, {k: v for k, v in options.items() if k in task_options(cls)})
    return _built(cls, kwargs, lambda: cls(**kwargs))


def _built(cls, kwargs: dict, make):
    """One instance (``make()``) per (task class, options, data folder) of the current plugin set:
    an `s2d eval` checks the task's options, lm-eval loads its documents and the LM builds prompts
    from the same Task (building one reads and splits its data files). A new plugin set
    (``plugins.reset()``) builds its tasks anew."""
    try:
        key = ("task", cls, json.dumps(kwargs, sort_keys=True), os.environ.get("S2D_DATA_DIR"))
    except TypeError:  # an option JSON cannot spell: no sharing
        return make()
    built = get_plugins().built
    if key not in built:
        if len(built) >= 64:
            built.clear()
        built[key] = make()
    return built[key]


def bind(name: str):
    """The four functions a task YAML refers to."""
    state = {}

    def task():
        if "task" not in state:
            state["task"] = build_task(name)
        return state["task"]

    def load(**options):
        import datasets

        size, seed = options.pop("subset", None), options.pop("subset_seed", 0)
        check_task_ranges(_task_class(name), {"subset": size})  # the stock lm_eval CLI's metadata too
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


# -- tasks from any plugin --------------------------------------------------------------------------
REQUIRED = ("docs", "system1_prompt", "extract")


def lm_eval_name(name: str) -> str:
    """The lm-eval task name of s2d task ``name`` (``Task.lm_eval_name``: ``s2d_<name>`` unless the
    plugin says otherwise)."""
    cls = _task_class(name)
    value = cls.lm_eval_name
    return value.fget(cls.__new__(cls)) if isinstance(value, property) else str(value)


def s2d_name(lm_eval_task: str) -> str:
    """The s2d task behind an lm-eval task name (the inverse of :func:`lm_eval_name`)."""
    for entry in get_plugins().entries("tasks"):
        if lm_eval_name(entry.name) == lm_eval_task:
            return entry.name
    return lm_eval_task.removeprefix("s2d_")


def check_task_plugin(name: str) -> None:
    """A registered task must implement what lm-eval and the methods call; else an error naming the
    task and its plugin, raised before any model loads."""
    entry = get_plugins().get("tasks", name)
    cls = entry.obj
    missing = [m for m in REQUIRED if getattr(cls, m, None) is None or getattr(cls, m) is getattr(Task, m)]
    if missing:
        raise ConfigError(f"task {name!r} (plugin {entry.plugin!r}) cannot be scored: it does not implement "
                         f"{', '.join(missing)} (see docs/plugins.md, 'Tasks')")


def builtin_task_names() -> set[str]:
    """The lm-eval task names that have a YAML file in s2d's own task folder."""
    return {p.stem for p in Path(tasks_path()).glob("*/*.yaml")}


def lm_eval_config(name: str) -> dict:
    """The lm-eval task config of s2d task ``name``, built from its Task class (what a YAML file in
    tasks/ says for the built-ins): documents, prompt and scoring all come from the plugin."""
    check_task_plugin(name)
    cls = _task_class(name)
    load, doc_to_text, doc_to_target, process_results = bind(name)
    aggregations = task_aggregations(cls)
    return {
        "task": lm_eval_name(name), "custom_dataset": load, "dataset_kwargs": {}, "test_split": "test",
        "output_type": "generate_until", "doc_to_text": doc_to_text, "doc_to_target": doc_to_target,
        "process_results": process_results,
        "generation_kwargs": {"until": list(getattr(cls, "stop", [])), "max_gen_toks": int(getattr(cls, "max_gen_toks", 256)),
                              "do_sample": False},
        "metric_list": [{"metric": m, "aggregation": aggregations.get(m, "mean"),
                         "higher_is_better": m not in cls.lower_is_better} for m in cls.metrics],
        "metadata": {"version": 1.0},
    }


def aggregation(name: str, metric: str):
    """Task ``name``'s own aggregation of ``metric`` (for the lm-eval files of plugin tasks)."""
    return task_aggregations(_task_class(name))[metric]


def task_aggregations(cls) -> dict:
    """A task class's ``aggregations`` (a dict, or a property that needs an instance, like
    mt_bench_judge's)."""
    value = cls.aggregations
    return value if isinstance(value, dict) else cls.__new__(cls).aggregations


def lm_eval_spec(name: str):
    """What to hand lm-eval for task ``name``: the built-in's name (its YAML), else its config."""
    lm_name = lm_eval_name(name)
    return lm_name if lm_name in builtin_task_names() else lm_eval_config(name)


YAML = """# s2d task {name!r} (plugin {plugin!r}), written by `s2d lm-eval-tasks`: documents, prompt and
# scoring come from the s2d task plugin. Run: lm_eval --include_path THIS_FOLDER --tasks {lm_name}
task: {lm_name}
custom_dataset: !function utils.load
dataset_kwargs: {{}}
test_split: test
output_type: generate_until
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
process_results: !function utils.process_results
generation_kwargs:
  until: {until}
  max_gen_toks: {max_gen_toks}
  do_sample: false
metric_list:
{metrics}
metadata:
  version: 1.0
"""


def write_task_files(out: str | Path) -> list[Path]:
    """Write an lm-eval task folder (YAML + utils.py) for every registered task, built-in or from a
    plugin, so stock ``lm_eval --include_path OUT`` runs each of them."""
    out = Path(out)
    written = []
    builtins = builtin_task_names()
    for entry in get_plugins().entries("tasks"):
        cfg = lm_eval_config(entry.name)
        folder = out / cfg["task"]
        if cfg["task"] in builtins:  # the shipped files, exactly what `s2d eval` scores with
            shutil.copytree(Path(tasks_path()) / cfg["task"], folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
            written.append(folder)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        metrics = "\n".join(
            f"  - {{metric: {m['metric']}, aggregation: "
            f"{'mean' if m['aggregation'] == 'mean' else '!function utils.aggregate_' + m['metric']}, "
            f"higher_is_better: {str(m['higher_is_better']).lower()}}}" for m in cfg["metric_list"])
        custom = [m["metric"] for m in cfg["metric_list"] if m["aggregation"] != "mean"]
        (folder / f"{cfg['task']}.yaml").write_text(YAML.format(
            name=entry.name, plugin=entry.plugin, lm_name=cfg["task"], until=json.dumps(cfg["generation_kwargs"]["until"]),
            max_gen_toks=cfg["generation_kwargs"]["max_gen_toks"], metrics=metrics))
        aggregations = "".join(f"aggregate_{m} = aggregation({entry.name!r}, {m!r})\n" for m in custom)
        (folder / "utils.py").write_text(f"from s2d.lmeval.tasks import aggregation, bind\n\n"
                                         f"load, doc_to_text, doc_to_target, process_results = bind({entry.name!r})\n"
                                         + aggregations)
        written.append(folder)
    return written
