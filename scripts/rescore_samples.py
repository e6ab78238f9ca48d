"""Score the saved responses of `s2d eval` records again with the tasks' current scorers, and print
each record's stored score beside today's: a changed answer extractor shows which committed
records it would change, with no model loaded (the responses are in `*.samples.jsonl`).

    S2D_DATA_DIR=../shared/data python scripts/rescore_samples.py results/eval/qwen2.5-coder-1.5b [...]

Prints a Markdown table (record, metric, stored, now, answers now); changes nothing on disk.
Records whose task has no per-example score (judged pairs) are skipped with a note.
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
    now = [task.score(r["doc"], r["response"]).get(metric) for r in rows]
    answers = collections.Counter(str(task.extract(r["response"])) for r in rows)
    return {"record": str(record_path), "metric": metric, "stored": stored, "now": sum(now) / len(now),
            "answers": dict(answers.most_common())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args()
    print("| record | metric | stored | now | answers now |\n|---|---|---|---|---|")
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


if __name__ == "__main__":
    main()
