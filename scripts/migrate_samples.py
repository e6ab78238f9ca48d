"""Complete the committed --log-samples files written before sample logs carried metrics: add each
document's metrics, parsed answer, reference and rendered prompt, computed from the document and
the response already in the line (no generation). A file is rewritten only when every document's
recomputed metrics average to exactly the scores in its record, so a migration can never change
a committed number.

    S2D_DATA_DIR=../shared/data python scripts/migrate_samples.py [results]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def first_prompt(method_name: str, task, doc: dict, options: dict) -> str | None:
    """The method's first rendered prompt for ``doc`` (what `s2d show-prompts` prints)."""
    from s2d.methods.base import run_method
    from s2d.traces import build_method, make_runner

    shown: list = []
    method = build_method(method_name, task, **{k: v for k, v in options.items() if k != "n"})
    run_method(method, make_runner(None, method_name, record=lambda stage, prompts: shown.append(prompts[0])), [doc])
    return shown[0] if shown else None


def migrate(samples_path: Path) -> str:
    from s2d.lmeval.run import metrics_of
    from s2d.lmeval.tasks import build_task

    record_path = samples_path.with_name(samples_path.name.removesuffix(".samples.jsonl") + ".json")
    record = json.loads(record_path.read_text())
    s = record["s2d"]
    options = {k: v for k, v in (s.get("generation", {}).get("task_options") or {}).items()
               if k not in ("subset", "subset_seed")}
    task = build_task(s["task"], **options)
    lines = [json.loads(x) for x in samples_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if all(line.get("metrics") for line in lines):
        return "complete already"
    out, sums = [], {}
    for line in lines:
        doc = line["doc"]
        metrics = task.score(doc, line["response"])
        for k, v in metrics.items():
            sums.setdefault(k, []).append(v)
        prompt = line.get("prompt") or first_prompt(s["method"], task, doc, s.get("method_options") or {})
        out.append({"doc_id": line["doc_id"], "doc": doc, "prompt": prompt, "stages": line.get("stages", []),
                    "response": line["response"], "answer": task.extract(line["response"]),
                    "reference": doc.get("answer"), "metrics": metrics, "usage": line.get("usage"),
                    "migrated": "metrics, answer, reference and prompt recomputed from the document and response "
                                "by scripts/migrate_samples.py; stage texts were not logged"})
    recorded = metrics_of(record)
    aggregations = task.aggregations
    for k, values in sums.items():
        if k in aggregations:
            value = aggregations[k](values)
        else:
            value = sum(v for v in values if v is not None) / max(1, sum(v is not None for v in values))
        if k in recorded and not (math.isclose(value, recorded[k], abs_tol=1e-9)
                                  or (math.isnan(value) and math.isnan(recorded[k]))):
            return f"SKIPPED: recomputed {k} {value:.4f} != recorded {recorded[k]:.4f}"
    from s2d.files import write_jsonl

    write_jsonl(samples_path, out)
    return f"migrated {len(out)} lines"


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "results")
    for path in sorted(root.rglob("*.samples.jsonl")):
        try:
            print(f"{path.relative_to(root)}: {migrate(path)}")
        except Exception as exc:  # noqa: BLE001 - report and go on: a file left as it was loses nothing
            print(f"{path.relative_to(root)}: SKIPPED: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
