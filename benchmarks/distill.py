"""Distillation cost: each stage of a `s2d distill` run, and the `lora` trainer against TRL.

1. Runs the README's default distillation (or the config given) in a fresh run folder and reports
   wall time and peak memory (max RSS of this process and its children) per stage: generate,
   curate, train, eval.
2. Trains the `lora` trainer and a plain TRL `SFTTrainer` with the same PEFT config on the same
   curated records (same batch size, epochs, learning rate, max length) and reports examples/s of
   each and their ratio `lora_over_trl`.

    S2D_DATA_DIR=... python benchmarks/distill.py [--config experiments/configs/default.yaml] [--skip-run]
        [--model qwen2.5-coder-1.5b] [--export results/distill/default]

Run it alone on the machine. Writes results/benchmarks/distill.{md,json} (distill-MODEL.* for
another --model than the default, so one model's figures never replace another's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from report import markdown_table, run_meta, write_report  # noqa: E402


def peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def distill_run(config_path: str, folder: Path, backend: str | None, model: str | None = None) -> dict:
    import yaml

    from s2d.config import RunConfig, apply_scale
    from s2d.distill import DistillRun

    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    cfg = RunConfig.build(apply_scale(raw, None), {"backend": backend, "model": model})
    start = time.perf_counter()
    # A fresh cache: the shared one may already hold the run's generations.
    summary = DistillRun(cfg, folder, progress=False, cache=folder.parent / "cache").run()
    summary["minutes"] = (time.perf_counter() - start) / 60
    return summary


def trl_examples_per_s(model_path: str, data: str, settings: dict, out: str) -> tuple[float, float]:
    """The same LoRA training through TRL's SFTTrainer; returns (examples/s, seconds)."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(x) for x in Path(data).read_text().splitlines() if x.strip()]
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_cfg = LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                          target_modules=list(settings["target_modules"]), task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=out, per_device_train_batch_size=settings["batch_size"],
                     gradient_accumulation_steps=settings["grad_accum"], num_train_epochs=settings["epochs"],
                     learning_rate=settings["learning_rate"], lr_scheduler_type=settings["scheduler"],
                     warmup_steps=settings["warmup_ratio"], max_length=settings["max_length"], logging_steps=1,
                     weight_decay=settings["weight_decay"], save_strategy="no", report_to=[],
                     use_cpu=not torch.cuda.is_available(), seed=0, completion_only_loss=True, disable_tqdm=True,
                     # SFTConfig defaults to bf16 autocast and gradient checkpointing; ours trains fp32
                     # without checkpointing, and bf16 on a CPU without bf16 units is ~15x slower.
                     bf16=False, fp16=False, gradient_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_cfg)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return len(rows) * settings["epochs"] / seconds, seconds


def s2d_examples_per_s(model_path: str, data: str, settings: dict, out: str) -> tuple[float, float]:
    from s2d.trainers.lora import LoraTrainer

    trainer = LoraTrainer(**{**settings, "save_steps": 10**6})
    start = time.perf_counter()
    trainer.train(model_path, data, out, seed=0, progress=False)
    seconds = time.perf_counter() - start
    n = sum(1 for x in Path(data).read_text().splitlines() if x.strip())
    return n * settings["epochs"] / seconds, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="experiments/configs/default.yaml")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--data", default=None, help="Curated JSONL for the trainer comparison [default: the run's].")
    ap.add_argument("--skip-run", action="store_true", help="Only the trainer comparison (needs --data).")
    ap.add_argument("--out", default="results/benchmarks")
    ap.add_argument("--model", default=None, help="Model alias or folder [default: the config's, smollm2-135m].")
    ap.add_argument("--export", default=None, help="Also export the timed run (as `s2d distill --export`), e.g. "
                                                   "results/distill/default: the README's run, from an empty cache.")
    args = ap.parse_args()

    from s2d.models import resolve_model
    from s2d.trainers.lora import LoraTrainer

    if args.export:  # refused now, not after the run
        from s2d.distill import check_export_dest

        check_export_dest(args.export)
    work = Path(tempfile.mkdtemp(prefix="s2d-bench-distill-"))
    rows, figures = [], {}
    data = args.data
    if not args.skip_run:
        summary = distill_run(args.config, work / "run", args.backend, args.model)
        for s in summary["stages"]:
            rows.append([s["stage"], f"{s['seconds']:.1f}", f"{s['peak_rss_mb']:.0f}"])
        figures["default_run_minutes"] = round(summary["minutes"], 2)
        figures["stages"] = summary["stages"]
        figures["summary_rows"] = summary["rows"]
        data = data or str(work / "run" / "sft.jsonl")
        if args.export:
            from s2d.distill import export_run

            print(f"-> {export_run(work / 'run', args.export)}", file=sys.stderr)
    if not data:
        sys.exit("--skip-run needs --data")
    model_path = resolve_model(args.model or "smollm2-135m")
    settings = {k: v for k, v in LoraTrainer.options().items()}
    ours, ours_s = s2d_examples_per_s(model_path, data, settings, str(work / "ours"))
    theirs, theirs_s = trl_examples_per_s(model_path, data, settings, str(work / "trl"))
    figures.update({"lora_examples_per_s": round(ours, 3), "trl_examples_per_s": round(theirs, 3),
                    "lora_seconds": round(ours_s, 1), "trl_seconds": round(theirs_s, 1),
                    "lora_over_trl": round(ours / theirs, 3), "peak_rss_mb": round(peak_mb())})
    table = ""
    if rows:
        rows.append(["**whole run**", f"{60 * figures['default_run_minutes']:.1f} "
                     f"(**{figures['default_run_minutes']:.1f} min**; target < 20)", ""])
        table = markdown_table(["stage", "seconds", "peak RSS MB (this process; vLLM's engine is a child)"], rows)
        table += "\n\n" + markdown_table(["condition", "score", "mean #tokens"], [
            [r["condition"], f"{100 * r['score']:.1f}%", f"{r['mean_tokens']:.1f}"] for r in figures["summary_rows"]])
        table += "\n\n"
    table += markdown_table(["trainer", "examples/s", "seconds"],
                            [["s2d lora", f"{ours:.2f}", f"{ours_s:.1f}"], ["TRL SFTTrainer", f"{theirs:.2f}",
                                                                            f"{theirs_s:.1f}"]])
    table += (f"\n\nlora_over_trl = **{ours / theirs:.2f}** (examples/s ratio, target >= 1); peak RSS of the "
              f"whole benchmark, children included: {figures['peak_rss_mb']} MB")
    name = "distill" if args.model in (None, "smollm2-135m") else f"distill-{Path(args.model).name}"
    write_report(args.out, name, f"Distillation cost ({args.model or 'smollm2-135m'})", table, figures,
                 {"stages": rows}, run_meta(config=args.config, settings=settings, model=args.model or "smollm2-135m"))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
