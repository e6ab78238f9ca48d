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
    from s2d.lmeval.run import load_record, metrics_of
    from s2d.lmeval.tasks import build_task

    samples = record_path.with_name(record_path.stem + ".samples.jsonl")
    if not samples.is_file():
        return None
    rec = load_record(record_path)
    s2d = rec["s2d"]
    task = build_task(s2d["task"], **(s2d.get("identity", {}).get("task_options") or {}))
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    metric = "exact_match"
    stored = metrics_of(rec).get(metric)
    if stored is None or not rows:
        return None
    scores = [task.score(r["doc"], r["response"]) for r in rows]
    now = [s.get(metric) for s in scores]
    answers = [task.extract(r["response"]) for r in rows]
    return {"record": str(record_path), "metric": metric, "stored": stored, "now": sum(now) / len(now),
            "answers": dict(collections.Counter(str(a) for a in answers).most_common()),
            "_rec": rec, "_rows": rows, "_scores": scores, "_answers": answers, "_samples": samples}


def changed(row: dict) -> bool:
    """Whether any per-example metric or parsed answer differs from what the record stores."""
    return any(r.get("metrics", {}).get(k) != v for r, s in zip(row["_rows"], row["_scores"]) for k, v in s.items()) \
        or any(r.get("answer") != a for r, a in zip(row["_rows"], row["_answers"]))


def write(row: dict) -> dict:
    """Store today's scores in the record and its samples (each file written atomically, the
    samples first); returns the record's replaced means."""
    import time

    from s2d.envinfo import git_commit
    from s2d.files import write_json, write_jsonl
    from s2d.lmeval.run import results_key

    rec, rows = row["_rec"], row["_rows"]
    if rec["s2d"].get("method") == "route":  # its answer may be the fallback's, not the response's
        raise SystemExit(f"{row['record']}: a route record's answers are not the task's reading of its response")
    for r, score, answer in zip(rows, row["_scores"], row["_answers"]):
        r["metrics"] = {**r.get("metrics", {}), **score}
        r["answer"] = answer
    results = rec["lm_eval"]["results"][results_key(rec["s2d"])]
    before = {}
    for name in sorted(row["_scores"][0]):
        key = f"{name},none"
        if key in results:
            before[name] = results[key]
            results[key] = sum(s[name] for s in row["_scores"]) / len(rows)
    rec["s2d"].setdefault("rescored", []).append({
        "by": "scripts/rescore_samples.py --write", "git_commit": git_commit(Path(__file__).parent),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "before": before})
    write_jsonl(row["_samples"], rows)
    write_json(row["record"], {k: v for k, v in rec.items() if not k.startswith("_")})
    return before


def main() -> None:
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
                print(f"| {path} | - | - | - | no per-example exact match |")
                continue
            print(f"| {row['record']} | {row['metric']} | {100 * row['stored']:.1f}% | {100 * row['now']:.1f}% "
                  f"| {row['answers']} |")
            if args.write and changed(row):
                write(row)
                rewritten.append(row["record"])
    if args.write:
        print(f"\nrewrote {len(rewritten)} record(s)" + "".join(f"\n- {r}" for r in rewritten))


if __name__ == "__main__":
    main()
