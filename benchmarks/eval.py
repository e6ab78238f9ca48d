"""Evaluation speed: System 1 on last_letter through stock lm-eval and through `s2d eval`.

(a) lm-eval's own `hf` model (`simple_evaluate(model="hf", apply_chat_template=True)`),
(b) `s2d eval --backend hf`, (c) `s2d eval --backend vllm`; same task file, same prompts, greedy,
same max tokens. Prints wall time, generated tokens/s and the ratios to (a), and checks that (a)
and (b) reach the same accuracy. Run it alone on the machine.

    S2D_DATA_DIR=... python benchmarks/eval.py [--limit 200] [--lm-eval-batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from report import markdown_table, run_meta, write_report  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--lm-eval-batch-size", type=int, default=16)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--out", default="results/benchmarks")
    args = ap.parse_args()

    import lm_eval
    import torch

    from s2d.backends import load_backend
    from s2d.backends.base import cpu_dtype
    from s2d.lmeval.run import evaluate, task_manager
    from s2d.store import load_record, metrics_of
    from s2d.models import resolve_model

    path = resolve_model(args.model)
    dtype = "bfloat16" if torch.cuda.is_available() else cpu_dtype()
    rows = {}

    start = time.perf_counter()
    res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": path, "dtype": dtype},
                                  tasks=["s2d_last_letter"], task_manager=task_manager(), limit=args.limit,
                                  apply_chat_template=True, batch_size=args.lm_eval_batch_size, bootstrap_iters=0,
                                  log_samples=True, device="cuda" if torch.cuda.is_available() else "cpu")
    wall = time.perf_counter() - start
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    samples = res["samples"]["s2d_last_letter"]
    tokens = sum(len(tok(s["resps"][0][0], add_special_tokens=False)["input_ids"]) for s in samples)
    rows["lm_eval_hf"] = dict(engine=f"stock lm-eval hf (batch {args.lm_eval_batch_size})", seconds=wall,
                              tokens=tokens, exact_match=res["results"]["s2d_last_letter"]["exact_match,none"])

    for name in ["hf"] + ([] if args.skip_vllm else ["vllm"]):
        engine = load_backend(name, path, dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp, engine:
            start = time.perf_counter()
            (rec_path,) = evaluate(engine, model_ref=args.model, tasks=["last_letter"], limit=args.limit,
                                   results_dir=tmp, progress=False)
            wall = time.perf_counter() - start  # includes engine start for vllm (lazy)
            rec = load_record(rec_path)
        rows[f"s2d_{name}"] = dict(engine=f"s2d eval --backend {name}", seconds=wall,
                                   tokens=round(rec["s2d"]["mean_generated_tokens"] * rec["s2d"]["n_examples"]),
                                   exact_match=metrics_of(rec)["exact_match"])
    base = rows["lm_eval_hf"]["seconds"]
    for r in rows.values():
        r["tok_per_s"] = r["tokens"] / r["seconds"]
        r["speedup_vs_lm_eval"] = base / r["seconds"]
    figures = {"s2d_hf_over_lm_eval_hf": round(rows["s2d_hf"]["speedup_vs_lm_eval"], 2),
               "lm_eval_hf_exact_match": rows["lm_eval_hf"]["exact_match"],
               "s2d_hf_exact_match": rows["s2d_hf"]["exact_match"],
               "same_accuracy": rows["lm_eval_hf"]["exact_match"] == rows["s2d_hf"]["exact_match"]}
    if "s2d_vllm" in rows:
        figures["s2d_vllm_over_lm_eval_hf"] = round(rows["s2d_vllm"]["speedup_vs_lm_eval"], 2)
        figures["s2d_vllm_exact_match"] = rows["s2d_vllm"]["exact_match"]
    table = markdown_table(
        ["engine", "examples", "seconds", "generated tokens", "tok/s", "x lm-eval hf", "exact match"],
        [[r["engine"], args.limit, f"{r['seconds']:.1f}", r["tokens"], f"{r['tok_per_s']:.1f}",
          f"{r['speedup_vs_lm_eval']:.2f}", f"{100 * r['exact_match']:.1f}%"] for r in rows.values()])
    meta = run_meta(dtype=dtype, model=args.model, task="last_letter (test)", limit=args.limit,
                    data_dir=os.environ.get("S2D_DATA_DIR"))
    write_report(args.out, "eval", "Evaluation speed: System 1 on last_letter", table, figures, rows, meta,
                 notes=f"Same accuracy (a) vs (b): {figures['same_accuracy']}.\n")

if __name__ == "__main__":
    main()
