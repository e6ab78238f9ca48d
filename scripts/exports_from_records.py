"""One-off migration (issue 28), kept as the command that made these exports: the committed `s2d eval`
records and routing results of the experiment scripts that plans replaced (eval_matrix.sh,
default_search.py, exemplar_sets.sh, beyond_paper.py) as run-folder exports a sweep report reads
(config.json, summary.json, summary.txt, the export marker), so `s2d sweep PLAN --report-only`
rebuilds their tables. No number is computed anew: rows are the records' headline metrics, as
DistillRun.rows() reads them, and each summary names its records.

    python scripts/exports_from_records.py default_search eval_matrix exemplar_sets beyond
"""
import json
import sys
from pathlib import Path

import yaml

from s2d.distill import EXPORT_MARK, format_summary
from s2d.store import headline_metric, load_record, metrics_of
from s2d.sweep import load_plan, route_options

ROOT = Path(".").resolve()
NOTE = ("converted by issue 28 from the committed records named in summary.json's `records` (made by the "
        "experiment scripts this plan replaced); a later export may replace this folder")


def row(label, path):
    rec = load_record(ROOT / path)
    assert rec is not None, path
    m = metrics_of(rec)
    key = headline_metric(m)
    return {"condition": label, "metric": key, "score": m.get(key), "mean_tokens": rec["s2d"]["mean_generated_tokens"],
            "n": rec["s2d"]["n_examples"], "cap_hit_share": rec["s2d"].get("cap_hit_share"),
            "cap_hit_share_by_stage": rec["s2d"].get("cap_hit_share_by_stage"), "metrics": m}, rec


def write(dest: Path, settings: dict, summary: dict, rec: dict):
    if dest.exists() and not (dest / EXPORT_MARK).is_file():  # only ever replace an export
        sys.exit(f"{dest}: exists and is not an export; not replaced")
    dest.mkdir(parents=True, exist_ok=True)
    s = rec["s2d"]
    (dest / "config.json").write_text(json.dumps({"settings": settings, "converted": NOTE, "versions": s.get("versions"),
                                                  "git_commit": s.get("git_commit"), "created": s.get("date")},
                                                 indent=2) + "\n")
    (dest / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False, default_flow_style=False))
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (dest / "summary.txt").write_text(format_summary(summary) + "\n")
    (dest / EXPORT_MARK).write_text(NOTE + "\n")


def eval_export(plan, run, records: dict):
    rows, recs = zip(*(row(label, path) for label, path in records.items()))
    summary = {"run": run.folder.name, "kind": "eval", "settings": run.config.settings, "rows": list(rows),
               "error": None, "curation": None, "records": records}
    write(plan.export_dir() / run.folder.name, run.config.settings, summary, recs[-1])


def default_search():
    plan = load_plan("experiments/plans/default_search.yaml")
    for run in plan.runs:
        task, label = run.name.split("-", 1)
        s1 = "system1" + ("+words=1" if "words=1" in label else "+subset=300" if "subset=300" in label else "")
        eval_export(plan, run, {"system1": f"results/search/smollm2-135m/{task}/{s1}.json",
                                f"system2-{run.config['method']}": f"results/search/smollm2-135m/{task}/{label}.json"})


def eval_matrix():
    plan = load_plan("experiments/plans/eval_matrix.yaml")
    for run in plan.runs:
        task, label = run.name.split("-", 1)
        s1 = "system1" + ("+subset=300" if "subset=300" in label else "")
        eval_export(plan, run, {"system1": f"results/eval/smollm2-135m/{task}/{s1}.json",
                                f"system2-{run.config['method']}": f"results/eval/smollm2-135m/{task}/{label}.json"})


def exemplar_sets():
    plan = load_plan("experiments/plans/exemplar_sets.yaml")
    for run in plan.runs:
        task, seed = run.config["task"], run.config["method_options"]["shot_seed"]
        label = (f"cot+shot_pool=200+shot_seed={seed}+shots=4" if task == "last_letter"
                 else f"cot+shot_seed={seed}+shots=4+subset=300")
        # The script ran System 2 alone: no System 1 record.
        eval_export(plan, run, {"system2-cot": f"results/distill_search/exemplar_sets/smollm2-135m/{task}/{label}.json"})


def beyond():
    plan = load_plan("experiments/plans/beyond_paper.yaml")
    probe = "results/beyond/probe/smollm2-135m/addition"
    for run in plan.runs:
        if run.variant.kind == "eval":
            d, style = run.config["task_options"]["digits"], run.config["task_options"].get("worked")
            eval_export(plan, run, {"system1": f"{probe}/system1-d{d}.json",  # one per digit count: no worked steps
                                    "system2-cot": f"{probe}/system2-cot{'-' + style if style else ''}-d{d}.json"})
        elif run.variant.kind == "route":
            task = run.config["task"]
            routing_path = f"results/beyond/route/{task}/routing.json"
            routing = json.loads((ROOT / routing_path).read_text())
            opts = route_options(run)
            assert routing["confidence"] == opts["confidence"] and routing["tune_split"] == opts["tune_split"] \
                and routing["tolerance"] == opts["tolerance"], routing_path
            routed = json.loads((plan.export_dir() / run.source.folder.name / "summary.json").read_text())
            route_row, rec = row("route", f"results/beyond/route/{task}/{routing['through_lm_eval']['record']}")
            rows = [r for r in routed["rows"] if r["condition"] != "distilled"]
            rows += [r for r in routed["rows"] if r["condition"] == "distilled"] + [route_row]
            summary = {"run": run.folder.name, "kind": "route", "from": run.source.folder.name,
                       "settings": run.config.settings, "route_options": opts, "rows": rows, "error": None,
                       "curation": routed.get("curation"),
                       "route": {k: routing[k] for k in ("chosen", "test_at_chosen", "through_lm_eval")},
                       "records": {"routing": routing_path,
                                   "route": f"results/beyond/route/{task}/{routing['through_lm_eval']['record']}"}}
            write(plan.export_dir() / run.folder.name, run.config.settings, summary, rec)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        {"default_search": default_search, "eval_matrix": eval_matrix, "exemplar_sets": exemplar_sets,
         "beyond": beyond}[name]()
