"""Generation throughput: a naive transformers loop against the `hf` and `vllm` backends.

The same 256 chat prompts, 64 new tokens, greedy and n=8 at temperature 0.7, on the embedded
model. Prints output tokens/s, the ratio to the naive loop, and the share of the machine's compute
bound (2 x parameters x tokens/s over the matmul FLOP/s measured here). Run it alone on the machine:
with two threads any other busy process slows torch 3-20x.

    python benchmarks/generate.py [--prompts 256] [--naive-prompts 16] [--out results/benchmarks]

dtype: bf16 where the CPU has native bf16 (AVX-512 BF16/AMX) or on a GPU, else fp32 -- the backends'
own "auto" rule (emulated bf16 is ~300x slower than fp32 on an AVX2-only CPU).

The naive loop (one `model.generate` call per sequence) would take hours over all 256 prompts, so it
runs on the first --naive-prompts prompts (and n=8 on a quarter of those) and reports tokens/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from report import markdown_table, run_meta, write_report  # noqa: E402

TOPICS = ["the sea", "a cat", "mountains", "coffee", "a city at night", "rain", "a library", "trains",
          "the moon", "gardening", "a violin", "winter", "bees", "a lighthouse", "chess", "bread",
          "a river", "robots", "the desert", "friendship", "a market", "volcanoes", "snow", "a bicycle",
          "the forest", "music", "an old house", "the stars", "a storm", "a museum", "apples", "a bridge"]
TEMPLATES = ["Write one sentence about {}.", "Give two facts about {}.", "Describe {} to a child.",
             "What is interesting about {}?", "Write a haiku about {}.", "List three words related to {}.",
             "Explain why people like {}.", "Tell a very short story about {}."]
PROMPTS = [t.format(topic) for t in TEMPLATES for topic in TOPICS]  # 256
MAX_NEW = 64


def chat_requests(prompts, n, temperature):
    from s2d.backends.base import Request

    return [Request(messages=[{"role": "user", "content": p}], max_new_tokens=MAX_NEW, n=n,
                    temperature=temperature, id=str(i)) for i, p in enumerate(prompts)]


def matmul_flops(torch, dtype, seconds=3.0, size=2048):
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start)


def naive(model_path, prompts, n, temperature):
    """What a user writes first: one `generate` call per sequence."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, DTYPE)).eval()
    torch.manual_seed(0)
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        for _ in range(n):
            with torch.inference_mode():
                out = model.generate(**ids, max_new_tokens=MAX_NEW, do_sample=temperature > 0,
                                     temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
            tokens += out.shape[1] - ids["input_ids"].shape[1]
    return tokens, time.perf_counter() - start


def run_backend(name, model_path, reqs):
    from s2d.backends import load_backend

    start = time.perf_counter()
    engine = load_backend(name, model_path, dtype=DTYPE, seed=0)
    load = time.perf_counter() - start
    engine.generate(chat_requests(PROMPTS[:4], 1, 0.0), progress=False)  # warm-up
    results = {}
    for label, rs in reqs.items():
        start = time.perf_counter()
        outs = engine.generate(rs, progress=False)
        wall = time.perf_counter() - start
        results[label] = (sum(c.completion_tokens for o in outs for c in o), wall)
    engine.close()
    return load, results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=256, help="how many of the 256 prompts the backends run")
    ap.add_argument("--naive-prompts", type=int, default=16)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--out", default="results/benchmarks")
    args = ap.parse_args()

    import torch

    from s2d.backends.base import cpu_dtype

    global DTYPE
    DTYPE = "bfloat16" if torch.cuda.is_available() else cpu_dtype()
    prompts = PROMPTS[: args.prompts]
    from s2d.models import resolve_model

    path = resolve_model(args.model)
    params = sum(p.numel() for p in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        os.path.join(path, "model.safetensors")).values())
    flops = matmul_flops(torch, getattr(torch, DTYPE))
    load_before = os.getloadavg()
    rows = {}

    k = args.naive_prompts
    t, w = naive(path, PROMPTS[:k], 1, 0.0)
    rows["naive_greedy"] = dict(engine="naive transformers loop", mode="greedy", prompts=k, tokens=t, seconds=w)
    t, w = naive(path, PROMPTS[: max(1, k // 4)], 8, 0.7)
    rows["naive_n8"] = dict(engine="naive transformers loop", mode="n=8, T=0.7", prompts=max(1, k // 4), tokens=t,
                            seconds=w)
    engines = ["hf"] + ([] if args.skip_vllm else ["vllm"])
    for name in engines:
        load, res = run_backend(name, path, {"greedy": chat_requests(prompts, 1, 0.0),
                                             "n8": chat_requests(prompts, 8, 0.7)})
        for label, (t, w) in res.items():
            rows[f"{name}_{label}"] = dict(engine=f"s2d {name} backend", mode="greedy" if label == "greedy" else
                                           "n=8, T=0.7", prompts=len(prompts), tokens=t, seconds=w, load_seconds=load)
    for key, r in rows.items():
        r["tok_per_s"] = r["tokens"] / r["seconds"]
        base = rows["naive_greedy" if key.endswith("greedy") else "naive_n8"]["tok_per_s"]
        r["over_naive"] = r["tok_per_s"] / base
        r["compute_share"] = 2 * params * r["tok_per_s"] / flops

    figures = {f"{k}_tok_per_s": round(r["tok_per_s"], 1) for k, r in rows.items()}
    figures["hf_over_naive_greedy"] = round(rows["hf_greedy"]["over_naive"], 2)
    figures["hf_over_naive_n8"] = round(rows["hf_n8"]["over_naive"], 2)
    if "vllm_n8" in rows:
        figures["vllm_over_hf_greedy"] = round(rows["vllm_greedy"]["tok_per_s"] / rows["hf_greedy"]["tok_per_s"], 2)
        figures["vllm_over_hf_n8"] = round(rows["vllm_n8"]["tok_per_s"] / rows["hf_n8"]["tok_per_s"], 2)
    figures["matmul_gflops"] = round(flops / 1e9, 1)
    figures["params"] = params

    table = markdown_table(
        ["engine", "mode", "prompts", "output tokens", "seconds", "tok/s", "x naive", "compute share"],
        [[r["engine"], r["mode"], r["prompts"], r["tokens"], f"{r['seconds']:.1f}", f"{r['tok_per_s']:.1f}",
          f"{r['over_naive']:.2f}", f"{100 * r['compute_share']:.1f}%"] for r in rows.values()])
    meta = run_meta(model=args.model, dtype=DTYPE, max_new_tokens=MAX_NEW, seed=0,
                    torch_threads=torch.get_num_threads(), loadavg_before=load_before)
    write_report(args.out, "generate", "Generation throughput", table, figures, rows, meta, notes=(
        f"Matmul bound: {figures['matmul_gflops']} GFLOP/s ({DTYPE}, 2048x2048, {torch.get_num_threads()} threads); "
        f"compute share = 2 x {params} params x tok/s / that.\n"
        f"Naive rows use the first prompts only (see the prompts column).\n"))

if __name__ == "__main__":
    main()
