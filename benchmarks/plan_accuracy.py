"""How close `s2d plan`'s time estimate comes to the run it plans, measured as a ratio in one run
(issue target: within 30% on the default config).

Calibrates this machine (`s2d plan --calibrate`), plans the default config, runs it with
`s2d distill` from an empty generation cache, and prints per stage and in total the planned and
measured seconds and their ratio. Not against results/distill/default/summary.json: its seconds were
measured on another machine, and a throughput table describes only the machine it was measured on.
About 20 minutes on 2 cores; run it alone on the machine.

    S2D_DATA_DIR=... python benchmarks/plan_accuracy.py [--config experiments/configs/default.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def s2d(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "s2d.cli", *args], capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"s2d {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "configs" / "default.yaml"))
    parser.add_argument("--export", default=None, help="also keep the measured run's export here (its scores are "
                                                        "one more run of the config from an empty cache)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s2d-plan-accuracy-") as tmp:
        table = Path(tmp) / "throughput.json"
        s2d("plan", "--calibrate", "--config", args.config, "--throughput", str(table))
        plan = json.loads(s2d("plan", "--config", args.config, "--throughput", str(table), "--json",
                              "--records", str(REPO / "results")))
        s2d("distill", "--config", args.config, "--out-dir", str(Path(tmp) / "run"),
            "--cache", str(Path(tmp) / "cache"), "--no-progress", *(["--export", args.export] if args.export else []))
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
        stages = summary["stages"]
    planned: dict[str, float] = {}
    for st in plan["rounds"][0]["stages"]:
        planned[st["stage"]] = planned.get(st["stage"], 0.0) + st["seconds"]
    rows = [{"stage": s["stage"], "measured_s": round(s["seconds"], 1), "planned_s": round(planned.get(s["stage"], 0), 1)}
            for s in stages]
    measured = sum(s["seconds"] for s in stages)
    out = {"config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else args.config,
           "stages": rows, "measured_s": round(measured, 1), "planned_s": round(plan["seconds"], 1),
           "planned_over_measured": round(plan["seconds"] / measured, 3), "target": "within 0.7-1.3",
           "scores": {r["condition"]: r.get("score") for r in summary["rows"]}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
