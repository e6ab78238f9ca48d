"""`s2d distill`: generate on the train split, curate, train, and evaluate System 1, System 2 and the
distilled model, all in one run folder, every stage resumable.

Run folder layout (``runs/distill/<name>/``)::

    config.json        the settings actually used (a rerun with different settings is refused)
    traces.jsonl       the method's samples on the train split
    sft.jsonl          the curated training set (+ .dropped.jsonl, .summary.json)
    adapter/           the trained adapter (or model, for `full`), checkpoints inside
    eval/              three `s2d eval` records: system1, the method, distilled
    summary.json       the three-row summary

A stage whose output exists is reused; outputs are written atomically, so a kill never leaves a
half stage that looks finished. Generations go through the generation cache (by default the shared
``$S2D_CACHE/generations``), so a killed generation resumes, and runs that ask for the same
generations (a no-curation baseline beside its curated run, every run's System 1 evaluation on the
same test documents) make them once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from s2d.files import write_json, write_jsonl
from s2d.lmeval.run import safe_name

# What a run config may hold, with defaults (a config file and the CLI fill these in).
DEFAULTS: dict[str, Any] = {
    "task": None, "method": "rar2", "curator": "majority", "trainer": "lora", "model": "smollm2-135m",
    "backend": None, "seed": 0, "n": 8, "split": "train", "train_limit": None, "eval_limit": None,
    "method_options": {}, "templates": {}, "curator_options": {}, "trainer_options": {}, "task_options": {},
    "eval_task_options": {}, "eval_method_options": {}, "description": "",
    # Score a LoRA run's distilled model with the adapter merged into the weights (the same model;
    # on vLLM-CPU the LoRA path took 225 s against 71 s for the default run). false: the adapter itself.
    "eval_merged": True,
}


class DistillError(ValueError):
    """Bad settings, or a run folder that holds a different run."""


def apply_scale(config: dict, scale: str | None) -> dict:
    """A config without its ``scale`` table, with ``scale[NAME]``'s overrides applied when asked."""
    config = dict(config)
    scales = config.pop("scale", None) or {}
    if scale is None or scale == "small":
        return config
    if scale not in scales:
        raise DistillError(f"no scale {scale!r} in the config (has: {', '.join(scales) or 'none'})")
    return {**config, **scales[scale]}


@dataclass
class RunConfig:
    settings: dict

    @classmethod
    def build(cls, *layers: dict) -> "RunConfig":
        merged = dict(DEFAULTS)
        for layer in layers:
            for key, value in (layer or {}).items():
                if key not in DEFAULTS:
                    raise DistillError(f"unknown setting {key!r}; settings: {', '.join(sorted(DEFAULTS))}")
                if key == "method" and value is not None and value != merged["method"]:
                    # Method options belong to their method: `--method system1` over a rar2
                    # config drops rar2's options (unless this layer gives new ones).
                    for own in ("method_options", "eval_method_options", "templates"):
                        merged[own] = layer.get(own) or {}
                if value is not None:
                    merged[key] = value
        if not merged["task"]:
            raise DistillError("a run needs a task (--task or `task:` in the config)")
        return cls(merged)

    def __getitem__(self, key):
        return self.settings[key]

    def name(self) -> str:
        s = self.settings
        return safe_name(f"{s['task']}-{s['method']}-{s['curator']}-{s['trainer']}")


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    reused: bool = False
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DistillRun:
    """One distillation run in a folder; each ``step_*`` is skipped when its output exists."""

    def __init__(self, config: RunConfig, folder: str | Path, *, progress: bool = True,
                 echo: Callable[[str], None] = print, backend_options: dict | None = None,
                 cache: str | Path | bool = True):
        from s2d.traces import open_cache

        self.config, self.dir, self.progress, self.echo = config, Path(folder), progress, echo
        self.backend_options = backend_options or {}
        self.cache = open_cache(cache)  # True: the shared default folder
        self.stages: list[Stage] = []
        self._engine = None
        self._task = None

    # -- plumbing ---------------------------------------------------------------------------------
    def check_folder(self) -> None:
        """Refuse to mix two different runs in one folder."""
        path = self.dir / "config.json"
        if path.is_file():
            # A setting newer than the folder counts as its default there.
            saved = json.loads(json.dumps({**DEFAULTS, **json.loads(path.read_text()).get("settings", {})}))
            current = json.loads(json.dumps(self.config.settings))
            if saved != current:
                changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
                raise DistillError(f"{self.dir} holds a run with other settings ({', '.join(changed)}); "
                                   f"use another --name or delete the folder")
        else:
            from s2d.envinfo import git_commit, versions

            write_json(path, {"settings": self.config.settings, "versions": versions(),
                              "git_commit": git_commit(Path(__file__).parent),
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def task(self):
        from s2d.lmeval.tasks import build_task

        if self._task is None:
            self._task = build_task(self.config["task"], **self.config["task_options"])
        return self._task

    def engine(self):
        if self._engine is None:
            from s2d.backends import load_backend

            self._engine = load_backend(self.config["backend"], self.config["model"], seed=self.config["seed"],
                                        **self.backend_options)
        return self._engine

    def close_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _stage(self, name: str, done: bool, work: Callable[[], dict | None]) -> Stage:
        stage = Stage(name, reused=done)
        start = time.perf_counter()
        if done:
            self.echo(f"[{name}] reusing {self.dir}")
        else:
            self.echo(f"[{name}] running")
            stage.extra = work() or {}
        stage.seconds = time.perf_counter() - start
        stage.peak_rss_mb = _peak_rss_mb()
        self.stages.append(stage)
        return stage

    # -- the four stages --------------------------------------------------------------------------
    def step_generate(self) -> Stage:
        out = self.dir / "traces.jsonl"

        def work():
            from s2d.traces import build_method, generate_traces

            c = self.config
            task = self.task()
            docs = task.docs(c["split"])
            if c["train_limit"]:
                docs = docs[: int(c["train_limit"])]
            options = {**c["method_options"], "n": int(c["n"])}
            if c["templates"]:
                options["templates"] = c["templates"]
            method = build_method(c["method"], task, **options)
            traces, stats = generate_traces(self.engine(), task, method, docs, split=c["split"],
                                            cache=self.cache, seed=c["seed"],
                                            perturb=c["curator"] == "perturb", progress=self.progress)
            write_jsonl(out, traces)
            return {"inputs": len(traces), **stats}

        return self._stage("generate", out.is_file(), work)

    def step_curate(self) -> Stage:
        out = self.dir / "sft.jsonl"

        def work():
            from s2d.curators.base import write_curated
            from s2d.traces import build_curator, load_traces, make_runner

            c = self.config
            traces = load_traces(self.dir / "traces.jsonl")
            curator = build_curator(c["curator"], self.task(), **c["curator_options"])
            runner = make_runner(self.engine(), f"curator:{c['curator']}", cache=self.cache,
                                 seed=c["seed"], progress=self.progress) if curator.needs_model else None
            # An empty curated set is a result (the method's samples never agree), not a crash:
            # `run` still scores System 1 and System 2, then reports it (`nothing_curated`).
            return write_curated(out, traces, curator.curate(traces, runner), curator=c["curator"],
                                 extra={"method": c["method"], "traces": str(self.dir / "traces.jsonl")})

        return self._stage("curate", out.is_file(), work)

    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    def merged_dir(self) -> Path:
        return self.dir / "merged"

    def step_train(self) -> Stage:
        from s2d.trainers.base import training_config

        def work():
            from s2d.models import resolve_model
            from s2d.plugins import get_plugins

            self.close_engine()  # the CPU (or GPU) goes to training
            c = self.config
            trainer = get_plugins().get("trainers", c["trainer"]).obj(**c["trainer_options"])
            trainer.train(resolve_model(c["model"]), str(self.dir / "sft.jsonl"), str(self.adapter_dir()),
                          seed=c["seed"], progress=self.progress)
            return training_config(self.adapter_dir())

        return self._stage("train", training_config(self.adapter_dir()) is not None, work)

    def curation(self) -> dict | None:
        """The curate stage's summary (sft.summary.json), None before it has run."""
        path = self.dir / "sft.summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def nothing_curated(self) -> str | None:
        """Why there is nothing to train on, once curation has run and kept no record; else None."""
        cur = self.curation()
        if cur is None or cur.get("records"):
            return None
        return (f"the {self.config['curator']} curator kept no input of {cur.get('inputs')} "
                f"({cur.get('dropped_by_reason')}); nothing to train on, so no distilled model")

    def conditions(self) -> list[tuple[str, str, dict, bool]]:
        """(label, method, method options, with adapter) for the three rows (two with nothing to train on)."""
        c = self.config
        # The System 2 row asks the method as it was run on the train split (its prompt options,
        # e.g. few-shot exemplars), one greedy sample; eval_method_options override.
        m_opts = {**c["method_options"], **c["eval_method_options"]}
        if c["templates"]:
            m_opts["templates"] = c["templates"]
        rows = [("system1", "system1", {}, False), (f"system2-{c['method']}", c["method"], m_opts, False),
                ("distilled", "system1", {}, True)]
        return rows[:2] if self.nothing_curated() else rows

    def step_eval(self) -> Stage:
        eval_dir = self.dir / "eval"
        records = {label: self.record_path(label) for label, *_ in self.conditions()}

        def work():
            from s2d.lmeval.run import evaluate

            c = self.config
            full = c["trainer"] == "full"
            for label, method, m_opts, with_adapter in self.conditions():
                if records[label].is_file():
                    continue
                if with_adapter and (full or c["eval_merged"]):  # a model folder of its own
                    self.close_engine()
                    from s2d.backends import load_backend

                    if full:
                        weights = self.adapter_dir()
                    else:
                        from s2d.models import resolve_model
                        from s2d.trainers.lora import merge_adapter

                        weights = merge_adapter(resolve_model(c["model"]), str(self.adapter_dir()),
                                                str(self.merged_dir()))
                    engine = load_backend(c["backend"], str(weights), seed=c["seed"], **self.backend_options)
                    adapter = None
                else:
                    engine, adapter = self.engine(), (str(self.adapter_dir()) if with_adapter else None)
                try:
                    # The cache keys an adapter by its path, not its weights: the distilled row
                    # always generates afresh.
                    evaluate(engine, model_ref=c["model"], tasks=[c["task"]], method=method, adapter=adapter,
                             limit=c["eval_limit"], seed=c["seed"], log_samples=True, results_dir=str(eval_dir),
                             label=label, task_options={**c["task_options"], **c["eval_task_options"]} or None,
                             progress=self.progress, method_options=m_opts or None,
                             cache=None if with_adapter else self.cache)
                finally:
                    if engine is not self._engine:
                        engine.close()
            return {}

        return self._stage("eval", all(p.is_file() for p in records.values()), work)

    def record_path(self, label: str) -> Path:
        from s2d.lmeval.run import record_path

        return record_path(self.dir / "eval", self.config["model"], self.config["task"], label)

    # -- all of it ---------------------------------------------------------------------------------
    def run(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.check_folder()
        try:
            self.step_generate()
            self.step_curate()
            if not self.nothing_curated():
                self.step_train()
            self.step_eval()
        finally:
            self.close_engine()
        summary = self.summary()
        write_json(self.dir / "summary.json", summary)
        return summary

    def summary(self) -> dict:
        from s2d.lmeval.run import headline_metric, load_record, metrics_of

        rows = []
        for label, *_ in self.conditions():
            rec = load_record(self.record_path(label))
            if rec is None:
                continue
            metrics = metrics_of(rec)
            key = headline_metric(metrics)
            rows.append({"condition": label, "metric": key, "score": metrics.get(key),
                         "mean_tokens": rec["s2d"]["mean_generated_tokens"], "n": rec["s2d"]["n_examples"],
                         "metrics": metrics})
        return {"run": str(self.dir), "settings": self.config.settings, "rows": rows, "error": self.nothing_curated(),
                "curation": self.curation(),
                "stages": [{"stage": s.name, "seconds": round(s.seconds, 1), "reused": s.reused,
                            "peak_rss_mb": round(s.peak_rss_mb), **({"info": s.extra} if s.name == "generate" else {})}
                           for s in self.stages]}


def format_summary(summary: dict) -> str:
    lines = [f"{'condition':<22} {'score':>8} {'mean #tokens':>13} {'n':>6}"]
    for r in summary["rows"]:
        score = f"{100 * r['score']:.1f}%" if isinstance(r["score"], (int, float)) else "-"
        lines.append(f"{r['condition']:<22} {score:>8} {r['mean_tokens']:>13.1f} {r['n']:>6}")
    cur = summary.get("curation") or {}
    if cur:
        lines.append(f"curated: {cur.get('records')} records from {cur.get('kept_inputs')}/{cur.get('inputs')} inputs "
                     f"(dropped {cur.get('dropped_by_reason')})")
    if summary.get("error"):
        lines.append(f"distilled: none ({summary['error']})")
    return "\n".join(lines)


# What `export_run` copies into results/: all but the adapter weights, its checkpoints and the raw
# traces (large; the adapter is rebuilt from sft.jsonl and s2d_training.json, the traces from the cache).
EXPORTED = ("config.json", "summary.json", "sft.jsonl", "sft.dropped.jsonl", "sft.summary.json",
            "adapter/s2d_training.json", "eval")


def export_run(folder: str | Path, dest: str | Path) -> Path:
    """Copy a finished run's small files to ``dest`` (replacing what an older export left there)."""
    import shutil

    folder, dest = Path(folder), Path(dest)
    summary = folder / "summary.json"
    if not summary.is_file():
        raise DistillError(f"{folder}: no summary.json, so the run has not finished; nothing to export")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in EXPORTED:
        src = folder / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.is_file():
            shutil.copy2(src, dest / Path(name).name)
    (dest / "summary.txt").write_text(format_summary(json.loads(summary.read_text())) + "\n")
    return dest
