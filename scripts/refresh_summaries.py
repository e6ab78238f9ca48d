"""Bring the rows of exported `s2d distill` summaries (summary.json and summary.txt) up to date with
their eval records, after `scripts/rescore_samples.py --write` changed a record's scores. Only the
scores move: each row is read again from the record of its condition beside it, nothing is generated.

    python scripts/refresh_summaries.py results [...]      (prints each summary whose rows changed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def refresh(summary_path: Path) -> list[str]:
    """Update one summary's rows (every round's) from its records; return what changed."""
    from s2d.distill import format_summary
    from s2d.files import atomic_write, write_json
    from s2d.store import headline_metric, load_record, metrics_of

    summary = json.loads(summary_path.read_text())
    folder = summary_path.parent
    changes = []
    rounds = summary.get("rounds") or [{"round": 1, "rows": summary.get("rows", [])}]
    for rnd in rounds:
        base = folder if rnd.get("round", 1) == 1 else folder / f"round{rnd['round']}"
        for row in rnd.get("rows", []):
            found = list((base / "eval").glob(f"*/*/{row['condition']}.json"))
            rec = load_record(found[0]) if len(found) == 1 else None
            if rec is None:
                continue
            metrics = metrics_of(rec)
            key = headline_metric(metrics)
            if metrics.get(key) != row.get("score") or metrics != row.get("metrics"):
                changes.append(f"{row['condition']}: {row.get('score')} -> {metrics.get(key)}")
                row.update(metric=key, score=metrics.get(key), metrics=metrics)
    if changes:
        if summary.get("rounds"):
            summary["rows"] = summary["rounds"][-1]["rows"]
        write_json(summary_path, summary)
        if (folder / "summary.txt").is_file():
            with atomic_write(folder / "summary.txt") as f:
                f.write(format_summary(summary) + "\n")
    return changes


def main() -> None:
    for root in sys.argv[1:] or ["results"]:
        for path in sorted(Path(root).rglob("summary.json")):
            changes = refresh(path)
            if changes:
                print(f"{path}: " + "; ".join(changes))


if __name__ == "__main__":
    main()
