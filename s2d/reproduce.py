"""`s2d reproduce TABLE`: run a paper table's distillation configs (finished stages are reused) and
write the table in the paper's layout, the paper's numbers beside ours.

Configs are YAML files under ``experiments/configs/`` (see its README); ``--scale paper`` applies each
config's ``scale.paper`` overrides (the paper's data sizes and sample counts) for GPU users.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Callable

from s2d.config import DEFAULTS
from s2d.errors import ConfigError, InputError, RunsFailed
from s2d.files import atomic_write
from s2d.models import DEFAULT_MODEL
from s2d.store import changed_settings, safe_name, target_accuracy_cell
from s2d.sweep import Plan, base_ref, check_plan, flat, folder_suffix, load_plan, read_plan, run_plan, variants

# The paper's tables are plans (experiments/plans/table1.yaml ...): their runs, and in their `paper`
# block the paper's numbers (arXiv 2407.06023 v1, Llama-2-70B-chat, from shared/research/paper.md).
PLANS = Path(__file__).resolve().parent.parent / "experiments" / "plans"
TABLES = ("table1", "table2", "table3", "table4")


def paper_spec(table: str) -> dict:
    """A table as this module lays it out, read from its plan. "runs" are the `s2d distill` runs
    behind the table, each a config plus overrides (the paper's baselines are the same run with
    another method or curator) and the rows it fills: row key -> the run's condition. "rows": row key
    -> (label, {task: (metrics..., mean tokens)}); a paper cell of None is one the paper does not print."""
    path = PLANS / f"{table}.yaml"
    raw = read_plan(path)
    paper = raw.get("paper") or {}
    runs = []
    for variant in variants(raw, path):
        ref = base_ref(raw, variant)
        if not isinstance(ref, str):
            raise ConfigError(f"{path}: run {variant.name}: a paper table's run names a config file")
        runs.append((Path(ref).stem, variant.overrides, variant.rows))
    spec = {"runs": runs, "title": paper["title"]}
    if paper.get("metrics"):
        spec["metrics"] = tuple(paper["metrics"])
    spec["rows"] = {key: (row["label"], {task: tuple(cells) for task, cells in row.items() if task != "label"})
                    for key, row in paper["rows"].items()}
    if paper.get("breakdown"):
        spec["breakdown"] = _breakdown(paper["breakdown"], spec["rows"], path)
    return spec


def _breakdown(raw, rows: dict, path: Path) -> dict:
    """A plan's `paper.breakdown`: one metric per group (`agreement_writing` ...) in a second table
    (the paper's Table 6: agreement per MT-bench category), its cells per row key of the table."""
    where = f"{path}: paper.breakdown"
    if not isinstance(raw, dict) or not {"title", "metric", "columns", "rows"} <= set(raw):
        raise ConfigError(f"{where}: needs title, metric, columns and rows")
    if not isinstance(raw["columns"], list) or not isinstance(raw["rows"], dict):
        raise ConfigError(f"{where}: columns is a list of names, rows a mapping of row key -> cells")
    columns = raw["columns"]
    for key, cells in raw["rows"].items():
        if key not in rows:
            raise ConfigError(f"{where}: row {key!r} is not one of the table's rows ({', '.join(rows)})")
        if len(cells) != len(columns):
            raise ConfigError(f"{where}: row {key!r} has {len(cells)} cells for {len(columns)} columns")
    return {"title": raw["title"], "metric": raw["metric"], "columns": columns, "rows": dict(raw["rows"]),
            "labels": dict(raw.get("labels") or {})}


class _Paper(Mapping):
    """The paper's tables by name, each read from its plan when first asked for."""

    def __init__(self):
        self._read: dict = {}

    def __getitem__(self, table: str) -> dict:
        if table not in TABLES:
            raise KeyError(table)
        if table not in self._read:
            self._read[table] = paper_spec(table)
        return self._read[table]

    def __iter__(self):
        return iter(TABLES)

    def __len__(self) -> int:
        return len(TABLES)


PAPER = _Paper()


def config_names() -> set[str]:
    return {name for spec in PAPER.values() for name, *_ in spec["runs"]}


def run_name(config: str, overrides: dict) -> str:
    """Run folder name: the config's, plus its overrides (`table1_last_letter_rar2+method=system1`)."""
    return config + folder_suffix(overrides)


def config_path(configs_dir: str | Path, name: str) -> Path:
    path = Path(configs_dir) / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"{path}: config missing (the repository's experiments/configs holds them)")
    return path


def table_plan(table: str, *, scale: str = "small", configs_dir: str | Path = "experiments/configs",
               runs_dir: str | Path = "runs/reproduce", out_dir: str | Path = "results/reproduce",
               backend: str | None = None, model: str | None = None, settings: dict | None = None) -> Plan:
    """The table's plan as `s2d sweep` loads it, with reproduce's layout: the bases read from
    ``configs_dir``, the ``scale`` applied, and each run's folder (and export under ``out_dir``) in
    ``<scale>[/<model>]/`` named by its config and every override, the ``--set`` items sorted in."""
    if table not in PAPER:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(PAPER)}")
    path = PLANS / f"{table}.yaml"
    raw = read_plan(path)
    other = model not in (None, DEFAULT_MODEL)
    where = Path(scale) / safe_name(Path(model).name) if other else Path(scale)
    # Resolved: the plan's loader looks beside the plan first, and must read the file checked here.
    bases = {name: str(config_path(configs_dir, Path(ref).stem).resolve())
             for name, ref in (raw.get("bases") or {}).items()}
    raw = {**raw, "bases": bases, "scale": scale, "export": str(Path(out_dir) / where)}
    plan = load_plan(path, raw=raw, runs_dir=Path(runs_dir) / where, model=model, set_layer=settings,
                     unnamed={"backend": backend} if backend else None)
    for run in plan.runs:
        stem = Path(base_ref(raw, run.variant)).stem
        run.folder = plan.runs_dir / safe_name(run_name(stem, {**run.variant.overrides, **flat(run.set_items)}))
    return plan


def run_table(table: str, *, scale: str = "small", configs_dir: str | Path = "experiments/configs",
              runs_dir: str | Path = "runs/reproduce", out_dir: str | Path = "results/reproduce",
              backend: str | None = None, progress: bool = True, echo: Callable[[str], None] = print,
              model: str | None = None, settings: dict | None = None, only: Iterable[str] = (),
              report_only: bool = False) -> Path:
    """Run (or reuse) a table's runs through `s2d sweep`'s runner and write the table. Another
    ``model`` than the default gets its own run folders, exports and table file
    (``<table>_<scale>_<model>.md``): nothing of the default model's is replaced. ``settings``
    (parsed ``--set`` items) go over every run, named in its folder (``+eval_limit=50``) so a run of
    other settings never lands in the default's folder. ``only`` (run folder names): run just these;
    the table takes the others' rows from their finished run folders or, failing that, their exports
    under ``out_dir`` (a table whose runs were made on different machines or sessions), and says
    which rows it lacks. ``report_only``: run none and check none, every row from its folder or
    export. A run that fails with an s2d error leaves its rows empty, the others still run, and
    :class:`RunsFailed` (its ``path`` the table's) follows the table."""
    plan = table_plan(table, scale=scale, configs_dir=configs_dir, runs_dir=runs_dir, out_dir=out_dir,
                      backend=backend, model=model, settings=settings)
    unknown = set(only) - {run.folder.name for run in plan.runs}
    if unknown:
        raise ConfigError(f"--only {', '.join(sorted(unknown))}: not a run of {table}; its runs: "
                          f"{', '.join(run.folder.name for run in plan.runs)}")
    failed: dict[str, str] = {}  # run folder name -> why
    if not report_only:
        # Every run of the table is checked (settings, plugin options, task data) before the first
        # starts: a --set that only the fourth run cannot take must not cost three full runs. The
        # folders and exports only of the runs that run: the others' rows are read, whatever is there.
        chosen = [run for run in plan.runs if not only or run.folder.name in only]
        check_plan(plan, [run for run in plan.runs if run not in chosen], folders=False)
        check_plan(plan, chosen)
        by_name = {run.name: run.folder.name for run in chosen}
        failed = {by_name[name]: why for name, why in run_plan(plan, chosen, progress=progress, echo=echo).items()}
    summaries, missing = [], []  # missing: (run folder name, "failed" | "not run", why)
    for run in plan.runs:
        if run.folder.name in failed:
            missing.append((run.folder.name, "failed", failed[run.folder.name]))
            continue
        summary, why = finished_summary(run.folder, plan.export_dir() / run.folder.name, run.config.settings)
        if summary is None:
            missing.append((run.folder.name, "not run", why))
        else:
            summaries.append((run.config, summary, run.variant.rows))
    if missing:
        echo("their rows stay empty: " + "; ".join(f"{name}: {status} ({why})" for name, status, why in missing))
    # The settings name the table file as they name the run folders: one of other settings never
    # replaces the plain table.
    other = model not in (None, DEFAULT_MODEL)
    items = sorted(flat(settings or {}).items())
    stem = f"{table}_{scale}" + (f"_{Path(model).name}" if other else "") + "".join(f"+{k}={v}" for k, v in items)
    path = Path(out_dir) / f"{safe_name(stem)}.md"
    command = " ".join([f"s2d reproduce {table} --scale {scale}", *([f"--model {model}"] if other else []),
                        *(f"--set {k}={v}" for k, v in items)])
    with atomic_write(path) as f:
        f.write(render_table(table, scale, summaries, where=str(plan.runs_dir.relative_to(runs_dir)),
                             model=model or DEFAULT_MODEL, command=command, missing=missing))
    if failed:
        raise RunsFailed(f"{len(failed)} run(s) of {table} failed, their rows are empty in {path}: "
                         + "; ".join(f"{name}: {why}" for name, why in failed.items()), path=path)
    return path


def finished_summary(run_dir: Path, export: Path, settings: dict) -> tuple[dict | None, str]:
    """A run's summary from its finished run folder, else from its export, when it is a distill
    run's of these ``settings`` (what they make: how it was computed may differ); else None and why."""
    why = "no finished run folder or export"
    for folder in (run_dir, export):
        path = folder / "summary.json"
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable summary ({exc})") from None
        changed = changed_settings(summary.get("settings", {}), settings, DEFAULTS)
        if summary.get("kind", "distill") != "distill":
            why = f"{path} is a {summary['kind']} run's"
        elif changed:
            why = f"{path} has other settings ({', '.join(changed)})"
        else:
            return summary, ""
    return None, why


def render_table(table: str, scale: str, summaries: list, where: str | None = None,
                 model: str = "smollm2-135m", command: str | None = None,
                 missing: Iterable[tuple[str, str, str]] = ()) -> str:
    """`summaries`: (config, distill summary, {row key: condition}) per run; `command`: what made
    it (default: the plain `s2d reproduce` line for this table, scale and model); `missing`: (run
    folder, "failed" or "not run", why) for runs with no summary, listed so an empty row is never
    read as a result."""
    command = command or (f"s2d reproduce {table} --scale {scale}"
                          + ("" if model == "smollm2-135m" else f" --model {model}"))
    spec = PAPER[table]
    metrics = spec.get("metrics", ("exact_match",))
    cells_of = {}  # (row key, task) -> the run's row for that condition
    curation_of = {}  # (row key, task) -> the curation behind a distilled row
    for cfg, summary, rows in summaries:
        for key, condition in rows.items():
            found = next((r for r in summary.get("rows", []) if r["condition"] == condition), None)
            if found:
                cells_of[(key, cfg["task"])] = found
                if condition == "distilled":
                    curation_of[(key, cfg["task"])] = summary.get("curation") or {}
    tasks = list(next(iter(spec["rows"].values()))[1])
    head = ["row"]
    for task in tasks:
        # kept: inputs the curator kept; target acc.: their targets against the references (analysis
        # only: no curator reads a reference); cut: responses that ended at the token cap.
        head += [f"{task} {m} (ours)" for m in metrics] + [f"{task} #tokens (ours)", "kept", "target acc.", "cut"]
        head += [f"{task} {m} (paper)" for m in metrics] + [f"{task} #tokens (paper)"]
    lines = [f"# {spec['title']}", "",
             f"Ours: `{model}`, scale `{scale}`, made by `{command}` on "
             f"{time.strftime('%Y-%m-%d')}. Paper: Llama-2-70B-chat (arXiv 2407.06023 v1).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, (label, paper) in spec["rows"].items():
        cells = [label]
        for task in tasks:
            row = cells_of.get((key, task))
            cells += [f"{100 * row['metrics'][m]:.1f}%" if row and isinstance(row["metrics"].get(m), float) else "-"
                      for m in metrics]
            cells.append(f"{row['mean_tokens']:.1f}" if row else "-")
            cur = curation_of.get((key, task))
            cells += [f"{cur.get('kept_inputs')}/{cur.get('inputs')}" if cur else "-",
                      target_accuracy_cell(cur),
                      f"{100 * row['cap_hit_share']:.1f}%" if row and row.get("cap_hit_share") is not None else "-"]
            values = tuple(paper.get(task, ())) + (None,) * (len(metrics) + 1)
            cells += [f"{v}%" if v is not None else "-" for v in values[: len(metrics)]]
            cells.append(str(values[len(metrics)]) if values[len(metrics)] is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for cfg, summary, _ in summaries:
        cur = summary.get("curation") or {}
        folder = f"{where or scale}/{Path(summary['run']).name}"  # where run_table exported it, beside this file
        error = summary.get("error") or ""
        note = f" **{error[:1].upper()}{error[1:]}.**" if error else ""
        lines.append(f"- {cfg['task']}: method `{cfg['method']}`, curator `{cfg['curator']}`, trainer "
                     f"`{cfg['trainer']}`, n={cfg['n']}; curated {cur.get('records')} records from "
                     f"{cur.get('kept_inputs')}/{cur.get('inputs')} inputs (dropped {cur.get('dropped_by_reason')}); "
                     f"run [{folder}]({folder}/summary.txt).{note}")
    for name, status, why in missing:
        lines.append(f"- {name}: **{status}** ({why}), so its rows are empty.")
    if spec.get("breakdown"):
        lines += [""] + _breakdown_lines(spec, cells_of, tasks)
    return "\n".join(lines).rstrip("\n") + "\n"


def _breakdown_lines(spec: dict, cells_of: dict, tasks: list[str]) -> list[str]:
    """The second table: per row, ours then the paper's cell for each group (`-` where either has none)."""
    bd = spec["breakdown"]
    lines = [f"## {bd['title']}", "", "Each cell: ours (paper).", "",
             "| row | " + " | ".join(bd["columns"]) + " |", "|" + "---|" * (len(bd["columns"]) + 1)]
    for key, (label, _) in spec["rows"].items():
        found = next((cells_of[(key, task)] for task in tasks if (key, task) in cells_of), None)
        paper = bd["rows"].get(key)
        if found is None and paper is None:
            continue
        cells = [label + (f" (the paper's row: {bd['labels'][key]})" if key in bd["labels"] else "")]
        for i, column in enumerate(bd["columns"]):
            value = found["metrics"].get(f"{bd['metric']}_{column}") if found else None
            ours = f"{100 * value:.1f}%" if isinstance(value, float) and value == value else "-"
            cells.append(f"{ours} ({paper[i]}%)" if paper is not None and paper[i] is not None else f"{ours} (-)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]
