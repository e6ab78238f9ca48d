"""`s2d sweep PLAN.yaml`: a plan of runs over a base config, run (or reused) one at a time, and one
report table over their run folders (docs/sweep.md).

A plan is data::

    description: what the plan asks
    base: ../configs/x.yaml          # a config file (relative to the plan, else to the repo) or a mapping
    bases: {ll: a.yaml, cf: b.yaml}  # named bases a run picks with `base: NAME`
    runs_dir: runs/sweep/x           # where the run folders go [default: runs/sweep/<plan name>]
    runs:                            # named variants: setting overrides over their base
      paper-wording: {method_options.wording: paper}
      distill-system1: {method: system1, why: "the paper's baseline"}
      system2-only: {kind: eval}
      routed: {kind: route, from: paper-wording}   # `s2d route` over another run of the plan
    grid:                            # the product of these values, over every run (or the base)
      n: [4, 8]
    columns: [system1, system2, distilled, kept, target_accuracy, tokens]

Every run's settings are layered as every command layers them (:func:`s2d.config.RunConfig.build`,
with its rule that a new method, curator or trainer drops the old one's options): the command's
defaults < the base < the run's overrides < the grid point < ``--model`` < ``--set``. The whole
plan is checked (settings, plugin options, task data, run folders) before the first run starts.
"""

from __future__ import annotations

import inspect
import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from s2d.config import COMMAND_DEFAULTS, DEFAULTS, RunConfig, SetItems, apply_scale, load_config, read_mapping
from s2d.distill import DistillRun, check_export_dest, claim, export_run
from s2d.errors import ConfigError, S2DError
from s2d.files import atomic_write, repo_root, write_json
from s2d.lmeval.run import evaluate
from s2d.locks import hold
from s2d.methods.route import CONFIDENCES
from s2d.plugins import get_plugins
from s2d.routing import route_run
from s2d.store import (RunFolder, changed_settings, headline_metric, load_record, metrics_of, pct, safe_name,
                      target_accuracy_cell)

PLAN_KEYS = ("description", "base", "bases", "scale", "runs_dir", "export", "runs", "grid", "columns", "paper")
# A run's keys that are not settings: what it is, its base, a note for the report, (the paper's
# tables) which of the paper's rows its conditions fill (s2d.reproduce reads them), and for a route
# run the run it routes and `s2d route`'s options.
RUN_KEYS = ("kind", "base", "why", "rows", "from", "route")
KINDS = ("distill", "eval", "route")
# The summary kinds that finish a run of each kind: an eval run's rows are a distill run's first two.
FINISHED_BY = {"distill": ("distill",), "eval": ("eval", "distill"), "route": ("route",)}
# `s2d route`'s options a route run may set, with route_run's defaults (one source for both).
ROUTE_OPTIONS = {k.rstrip("_"): p.default for k, p in inspect.signature(route_run).parameters.items()
                 if k in ("confidence", "samples", "tune_split", "tolerance", "round_")}
DEFAULT_COLUMNS = ("system1", "system2", "distilled", "kept", "target_accuracy", "tokens")
# The report's columns beyond any run setting (`n`, `curator_options.threshold`) and any
# CONDITION.METRIC (`system2.acc_biased`); docs/sweep.md says what each shows.
COLUMNS = ("kind", "system1", "system2", "distilled", "system1_tokens", "system2_tokens", "distilled_tokens",
           "tokens", "kept", "records", "target_accuracy", "cut", "error", "why", "route", "route_tokens",
           "route_threshold", "route_to_system2")
CONDITIONS = ("system1", "system2", "distilled")
ROW_CONDITIONS = (*CONDITIONS, "route")  # a route run's summary adds the routed row


@dataclass
class Variant:
    """One run of a plan as written: its name, kind, base (a name in ``bases``, a path, a mapping or
    None for the plan's ``base``), its setting overrides (nested) and its notes."""

    name: str
    kind: str = "distill"
    base: str | dict | None = None
    overrides: dict = field(default_factory=dict)
    why: str = ""
    rows: dict = field(default_factory=dict)
    source: str = ""  # a route run's `from`: the name of the plan's run it routes
    route: dict = field(default_factory=dict)  # a route run's `s2d route` options


@dataclass
class PlannedRun:
    variant: Variant
    config: RunConfig
    folder: Path
    source: PlannedRun | None = None  # a route run's distill run
    set_items: dict = field(default_factory=dict)  # the --set items this run took (they name its folder)

    @property
    def name(self) -> str:
        return self.variant.name


@dataclass
class Plan:
    path: Path
    raw: dict
    runs: list[PlannedRun]
    runs_dir: Path
    columns: list[str]
    suffix: str = ""  # the --model/--set items every run folder (and the report) is named by

    @property
    def name(self) -> str:
        return self.path.stem

    def report_path(self) -> Path:
        return self.runs_dir / safe_name(f"report{self.suffix}.md")

    def export_dir(self) -> Path | None:
        return Path(self.raw["export"]) if self.raw.get("export") else None


# -- reading a plan ---------------------------------------------------------------------------------
def flat(settings: dict) -> dict:
    """``{"method_options": {"shots": 4}}`` -> ``{"method_options.shots": 4}`` (for folder names)."""
    return {f"{k}.{sub}" if isinstance(v, dict) else k: sv for k, v in settings.items()
            for sub, sv in (v.items() if isinstance(v, dict) else [(None, v)])}


def folder_suffix(settings: dict) -> str:
    """``{"eval_limit": 50, "method": "system1"}`` -> ``+eval_limit=50+method=system1`` (sorted, flat)."""
    return "".join(f"+{k}={v}" for k, v in sorted(flat(settings).items()))


def nest(layer: dict, where: str) -> dict:
    """A plan's settings with dotted keys (``method_options.wording: paper``) as a settings layer
    (``{"method_options": {"wording": "paper"}}``); a mapping setting may be given either way."""
    out: dict = {}
    for key, value in layer.items():
        top, dot, sub = str(key).partition(".")
        if top not in DEFAULTS:
            raise ConfigError(f"{where}: unknown setting {top!r}; settings: {', '.join(sorted(DEFAULTS))}")
        if dot:
            if not sub or not isinstance(DEFAULTS[top], dict):
                raise ConfigError(f"{where}: {key!r}: {top!r} is not a mapping setting")
            out.setdefault(top, {})[sub] = value
        elif isinstance(value, dict) and isinstance(out.get(top), dict):
            out[top] = {**out[top], **value}
        else:
            out[top] = value
    return out


def read_plan(path: str | Path) -> dict:
    """A plan file as a mapping, its top-level keys checked (ConfigError naming the file)."""
    raw = read_mapping(str(path), f"{path}: cannot read the plan", f"{path}: a plan must be a mapping")
    unknown = sorted(set(raw) - set(PLAN_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; a plan has: {', '.join(PLAN_KEYS)}")
    for key in ("runs", "grid", "bases", "paper"):
        if not isinstance(raw.get(key) or {}, dict):
            raise ConfigError(f"{path}: {key} must be a mapping")
    if not raw.get("runs") and not raw.get("grid"):
        raise ConfigError(f"{path}: a plan needs runs (named variants) or a grid")
    if not isinstance(raw.get("columns") or [], list):
        raise ConfigError(f"{path}: columns must be a list")
    return raw


def _value_name(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def variants(raw: dict, path: str | Path) -> list[Variant]:
    """The plan's runs in order: each named run (or the base alone) at each grid point."""
    named = []
    for name, spec in (raw.get("runs") or {}).items():
        where = f"{path}: run {name}"
        if not isinstance(spec or {}, dict):
            raise ConfigError(f"{where}: must be a mapping of settings")
        spec = dict(spec or {})
        kind = spec.pop("kind", "distill")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r}; kinds: {', '.join(KINDS)}")
        own = {k: spec.pop(k) for k in RUN_KEYS[1:] if k in spec}
        if not isinstance(own.get("rows") or {}, dict):
            raise ConfigError(f"{where}: rows must be a mapping")
        if kind == "route":
            check_route(own, spec, where)
        elif "from" in own or "route" in own:
            raise ConfigError(f"{where}: from and route belong to a route run (kind: route)")
        named.append(Variant(str(name), kind, own.get("base"), nest(spec, where), str(own.get("why") or ""),
                             own.get("rows") or {}, str(own.get("from") or ""), own.get("route") or {}))
    grid = raw.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid {key!r} must be a non-empty list of values")
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    out, seen = [], set()
    for v in named or [Variant("")]:
        for point in points:
            at = "".join(f"+{k}={_value_name(x)}" for k, x in point.items())
            name = (v.name + at).lstrip("+")
            layer = nest(point, f"{path}: grid")
            overrides = {k: {**v.overrides[k], **x} if isinstance(x, dict) and isinstance(v.overrides.get(k), dict)
                         else x for k, x in layer.items()}
            if name in seen:
                raise ConfigError(f"{path}: two runs are named {name!r}")
            seen.add(name)
            # A route run at a grid point routes its run at the same point (whose settings it takes).
            out.append(Variant(name, v.kind, v.base, {**v.overrides, **overrides}, v.why, v.rows,
                               v.source and v.source + at, v.route))
    return out


def check_route(own: dict, settings: dict, where: str) -> None:
    """A route run names the plan's run it routes and `s2d route`'s options; its settings are that
    run's, so it sets none of its own."""
    if not isinstance(own.get("from"), str) or not own["from"]:
        raise ConfigError(f"{where}: a route run names the run it routes (from: NAME)")
    if settings or "base" in own:
        raise ConfigError(f"{where}: a route run takes its settings from its run ({own['from']}); "
                          f"it sets none ({', '.join(sorted(settings) or ['base'])})")
    options = own.get("route") or {}
    if not isinstance(options, dict) or set(options) - set(ROUTE_OPTIONS):
        raise ConfigError(f"{where}: route must be a mapping of {', '.join(ROUTE_OPTIONS)}")
    if options.get("confidence", "logprob") not in CONFIDENCES:
        raise ConfigError(f"{where}: route confidence must be one of {', '.join(CONFIDENCES)}")


def find_file(ref: str, plan_path: str | Path) -> Path:
    """A path a plan names: as given when absolute, else beside the plan, else in the repository."""
    candidates = [Path(ref)] if Path(ref).is_absolute() else [
        Path(plan_path).parent / ref, *([repo_root() / ref] if repo_root() else []), Path(ref)]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"config {ref!r} not found (beside the plan or in the repository)")


def base_ref(raw: dict, variant: Variant) -> str | dict | None:
    """The variant's base as the plan names it: a config path, a mapping, or None (the defaults)."""
    ref = variant.base if variant.base is not None else raw.get("base")
    bases = raw.get("bases") or {}
    return bases[ref] if isinstance(ref, str) and ref in bases else ref


def base_config(raw: dict, variant: Variant, path: str | Path) -> dict:
    """The settings of the variant's base: a named base, a config file, a mapping or the defaults."""
    ref = base_ref(raw, variant)
    if ref is None:
        return {}
    if isinstance(ref, dict):
        base = apply_scale(ref, raw.get("scale"))
    elif isinstance(ref, str):
        base = apply_scale(load_config(str(find_file(ref, path))), raw.get("scale"))
    else:
        raise ConfigError("base must be a config path, a name in bases or a mapping")
    return base


def load_plan(path: str | Path, *, runs_dir: str | Path | None = None, model: str | None = None,
              set_layer: dict | None = None, raw: dict | None = None, unnamed: dict | None = None) -> Plan:
    """Every run of the plan with its settings built and checked (an error names the plan and the
    run). ``set_layer`` (parsed ``--set`` items) and ``model`` go over every run and name its folder
    (``+eval_limit=50``), so a run of other settings never lands in the plain run's folder; a run
    whose method is not its base's drops the ``method_options`` of ``set_layer`` (they are the
    base method's, as a new method drops the base's own), and its folder does not name them.
    ``unnamed`` settings (a backend) go over every run without naming it. ``raw``: the plan as
    already read from ``path`` (s2d reproduce points its bases elsewhere)."""
    raw = read_plan(path) if raw is None else raw
    named = {"model": Path(model).name} if model else {}
    suffix = folder_suffix({**(set_layer or {}), **named})
    folder_of = Path(runs_dir or raw.get("runs_dir") or Path("runs") / "sweep" / safe_name(Path(path).stem))
    runs: list[PlannedRun] = []
    for variant in variants(raw, path):
        if variant.kind == "route":
            source = routed_run(runs, variant, path)
            runs.append(PlannedRun(variant, source.config,
                                   folder_of / safe_name(variant.name + folder_suffix({**source.set_items, **named})),
                                   source, source.set_items))
            continue
        base = base_config(raw, variant, path)
        base_method = base.get("method", COMMAND_DEFAULTS.get(variant.kind, {}).get("method", DEFAULTS["method"]))
        other_method = variant.overrides.get("method", base_method) != base_method
        own = {k: v for k, v in (set_layer or {}).items() if not (k == "method_options" and other_method)}
        try:
            cfg = RunConfig.build(COMMAND_DEFAULTS.get(variant.kind, {}), base, variant.overrides,
                                  SetItems({**({"model": model} if model else {}), **(unnamed or {}), **own}))
        except ConfigError as exc:
            raise ConfigError(f"{path}: run {variant.name}: {exc}") from None
        runs.append(PlannedRun(variant, cfg, folder_of / safe_name(variant.name + folder_suffix({**own, **named})),
                               set_items=own))
    columns = [str(c) for c in raw.get("columns") or DEFAULT_COLUMNS]
    for column in columns:
        check_column(column, path)
    return Plan(Path(path), raw, runs, folder_of, columns, suffix)


def routed_run(earlier: list[PlannedRun], variant: Variant, path) -> PlannedRun:
    """The distill run a route run routes: a run of the plan listed before it (it runs first)."""
    distill = [r for r in earlier if r.variant.kind == "distill"]
    source = next((r for r in distill if r.name == variant.source), None)
    if source is None:
        raise ConfigError(f"{path}: run {variant.name}: from {variant.source!r}: not a distill run listed "
                          f"before it; distill runs: {', '.join(r.name for r in distill)}")
    return source


def check_column(column: str, path) -> None:
    top, dot, sub = column.partition(".")
    if column in COLUMNS or (top in DEFAULTS and (not dot or isinstance(DEFAULTS[top], dict))) or \
            (top in ROW_CONDITIONS and sub):
        return
    raise ConfigError(f"{path}: unknown column {column!r}; columns: {', '.join(COLUMNS)}, a setting "
                      f"(n, curator_options.threshold) or CONDITION.METRIC (system2.acc_biased)")


def select(plan: Plan, only=()) -> list[PlannedRun]:
    """The runs ``only`` names (all when empty); an unknown name is an error naming the plan's runs."""
    wanted = [n for item in only for n in str(item).split(",") if n]
    unknown = sorted(set(wanted) - {r.name for r in plan.runs})
    if unknown:
        raise ConfigError(f"{plan.path}: no run {', '.join(map(repr, unknown))}; runs: "
                          f"{', '.join(r.name for r in plan.runs)}")
    return [r for r in plan.runs if not wanted or r.name in wanted]


# -- state and checks -------------------------------------------------------------------------------
def state(run: PlannedRun) -> str:
    """new, partial, finished, or ``other settings (KEYS)`` when the folder holds another run. An
    eval run's folder is finished by an eval or a distill run (its rows are a distill run's first
    two); a distill run's only by a distill run (one over an eval run's folder reuses its rows); a
    route run's by a route run with its options (other options route again)."""
    saved = RunFolder(run.folder, run.config.settings).saved()
    if saved is None:
        return "new"
    changed = changed_settings(saved["settings"], run.config.settings, DEFAULTS)
    if changed:
        return f"other settings ({', '.join(changed)})"
    summary = run.folder / "summary.json"
    if not summary.is_file():
        return "partial"
    saved = json.loads(summary.read_text(encoding="utf-8"))
    done = saved.get("kind", "distill") in FINISHED_BY[run.variant.kind]
    if run.variant.kind == "route":
        done = done and saved.get("route_options") == route_options(run)
    return "finished" if done else "partial"


def route_options(run: PlannedRun) -> dict:
    """A route run's `s2d route` options: the plan's over route_run's defaults."""
    return {**ROUTE_OPTIONS, **run.variant.route}


def check_plan(plan: Plan, runs: list[PlannedRun] | None = None, folders: bool = True) -> None:
    """Check each run as `s2d distill` checks its settings (plugin names, their options, the task's
    data, the trainer's launch) and, unless not ``folders``, its run folder and export, before any
    run starts; loads no model."""
    plugins = get_plugins()
    for run in plan.runs if runs is None else runs:
        try:
            for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"),
                              ("trainers", "trainer")):
                plugins.get(kind, run.config[key])
            DistillRun(run.config, run.folder, progress=False, echo=lambda m: None, cache=False).check()
            if not folders:
                continue
            now = state(run)
            if now.startswith("other"):
                raise ConfigError(f"run folder {run.folder} holds a run with {now}; use --runs-dir or delete it")
            if plan.export_dir() is not None:
                check_export_dest(plan.export_dir() / run.folder.name, run.folder)
        except S2DError as exc:
            raise type(exc)(f"{plan.path}: run {run.name}: {exc}") from None


def describe(plan: Plan) -> str:
    """What `--dry-run` prints: each run, its kind, folder, state and settings (those not default)."""
    lines = [f"{plan.path}: {len(plan.runs)} run(s) in {plan.runs_dir}"]
    for run in plan.runs:
        own = {k: v for k, v in run.config.settings.items() if v != DEFAULTS.get(k)}
        lines += [f"- {run.name} ({run.variant.kind}, {state(run)}) -> {run.folder}",
                  f"  {json.dumps(own, ensure_ascii=False)}"]
        if run.source is not None:
            lines.append(f"  routes {run.source.name} ({json.dumps(route_options(run))})")
        if run.variant.why:
            lines.append(f"  why: {run.variant.why}")
    return "\n".join(lines)


# -- running ----------------------------------------------------------------------------------------
def run_plan(plan: Plan, runs: list[PlannedRun], *, progress: bool = True, echo: Callable[[str], None] = print,
             cache=True, backend_options: dict | None = None) -> dict[str, str]:
    """Run each of ``runs`` in order, reusing finished ones; a failed run (an s2d error) is reported
    and the others still run. Returns the failures: run name -> the error."""
    failed: dict[str, str] = {}
    for run in runs:
        export = plan.export_dir() / run.folder.name if plan.export_dir() is not None else None
        if state(run) == "finished":
            echo(f"== {run.name}: finished, reusing {run.folder}")
            if export is not None and not same_file(export / "summary.json", run.folder / "summary.json"):
                export_folder(run.folder, export)  # missing, or an export of an earlier run
            continue
        echo(f"== {run.name} ({run.variant.kind}) -> {run.folder}")
        distill = DistillRun(run.config, run.folder, progress=progress, echo=echo, cache=cache,
                             backend_options=backend_options)
        try:
            if run.variant.kind == "eval":
                run_eval(distill, export)
            elif run.variant.kind == "route":
                run_route(run, export, progress=progress, echo=echo, cache=cache)
            else:
                distill.run(export=export)
        except S2DError as exc:
            echo(f"== {run.name} failed: {exc}")
            failed[run.name] = str(exc)
    return failed


def run_eval(run: DistillRun, export: Path | None = None) -> dict:
    """An ``eval`` run: a distill run's System 1 and System 2 rows only (no generation on the train
    split, no training), in the same folder layout, so the report reads it the same way."""
    run.check(devices=True)
    c, rnd = run.config, run.round(1)
    with hold(run.folder.lock(), f"the run folder {run.dir}"):
        claim(run.folder)
        try:
            for label, method, options, _ in rnd.conditions()[:2]:
                if rnd.record_path(label).is_file():
                    run.echo(f"[eval {label}] reusing {rnd.record_path(label)}")
                    continue
                run.echo(f"[eval {label}] running")
                evaluate(run.engine(), model_ref=c["model"], tasks=[c["task"]], method=method, limit=c["eval_limit"],
                         seed=c["seed"], log_samples=True, results_dir=str(run.folder.eval_dir(1)), label=label,
                         task_options=c.eval_task_options() or None, progress=run.progress,
                         method_options=options or None, cache=run.cache, warn=run.echo)
        finally:
            run.close_engine()
        summary = {"run": run.dir.name, "kind": "eval", "settings": c.settings, "rows": rnd.rows(), "error": None,
                   "curation": None}
        write_json(run.folder.summary(), summary)
        if export is not None:
            export_run(run.dir, export)
    return summary


def run_route(run: PlannedRun, export: Path | None = None, *, progress: bool = True,
              echo: Callable[[str], None] = print, cache=True) -> dict:
    """A ``route`` run: `s2d route` over its finished distill run, written in its own folder (the
    routing files, the route's eval record) with a summary the report reads as any run's: the
    routed run's rows, the route row and the chosen threshold."""
    source = run.source
    if state(source) != "finished":
        raise ConfigError(f"its run {source.name} has not finished ({state(source)}); run it first")
    folder, options = RunFolder(run.folder, run.config.settings), route_options(run)
    with hold(folder.lock(), f"the run folder {run.folder}"):
        claim(folder)
        result = route_run(source.folder, out_dir=run.folder, confidence=options["confidence"],
                           samples=options["samples"], tune_split=options["tune_split"],
                           tolerance=options["tolerance"], round_=options["round"], cache=cache,
                           progress=progress, echo=echo)
        routed = json.loads((source.folder / "summary.json").read_text(encoding="utf-8"))
        summary = route_summary(run, result, routed, options)
        write_json(folder.summary(), summary)
        if export is not None:
            export_folder(run.folder, export)
    return summary


def route_summary(run: PlannedRun, result: dict, routed: dict, options: dict) -> dict:
    """A route run's summary: System 1 and System 2 of the routed run's first round (the base
    weights route falls back to), the routed round's distilled row, and the route's lm-eval row."""
    rounds = routed.get("rounds") or [routed]
    rnd = rounds[-1] if options["round"] is None else rounds[options["round"] - 1]
    e = result["through_lm_eval"]
    record = load_record(run.folder / e["record"])
    rows = [r for r in rounds[0]["rows"] if r["condition"] != "distilled"]
    rows += [r for r in rnd["rows"] if r["condition"] == "distilled"]
    metrics = metrics_of(record)
    rows.append({"condition": "route", "metric": headline_metric(metrics), "score": e["score"],
                 "mean_tokens": e["mean_tokens"], "n": record["s2d"]["n_examples"], "metrics": metrics})
    return {"run": run.folder.name, "kind": "route", "from": run.source.folder.name, "settings": run.config.settings,
            "route_options": options, "rows": rows, "error": None, "curation": rnd.get("curation"),
            "route": {k: result[k] for k in ("chosen", "test_at_chosen", "through_lm_eval")}}


def same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def export_folder(folder: Path, dest: Path) -> Path:
    """A finished run's export (:func:`export_run`: config, summary, curated set, eval records) and,
    for a route run, its routing files (table, curve data, plot)."""
    export_run(folder, dest)
    for name in ("routing.json", "routing.md", "routing.png"):
        if (folder / name).is_file():
            shutil.copy2(folder / name, dest / name)
    return dest


# -- the report -------------------------------------------------------------------------------------
def tokens(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else "-"


def _last_round(summary: dict) -> dict:
    """A run's last round (its only one, for a one-round run): rows and curation."""
    rounds = summary.get("rounds") or [summary]
    return rounds[-1]


def cells(run: PlannedRun, summary: dict | None, columns: list[str]) -> list[str]:
    """One report row: ``columns`` of a finished run's summary (its last round) and settings."""
    rnd = _last_round(summary) if summary else {}
    by = {("system2" if r["condition"].startswith("system2") else r["condition"]): r for r in rnd.get("rows") or []}
    cur = rnd.get("curation") or {}
    route = (summary or {}).get("route") or {}

    def cell(column: str) -> str:
        top, dot, sub = column.partition(".")
        if top in ROW_CONDITIONS and sub:
            return pct((by.get(top) or {}).get("metrics", {}).get(sub))
        if top in DEFAULTS:  # a setting, the plan's resolved value
            value = run.config[top].get(sub) if dot else run.config[top]
            return "-" if value is None else _value_name(value)
        if not summary and column not in ("kind", "why"):
            return "-"
        if column in ROW_CONDITIONS:
            return pct((by.get(column) or {}).get("score"))
        if column.endswith("_tokens"):
            return tokens((by.get(column[: -len("_tokens")]) or {}).get("mean_tokens"))
        return {
            "kind": lambda: run.variant.kind,
            "tokens": lambda: " / ".join(tokens((by.get(c) or {}).get("mean_tokens")) for c in CONDITIONS),
            "kept": lambda: f"{cur['kept_inputs']}/{cur['inputs']}" if cur else "-",
            "records": lambda: str(cur.get("records", "-")),
            "target_accuracy": lambda: target_accuracy_cell(cur),
            "cut": lambda: pct((by.get("system2") or {}).get("cap_hit_share")),
            "error": lambda: (summary.get("error") or "-").replace("|", "/"),
            "why": lambda: run.variant.why.replace("|", "/") or "-",
            "route_threshold": lambda: f"{route['chosen']['threshold']:.4g}" if route else "-",
            "route_to_system2": lambda: pct(route["test_at_chosen"]["to_system2"]) if route else "-",
        }[column]()

    return [run.name] + [cell(c) for c in columns]


def read_summary(run: PlannedRun) -> tuple[dict | None, str]:
    """A run's summary.json when its folder holds this run's finished results, and its state."""
    now = state(run)
    if now != "finished":
        return None, now
    return json.loads((run.folder / "summary.json").read_text(encoding="utf-8")), now


def render_report(plan: Plan) -> str:
    """The plan's table from its run folders: one row per run (``-`` where a run has not finished)."""
    lines = [f"# Sweep: {plan.name}", ""]
    if plan.raw.get("description"):
        lines += [str(plan.raw["description"]).strip(), ""]
    lines += [f"Plan `{plan.path}`, run folders under `{plan.runs_dir}`"
              + (f", every run with `{plan.suffix[1:]}`" if plan.suffix else "") + ". A run of several rounds "
              "shows its last round; scores are each condition's headline metric.", "",
              "| run | " + " | ".join(plan.columns) + " |", "|" + "---|" * (len(plan.columns) + 1)]
    missing, errors = [], []
    for run in plan.runs:
        summary, now = read_summary(run)
        if summary is None:
            missing.append(f"`{run.name}` ({now})")
        elif summary.get("error"):
            errors.append(f"- `{run.name}`: {summary['error']}")
        lines.append("| " + " | ".join(cells(run, summary, plan.columns)) + " |")
    if missing:
        lines += ["", "Not finished: " + ", ".join(missing) + "."]
    if errors:
        lines += ["", "No distilled model:", "", *errors]
    return "\n".join(lines) + "\n"


def write_report(plan: Plan) -> tuple[str, Path]:
    """Render the report and write it beside the run folders (RUNS_DIR/report.md)."""
    text = render_report(plan)
    path = plan.report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(text)
    return text, path
