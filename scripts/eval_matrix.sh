#!/usr/bin/env bash
# The System 1 / System 2 evaluation matrix behind results/eval (issue: methods and curators).
# Runs each condition with the default backend, greedy, seed 0, and skips conditions whose record
# already exists, so a killed run is restarted by running this again.
#   bash scripts/eval_matrix.sh [RESULTS_DIR]        (S2D_DATA_DIR must point at the data)
# A condition whose full test set would take over an hour here runs on a seeded random subset
# (`subset=N`: at least N documents, judged pairs kept whole), the same subset for every method.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/eval}"
S2D="${S2D:-.venv/bin/s2d}"
# A generation cache, so a killed condition resumes where it stopped (records note what was reused).
CACHE="${CACHE:-${S2D_CACHE:-$HOME/.cache/s2d}/generations}"
: "${S2D_DATA_DIR:?set S2D_DATA_DIR to the data folder}"

run() {  # run TASK METHOD CONDITION_FILE [extra s2d eval args...]
  local task=$1 method=$2 cond=$3; shift 3
  local rec="$OUT/smollm2-135m/$task/$cond.json"
  if [[ -f "$rec" ]]; then echo "skip $task/$cond (exists)"; return; fi
  echo "=== $task / $cond: $(date -u +%H:%M:%S)"
  "$S2D" eval --task "$task" --method "$method" --out-dir "$OUT" --seed 0 --log-samples --no-progress \
    --cache "$CACHE" "$@" \
    || echo "FAILED: $task/$cond"
}

MATRIX="${MATRIX:-all}"
if [[ $MATRIX == all || $MATRIX == system1 ]]; then
  run last_letter system1 system1
  run coin_flip system1 system1
  run triviaqa_bias system1 system1
  run gsm8k system1 system1
  run mt_bench_judge system1 system1
fi
if [[ $MATRIX == all || $MATRIX == system2 ]]; then
  for m in rar1 rar2 cot; do run last_letter $m $m; done
  run triviaqa_bias s2a s2a
  for m in rar1 rar2 cot; do run coin_flip $m $m; done   # 1,333 each, 20-30 min each here
  run gsm8k cot cot                                       # 1,319, ~28 min here
  # mt_bench_judge: BSM over the 1,820 ~600-token judgements takes several hours here, so it and
  # the methods it is compared with run on a seeded random subset of 300 judgements (150 pairs in
  # both orders), the same subset (subset_seed=0) for every method.
  run mt_bench_judge system1 system1+subset=300 --set task_options.subset=300
  for m in bsm cot; do run mt_bench_judge $m $m+subset=300 --set task_options.subset=300; done
fi
"$S2D" leaderboard "$OUT" > /dev/null
