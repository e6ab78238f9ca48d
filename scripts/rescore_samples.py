"""Score the saved responses of `s2d eval` records again with the tasks' current scorers, and print
each record's stored score beside today's: a changed answer extractor shows which committed
records it would change, with no model loaded (the responses are in `*.samples.jsonl`).

    S2D_DATA_DIR=../shared/data python scripts/rescore_samples.py results/eval/qwen2.5-coder-1.5b [...]

Prints a Markdown table (record, metric, stored, now, answers now); changes nothing on disk unless
`--write`: then each record whose scores changed gets today's per-example metrics and parsed
answers in its samples file, their means in its lm-eval results, and an `s2d.rescored` entry (the
commit, the date, the values it replaced). The responses themselves are never touched, so a scorer
fix needs no new generation. Records whose task has no per-example score (judged pairs) are skipped
with a note, as are methods whose answer is not the task's reading of the response (`route`).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rescore(record_path: Path) -> dict | None:
    from s2d.store import load_record, metrics_of
    from s2d.lmeval.tasks import build_task

    samples = record_path.with_name(record_path.stem + ".samples.jsonl")
    if not samples.is_file():
        return None
    rec = load_record(record_path)
    s2d = rec["s2d"]
    task = build_task(s2d["task"], **(s2d.get("identity", {}).get("task_options") or {}))
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    stored_all = metrics_of(rec)
    metric = next((m for m in ("exact_match", "acc_biased", "acc", "agreement") if m in stored_all), None)
    if metric is None or not rows:
        return None
    scores = [task.score(r["doc"], r["response"]) for r in rows]
    means = aggregate(task, scores)
    answers = [task.extract(r["response"]) for r in rows]
    return {"record": str(record_path), "metric": metric, "stored": stored_all.get(metric), "now": means.get(metric),
            "means": means, "stored_all": stored_all,
            "answers": dict(collections.Counter(_short(a) for a in answers).most_common(6)),
            "_rec": rec, "_rows": rows, "_scores": scores, "_answers": answers, "_samples": samples}


def _short(answer) -> str:
    text = " ".join(str(answer).split())
    return text if len(text) <= 40 else text[:37] + "..."


def aggregate(task, scores: list[dict]) -> dict:
    """Each metric over the documents as lm-eval aggregates it: the task's own aggregation (judged
    pairs), else the mean of the documents it applies to (None: not this document's template)."""
    out = {}
    for name in scores[0] if scores else []:
        values = [s.get(name) for s in scores]
        custom = (getattr(task, "aggregations", None) or {}).get(name)
        if custom is not None:
            out[name] = custom(values)
        else:
            kept = [float(v) for v in values if v is not None]
            out[name] = sum(kept) / len(kept) if kept else None
    return out


def changed(row: dict) -> bool:
    """Whether any per-example metric or parsed answer differs from what the record stores."""
    def plain(value):  # tuples (a judged pair's metrics) are lists once stored as JSON
        return json.loads(json.dumps(value))

    return any(plain(r.get("metrics", {}).get(k)) != plain(v)
               for r, s in zip(row["_rows"], row["_scores"]) for k, v in s.items()) \
        or any(r.get("answer") != a for r, a in zip(row["_rows"], row["_answers"]))


def write(row: dict) -> dict:
    """Store today's scores in the record and its samples (each file written atomically, the
    samples first); returns the record's replaced means."""
    import time

    from s2d.envinfo import git_commit
    from s2d.files import write_json, write_jsonl
    from s2d.store import results_key

    rec, rows = row["_rec"], row["_rows"]
    if rec["s2d"].get("method") == "route":  # its answer may be the fallback's, not the response's
        raise SystemExit(f"{row['record']}: a route record's answers are not the task's reading of its response")
    for r, score, answer in zip(rows, row["_scores"], row["_answers"]):
        r["metrics"] = {**r.get("metrics", {}), **score}
        r["answer"] = answer
    results = rec["lm_eval"]["results"][results_key(rec["s2d"])]
    before = {}
    for name, value in sorted(row["means"].items()):
        key = f"{name},none"
        before[name] = results.get(key)  # None: a metric the record's scorer did not have
        results[key] = value
    rec["s2d"].setdefault("rescored", []).append({
        "by": "scripts/rescore_samples.py --write", "git_commit": git_commit(Path(__file__).parent),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "before": before})
    write_jsonl(row["_samples"], rows)
    write_json(row["record"], {k: v for k, v in rec.items() if not k.startswith("_")})
    return before


def main() -> None:
    from s2d.store import pct

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--write", action="store_true", help="Store today's scores in the records that changed.")
    args = ap.parse_args()
    print("| record | metric | stored | now | answers now |\n|---|---|---|---|---|")
    rewritten = []
    for folder in args.folders:
        for path in sorted(folder.rglob("*.json")):
            if not path.with_name(path.stem + ".samples.jsonl").is_file():  # not a record with samples
                continue
            row = rescore(path)
            if row is None:
                print(f"| {path} | - | - | - | no headline metric or no samples |")
                continue
            print(f"| {row['record']} | {row['metric']} | {pct(row['stored'])} | {pct(row['now'])} "
                  f"| {row['answers']} |")
            for name, value in sorted(row["means"].items()):  # every other metric that moved
                old = row["stored_all"].get(name)
                if name != row["metric"] and (old is None or value is None or abs(old - value) > 1e-9):
                    print(f"| {row['record']} | {name} | {pct(old)} | {pct(value)} | |")
            if args.write and changed(row):
                write(row)
                rewritten.append(row["record"])
    if args.write:
        print(f"\nrewrote {len(rewritten)} record(s)" + "".join(f"\n- {r}" for r in rewritten))


if __name__ == "__main__":
    main()
