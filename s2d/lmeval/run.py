"""`s2d eval`: run lm-eval programmatically over s2d's task files and write one record per
(task, condition), and `s2d leaderboard`: a Markdown table and a plot of those records."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from s2d.config import ConfigError
from s2d.errors import S2DError
from s2d.files import atomic_write, portable_path, write_json, write_jsonl

SAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(text: str) -> str:
    """A path component that cannot climb out of the results folder."""
    name = SAFE.sub("_", text).strip("._") or "unnamed"
    return name[:120]


def condition_name(method: str, adapter: str | None, label: str | None = None,
                   method_options: dict | None = None) -> str:
    """``method[+key=value...][+adapter-NAME]``; long option values (templates) become a short hash."""
    if label:
        return safe_name(label)
    name = method
    for key, value in sorted((method_options or {}).items()):
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        if len(text) > 24:
            import hashlib

            text = hashlib.sha256(text.encode()).hexdigest()[:8]
        name += f"+{key}={text}"
    return safe_name(name + (f"+adapter-{local_name(adapter)}" if adapter else ""))


def local_name(path: str) -> str:
    """A local model or adapter folder's name in records: the folder's name and the first 8 hex
    digits of its weights' hash, so two runs' `adapter/` (or `merged/`) folders never share a record."""
    from s2d.models import weights_fingerprint

    return f"{Path(path).resolve().name}-{weights_fingerprint(path)[:8]}"


def record_path(results_dir: str | Path, model_ref: str, task: str, condition: str) -> Path:
    """Where `s2d eval` writes a (model, task, condition) record: an alias keeps its name, a hub id
    becomes org_name, a local folder its name plus its weights' hash."""
    from s2d.models import ALIASES

    model_dir = safe_name(local_name(model_ref) if model_ref not in ALIASES and Path(model_ref).exists() else model_ref)
    return Path(results_dir) / model_dir / safe_name(task) / f"{safe_name(condition)}.json"


class RecordExistsError(S2DError, ValueError):
    """An eval record of other settings is where a new one would be written."""


def record_identity(*, model_ref: str, model_path: str | None, method: str, method_options: dict | None,
                    adapter: str | None, limit: int | None, task_options: dict | None, seed: int) -> dict:
    """What decides a record's numbers: the weights the engine loads (their content hash), the
    condition (with the method's defaults, ``method_resolved``) and the documents."""
    from s2d.traces import resolved_method_options, weights_identity

    return json.loads(json.dumps({
        "model": model_ref, "model_weights": weights_identity(model_path),
        "method": method, "method_options": method_options or {},
        "method_resolved": resolved_method_options(method, method_options), "adapter": weights_identity(adapter),
        "limit": limit, "task_options": task_options or {}, "seed": seed}, sort_keys=True, default=str))


def check_record(path: Path, identity: dict, overwrite: bool = False) -> None:
    """Refuse to replace a record made with other settings (unless ``overwrite``); a rerun of the
    same settings replaces it."""
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))["s2d"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RecordExistsError(f"{path} exists and is not an s2d eval record; move it or pass --overwrite") from None
    saved = old.get("identity") or {  # records of earlier versions: compare what they recorded
        "model": old.get("model"), "method": old.get("method"), "method_options": old.get("method_options") or {},
        "limit": old.get("limit"), "task_options": (old.get("generation") or {}).get("task_options") or {},
        "seed": old.get("seed")}
    differ = sorted(k for k in saved if k in identity and saved.get(k) != identity.get(k))
    if {"method", "method_options"} & set(differ):  # the resolved options follow; naming them is noise
        differ = [k for k in differ if k != "method_resolved"]
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} now" for k in differ)
        raise RecordExistsError(f"{path} holds a record made with other settings ({shown}); choose another "
                                f"--out-dir or --label, or pass --overwrite")


def record_lock(path: Path):
    """The lock `s2d eval` holds on a record from its check until it is written (a hidden file
    beside it), so two evals of one record cannot both pass the check and lose one result."""
    from s2d.locks import SUFFIX, hold

    return hold(Path(path).with_name(f".{Path(path).name}{SUFFIX}"), f"the eval record {path}")


def planned_records(*, results_dir, model_ref, model_path, tasks, method, adapter, limit, label, task_options,
                    method_options, seed) -> list[tuple[Path, dict]]:
    """(record path, identity) for each task, known before any model loads."""
    condition = condition_name(method, adapter, label, method_options)
    if (task_options or {}).get("subset") and not label:  # a subset is a different condition: never overwrite
        condition += f"+subset={task_options['subset']}" + (
            f"-seed{task_options['subset_seed']}" if task_options.get("subset_seed") else "")
    if limit is not None and not label:  # so are the first N documents
        condition += f"+limit={limit}"
    identity = record_identity(model_ref=model_ref, model_path=model_path, method=method,
                               method_options=method_options, adapter=adapter, limit=limit, task_options=task_options,
                               seed=seed)
    return [(record_path(results_dir, model_ref, task, condition), identity) for task in tasks]


def task_manager(metadata: dict | None = None):
    from lm_eval.tasks import TaskManager

    from s2d.lmeval.tasks import tasks_path

    # include_defaults=False: indexing lm-eval's ~14k built-in tasks costs 8-15 s and we need none.
    return TaskManager(include_path=tasks_path(), include_defaults=False, metadata=metadata)


def evaluate(backend, *, model_ref: str, tasks: list[str], method: str = "system1", adapter: str | None = None,
             limit: int | None = None, seed: int = 0, log_samples: bool = False, results_dir: str = "results/eval",
             label: str | None = None, task_options: dict | None = None, progress: bool = True,
             method_options: dict | None = None, cache=None, overwrite: bool = False,
             warn: Callable[[str], None] | None = None) -> list[Path]:
    """Evaluate one condition (method + adapter) on each task; return the record paths. A record of
    other settings already at a path is an error (``overwrite`` replaces it)."""
    import lm_eval

    from s2d.envinfo import git_commit, versions
    from s2d.lmeval.model import S2DLM

    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    plan = planned_records(results_dir=results_dir, model_ref=model_ref, model_path=backend.model_path, tasks=tasks,
                           method=method, adapter=adapter,
                           limit=limit, label=label, task_options=task_options, method_options=method_options,
                           seed=seed)
    for path, identity in plan:
        check_record(path, identity, overwrite)
    tm = task_manager(task_options)
    run_root = Path(results_dir).parent  # a distill run's folder holds eval/: paths inside it are relative
    written = []
    for task, (out, identity) in zip(tasks, plan):
        condition = out.stem
        lm = S2DLM(backend, method=method, adapter=adapter, progress=progress, method_options=method_options,
                   task_options=task_options, cache=cache, seed=seed)
        start = time.perf_counter()
        from s2d.lmeval.tasks import lm_eval_name, lm_eval_spec

        lm_task = lm_eval_name(task)
        from s2d.envinfo import quiet_git_hash

        with quiet_git_hash():  # lm-eval's own `git describe` prints "fatal: ..." outside a checkout
            res = lm_eval.simple_evaluate(
                model=lm, tasks=[lm_eval_spec(task)], task_manager=tm, limit=limit, log_samples=log_samples,
                bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed)
        wall = time.perf_counter() - start
        usage = lm.usage
        n = max(len(usage), 1)
        stage_tokens: dict[str, float] = {}
        for u in usage:
            for k, v in u["stages"].items():
                stage_tokens[k] = stage_tokens.get(k, 0) + v / n
        caps = cap_summary(usage)
        record: dict[str, Any] = {
            "s2d": {
                "task": task, "lm_eval_task": lm_task, "condition": condition, "identity": identity,
                "method": method, "method_options": method_options or {},
                "adapter": portable_path(adapter, run_root), "model": model_ref,
                "model_path": portable_path(backend.model_path, run_root), "backend": backend.name, "seed": seed,
                "limit": limit,
                "generation": {"dtype": getattr(backend, "dtype", None), "chat_template": True,
                               "task_options": task_options or {}},
                "n_examples": len(usage),
                "mean_generated_tokens": sum(u["generated_tokens"] for u in usage) / n,
                "mean_generated_tokens_by_stage": stage_tokens,
                "mean_prompt_tokens": sum(u["prompt_tokens"] for u in usage) / n,
                # Responses cut by the token cap: a cut answer measures the cap, not the model.
                **caps,
                "method_stats": {k: v / n_ for k, (v, n_) in lm.method_stats.items() if n_},
                "wall_seconds": wall, "samples_generated": lm.cache_stats["generated"],
                "samples_from_cache": lm.cache_stats["reused"], "versions": {**versions(), **backend.versions()},
                "git_commit": git_commit(Path(__file__).parent), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
            "lm_eval": {k: res[k] for k in ("results", "configs", "versions", "n-shot", "higher_is_better",
                                            "n-samples") if k in res},
        }
        for cfg in record["lm_eval"].get("configs", {}).values():  # lm-eval records its YAML's absolute path
            for holder in (cfg, cfg.get("metadata") if isinstance(cfg, dict) else None):
                if isinstance(holder, dict) and isinstance(holder.get("config_source"), str):
                    holder["config_source"] = portable_path(holder["config_source"], run_root)
        write_json(out, json.loads(json.dumps(record, default=str)))
        if log_samples:
            samples = res.get("samples", {}).get(lm_task, [])
            by_doc = {u["doc_id"]: u for u in usage}
            write_jsonl(out.with_suffix(".samples.jsonl"), (
                json.loads(json.dumps(sample_line(s, by_doc.get(s["doc_id"]), res["results"][lm_task]),
                                      default=str))
                for s in samples))
        written.append(out)
        if warn is not None:
            for stage, share in caps["cap_hit_share_by_stage"].items():
                if share > CAP_WARN_SHARE:
                    warn(f"s2d: warning: {100 * share:.1f}% of the {stage!r} responses of {out} ended at the "
                         f"token cap (finish_reason length); raise method_options.stage_options.{stage}."
                         f"max_new_tokens (or the task's max_gen_toks for System 1)")
    return written


CAP_WARN_SHARE = 0.05  # `s2d eval` warns above this share of a stage's responses cut by the cap


def cap_summary(usage: list[dict]) -> dict:
    """The cap-hit fields of a record: per stage, the share of generated steps that ended at the
    token cap; overall, the share of documents whose scored response had any stage cut."""
    from s2d.methods.base import cap_shares

    totals: dict[str, list[int]] = {}
    for u in usage:
        for stage, (hit, steps) in (u.get("cap_hits") or {}).items():
            row = totals.setdefault(stage, [0, 0])
            row[0] += hit
            row[1] += steps
    return {"cap_hit_share": sum(bool(u.get("cut")) for u in usage) / max(len(usage), 1),
            "cap_hit_share_by_stage": cap_shares(totals),
            "cap_hits_by_stage": {k: {"hit": hit, "steps": steps} for k, (hit, steps) in totals.items()}}


def sample_line(sample: dict, usage: dict | None, results: dict) -> dict:
    """One --log-samples line: the document, the rendered prompt, every stage's text, the response
    lm-eval scored, the parsed answer, the reference and the document's metrics."""
    # lm-eval names aggregated metrics "exact_match,none" (metric, filter); a sample holds "exact_match".
    names = {key.split(",")[0] for key in results if key != "alias" and not key.split(",")[0].endswith("_stderr")}
    usage = dict(usage or {})
    steps = usage.pop("steps", [])
    return {"doc_id": sample["doc_id"], "doc": sample["doc"], "prompt": steps[0]["prompt"] if steps else None,
            "stages": steps, "response": sample["resps"][0][0], "answer": usage.pop("answer", None),
            "reference": sample.get("target"), "metrics": {m: sample[m] for m in sorted(names) if m in sample},
            "usage": usage}


# -- leaderboard --------------------------------------------------------------------------------
def load_record(path: str | Path, why: list | None = None) -> dict | None:
    """One `s2d eval` record, or None for any other (or unreadable) JSON file; ``why`` collects
    (path, reason) for files that look like records but cannot be read as one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if why is not None:
            why.append((str(path), f"unreadable: {exc}"))
        return None
    if not (isinstance(data, dict) and "s2d" in data and "lm_eval" in data):
        return None  # another kind of JSON file (a config, a summary)
    try:
        s = data["s2d"]
        float(s["mean_generated_tokens"]), str(s["task"]), str(s["condition"])
        data["lm_eval"]["results"][results_key(s)].items()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if why is not None:
            why.append((str(path), f"not an s2d eval record of this version ({type(exc).__name__}: {exc})"))
        return None
    data["_path"] = str(path)
    return data


def load_records(results_dir: str | Path, skipped: list | None = None) -> list[dict]:
    """Every record under ``results_dir``; ``skipped`` collects (path, why) for those it cannot use."""
    return [r for r in (load_record(p, skipped) for p in sorted(Path(results_dir).rglob("*.json"))) if r is not None]


def record_source(record: dict, results_dir: str | Path) -> str:
    """Where under ``results_dir`` a record sits, above its MODEL/TASK/CONDITION.json: the run
    folder of a `s2d distill` record (``RUN/eval/...``), "" for a plain `s2d eval` one."""
    parts = Path(record["_path"]).resolve().relative_to(Path(results_dir).resolve()).parts[:-3]
    return "/".join(parts[:-1] if parts and parts[-1] == "eval" else parts)


def results_key(s2d: dict) -> str:
    """The name a record's task has in its lm-eval results (records of earlier versions lack it)."""
    return s2d.get("lm_eval_task") or f"s2d_{s2d['task']}"


def metrics_of(record: dict) -> dict[str, float]:
    raw = record["lm_eval"]["results"].get(results_key(record["s2d"]), {})
    out = {}
    for key, value in raw.items():
        if "_stderr" in key or key in ("alias", "sample_len") or not isinstance(value, (int, float)):
            continue
        out[key.split(",")[0]] = value
    return out


# The score a task is ranked by, in this order (acc_biased: triviaqa_bias's leak-free biased score).
HEADLINE_METRICS = ("exact_match", "acc_biased", "acc", "agreement")


def headline_metric(metrics: dict[str, float]) -> str | None:
    """The name of a record's headline score among ``metrics_of(record)`` (None if it has none)."""
    return next((k for k in HEADLINE_METRICS if k in metrics), None)


def leaderboard(results_dir: str | Path, out_dir: str | Path | None = None,
                warn=None) -> tuple[str, Path, Path | None]:
    """Write leaderboard.md (and leaderboard.png when matplotlib is there) for every record; each
    file that looks like a record but cannot be used is named through ``warn`` with the reason."""
    skipped: list = []
    records = load_records(results_dir, skipped)
    for path, why in skipped:
        (warn or (lambda m: None))(f"s2d: leaderboard skips {path}: {why}")
    if not records:
        raise FileNotFoundError(f"no s2d eval records under {results_dir}")
    out_dir = Path(out_dir or results_dir)
    lines = ["# s2d leaderboard", ""]
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["s2d"]["task"], []).append(r)
    for task, rows in sorted(by_task.items()):
        metric_names = sorted({m for r in rows for m in metrics_of(r)},
                              key=lambda m: (m not in HEADLINE_METRICS, m))
        # Runs of `s2d distill` each hold a system1 and a distilled record: name the run.
        sources = {id(r): record_source(r, results_dir) for r in rows}
        runs = any(sources.values())
        lines += [f"## {task}", "", "| model | condition | " + ("run | " if runs else "") + "backend | n | " +
                  " | ".join(metric_names) + " | mean #tokens | wall s |",
                  "|" + "---|" * (len(metric_names) + 6 + runs)]
        for r in sorted(rows, key=lambda r: (r["s2d"]["model"], r["s2d"]["condition"], sources[id(r)])):
            m = metrics_of(r)
            s = r["s2d"]
            cells = [f"{100 * m[k]:.1f}%" if k in m and m[k] == m[k] else "-" for k in metric_names]
            opts = (s.get("generation") or {}).get("task_options") or {}
            n_cell = f"{s['n_examples']}" + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) + ")"
                                             if opts else "")
            run_cell = f"{sources[id(r)] or '-'} | " if runs else ""
            lines.append(f"| {s['model']} | {s['condition']} | {run_cell}{s['backend']} | {n_cell} | " +
                         " | ".join(cells) + f" | {s['mean_generated_tokens']:.1f} | {s['wall_seconds']:.0f} |")
        lines.append("")
    table = "\n".join(lines)
    md = out_dir / "leaderboard.md"
    with atomic_write(md) as f:
        f.write(table)
    from s2d.routing import load_routings

    png = _plot(by_task, out_dir / "leaderboard.png", load_routings(results_dir))
    return table, md, png


def _plot(by_task: dict, path: Path, routings: dict | None = None) -> Path | None:
    """One panel per task: accuracy against mean tokens for every record, and the accuracy/cost
    curve of each `s2d route` result (routing.json) found beside them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(by_task), figsize=(4 * len(by_task), 3.5), squeeze=False)
    for ax, (task, rows) in zip(axes[0], sorted(by_task.items())):
        for r in rows:
            m = metrics_of(r)
            key = headline_metric(m)
            if key is None:
                continue
            ax.scatter(r["s2d"]["mean_generated_tokens"], 100 * m[key])
            ax.annotate(r["s2d"]["condition"], (r["s2d"]["mean_generated_tokens"], 100 * m[key]), fontsize=7)
        for result in (routings or {}).get(task, []):
            from s2d.routing import draw_route

            draw_route(ax, result, rows=False)
            ax.legend(fontsize=6)
        ax.set_ylim(0, 100)  # a shared scale, so panels and conditions compare at a glance
        ax.set_xlim(left=0)
        ax.set_title(task)
        ax.set_xlabel("mean generated tokens")
        ax.set_ylabel("accuracy / agreement (%)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path
