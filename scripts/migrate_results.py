"""Bring committed results written by earlier versions up to the current formats, changing no number:

1. --log-samples files without metrics: add each document's metrics, parsed answer, reference and
   rendered prompt, computed from the document and the response already in the line (no
   generation). A file is rewritten only when the recomputed metrics aggregate to exactly the
   scores in its record.
2. Absolute paths of the machine that made them (model folders in the s2d cache, run folders,
   lm-eval's task files): made relative to the run folder or the repository, `$S2D_CACHE/...`
   inside the s2d cache, `<tmp>/NAME` for temporary folders.

    S2D_DATA_DIR=../shared/data python scripts/migrate_results.py [results]
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
    from s2d.store import metrics_of
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


PATH_KEYS = {"model_path", "adapter", "config_source", "data", "model", "out", "traces", "run", "data_dir", "gguf"}


def run_folder(path: Path) -> Path | None:
    """The run (or export) folder a results file belongs to: the nearest parent with a config.json."""
    for parent in path.parents:
        if (parent / "config.json").is_file() or (parent / "summary.json").is_file():
            return parent
        if parent == ROOT:
            break
    return None


def portable(value: str, folder: Path | None) -> str:
    from s2d.files import portable_path

    if value.startswith("/tmp/"):
        return "<tmp>/" + Path(value).name
    if "/runs/" in value and not Path(value).exists():  # a run folder of the machine that made it
        return value[value.index("/runs/") + 1:]
    if "/.cache/s2d/" in value:
        return "$S2D_CACHE/" + value.split("/.cache/s2d/", 1)[1]
    out = portable_path(value, *([folder] if folder else []))
    if out.startswith("/") and Path(out).is_relative_to(ROOT.parent):  # beside the checkout (../shared/data)
        return "../" + str(Path(out).relative_to(ROOT.parent))
    return out


def migrate_paths(path: Path) -> int:
    """Rewrite absolute paths under PATH_KEYS; return how many changed."""
    data = json.loads(path.read_text(encoding="utf-8"))
    folder = run_folder(path)
    changed = 0

    def walk(node):
        nonlocal changed
        if isinstance(node, dict):
            for k, v in node.items():
                if k in PATH_KEYS and isinstance(v, str) and v.startswith("/"):
                    new = Path(v).name if k == "run" else portable(v, folder)
                    if new != v:
                        node[k], changed = new, changed + 1
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    if changed:
        from s2d.files import write_json

        write_json(path, data)
    return changed


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "results")
    for path in sorted(root.rglob("*.samples.jsonl")):
        try:
            print(f"{path.relative_to(root)}: {migrate(path)}")
        except Exception as exc:  # noqa: BLE001 - report and go on: a file left as it was loses nothing
            print(f"{path.relative_to(root)}: SKIPPED: {type(exc).__name__}: {exc}")
    for path in sorted(root.rglob("*.json")):
        try:
            n = migrate_paths(path)
        except (OSError, ValueError) as exc:
            print(f"{path.relative_to(root)}: paths SKIPPED: {exc}")
            continue
        if n:
            print(f"{path.relative_to(root)}: {n} absolute path(s) made portable")


if __name__ == "__main__":
    main()
