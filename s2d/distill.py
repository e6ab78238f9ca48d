"""`s2d distill`: generate on the train split, curate, train, and evaluate System 1, System 2 and the
distilled model, all in one run folder, every stage resumable.

Run folder layout (``runs/distill/<name>/``)::

    config.json        the settings actually used (a rerun with different settings is refused)
    traces.jsonl       the method's samples on the train split
    sft.jsonl          the curated training set (+ .dropped.jsonl, .summary.json)
    adapter/           the trained adapter (or model, for `full`), checkpoints inside
    train.log          with train_processes > 1 or accelerate_config: the `accelerate launch` output
    eval/              three `s2d eval` records: system1, the method, distilled
    summary.json       the three-row summary

:class:`~s2d.store.RunFolder` owns the folder (paths, which stages are done, the refusal of other settings);
:class:`DistillRun` owns the engine and runs the stages of each :class:`Round`. A stage whose
output exists is reused; outputs are written atomically, so a kill never leaves a
half stage that looks finished. Generations go through the generation cache (by default the shared
``$S2D_CACHE/generations``), so a killed generation resumes, and runs that ask for the same
generations (a no-curation baseline beside its curated run, every run's System 1 evaluation on the
same test documents) make them once.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from s2d.backends import default_backend_name, load_backend
from s2d.config import DEFAULTS, RunConfig
from s2d.curators.base import task_judge, write_curated
from s2d.errors import ConfigError, TaskDataError
from s2d.files import atomic_folder, check_output, portable_path, read_jsonl, write_json, write_jsonl
from s2d.lmeval.run import evaluate, record_path
from s2d.lmeval.tasks import _task_class, build_task, check_task_options
from s2d.locks import SUFFIX, hold
from s2d.methods.base import cap_hits, cap_shares
from s2d.models import resolve_model
from s2d.plugins import build, get_plugins
from s2d.store import RunFolder, headline_metric, load_record, metrics_of, pct, training_config
from s2d.traces import (build_curator, build_method, generate_traces, load_traces, make_runner, open_cache,
                        resolved_method_options)
from s2d.trainers import launch
from s2d.trainers.base import check_out_dir
from s2d.trainers.lora import merge_adapter

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


def claim(folder: RunFolder) -> None:
    """Make ``folder`` its settings' run (:meth:`RunFolder.claim`), recording the method's options
    as the train samples resolve them (n, the run's temperature and top-p: their decoding per stage)."""
    settings = folder.settings
    folder.claim(resolved_method_options(settings["method"], RunConfig(settings).generation_options()), DEFAULTS)


def check_plugins(cfg: RunConfig, *, run: bool = False, devices: bool = False) -> None:
    """Build the plugins the settings name, with their options, as a command would: an unknown
    plugin, or an option unknown, mistyped or out of range (task, method and its templates,
    curator, trainer) is a ConfigError. Loads no model. Alone (`s2d config show`) it reads no data:
    the method and curator are built on each task the settings name, and a plugin that reads the
    task's data when built (cot's shots) has had its options checked by then. ``run`` (as a run
    starts, :meth:`DistillRun.check`): the run's task with its split's documents, the launch
    settings (train_processes, accelerate_config), the backend's engine_options and the model
    reference too; ``devices``: also refuse engine_options this machine cannot run."""
    s = cfg.settings
    data = nullcontext if run else partial(suppress, TaskDataError)  # config show needs no data
    try:  # plugins raise ValueError or TypeError for bad options, LookupError for unknown names
        for name in [s["task"]] if run else cfg.tasks():
            task = build_task(name, strict=True, **s["task_options"])
            if run:
                task.docs(s["split"])
            check_task_options(_task_class(name), cfg.eval_task_options())
            for options in (cfg.generation_options(), cfg.eval_method_options()):  # System 2's train, eval
                with data():
                    build_method(s["method"], task, **options)
            with data():
                build_curator(s["curator"], task, **s["curator_options"])
        trainer = build("trainers", s["trainer"], s["trainer_options"])
        if not run:
            if s["backend"] is not None:
                get_plugins().get("backends", s["backend"])
            return
        launch.check(s, trainer)  # train_processes, accelerate_config
        backend = get_plugins().get("backends", s["backend"] or default_backend_name()).obj
        if s["engine_options"] and hasattr(backend, "check_engine_options"):
            backend.check_engine_options(s["engine_options"], devices=devices)
        if s["backend"] != "scripted":  # round 1's teacher: a missing package says so now
            resolve_model(s["model"])
    except (ValueError, TypeError, LookupError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None


class DistillRun:
    """One distillation run in a folder; each stage is skipped when its output exists.

    With ``rounds: R`` the run iterates: round r+1 samples the System 2 method with round r's
    distilled (merged) weights as the teacher, curates again, and trains a fresh adapter from the
    base model (on that round's curated set, or with ``accumulate`` the union of every round's).
    Round 1 lives in the run folder itself, round r > 1 in ``round<r>/``.
    """

    def __init__(self, config: RunConfig, folder: str | Path, *, progress: bool = True,
                 echo: Callable[[str], None] = print, backend_options: dict | None = None,
                 cache: str | Path | bool = True):
        self.config, self.progress, self.echo = config, progress, echo
        self.folder = RunFolder(folder, config.settings)  # paths and what is done
        self.dir = self.folder.path
        self.backend_options = backend_options or {}
        self.cache = open_cache(cache)  # True: the shared default folder
        self.stages: list[Stage] = []
        self._engine = None
        self._engine_model: str | None = None
        self._task = None

    # -- plumbing ---------------------------------------------------------------------------------
    def task(self):
        if self._task is None:
            self._task = build_task(self.config["task"], strict=True, **self.config["task_options"])
        return self._task

    def engine(self, model: str | None = None):
        """The engine for ``model`` (default: the run's model); one engine at a time."""
        model = model or self.config["model"]
        if self._engine is not None and self._engine_model != model:
            self.close_engine()
        if self._engine is None:
            # The run's engine_options (parallelism, memory), under what the command line gives (dtype).
            options = {**self.config.engine_kwargs(), **self.backend_options}
            self._engine = load_backend(self.config["backend"], model, seed=self.config["seed"], **options)
            self._engine_model = model
        return self._engine

    def close_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            self._engine_model = None

    def _stage(self, name: str, done: bool, work: Callable[[], dict | None], where: Path | None = None) -> Stage:
        stage = Stage(name, reused=done)
        start = time.perf_counter()
        if done:
            self.echo(f"[{name}] reusing {where or self.dir}")
        else:
            self.echo(f"[{name}] running")
            stage.extra = work() or {}
        stage.seconds = time.perf_counter() - start
        stage.peak_rss_mb = _peak_rss_mb()
        self.stages.append(stage)
        return stage

    def round(self, r: int = 1) -> "Round":
        if not 1 <= r <= self.n_rounds():
            raise ConfigError(f"round {r} is outside 1..{self.n_rounds()}")
        return Round(self, r)

    def n_rounds(self) -> int:
        rounds = self.config["rounds"]
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
        return rounds

    # -- all of it ---------------------------------------------------------------------------------
    def check(self, devices: bool = False) -> None:
        """Build the task, method, curator and trainer from the settings (:func:`check_plugins` as a
        run starts), so a bad plugin option is an error before any model loads and before the run
        folder is claimed. ``devices``: also refuse engine_options this machine cannot run (more GPUs
        than CUDA sees), as `run` does; `s2d plan` checks without, so a paper-scale config is
        planned on any machine."""
        self.n_rounds()
        check_plugins(self.config, run=True, devices=devices)

    def run(self, export: str | Path | None = None) -> dict:
        """Every stage of every round, then the summary and (given ``export``) the export, all under
        the run folder's lock: a second run into the folder fails at once instead of mixing its
        files with this one's."""
        self.check(devices=True)
        if export is not None:  # a refusal found now, not after the whole run
            check_export_dest(export, self.dir)
        with hold(self.folder.lock(), f"the run folder {self.dir}"):
            claim(self.folder)
            try:
                for r in range(1, self.n_rounds() + 1):
                    rnd = self.round(r)
                    rnd.generate()
                    rnd.curate()
                    if not rnd.nothing_curated():
                        rnd.train()
                    rnd.eval()
                    if rnd.nothing_curated():
                        break  # no distilled model: no teacher for a next round
            finally:
                self.close_engine()
            summary = self.summary()
            write_json(self.folder.summary(), summary)
            if export is not None:
                export_run(self.dir, export)
        return summary

    def summary(self) -> dict:
        rounds = [self.round(r) for r in range(1, self.n_rounds() + 1)]
        per_round = [{"round": rnd.r, "rows": rnd.rows(), "curation": rnd.curation(), "error": rnd.nothing_curated()}
                     for rnd in rounds if rnd.r == 1 or rnd.dir.is_dir()]
        first = per_round[0]
        out = {"run": self.dir.name, "settings": self.config.settings, "rows": first["rows"], "error": first["error"],
               "curation": first["curation"],
               "stages": [{"stage": s.name, "seconds": round(s.seconds, 1), "reused": s.reused,
                           "peak_rss_mb": round(s.peak_rss_mb), **({"info": s.extra} if s.name.endswith("generate") else {})}
                          for s in self.stages]}
        if self.n_rounds() > 1:
            out["rounds"] = per_round
            last = per_round[-1]
            out["error"] = last["error"] and f"round {last['round']}: {last['error']}"
        return out


class Round:
    """Round ``r`` of a run: its folder, its teacher's weights, and the four stages."""

    def __init__(self, run: DistillRun, r: int):
        self.run, self.r, self.config = run, r, run.config
        self.folder = run.folder
        self.dir = run.folder.round_dir(r)

    def _stage(self, name: str, done: bool, work) -> Stage:
        label = name if self.run.n_rounds() == 1 else f"round {self.r}: {name}"
        return self.run._stage(label, done, work, where=self.dir)

    def previous(self) -> "Round | None":
        return Round(self.run, self.r - 1) if self.r > 1 else None

    def teacher(self) -> str:
        """The weights that sample System 2: the run's model, then the previous round's student."""
        prev = self.previous()
        return self.config["model"] if prev is None else str(prev.student_weights())

    def trained_adapter(self) -> bool:
        """Whether the trainer wrote a PEFT adapter (lora) rather than a whole model folder (full)."""
        return (self.adapter_dir() / "adapter_config.json").is_file()

    def student_weights(self) -> Path:
        """This round's distilled model as a plain model folder (merging a LoRA adapter once)."""
        if not self.trained_adapter():
            return self.adapter_dir()
        return merge_adapter(resolve_model(self.config["model"]), str(self.adapter_dir()), str(self.merged_dir()))

    def adapter_dir(self) -> Path:
        return self.folder.adapter(self.r)

    def merged_dir(self) -> Path:
        return self.folder.merged(self.r)

    # -- the four stages --------------------------------------------------------------------------
    def generate(self) -> Stage:
        out = self.folder.traces(self.r)

        def work():
            c = self.config
            task = self.run.task()
            docs = task.docs(c["split"])
            if c["train_limit"]:
                docs = docs[: int(c["train_limit"])]
            method = build_method(c["method"], task, **c.generation_options())
            engine = self.run.engine(self.teacher())
            traces, stats = generate_traces(engine, task, method, docs, split=c["split"],
                                            cache=self.run.cache, seed=c["seed"],
                                            perturb=c["curator"] == "perturb", progress=self.run.progress)
            write_jsonl(out, traces)
            teacher = portable_path(self.teacher(), self.run.dir) if self.r > 1 else c["model"]
            samples = [s for t in traces for s in t["samples"] + (t.get("perturbed") or {}).get("samples", [])]
            caps = cap_hits(samples)
            return {"inputs": len(traces), "teacher": teacher, **stats,
                    "cap_hit_share_by_stage": cap_shares(caps)}

        return self._stage("generate", self.folder.generated(self.r), work)

    def curate(self) -> Stage:
        out = self.folder.curated(self.r)

        def work():
            c = self.config
            traces = load_traces(self.folder.traces(self.r))
            curator = build_curator(c["curator"], self.run.task(), **c["curator_options"])
            runner = make_runner(self.run.engine(self.teacher()), f"curator:{c['curator']}", cache=self.run.cache,
                                 seed=c["seed"], progress=self.run.progress) if curator.needs_model else None
            # An empty curated set is a result (the method's samples never agree), not a crash:
            # `run` still scores System 1 and System 2, then reports it (`nothing_curated`).
            return write_curated(out, traces, curator.curate(traces, runner), curator=c["curator"],
                                 judge=task_judge(self.run.task()), extra={"method": c["method"], "round": self.r,
                                        "traces": str(self.folder.traces(self.r).relative_to(self.folder.path))})

        return self._stage("curate", self.folder.curation_done(self.r), work)

    def training_data(self) -> Path:
        """What the student trains on: this round's curated set, or with ``accumulate`` the union of
        every round's so far (one record per input: the newest round's target wins)."""
        own = self.dir / "sft.jsonl"
        if self.r == 1 or not self.config["accumulate"]:
            return own
        union: dict[str, list[dict]] = {}
        for rnd in [Round(self.run, k) for k in range(1, self.r + 1)]:
            by_id: dict[str, list[dict]] = {}
            for rec in read_jsonl(rnd.dir / "sft.jsonl"):
                by_id.setdefault(str(rec["s2d"]["id"]), []).append(rec)
            union.update(by_id)
        path = self.dir / "sft.union.jsonl"
        write_jsonl(path, [rec for recs in union.values() for rec in recs])
        return path

    def train(self) -> Stage:
        def work():
            self.run.close_engine()  # the CPU (or GPU) goes to training
            c = self.config
            if launch.parallel(c.settings):  # train_processes > 1 or accelerate_config: a subprocess
                launch.launch(c.settings, self.training_data(), self.adapter_dir(), self.dir / launch.LOG_NAME,
                              progress=self.run.progress, echo=self.run.echo)
                return training_config(self.adapter_dir())
            trainer = build("trainers", c["trainer"], c["trainer_options"])
            # The run folder's config.json already proves these checkpoints are this run's (the same
            # settings, hence the same curated data): adopt ones written before they were recorded.
            trainer.adopt_checkpoints = True
            # Every round's student starts from the base model (not from the previous student).
            trainer.train(resolve_model(c["model"]), str(self.training_data()), str(self.adapter_dir()),
                          seed=c["seed"], progress=self.run.progress)
            return training_config(self.adapter_dir())

        return self._stage("train", self.folder.trained(self.r), work)

    def curation(self) -> dict | None:
        """The curate stage's summary (sft.summary.json), None before it has run."""
        return self.folder.curation(self.r)

    def nothing_curated(self) -> str | None:
        """Why there is nothing to train on, once curation has run and kept no record; else None."""
        cur = self.curation()
        if cur is None or cur.get("records"):
            return None
        return (f"the {self.config['curator']} curator kept no input of {cur.get('inputs')} "
                f"({cur.get('dropped_by_reason')}); nothing to train on, so no distilled model")

    def conditions(self) -> list[tuple[str, str, dict, bool]]:
        """(label, method, method options, student?) for the three rows (two with nothing to train
        on). System 1 and System 2 are the round's teacher; "distilled" is its student."""
        c = self.config
        # The System 2 row asks the method as it was run on the train split (its prompt options,
        # e.g. few-shot exemplars), one greedy sample; eval_method_options override.
        m_opts = c.eval_method_options()
        rows = [("system1", "system1", {}, False), (f"system2-{c['method']}", c["method"], m_opts, False),
                ("distilled", "system1", {}, True)]
        return rows[:2] if self.nothing_curated() else rows

    def eval(self) -> Stage:
        records = {label: self.record_path(label) for label, *_ in self.conditions()}

        def work():
            c = self.config
            for label, method, m_opts, student in self.conditions():
                if records[label].is_file():
                    continue
                if student and (not self.trained_adapter() or c["eval_merged"]):  # a model folder of its own
                    self.run.close_engine()
                    engine, adapter = self.run.engine(str(self.student_weights())), None
                elif student:
                    engine, adapter = self.run.engine(), str(self.adapter_dir())
                else:
                    engine, adapter = self.run.engine(self.teacher()), None
                # The cache keys weights and adapters by their content, so every row goes through it.
                evaluate(engine, model_ref=c["model"], tasks=[c["task"]], method=method, adapter=adapter,
                         limit=c["eval_limit"], seed=c["seed"], log_samples=True,
                         results_dir=str(self.folder.eval_dir(self.r)),
                         label=label, task_options=c.eval_task_options() or None,
                         progress=self.run.progress, method_options=m_opts or None, cache=self.run.cache,
                         warn=self.run.echo)
            return {}

        return self._stage("eval", all(p.is_file() for p in records.values()), work)

    def record_path(self, label: str) -> Path:
        return record_path(self.folder.eval_dir(self.r), self.config["model"], self.config["task"], label)

    def rows(self) -> list[dict]:
        rows = []
        for label, *_ in self.conditions():
            rec = load_record(self.record_path(label))
            if rec is None:
                continue
            metrics = metrics_of(rec)
            key = headline_metric(metrics)
            rows.append({"condition": label, "metric": key, "score": metrics.get(key),
                         "mean_tokens": rec["s2d"]["mean_generated_tokens"], "n": rec["s2d"]["n_examples"],
                         "cap_hit_share": rec["s2d"].get("cap_hit_share"),
                         "cap_hit_share_by_stage": rec["s2d"].get("cap_hit_share_by_stage"),
                         "metrics": metrics})
        return rows


def format_summary(summary: dict) -> str:
    rounds = summary.get("rounds") or [{"round": None, "rows": summary["rows"], "curation": summary.get("curation"),
                                        "error": summary.get("error")}]
    lead = "round  " if summary.get("rounds") else ""
    lines = [f"{lead}{'condition':<22} {'score':>8} {'mean #tokens':>13} {'n':>6}"]
    for rnd in rounds:
        at = f"{rnd['round']:<7}" if lead else ""
        for r in rnd["rows"]:
            lines.append(f"{at}{r['condition']:<22} {pct(r['score']):>8} {r['mean_tokens']:>13.1f} {r['n']:>6}")
    for rnd in rounds:
        at = f"round {rnd['round']} " if lead else ""
        cut = [(r["condition"], r["cap_hit_share"]) for r in rnd["rows"] if r.get("cap_hit_share") is not None]
        if cut:  # a response cut at the token cap measures the cap, not the model
            lines.append(f"{at}cut by the token cap: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in cut))
        cur = rnd.get("curation") or {}
        if cur:
            lines.append(f"{at}curated: {cur.get('records')} records from {cur.get('kept_inputs')}/{cur.get('inputs')} "
                         f"inputs (dropped {cur.get('dropped_by_reason')})")
        if rnd.get("error"):
            lines.append(f"{at}distilled: none ({rnd['error']})")
    return "\n".join(lines)


# What `export_run` copies into results/: all but the adapter weights, its checkpoints and the raw
# traces (large; the adapter is rebuilt from sft.jsonl and s2d_training.json, the traces from the cache).
EXPORTED = ("config.json", "config.yaml", "summary.json", "sft.jsonl", "sft.dropped.jsonl", "sft.summary.json",
            "adapter/s2d_training.json", "eval")
ROUND_EXPORTED = ("sft.jsonl", "sft.dropped.jsonl", "sft.summary.json", "sft.union.jsonl",
                  "adapter/s2d_training.json", "eval")


EXPORT_MARK = ".s2d-export"


def distill_settings(cfg: RunConfig, folder: str | Path, *, config_path: str | Path | None = None,
                     export_dir: str | Path | None = None, folders=(), cache_folder: str | Path | None = None,
                     open_cache: Callable[[], object] = lambda: None, progress: bool = True,
                     echo: Callable[[str], None] = print, backend_options: dict | None = None) -> dict:
    """`s2d distill`: the run of the settings in ``folder``, exported to ``export_dir`` if given;
    returns its summary. Refusals are found before the run starts: an unknown plugin, a run folder
    that is or holds an input (``config_path``, the model, the input ``folders``; it may hold its own
    generation cache, ``cache_folder``, since it is never replaced) or something other than an s2d
    run, and an export that is or holds the run folder. Settings are checked by :meth:`DistillRun.check`.
    The run folder is locked from its claim through the export: a second run into it fails at once."""
    plugins = get_plugins()
    for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"), ("trainers", "trainer")):
        plugins.get(kind, cfg[key])
    # A run's own config.yaml may be its --config: claim never rewrites a claimed folder's files.
    own_config = config_path and Path(config_path).resolve() == (Path(folder) / "config.yaml").resolve()
    check_output(folder, None if own_config else config_path, folders=folders, flag="--out-dir", folder=True,
                 may_hold=[cache_folder])
    check_out_dir(cfg["model"], folder)
    RunFolder(folder, cfg.settings).saved()
    if export_dir:
        check_export_dest(export_dir, folder, inputs=[config_path], folders=folders)
    run = DistillRun(cfg, folder, progress=progress, echo=echo, backend_options=backend_options, cache=open_cache())
    return run.run(export=export_dir)


def check_export_dest(dest: str | Path, run_folder: str | Path | None = None, inputs=(), folders=()) -> None:
    """An export replaces only an empty folder or an earlier export: one holding export's marker, or
    (exports made before the marker existed) its summary.txt and config.json. It never is, holds or
    lies inside the run folder it copies (replacing it would delete the run), nor any of the run's
    ``inputs`` (files) and input ``folders`` (see :func:`s2d.files.check_output`)."""
    run = [("the run folder", run_folder)] if run_folder is not None else []
    check_output(dest, *inputs, folders=[*run, *folders], flag="--export", folder=True)
    dest = Path(dest)
    if not dest.exists():
        return
    earlier = dest.is_dir() and ((dest / EXPORT_MARK).is_file() or
                                 ((dest / "summary.txt").is_file() and (dest / "config.json").is_file()))
    if not earlier and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"--export {dest}: exists and is not an earlier s2d export; refusing to replace it "
                           f"(choose another folder or remove it yourself)")


def export_run(folder: str | Path, dest: str | Path) -> Path:
    """Copy a finished run's small files (every round's) to ``dest``. An existing ``dest`` is
    replaced only when it is an earlier export (it holds the marker file export writes) or empty."""
    folder, dest = Path(folder), Path(dest)
    summary = folder / "summary.json"
    if not summary.is_file():
        raise ConfigError(f"{folder}: no summary.json, so the run has not finished; nothing to export")
    check_export_dest(dest, folder)

    def copy(src_dir: Path, out: Path, names) -> None:
        for name in names:
            src = src_dir / name
            if src.is_dir():
                shutil.copytree(src, out / name, ignore=shutil.ignore_patterns(f"*{SUFFIX}*"))
            elif src.is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out / Path(name).name)

    # Under the run's lock (free inside the run's own): no run rewrites the folder while it is copied.
    with hold(RunFolder(folder, {}).lock(), f"the run folder {folder}"), atomic_folder(dest) as tmp:
        copy(folder, tmp, EXPORTED)
        for sub in sorted(folder.glob("round[0-9]*")):
            if sub.is_dir():
                copy(sub, tmp / sub.name, ROUND_EXPORTED)
        (tmp / "summary.txt").write_text(format_summary(json.loads(summary.read_text())) + "\n")
        (tmp / EXPORT_MARK).write_text("written by s2d distill --export; a later export may replace this folder\n")
    return dest
