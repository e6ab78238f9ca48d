"""Bring the rows of exported `s2d distill` summaries (summary.json and summary.txt) up to date with
their eval records, after `scripts/rescore_samples.py --write` changed a record's scores. Only the
scores move: each row is read again from the record of its condition beside it (or, for an eval
run whose records live elsewhere, the repo-relative path its `records` names), nothing is generated.
A curation without a target accuracy (made before the task's own scorer judged targets whose
reference is no single string, as TriviaQA's alias lists) gets it from its kept records (sft.jsonl)
and the task's train documents (the data through S2D_DATA_DIR).

    python scripts/refresh_summaries.py results [...]      (prints each summary whose rows changed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
            named = (summary.get("records") or {}).get(row["condition"]) if base == folder else None
            if not found and named and (ROOT / named).is_file():  # an eval run's record kept elsewhere
                found = [ROOT / named]
            rec = load_record(found[0]) if len(found) == 1 else None
            if rec is None:
                continue
            metrics = metrics_of(rec)
            key = headline_metric(metrics)
            if metrics.get(key) != row.get("score") or metrics != row.get("metrics"):
                changes.append(f"{row['condition']}: {row.get('score')} -> {metrics.get(key)}")
                row.update(metric=key, score=metrics.get(key), metrics=metrics)
    changes += refresh_target_accuracy(summary, folder)
    if changes:
        if summary.get("rounds"):
            summary["rows"] = summary["rounds"][-1]["rows"]
        write_json(summary_path, summary)
        if (folder / "summary.txt").is_file():
            with atomic_write(folder / "summary.txt") as f:
                f.write(format_summary(summary) + "\n")
    return changes


def refresh_target_accuracy(summary: dict, folder: Path) -> list[str]:
    """Fill each round's missing target accuracy from its kept records, judged as `s2d distill`
    now judges them (:func:`s2d.curators.base.task_judge`: the input's first target on its document);
    updates the summary in place and the sft.summary.json beside the records; returns what changed."""
    from s2d.curators.base import task_judge
    from s2d.files import read_jsonl, write_json
    from s2d.lmeval.tasks import build_task

    settings = summary.get("settings") or {}
    changes = []
    for rnd in summary.get("rounds") or [{"round": 1, "curation": summary.get("curation")}]:
        curation = rnd.get("curation") or {}
        base = folder if rnd.get("round", 1) == 1 else folder / f"round{rnd['round']}"
        data = base / "sft.jsonl"
        if not data.is_file() or curation.get("target_accuracy") is not None or not settings.get("task"):
            continue
        judge = task_judge(build_task(settings["task"], **(settings.get("task_options") or {})))
        first: dict[str, str] = {}
        for rec in read_jsonl(data):
            first.setdefault(str(rec["s2d"]["id"]), rec["completion"][0]["content"])
        verdicts = [v for v in (judge({"id": i, "split": settings.get("split") or "train"}, text)
                                for i, text in first.items()) if v is not None]
        if not verdicts:
            continue
        acc = sum(verdicts) / len(verdicts)
        changes.append(f"round {rnd.get('round', 1)} target accuracy: None -> {acc:.3f} ({len(verdicts)} judged)")
        filled = {"target_accuracy": acc, "targets_judged": len(verdicts)}
        curation.update(filled)
        if rnd.get("round", 1) == 1 and summary.get("curation"):  # the top-level copy of round 1's
            summary["curation"].update(filled)
        own = base / "sft.summary.json"
        if own.is_file():
            write_json(own, {**json.loads(own.read_text()), **filled})
    return changes


def main() -> None:
    for root in sys.argv[1:] or ["results"]:
        for path in sorted(Path(root).rglob("summary.json")):
            changes = refresh(path)
            if changes:
                print(f"{path}: " + "; ".join(changes))


if __name__ == "__main__":
    main()
