"""`s2d route RUN`: System 1 first, System 2 when unsure, for a distilled run.

On the tuning split (validation) every input gets both answers once: the distilled model's, with
its confidence, and the System 2 method's (the run's System 2 row). A threshold t then routes an
input to System 2 when its confidence is below t; its accuracy and mean tokens (every generated
token of both stages) follow from those per-input facts, for every t at once. The chosen threshold
is the cheapest within ``tolerance`` (1 point) of the best accuracy there. The same is done on the
test split for the curve, and the chosen threshold is then scored on the test split through lm-eval
(`s2d eval --method route`), which reuses every generation through the cache.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from s2d.backends import load_backend
from s2d.curators.base import majority_sample
from s2d.errors import ConfigError
from s2d.files import atomic_write, write_json
from s2d.lmeval.run import evaluate
from s2d.lmeval.tasks import build_task, lm_eval_config, lm_eval_name, tasks_path
from s2d.methods.base import run_method
from s2d.methods.route import run_settings
from s2d.store import load_record, metrics_of
from s2d.tasks.base import subset
from s2d.traces import build_method, make_runner, open_cache


def split_docs(task, split: str, task_options: dict, limit: int | None) -> list[dict]:
    """The documents an evaluation of ``split`` sees: the task's subset option, then lm-eval's limit."""
    docs = task.docs(split)
    if task_options.get("subset"):
        docs = subset(docs, int(task_options["subset"]), int(task_options.get("subset_seed", 0)))
    return docs[:limit] if limit else docs


def per_input(method, runner, task, docs: list[dict]) -> list[dict]:
    """Both answers of every input: run the route method with every input sent on to System 2."""
    metric = task.metrics[0]
    n_direct = 1 + (method.samples if method.confidence == "agreement" else 0)  # the check samples, the answer
    rows = []
    for doc, samples in zip(docs, run_method(method, runner, docs)):
        head = next(x for x in samples if len(x["stages"]) > n_direct)  # the chain that carries the direct steps
        direct = head["stages"][:n_direct]
        direct_tokens = sum(st["tokens"] for st in direct)
        # As lm-eval scores it: the majority sample of System 2, every sample's tokens counted.
        rows.append({
            "id": str(doc["id"]), "confidence": head["confidence"],
            "direct": task.score(doc, direct[-1]["text"])[metric],
            "system2": task.score(doc, majority_sample(samples)["response"])[metric],
            "direct_tokens": direct_tokens,
            "system2_tokens": sum(x["total_tokens"] for x in samples) - direct_tokens,
        })
    return rows


def curve(rows: list[dict], thresholds: list[float]) -> list[dict]:
    """Accuracy, mean tokens and the share sent to System 2 at each threshold."""
    out = []
    for t in thresholds:
        routed = [r["confidence"] is None or r["confidence"] < t for r in rows]
        acc = sum(r["system2"] if go else r["direct"] for r, go in zip(rows, routed)) / len(rows)
        tokens = sum(r["direct_tokens"] + (r["system2_tokens"] if go else 0) for r, go in zip(rows, routed)) / len(rows)
        out.append({"threshold": t, "accuracy": acc, "mean_tokens": tokens, "to_system2": sum(routed) / len(rows)})
    return out


def candidate_thresholds(rows: list[dict]) -> list[float]:
    """-inf (always the distilled answer), every distinct confidence, +inf (always System 2)."""
    values = sorted({r["confidence"] for r in rows if r["confidence"] is not None})
    return [-math.inf] + values + [math.inf]


def choose(points: list[dict], tolerance: float) -> dict:
    best = max(p["accuracy"] for p in points)
    return min((p for p in points if p["accuracy"] >= best - tolerance - 1e-12),
               key=lambda p: (p["mean_tokens"], -p["accuracy"]))


def route_run(run_folder: str | Path, *, out_dir: str | Path, tune_split: str = "validation",
              confidence: str = "logprob", samples: int = 4, tolerance: float = 0.01, backend: str | None = None,
              round_: int | None = None, cache=True, progress: bool = True, echo=print) -> dict:
    """Sweep thresholds on ``tune_split``, pick one, draw the test curve and score the pick through
    lm-eval; write ``routing.json``, ``routing.md`` and ``routing.png`` in ``out_dir``."""
    info = run_settings(run_folder, round_)
    cfg = info["config"]
    task_options = cfg.eval_task_options() or {}
    task = build_task(cfg["task"], **{k: v for k, v in task_options.items() if k not in ("subset", "subset_seed")})
    if tune_split not in task.splits:
        raise ConfigError(f"task {task.name!r} has no {tune_split!r} split to pick the threshold on; splits: "
                          f"{', '.join(task.splits)} (pass --tune-split)")
    options = {"from_run": str(run_folder), "round": round_, "confidence": confidence, "samples": samples}
    everything = build_method("route", task, **options, threshold=math.inf)  # both answers for every input
    out_dir = Path(out_dir)
    store = open_cache(cache)
    engine = load_backend(backend or cfg["backend"], cfg["model"], seed=cfg["seed"])
    try:
        defaults = {"max_new_tokens": task_budget(task.name), "stop": []}
        runner = make_runner(engine, "route", cache=store, seed=cfg["seed"], progress=progress, defaults=defaults)
        start = time.perf_counter()
        tune_rows = per_input(everything, runner, task, split_docs(task, tune_split, task_options, None))
        test_rows = per_input(everything, runner, task, split_docs(task, "test", task_options, cfg["eval_limit"]))
        thresholds = candidate_thresholds(tune_rows)
        tune_curve, test_curve = curve(tune_rows, thresholds), curve(test_rows, thresholds)
        chosen = choose(tune_curve, tolerance)
        echo(f"s2d route: threshold {chosen['threshold']:.4g} on {tune_split} ({100 * chosen['accuracy']:.1f}% at "
             f"{chosen['mean_tokens']:.1f} tokens, {100 * chosen['to_system2']:.0f}% sent to System 2)")
        (path,) = evaluate(engine, model_ref=cfg["model"], tasks=[cfg["task"]], method="route",
                           limit=cfg["eval_limit"], seed=cfg["seed"], log_samples=True,
                           results_dir=str(out_dir / "eval"), label="route", task_options=task_options or None,
                           progress=progress, method_options={**options, "threshold": chosen["threshold"]},
                           cache=store, overwrite=True)  # out_dir/eval is this command's: a new pick replaces it
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    record = load_record(path)
    metric = metrics_of(record)
    at_test = next(p for p in test_curve if p["threshold"] == chosen["threshold"])
    result = {
        "run": str(run_folder), "task": cfg["task"], "model": cfg["model"], "confidence": confidence,
        "samples": samples if confidence == "agreement" else None, "tune_split": tune_split, "tolerance": tolerance,
        "chosen": chosen, "test_at_chosen": at_test,
        "through_lm_eval": {"record": str(path.relative_to(out_dir)), "score": metric.get(task.metrics[0]),
                    "mean_tokens": record["s2d"]["mean_generated_tokens"]},
        "tune_curve": tune_curve, "test_curve": test_curve, "rows": rows_of(run_folder, round_),
        "seconds": round(seconds, 1),
    }
    write_json(out_dir / "routing.json", result)
    (out_dir / "routing.md").write_text(render(result))
    plot_route(result, out_dir / "routing.png")
    return result


def task_budget(task_name: str) -> int:
    """The System 1 budget lm-eval passes: ``max_gen_toks`` of the task's YAML file (the built-ins'),
    else of the config s2d builds for a plugin task."""
    name = lm_eval_name(task_name)
    yaml_file = Path(tasks_path()) / name / f"{name}.yaml"
    if yaml_file.is_file():
        m = re.search(r"^\s*max_gen_toks:\s*(\d+)", yaml_file.read_text(), flags=re.M)
        if m:
            return int(m.group(1))
    return int((lm_eval_config(task_name).get("generation_kwargs") or {}).get("max_gen_toks", 256))


def rows_of(run_folder, round_) -> dict:
    """The run's System 1 and System 2 test rows of round 1 (the base weights, what route falls back
    to) and the routed round's distilled row (score, mean tokens), for the table and the plot."""
    summary = Path(run_folder) / "summary.json"
    if not summary.is_file():
        return {}
    s = json.loads(summary.read_text())
    rounds = s.get("rounds") or [{"round": 1, "rows": s.get("rows", [])}]
    rnd = rounds[-1] if round_ is None else next(r for r in rounds if r["round"] == round_)
    rows = [r for r in rounds[0]["rows"] if r["condition"] != "distilled"]
    rows += [r for r in rnd["rows"] if r["condition"] == "distilled"]
    return {r["condition"]: {"score": r["score"], "mean_tokens": r["mean_tokens"]} for r in rows}


def render(result: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    c, t, e = result["chosen"], result["test_at_chosen"], result["through_lm_eval"]
    lines = [f"# Routing: {result['task']}, {result['model']}", "",
             f"Run `{result['run']}`; confidence `{result['confidence']}`; threshold picked on `{result['tune_split']}` "
             f"as the cheapest within {100 * result['tolerance']:.0f} point of the best accuracy.", "",
             f"Chosen threshold {c['threshold']:.4g}: {result['tune_split']} {pct(c['accuracy'])}% at "
             f"{c['mean_tokens']:.1f} tokens; test {pct(t['accuracy'])}% at {t['mean_tokens']:.1f} tokens "
             f"({pct(t['to_system2'])}% sent to System 2); through lm-eval {pct(e['score'])}% at "
             f"{e['mean_tokens']:.1f} tokens.", ""]
    if result["rows"]:
        lines += ["| condition | test % | mean tokens |", "|---|---|---|"]
        lines += [f"| {k} | {pct(v['score'])} | {v['mean_tokens']:.1f} |" for k, v in result["rows"].items()]
        lines += [f"| route (t={c['threshold']:.4g}) | {pct(e['score'])} | {e['mean_tokens']:.1f} |", ""]
    lines += ["| threshold | to System 2 % | tune % | tune tokens | test % | test tokens |", "|---|---|---|---|---|---|"]
    for a, b in zip(result["tune_curve"], result["test_curve"]):
        lines.append(f"| {a['threshold']:.4g} | {pct(b['to_system2'])} | {pct(a['accuracy'])} | {a['mean_tokens']:.1f} "
                     f"| {pct(b['accuracy'])} | {b['mean_tokens']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_route(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.8))
    draw_route(ax, result)
    ax.set_xlabel("mean generated tokens (every stage)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{result['task']}: System 1 first, System 2 when unsure")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def load_routings(results_dir: str | Path) -> dict[str, list[dict]]:
    """Every `s2d route` result (routing.json) under ``results_dir``, by task, for the leaderboard."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(results_dir).rglob("routing.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("test_curve") and data.get("task"):
            out.setdefault(str(data["task"]), []).append(data)
    return out


def draw_route(ax, result: dict, rows: bool = True) -> None:
    """The test curve, the chosen point and (``rows``) the run's three rows, on one axis; the
    leaderboard draws the curve over its own points."""
    pts = sorted(result["test_curve"], key=lambda p: p["mean_tokens"])
    ax.plot([p["mean_tokens"] for p in pts], [100 * p["accuracy"] for p in pts], "-", color="C0", lw=1,
            label=f"route ({result['confidence']})")
    t = result["test_at_chosen"]
    ax.scatter([t["mean_tokens"]], [100 * t["accuracy"]], marker="*", s=120, color="C0", zorder=3,
               label=f"route, t={result['chosen']['threshold']:.3g}")
    for i, (cond, row) in enumerate(result["rows"].items() if rows else []):
        if row["score"] is not None:
            ax.scatter([row["mean_tokens"]], [100 * row["score"]], color=f"C{i + 1}", zorder=3, label=cond)
