"""A short end-to-end check for a GPU machine (scripts/gpu_check.sh), with only torch, transformers,
peft and accelerate (lm-eval and the small wheels beside them): no vLLM, so the `hf` backend.

The model is the embedded model's architecture and tokenizer with random weights (its trained
weights do not travel): built with transformers from the config in ``--base`` (a folder holding
config.json and the tokenizer files; ``--export-base DIR`` writes one from the embedded model), else
from the embedded model itself where s2d can resolve it. Steps, each timed:

1. the `hf` backend generating n=8 samples per prompt (bf16 on CUDA);
2. one epoch of `lora` and of `full` training on a few records;
3. `s2d eval --limit 8` (the addition task: generated, no data files);
4. `s2d distill` end to end at a tiny size (rar2, curator none, one epoch);

then one JSON object: tokens/s of generation and training, seconds per step, peak GPU memory (peak
RSS on CPU), printed and written to ``$OUT/gpu_check.json`` when ``OUT`` is set.

``S2D_GPU_CHECK_CPU=1`` runs it on the CPU in fp32 (the tests do); ``S2D_GPU_CHECK_SIZE=tiny`` uses
a 2-layer model of hidden size 32 and the smallest step sizes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from s2d.backends import Request
from s2d.backends.hf import HFBackend
from s2d.cli import cli
from s2d.envinfo import versions
from s2d.files import write_jsonl
from s2d.lmeval.tasks import build_task
from s2d.models import resolve_model
from s2d.plugins import get_plugins
from s2d.trainers.base import encode, load_records

BASE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja", "special_tokens_map.json")

# Per size: the model's shape over the embedded config, and each step's size.
SIZES = {
    "full": {"model": {}, "prompts": 16, "new_tokens": 128, "records": 64, "batch": 8, "eval_limit": 8,
             "train_limit": 8, "n": 2},
    "tiny": {"model": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "head_dim": 8},
             "prompts": 4, "new_tokens": 16, "records": 16, "batch": 8, "eval_limit": 8, "train_limit": 4, "n": 2},
}


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def export_base(dest: str | os.PathLike) -> Path:
    """Copy the embedded model's config and tokenizer files (no weights, ~4 MB) to ``dest``: what
    the check needs on a machine without the embedded model."""
    src, dest = Path(resolve_model("smollm2-135m")), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in BASE_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)
    return dest


def build_model(base: Path, out: Path, shape: dict, dtype) -> Path:
    """A model folder of ``base``'s architecture (``shape`` over its config) with random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base)
    config.update(shape)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(out, safe_serialization=True)
    for name in BASE_FILES:
        if name != "config.json" and (base / name).is_file():
            shutil.copy(base / name, out / name)
    return out


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class Meter:
    """Seconds and peak memory of each step."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.steps: dict[str, dict] = {}

    def __call__(self, name: str):
        meter = self

        class Step:
            def __enter__(self):
                log(f"{name} ...")
                if meter.cuda:
                    import torch

                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                self.start = time.perf_counter()
                self.info = meter.steps.setdefault(name, {})
                return self.info

            def __exit__(self, kind, exc, tb):
                if meter.cuda:
                    import torch

                    torch.cuda.synchronize()
                    self.info["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                self.info["seconds"] = round(time.perf_counter() - self.start, 2)
                self.info["ok"] = exc is None
                if exc is not None:
                    self.info["error"] = f"{type(exc).__name__}: {exc}"[:500]
                log(f"{name}: {'ok' if exc is None else 'FAILED ' + self.info['error']} in {self.info['seconds']} s")
                if exc is not None and not isinstance(exc, Exception):
                    return False  # KeyboardInterrupt, SystemExit: stop
                if exc is not None:
                    import traceback

                    traceback.print_exception(kind, exc, tb, file=sys.stderr)
                return True  # a failed step is reported in the JSON; the others still run

        return Step()


def records(n: int) -> list[dict]:
    """Prompt-completion records from the addition task's train split (generated, no data files)."""
    task = build_task("addition", strict=True, size=8, train_size=max(n, 8))
    out = []
    for doc in task.docs("train")[:n]:
        out.append({"prompt": [{"role": "user", "content": doc["question"]}],
                    "completion": [{"role": "assistant", "content": f"Final answer: {doc['answer']}"}]})
    return out


def run_cli(*args: str) -> None:
    cli.main(args=list(args), prog_name="s2d", standalone_mode=False)


def check(work: Path, base: Path | None = None, size: str = "full", cpu: bool = False) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not cpu
    if not cuda and not cpu:
        raise SystemExit("gpu_check: no CUDA device; run with S2D_GPU_CHECK_CPU=1 to check on the CPU")
    sizes = SIZES[size]
    dtype_name = "bfloat16" if cuda else "float32"
    device = "cuda" if cuda else "cpu"
    meter = Meter(cuda)
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "dtype": dtype_name, "size": size,
                    "versions": {}, "steps": meter.steps}
    result["versions"] = {k: v for k, v in versions().items() if v}
    work.mkdir(parents=True, exist_ok=True)

    with meter("build_model") as info:
        if base is None:
            base = export_base(work / "base")
        model = build_model(Path(base), work / "model", sizes["model"], getattr(torch, dtype_name))
        import safetensors

        with safetensors.safe_open(str(model / "model.safetensors"), "pt") as f:
            info["parameters"] = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    if not meter.steps["build_model"]["ok"]:
        result["ok"] = False
        return result

    with meter("generate") as info:
        engine = HFBackend(str(model), seed=0, dtype=dtype_name, device=device)
        prompts = [f"Write a short story about the number {i}." for i in range(sizes["prompts"])]
        engine.generate([Request(prompt=prompts[0], max_new_tokens=4)], progress=False)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = engine.generate([Request(messages=[{"role": "user", "content": p}], n=8, temperature=0.7,
                                       max_new_tokens=sizes["new_tokens"]) for p in prompts], progress=False)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tokens = sum(c.completion_tokens for cs in out for c in cs)
        assert all(len(cs) == 8 for cs in out), "n=8 samples per prompt"
        info.update(samples=sum(len(cs) for cs in out), generated_tokens=tokens,
                    tokens_per_s=round(tokens / seconds, 1), generate_seconds=round(seconds, 3))
        engine.close()
        del engine

    data = work / "sft.jsonl"
    write_jsonl(data, records(sizes["records"]))
    for trainer_name in ("lora", "full"):
        with meter(f"train_{trainer_name}") as info:
            trainer = get_plugins().get("trainers", trainer_name).obj(
                epochs=1, batch_size=sizes["batch"], save_steps=10**6, max_length=256, dtype=dtype_name)
            out_dir = trainer.train(str(model), str(data), str(work / f"train_{trainer_name}"), seed=0, progress=False)
            rec = json.loads((Path(out_dir) / "s2d_training.json").read_text())
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(model)
            n_tokens = sum(len(encode(tok, r, 256)["input_ids"]) for r in load_records(data))
            runtime = rec["metrics"].get("train_runtime") or info.get("seconds") or 1
            info.update(examples=rec["records"], train_runtime=runtime, tokens_per_s=round(n_tokens / runtime, 1),
                        first_loss=rec.get("first_loss"), last_loss=rec.get("last_loss"))

    task_options = ["--set", "task_options.size=8", "--set", f"task_options.train_size={max(8, sizes['train_limit'])}"]
    with meter("eval") as info:
        run_cli("eval", "--task", "addition", "--model", str(model), "--backend", "hf", "--dtype", dtype_name,
                "--limit", str(sizes["eval_limit"]), "--out-dir", str(work / "eval"), "--no-cache", "--no-progress",
                *task_options)
        found = sorted(p.name for p in (work / "eval").rglob("*.json"))
        assert found, "s2d eval wrote no record"
        info["records"] = found

    with meter("distill") as info:
        run_cli("distill", "--task", "addition", "--model", str(model), "--backend", "hf", "--dtype", dtype_name,
                "--curator", "none", "--n", str(sizes["n"]), "--train-limit", str(sizes["train_limit"]),
                "--eval-limit", str(sizes["eval_limit"]), "--out-dir", str(work / "distill"), "--no-cache",
                "--no-progress", "--set", "trainer_options.epochs=1", "--set", f"trainer_options.dtype={dtype_name}",
                "--set", "trainer_options.batch_size=4", "--set", "trainer_options.max_length=2048",
                # random weights never stop: cap each stage, so the step measures the loop, not the caps
                "--set", f"method_options.max_new_tokens={sizes['new_tokens']}", *task_options)
        summary = json.loads((work / "distill" / "summary.json").read_text())
        info["rows"] = [r["condition"] for r in summary["rows"]]

    steps = meter.steps
    result.update({
        "ok": all(s.get("ok") for s in steps.values()),
        "generate_tokens_per_s": steps["generate"].get("tokens_per_s"),
        "train_lora_tokens_per_s": steps.get("train_lora", {}).get("tokens_per_s"),
        "train_full_tokens_per_s": steps.get("train_full", {}).get("tokens_per_s"),
        "peak_gpu_mb": max((s.get("peak_gpu_mb", 0) for s in steps.values()), default=0) if cuda else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(sum(s.get("seconds", 0) for s in steps.values()), 1),
    })
    return result


def main(argv=None) -> int:
    import argparse
    import contextlib
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m s2d.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="folder with the embedded model's config.json and tokenizer files "
                                       "[default: $S2D_GPU_CHECK_BASE, else the embedded model]")
    parser.add_argument("--work", help="working folder [default: a temporary one, removed after]")
    parser.add_argument("--export-base", metavar="DIR", help="write the base folder (config + tokenizer) to DIR "
                                                               "and stop")
    args = parser.parse_args(argv)
    if args.export_base:
        print(export_base(args.export_base))
        return 0
    cpu = os.environ.get("S2D_GPU_CHECK_CPU", "") not in ("", "0")
    size = os.environ.get("S2D_GPU_CHECK_SIZE") or ("tiny" if cpu else "full")
    if size not in SIZES:
        raise SystemExit(f"S2D_GPU_CHECK_SIZE must be one of {', '.join(SIZES)}, got {size!r}")
    base = args.base or os.environ.get("S2D_GPU_CHECK_BASE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="s2d-gpu-check-"))
    # Nothing of the user's: the check's own generation cache and s2d cache live in its folder.
    os.environ["S2D_GENERATION_CACHE"] = str(work / "generations")
    try:
        # stdout carries only the JSON: the steps' own prints (the trainer's loss lines) go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            result = check(work, Path(base) if base else None, size=size, cpu=cpu)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu_check.json").write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
