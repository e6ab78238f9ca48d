"""How s2d's cost grows (issue 29, item 4): generation against inputs and samples, training against
examples, evaluation against documents, each fitted to a power law t = a * x^k.

Everything goes through s2d's own code paths on the real engine: `generate_traces` (the distill
loop's generate stage) with no generation cache, the `none` curator's records trained by the LoRA
trainer, and `evaluate` (lm-eval) on the test split. One engine serves every generation and eval
point, so its start is not in the figures; each point uses inputs no earlier point saw (vLLM's
prefix cache cannot make a later point cheaper). Training includes loading the base model, so a
fixed cost is measured too (the smallest point) and the exponent is also fitted to time less that
cost. Run it alone on the machine (two torch processes on 2 cores slow each other 3-20x).

    S2D_DATA_DIR=... python benchmarks/scaling.py [--model smollm2-135m] [--out results/benchmarks]

Writes scaling.md, scaling.json and scaling.png to --out. Goal: exponents <= 1.1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from report import markdown_table, run_meta, write_report  # noqa: E402

INPUTS = [50, 100, 200, 400]       # generation, n = 8
SAMPLES = [1, 4, 8, 16]            # generation, 100 inputs
EXAMPLES = [50, 100, 200, 400]     # training, 1 epoch
DOCUMENTS = [50, 100, 200]         # evaluation (the test split holds 200 questions)
MAX_NEW = 32                       # every sample costs about the same (the 135M model runs to a cap at T 0.7)
TRAIN_FLOOR = 8                    # training's fixed cost: loading, LoRA set-up, saving


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares on log-log: (a, k) of y = a * x^k."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    k = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    return math.exp(my - k * mx), k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backend", default=None, help="default: vllm if it imports, else hf")
    ap.add_argument("--out", default="results/benchmarks")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (0.1 for a smoke run)")
    args = ap.parse_args()

    from s2d.backends import default_backend_name, load_backend
    from s2d.curators.base import write_curated
    from s2d.lmeval.run import evaluate
    from s2d.lmeval.tasks import build_task
    from s2d.models import resolve_model
    from s2d.plugins import get_plugins
    from s2d.traces import build_curator, build_method, generate_traces

    size = (lambda x: max(2, int(round(x * args.scale))))
    inputs, samples = [size(x) for x in INPUTS], SAMPLES
    examples, documents = [size(x) for x in EXAMPLES], [size(x) for x in DOCUMENTS]
    per_n = size(100)
    # One-name last letter (the default run's task), System 1 sampled as the distill loop samples it.
    task_options = {"words_per_example": 1, "train_size": sum(inputs) + per_n * len(samples)}
    task = build_task("last_letter", strict=True, **task_options)
    docs = task.docs("train")
    backend = args.backend or default_backend_name()
    load_before = os.getloadavg()
    rows: dict[str, list[dict]] = {"generate_inputs": [], "generate_samples": [], "train": [], "eval": []}

    def gen_point(engine, chunk, n):
        method = build_method("system1", task, n=n, temperature=0.7, max_new_tokens={"answer": MAX_NEW})
        start = time.perf_counter()
        traces, _ = generate_traces(engine, task, method, chunk, split="train", cache=None, progress=False)
        seconds = time.perf_counter() - start
        tokens = sum(s["total_tokens"] for t in traces for s in t["samples"])
        return traces, seconds, tokens

    with tempfile.TemporaryDirectory(prefix="s2d-scaling-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        engine = load_backend(backend, args.model, seed=0)
        engine_start = time.perf_counter() - start
        dtype = getattr(engine, "dtype", None)
        with engine:
            gen_point(engine, docs[-2:], 2)  # warm-up, on inputs no point uses
            at = 0
            largest = None
            for k in inputs:
                traces, seconds, tokens = gen_point(engine, docs[at:at + k], 8)
                at += k
                rows["generate_inputs"].append({"x": k, "seconds": seconds, "samples": 8 * k, "tokens": tokens})
                largest = traces
                print(f"[generate] {k} inputs x 8: {seconds:.1f} s", flush=True)
            for n in samples:
                _, seconds, tokens = gen_point(engine, docs[at:at + per_n], n)
                at += per_n
                rows["generate_samples"].append({"x": n, "seconds": seconds, "samples": n * per_n, "tokens": tokens})
                print(f"[generate] {per_n} inputs x {n}: {seconds:.1f} s", flush=True)
            for d in documents:
                start = time.perf_counter()
                evaluate(engine, model_ref=args.model, tasks=[task.name], method="system1", limit=d, seed=0,
                         results_dir=str(tmp / f"eval{d}"), task_options={"words_per_example": 1},
                         progress=False, cache=None)
                seconds = time.perf_counter() - start
                rows["eval"].append({"x": d, "seconds": seconds})
                print(f"[eval] {d} documents: {seconds:.1f} s", flush=True)
        # Training data: every sample of the largest generation point, one record each (curator none).
        curator = build_curator("none", task, target="answer")
        sft = tmp / "sft.jsonl"
        write_curated(sft, largest, curator.curate(largest, None), curator="none")
        records = sft.read_text().splitlines()
        model_path = str(resolve_model(args.model))
        # The first training run pays one-time imports and warms the file cache: a warm-up, then the
        # fixed cost at TRAIN_FLOOR examples, then the points.
        for i, m in enumerate([TRAIN_FLOOR, TRAIN_FLOOR, *examples]):
            data = tmp / f"sft{i}.jsonl"
            data.write_text("\n".join(records[:m]) + "\n")
            trainer = get_plugins().get("trainers", "lora").obj(epochs=1)
            start = time.perf_counter()
            trainer.train(model_path, str(data), str(tmp / f"adapter{i}"), seed=0, progress=False)
            seconds = time.perf_counter() - start
            if i > 0:
                rows["train"].append({"x": m, "seconds": seconds, "fixed": i == 1})
            print(f"[train] {m} examples, 1 epoch: {seconds:.1f} s{' (warm-up)' if i == 0 else ''}", flush=True)

    fixed = next(r["seconds"] for r in rows["train"] if r["fixed"])
    figures: dict = {"engine_start_s": round(engine_start, 1), "train_fixed_s": round(fixed, 1)}
    table_rows = []
    labels = {"generate_inputs": ("generation", "inputs (n=8)"), "generate_samples": ("generation", f"samples per input ({per_n} inputs)"),
              "train": ("LoRA training", "examples (1 epoch)"), "eval": ("lm-eval System 1", "documents")}
    for key, points in rows.items():
        pts = [p for p in points if not p.get("fixed")]
        xs, ys = [p["x"] for p in pts], [p["seconds"] for p in pts]
        a, k = fit(xs, ys)
        figures[f"{key}_exponent"] = round(k, 3)
        figures[f"{key}_seconds_per_unit_at_max"] = round(ys[-1] / xs[-1], 4)
        extra = ""
        if key == "train":
            a2, k2 = fit(xs, [max(y - fixed, 1e-3) for y in ys])
            figures["train_exponent_less_fixed"] = round(k2, 3)
            extra = f"; less the {fixed:.0f} s fixed cost: k = {k2:.2f}"
        table_rows.append([labels[key][0], labels[key][1], ", ".join(str(x) for x in xs),
                           ", ".join(f"{y:.1f}" for y in ys), f"{k:.2f}{extra}", f"{ys[-1] / xs[-1]:.3f}"])
    table = markdown_table(["stage", "x", "points", "seconds", "exponent k (t = a x^k)", "s per unit at the largest"],
                           table_rows)
    meta = run_meta(model=args.model, backend=backend, dtype=str(dtype), seed=0, scale=args.scale,
                    loadavg_before=load_before)
    write_report(args.out, "scaling", "How s2d's cost grows", table, figures, rows, meta, notes=(
        f"Generation: System 1 on one-name last letter at T 0.7, at most {MAX_NEW} new tokens, through `generate_traces` (no cache), one engine "
        "for every point (its start and a warm-up call are not in the figures); each point on inputs no other point saw. "
        "Training: LoRA, 1 epoch, batch and length defaults, on the `none` curator's records of the largest "
        "generation point; each point loads the base model again (the fixed cost, measured at "
        f"{TRAIN_FLOOR} examples). Eval: `evaluate` with lm-eval, System 1 greedy, the test split's first documents.\n"))
    plot(rows, Path(args.out) / "scaling.png")


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    titles = {"generate_inputs": "generation vs inputs (n=8)", "generate_samples": "generation vs samples/input",
              "train": "LoRA training vs examples", "eval": "lm-eval vs documents"}
    for ax, (key, points) in zip(axes, rows.items()):
        pts = [p for p in points if not p.get("fixed")]
        xs, ys = [p["x"] for p in pts], [p["seconds"] for p in pts]
        a, k = fit(xs, ys)
        ax.loglog(xs, ys, "o", label="measured")
        ax.loglog(xs, [a * x ** k for x in xs], "-", label=f"fit k={k:.2f}")
        ax.loglog(xs, [ys[0] * x / xs[0] for x in xs], ":", color="grey", label="linear")
        ax.set_title(titles[key], fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("seconds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
