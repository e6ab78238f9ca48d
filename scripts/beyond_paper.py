"""Beyond the paper: stepwise internalization against answer-only distillation on the same curated
data, and System 1 first with System 2 only when unsure (`s2d route`), on the embedded model.

1. probe: System 1 and few-shot CoT on the `addition` task at several digit counts and with each
   style of worked steps (100 test questions each); the distilled `addition` runs use the digit
   count and style where CoT gains most.
2. runs: for each task, two `s2d distill` runs that differ only in the trainer, `lora` (answer
   only) and `stepwise`; generation comes from the shared cache, so the second run only trains
   and scores. One-name last letter and coin flip use the committed configs (few-shot CoT, the
   search's curation), GSM8k the Table 4 config, addition the default's curation.
3. route: `s2d route` (mean token log-probability) on the answer-only runs of last letter and
   coin flip.

    S2D_DATA_DIR=../shared/data python scripts/beyond_paper.py [--only probe,runs,route] [--runs A,B] [--list]

Each stage resumes from what is done (run folders under runs/beyond/, the generation cache).
Writes results/beyond/README.md and beyond.json; runs are exported (without weights) to
results/beyond/runs/, routing results to results/beyond/route/<task>/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = Path("results/beyond")
RUNS_DIR = Path("runs/beyond")
PROBE_DIGITS = (2, 3, 4)
PROBE_WORKED = ("columns", "place_value")  # the addition task's `worked` option
PROBE_LIMIT = 100
ADDITION = {
    "task": "addition", "method": "cot", "curator": "majority", "trainer": "lora",
    "method_options": {"shots": 4, "shot_pool": 200, "shots_resample": True}, "temperature": 0.0, "n": 4,
    "train_limit": 400, "curator_options": {"threshold": 0.9}, "trainer_options": {"epochs": 3},
}
TASKS = [  # (name, config file or dict)
    ("last_letter", "results/configs/default.yaml"),
    ("coin_flip", "results/configs/coin_flip_cot.yaml"),
    ("gsm8k", "results/configs/table4_gsm8k_cot.yaml"),
    ("addition", ADDITION),
]
# Stepwise: `tokens_per_removal` 8 as in Deng et al. (one removal step per epoch there); longer
# reasoning gets several removal steps per epoch so the curriculum fits in a few epochs on 2 cores
# (coin flip's 400 records at one step per epoch would train about 11 epochs, 50 minutes).
STEPWISE = {"last_letter": {}, "coin_flip": {"removals_per_epoch": 4}, "addition": {"removals_per_epoch": 2},
            "gsm8k": {"removals_per_epoch": 4}}
ROUTE_TASKS = ("last_letter", "coin_flip")


def probe(earlier: dict | None, echo) -> dict:
    """System 1 and few-shot CoT on addition at each digit count and worked style; the pair where
    CoT helps most. Rows of an earlier probe are kept (one without a style is `columns`, the first)."""
    from s2d.backends import load_backend
    from s2d.lmeval.run import evaluate
    from s2d.store import load_record, metrics_of
    from s2d.traces import open_cache

    rows = [{"worked": PROBE_WORKED[0], **r} for r in (earlier or {}).get("rows", [])]
    done = {(r["worked"], r["digits"]) for r in rows}
    engine = None
    try:
        for worked in PROBE_WORKED:
            for digits in PROBE_DIGITS:
                if (worked, digits) in done:
                    continue
                engine = engine or load_backend(None, "smollm2-135m", seed=0)
                row = {"worked": worked, "digits": digits}
                suffix = f"-d{digits}" if worked == PROBE_WORKED[0] else f"-{worked}-d{digits}"
                # System 1's prompt has no worked steps: one run per digit count (the first style's).
                conditions = [("system2-cot", "cot", {"shots": 4, "shot_pool": 200})]
                if worked == PROBE_WORKED[0]:
                    conditions.insert(0, ("system1", "system1", None))
                else:
                    first = next(r for r in rows if r["worked"] == PROBE_WORKED[0] and r["digits"] == digits)
                    row.update(system1=first["system1"], system1_tokens=first["system1_tokens"])
                for label, method, options in conditions:
                    (path,) = evaluate(engine, model_ref="smollm2-135m", tasks=["addition"], method=method,
                                       limit=PROBE_LIMIT, log_samples=True, results_dir=str(OUT / "probe"),
                                       label=label + suffix, task_options={"digits": digits, "worked": worked},
                                       method_options=options, cache=open_cache(True), progress=False)
                    rec = load_record(path)
                    row[label] = metrics_of(rec)["exact_match"]
                    row[label + "_tokens"] = rec["s2d"]["mean_generated_tokens"]
                echo(f"[probe] addition {digits} digits, {worked}: System 1 {100 * row['system1']:.1f}%, "
                     f"few-shot CoT {100 * row['system2-cot']:.1f}%")
                rows.append(row)
    finally:
        if engine is not None:
            engine.close()
    best = max(rows, key=lambda r: r["system2-cot"] - r["system1"])
    return {"rows": rows, "digits": best["digits"], "worked": best["worked"]}


def probe_gain(p: dict) -> float:
    """Few-shot CoT's gain over System 1 at the probe's chosen digit count and style."""
    best = next(r for r in p["rows"] if r["digits"] == p["digits"] and r.get("worked", PROBE_WORKED[0])
                == p.get("worked", PROBE_WORKED[0]))
    return best["system2-cot"] - best["system1"]


def task_config(name: str, source, addition: dict) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / source).read_text()) if isinstance(source, str) else json.loads(json.dumps(source))
    cfg.pop("scale", None)
    cfg.pop("description", None)
    if name == "addition":
        cfg["task_options"] = dict(addition)
    return cfg


def plan_runs(addition: dict) -> list[tuple[str, str, dict]]:
    """(run name, task, settings): per task, the answer-only run and the stepwise run; they share
    generation and curation. Stepwise takes its own epochs (sized to the longest reasoning plus one
    answer-only epoch), not the answer-only run's."""
    out = []
    for task, source in TASKS:
        base = task_config(task, source, addition)
        out.append((f"{task}-lora", task, {**base, "trainer": "lora"}))
        out.append((f"{task}-stepwise", task, {**base, "trainer": "stepwise", "trainer_options": STEPWISE[task]}))
    return out


def distill(name: str, cfg: dict, echo) -> dict:
    from s2d.config import RunConfig
    from s2d.distill import DistillRun

    folder = RUNS_DIR / name
    start = time.perf_counter()
    run = DistillRun(RunConfig.build(cfg), folder, progress=False, echo=lambda m: echo(f"[{name}] {m}"))
    summary = run.run(export=OUT / "runs" / name)  # exported under the run's lock
    return {"summary": summary, "seconds": time.perf_counter() - start}


def run_row(task: str, trainer: str, folder: Path) -> dict | None:
    from s2d.store import training_config

    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    by = {r["condition"]: r for r in summary["rows"]}
    sys2 = next((r for c, r in by.items() if c.startswith("system2")), {})
    trained = training_config(folder / "adapter") or {}
    cur = summary.get("curation") or {}
    return {"task": task, "trainer": trainer, "kept": cur.get("kept_inputs"),
            "target_accuracy": cur.get("target_accuracy"),
            "system1": by.get("system1", {}).get("score"), "system1_tokens": by.get("system1", {}).get("mean_tokens"),
            "system2": sys2.get("score"), "system2_tokens": sys2.get("mean_tokens"),
            "distilled": by.get("distilled", {}).get("score"),
            "distilled_tokens": by.get("distilled", {}).get("mean_tokens"),
            "train_seconds": (trained.get("metrics") or {}).get("train_runtime"),
            "stepwise": trained.get("stepwise")}


def reading(rows: list[dict]) -> list[str]:
    """One line per task with both runs: stepwise against answer-only, from the rows themselves."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {r["trainer"]: r for r in rows if r["task"] == task}
        if not {"lora", "stepwise"} <= by.keys() or None in (by["lora"]["distilled"], by["stepwise"]["distilled"]):
            continue
        lo, st = by["lora"], by["stepwise"]
        diff = 100 * (st["distilled"] - lo["distilled"])
        verdict = "beats" if diff > 0 else "trails" if diff < 0 else "ties"
        line = (f"- {task}: stepwise {verdict} answer-only ({100 * st['distilled']:.1f}% against "
                f"{100 * lo['distilled']:.1f}%, {diff:+.1f} points) in "
                f"{st['train_seconds'] / lo['train_seconds']:.1f}x the training time.")
        if not lo["target_accuracy"]:
            line += (f" The curator kept {lo['kept']} inputs and none of their answers is right, so neither "
                     "trainer has a correct skill to internalize.")
        out.append(line)
    return out


def render(state: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    tok = lambda r, k: "-" if r[k] is None else f"{pct(r[k])} ({r[k + '_tokens']:.1f})"  # noqa: E731
    lines = ["# Beyond the paper: stepwise internalization and routing", "",
             f"Model `smollm2-135m`, seed 0, the default backend. Made by `{state['command']}` ({state['date']}, "
             f"commit {state['commit']}).", ""]
    p = state.get("probe")
    if p:
        worked = lambda r: r.get("worked", PROBE_WORKED[0])  # noqa: E731 - a first probe had one style
        lines += ["## Where CoT helps on addition (100 test questions)", "",
                  "`columns`: one column per step, right to left, with the carry (\"Ones: 6 + 6 = 12, write 2, "
                  "carry 1. ...\"); `place_value`: each place's value left to right, then a running total "
                  "(\"40 + 20 = 60. 6 + 6 = 12. 60 + 12 = 72.\"). 4 worked examples drawn from the first 200 train inputs.", "",
                  "| digits | worked steps | System 1 % (tok) | few-shot CoT % (tok) |", "|---|---|---|---|"]
        lines += [f"| {r['digits']} | {worked(r)} | {tok(r, 'system1')} | {tok(r, 'system2-cot')} |"
                  for r in p["rows"]]
        gain, at = probe_gain(p), f"{p['digits']} digits with `{worked(p)}` steps"
        lines += ["", f"The distilled addition runs use {at}, the largest CoT gain ({100 * gain:+.1f} points)." if gain > 0
                  else f"Few-shot CoT beats System 1 at no digit count with either style (the best gain, "
                  f"{100 * gain:+.1f} points, at {at}), so on this model addition is not a task where System 2 "
                  "has anything to teach, and its distilled runs are not made.", ""]
    if state.get("rows"):
        lines += ["## Answer-only (`lora`) against `stepwise` on the same curated data", "",
                  "| task | trainer | kept | target acc % | System 1 % (tok) | System 2 % (tok) | distilled % (tok) "
                  "| train s | stages |", "|---|---|---|---|---|---|---|---|---|"]
        for r in state["rows"]:
            stages = (r["stepwise"] or {}).get("stages", "-")
            secs = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
            lines.append(f"| {r['task']} | {r['trainer']} | {r['kept']} | {pct(r['target_accuracy'])} "
                         f"| {tok(r, 'system1')} | {tok(r, 'system2')} | {tok(r, 'distilled')} | {secs} | {stages} |")
        lines += ["", *reading(state["rows"]), ""]
    for task, res in (state.get("routes") or {}).items():
        c, t, e = res["chosen"], res["test_at_chosen"], res["through_lm_eval"]
        lines += [f"## Routing: {task}", "",
                  f"Threshold {c['threshold']:.4g} (picked on validation): test {pct(t['accuracy'])}% at "
                  f"{t['mean_tokens']:.1f} tokens, {pct(t['to_system2'])}% sent to System 2; through lm-eval "
                  f"{pct(e['score'])}% at {e['mean_tokens']:.1f} tokens. Curve and table: "
                  f"[route/{task}/routing.md](route/{task}/routing.md).", "",
                  f"![routing {task}](route/{task}/routing.png)", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="probe,runs,route", help="stages to run (comma-separated)")
    ap.add_argument("--runs", default="", help="with the runs stage: only these runs (comma-separated names "
                    "from --list); the table still lists every finished run")
    ap.add_argument("--list", action="store_true", help="print the planned runs, run nothing")
    args = ap.parse_args()
    os.chdir(ROOT)  # every path below is relative to the repository, so results hold no machine's path
    from s2d.envinfo import git_commit
    from s2d.files import write_json

    stages = set(args.only.split(","))
    wanted = set(filter(None, args.runs.split(",")))
    unknown = wanted - {name for name, _, _ in plan_runs({})}  # names do not depend on the addition setting
    if unknown:
        ap.error(f"--runs: no planned run named {', '.join(sorted(unknown))} (see --list)")
    state_path = OUT / "beyond.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    state.update(command="S2D_DATA_DIR=../shared/data python scripts/beyond_paper.py", commit=git_commit(ROOT),
                 date=time.strftime("%Y-%m-%d %H:%M:%S"))
    echo = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    def save():
        OUT.mkdir(parents=True, exist_ok=True)
        write_json(state_path, state)
        (OUT / "README.md").write_text(render(state))

    def addition() -> dict:  # the probe's choice
        p = state.get("probe") or {}
        return {"digits": p.get("digits", 3), "worked": p.get("worked", PROBE_WORKED[0])}

    if args.list:
        for name, _, cfg in plan_runs(addition()):
            print(f"{name}: {json.dumps(cfg)}")
        return
    if "probe" in stages:  # runs only the digit counts and styles not probed yet
        state["probe"] = probe(state.get("probe"), echo)
        save()
    if "runs" in stages:
        # A row from an earlier machine stays when its run folder is not here (runs/ is not committed).
        earlier = {(r["task"], r["trainer"]): r for r in state.get("rows") or []}
        rows = []
        for name, task, cfg in plan_runs(addition()):
            if task == "addition" and "probe" not in state:
                echo(f"[{name}] skipped: the addition runs wait for the probe's digit count (--only probe)")
                continue
            if task == "addition" and probe_gain(state["probe"]) <= 0:
                echo(f"[{name}] skipped: few-shot CoT does not beat System 1 on addition (the probe), so a "
                     "distilled System 2 has nothing to teach")
                continue
            if not wanted or name in wanted:  # a run not asked for now still gets its row if it finished
                try:
                    distill(name, cfg, echo)
                except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                    echo(f"[{name}] failed: {type(exc).__name__}: {exc}")
            row = run_row(task, cfg["trainer"], RUNS_DIR / name) or earlier.get((task, cfg["trainer"]))
            if row:
                rows.append(row)
                state["rows"] = rows
                save()
    if "route" in stages:
        from s2d.routing import route_run

        routes = state.setdefault("routes", {})
        for task in ROUTE_TASKS:
            folder = RUNS_DIR / f"{task}-lora"
            if task in routes or not (folder / "summary.json").is_file():
                continue
            routes[task] = route_run(folder, out_dir=OUT / "route" / task, progress=False, echo=echo)
            save()
    save()


if __name__ == "__main__":
    main()
