#!/usr/bin/env bash
# A short end-to-end check of s2d on one GPU (under 8 minutes), with only torch, transformers, peft
# and accelerate (+ lm-eval and the small wheels): the `hf` backend (no vLLM), the embedded model's
# architecture with random weights. Steps: hf generation (n=8, bf16), a LoRA and a full training
# epoch, `s2d eval --limit 8`, `s2d distill` at a tiny size; prints tokens/s and peak GPU memory as
# JSON, and writes $OUT/gpu_check.json when OUT is set. See s2d/gpu_check.py.
#
#   bash scripts/gpu_check.sh                      # on a GPU machine
#   S2D_GPU_CHECK_CPU=1 bash scripts/gpu_check.sh  # on the CPU, fp32, tiny model (the tests)
#   S2D_GPU_CHECK_BASE=DIR                          # the config + tokenizer folder, where the embedded
#                                                   # model is not installed; make it with
#                                                   # `python -m s2d.gpu_check --export-base DIR`
# Extra arguments go to `python -m s2d.gpu_check` (--work DIR keeps the working folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" -m s2d.gpu_check "$@"
