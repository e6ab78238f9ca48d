"""The default-run search (issue: the distillation loop, item 6): where does a System 2 method beat
System 1 on the embedded model, and by how much?

Scores System 1 and System 2 variants (methods, few-shot exemplars from the train split that solve
one word or one flip per step, test-time majority over samples) on the same test documents of
each task, then, for the widest gain, how well each curator's targets match the reference
(analysis only) on unlabeled train inputs at several sample counts. Writes `s2d eval` records under
results/search/ and the table results/search/README.md (+ search.json).

    S2D_DATA_DIR=../shared/data python scripts/default_search.py [--out results/search] [--report-only]

One engine serves every condition; a generation cache (default ~/.cache/s2d/generations, the one
scripts/eval_matrix.sh fills) makes conditions already run there free and a killed search resume.
Finished conditions (record present) are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (task, docs label, task options) -> the conditions scored on those documents.
# A condition: (label, method, method options). The first of each group is System 1.
SUBSET = {"subset": 300}
GROUPS = [
    ("last_letter", "200 test (2 names)", {}, [
        ("system1", "system1", {}),
        ("cot", "cot", {}),
        ("cot+shots=4", "cot", {"shots": 4}),
    ]),
    ("last_letter", "200 test (1 name)", {"words_per_example": 1}, [
        ("system1+words=1", "system1", {}),
        ("cot+shots=4+words=1", "cot", {"shots": 4}),
    ]),
    ("coin_flip", "300 of 1,333 test (seeded)", SUBSET, [
        ("system1+subset=300", "system1", {}),
        ("cot+subset=300", "cot", {}),
        ("cot+shots=4+subset=300", "cot", {"shots": 4}),
        ("rar1+subset=300", "rar1", {}),
        ("rar2+subset=300", "rar2", {}),
    ]),
]
# The paper's methods on every task's full test set are in results/eval (scripts/eval_matrix.sh);
# the table lists their gains too, so the search only adds what that matrix lacks.
MATRIX = ROOT / "results" / "eval"
# Test-time majority over sampled System 2 answers for the best variant (what curated targets carry).
MAJORITY_N = 5
# Curation analysis on unlabeled train inputs.
TRAIN_INPUTS, TRAIN_SAMPLES = 100, 8


def score(record: dict) -> tuple[str, float]:
    from s2d.store import headline_metric, metrics_of

    metrics = metrics_of(record)
    key = headline_metric(metrics)
    return key, metrics[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "search"))
    ap.add_argument("--cache", default=None, help="generation cache folder [default: ~/.cache/s2d/generations]")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid-only", action="store_true",
                    help="Stop after the greedy grid (skip test-time majority and the curation analysis).")
    ap.add_argument("--report-only", action="store_true",
                    help="Load no model: read search.json, take the results/eval rows from today's records "
                         "(e.g. after scripts/rescore_samples.py --write) and write the table again.")
    args = ap.parse_args()
    if args.report_only:
        return report_only(Path(args.out), args.model)

    from s2d.backends import load_backend
    from s2d.lmeval.run import evaluate, record_path
    from s2d.store import load_record
    from s2d.traces import open_cache

    out = Path(args.out)
    cache = open_cache(args.cache or True)
    engine = None

    def run(task, label, method, m_opts, t_opts):
        nonlocal engine
        path = record_path(out, args.model, task, label)
        if not path.is_file():
            if engine is None:
                engine = load_backend(args.backend, args.model, seed=args.seed)
            print(f"=== {task} / {label}: {time.strftime('%H:%M:%S')}", flush=True)
            evaluate(engine, model_ref=args.model, tasks=[task], method=method, seed=args.seed, log_samples=True,
                     results_dir=str(out), label=label, task_options=t_opts or None, progress=False,
                     method_options=m_opts or None, cache=cache)
        return load_record(path)

    rows = []
    for task, docs, t_opts, conditions in GROUPS:
        base = None
        for label, method, m_opts in conditions:
            rec = run(task, label, method, m_opts, t_opts)
            key, value = score(rec)
            row = {"task": task, "docs": docs, "condition": label, "method": method, "method_options": m_opts,
                   "task_options": t_opts, "metric": key, "score": value, "n": rec["s2d"]["n_examples"],
                   "mean_tokens": rec["s2d"]["mean_generated_tokens"]}
            if base is None:
                base = row
            row["gain"] = value - base["score"]
            rows.append(row)

    rows += matrix_rows(args.model)
    best = max((r for r in rows if r["method"] != "system1"), key=lambda r: r["gain"])
    publish(out, {"model": args.model, "seed": args.seed, "rows": rows, "best": best, "curation": []})
    if args.grid_only:
        print((out / "README.md").read_text())
        return
    # The same variant, sampled (temperature 0.7) N times per question and majority-voted: the
    # score a self-consistency curator's targets could reach.
    sampled = dict(best["method_options"], n=MAJORITY_N)
    label = best["condition"].replace(best["method"], f"{best['method']}+n={MAJORITY_N}", 1)
    rec = run(best["task"], label, best["method"], sampled, best["task_options"])
    key, value = score(rec)
    base = next(r for r in rows if r["task"] == best["task"] and r["docs"] == best["docs"])
    rows.append({"task": best["task"], "docs": best["docs"], "condition": label, "method": best["method"],
                 "method_options": sampled, "task_options": best["task_options"], "metric": key, "score": value,
                 "n": rec["s2d"]["n_examples"], "mean_tokens": rec["s2d"]["mean_generated_tokens"],
                 "gain": value - base["score"]})

    curation = curation_analysis(best, args, out, cache, engine or load_backend(args.backend, args.model, seed=args.seed))
    publish(out, {"model": args.model, "seed": args.seed, "rows": rows, "best": best, "curation": curation})
    print((out / "README.md").read_text())


def publish(out: Path, result: dict) -> None:
    """search.json and the table (written after the grid, then again when the analysis is done)."""
    from s2d.envinfo import git_commit, versions
    from s2d.files import atomic_write, write_json

    result = {**result, "versions": versions(), "git_commit": git_commit(ROOT)}
    write_json(out / "search.json", result)
    with atomic_write(out / "README.md") as f:
        f.write(render(result))


def report_only(out: Path, model: str) -> None:
    """search.json's own rows kept, the results/eval rows read again from their records."""
    import json

    result = json.loads((out / "search.json").read_text(encoding="utf-8"))
    if result.get("model") != model:
        raise SystemExit(f"{out / 'search.json'} is the search of {result.get('model')!r}, not {model!r}")
    rows = result["rows"]
    at = next((i for i, r in enumerate(rows) if r["docs"].endswith("results/eval")), len(rows))
    refresh_own_rows(out, model, rows[:at])
    rest = [r for r in rows[at:] if not r["docs"].endswith("results/eval")]  # the test-time majority row
    result["rows"] = rows[:at] + matrix_rows(model) + rest
    publish(out, {k: result[k] for k in ("model", "seed", "rows", "best", "curation")})
    print((out / "README.md").read_text())


def refresh_own_rows(out: Path, model: str, rows: list[dict]) -> None:
    """The search's own rows read again from their records beside search.json (a scorer fix
    rescored them), and each gain against its group's System 1 row."""
    from s2d.store import load_record, metrics_of

    for r in rows:
        rec = load_record(out / model / r["task"] / f"{r['condition']}.json")
        if rec is not None and r["metric"] in metrics_of(rec):
            r["score"] = metrics_of(rec)[r["metric"]]
    for r in rows:
        base = next((b for b in rows if b["task"] == r["task"] and b["docs"] == r["docs"] and b["method"] == "system1"),
                    None)
        if base is not None:
            r["gain"] = r["score"] - base["score"]


def matrix_rows(model: str) -> list[dict]:
    """System 1 vs each method in results/eval (greedy; a `+subset=N` condition is compared with
    System 1 on the same subset)."""
    from s2d.store import load_records

    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for rec in load_records(MATRIX):
        s = rec["s2d"]
        if s.get("model") != model or s.get("adapter"):
            continue
        stem = Path(rec["_path"]).stem
        method, _, subset = stem.partition("+subset=")
        groups.setdefault((s["task"], subset), {})[method] = rec
    rows = []
    for (task, subset), recs in sorted(groups.items()):
        if "system1" not in recs:
            continue
        _, base = score(recs["system1"])
        for method in ["system1"] + sorted(m for m in recs if m != "system1"):
            rec = recs[method]
            key, value = score(rec)
            n = rec["s2d"]["n_examples"]
            rows.append({"task": task, "docs": f"{n} test ({'seeded subset' if subset else 'full'}), results/eval",
                         "condition": method + (f"+subset={subset}" if subset else ""), "method": method,
                         "method_options": rec["s2d"].get("method_options") or {}, "task_options": {},
                         "metric": key, "score": value, "n": n, "mean_tokens": rec["s2d"]["mean_generated_tokens"],
                         "gain": value - base})
    return rows


def curation_analysis(best: dict, args, out: Path, cache, engine) -> list[dict]:
    """Generate TRAIN_SAMPLES samples of the best variant on unlabeled train inputs; curate the
    first k of them with each curator; report kept inputs and target accuracy vs the reference."""
    from s2d.curators.base import write_curated
    from s2d.files import read_jsonl, write_jsonl
    from s2d.lmeval.tasks import build_task
    from s2d.traces import build_curator, build_method, generate_traces

    task = build_task(best["task"], **{k: v for k, v in best["task_options"].items() if k not in ("subset",)})
    traces_path = out / "curation" / f"{best['task']}-{best['condition']}-train{TRAIN_INPUTS}-n{TRAIN_SAMPLES}.jsonl"
    if not traces_path.is_file():
        print(f"=== curation traces: {time.strftime('%H:%M:%S')}", flush=True)
        method = build_method(best["method"], task, **{**best["method_options"], "n": TRAIN_SAMPLES})
        docs = task.docs("train")[:TRAIN_INPUTS]
        traces, _ = generate_traces(engine, task, method, docs, split="train", cache=cache, seed=args.seed,
                                    progress=False)
        write_jsonl(traces_path, traces)
    traces = list(read_jsonl(traces_path))
    rows = []
    for k in (1, 3, 5, TRAIN_SAMPLES):
        subset = [{**t, "samples": t["samples"][:k]} for t in traces]
        name = "none" if k == 1 else "majority"  # one sample: the no-curation row
        curator = build_curator(name, task)
        summary = write_curated(out / "curation" / f"sft-{name}-n{k}.jsonl", subset, curator.curate(subset, None),
                                curator=name)
        rows.append({"curator": name, "samples": k, "inputs": summary["inputs"], "kept": summary["kept_inputs"],
                     "target_accuracy": summary["target_accuracy"], "dropped": summary["dropped_by_reason"]})
    return rows


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render(result: dict) -> str:
    best = result["best"]
    lines = [
        "# Default-run search: where System 2 beats System 1 on the embedded model",
        "",
        f"Model `{result['model']}`, default engine, seed {result['seed']}; made by "
        "`S2D_DATA_DIR=../shared/data python scripts/default_search.py` (records beside this file). "
        "System 1 and every System 2 variant of a group answer the same test documents. Greedy "
        "decoding except `+n=5` (5 samples at temperature 0.7, majority vote) and S2A (top-p 0.9). "
        "`shots=4`: four worked train examples as earlier chat turns, solving one word (last letter) "
        "or one flip (coin flip) per step; `words=1`: one name per question instead of two. Rows marked results/eval are the "
        "evaluation matrix (scripts/eval_matrix.sh) on each task's full test set.",
        "",
        "| task | documents | condition | metric | score % | gain over System 1 (pts) | mean #tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['task']} | {r['docs']} | {r['condition']} | {r['metric']} | {pct(r['score'])} | "
                     f"{100 * r['gain']:+.1f} | {r['mean_tokens']:.1f} |")
    verdict = (f"Widest gain: **{best['task']} / {best['condition']}**, {100 * best['gain']:+.1f} points at "
               f"{best['mean_tokens']:.1f} tokens." if best["gain"] > 0 else
               "**No System 2 variant beats System 1 here** (best: "
               f"{best['task']} / {best['condition']}, {100 * best['gain']:+.1f} points).")
    lines += ["", verdict, ""]
    if not result["curation"]:
        return "\n".join(lines) + "\n"
    lines += [
              f"## Curation of that variant on {TRAIN_INPUTS} unlabeled train inputs ({TRAIN_SAMPLES} samples each)", "",
              "Target accuracy compares the kept targets with the train split's reference answers, for "
              "analysis only (no curator reads them).", "",
              "| curator | samples used | kept inputs | target accuracy % | dropped |", "|---|---|---|---|---|"]
    for c in result["curation"]:
        lines.append(f"| {c['curator']} | {c['samples']} | {c['kept']}/{c['inputs']} | {pct(c['target_accuracy'])} | "
                     f"{c['dropped'] or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
