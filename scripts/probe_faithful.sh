#!/usr/bin/env bash
# Issue "Faithful to the paper": every method on every task, 100 test questions each, with the
# raised token caps (items 2 and 9): the share of responses cut by the cap, per stage, is in each
# record (cap_hit_share_by_stage), and the prompt-sensitivity rows (s2d, paper and original
# wordings) on last letter and coin flip. One `s2d eval` per condition, greedy, seed 0, through the
# generation cache; a record already in OUT is kept (delete it to remake it), so a killed probe
# resumes where it stopped.
#   S2D_DATA_DIR=../shared/data bash scripts/probe_faithful.sh [OUT]      (default results/eval)
#   MODEL=smollm2-135m PART=sensitivity ...                               (one part, another model)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/eval}"
S2D="${S2D:-.venv/bin/s2d}"
MODEL="${MODEL:-qwen2.5-coder-1.5b}"
LIMIT="${LIMIT:-100}"
PART="${PART:-all}"   # caps | sensitivity | all
: "${S2D_DATA_DIR:?set S2D_DATA_DIR to the data folder}"

run() {  # run TASK METHOD CONDITION [s2d eval args...]; CONDITION is the record's name
  # (without --label, the name s2d eval gives: METHOD[+options]+limit=N)
  local task=$1 method=$2 condition=$3; shift 3
  local record="$OUT/$MODEL/$task/$condition.json"
  # Kept only when made by this version (its identity names each stage's decoding); an older record
  # of the same name is remade (--overwrite).
  if [ -f "$record" ] && grep -q '"decoding"' "$record"; then echo "=== kept $record"; return 0; fi
  [ -f "$record" ] && set -- "$@" --overwrite
  echo "=== $task / $method $*: $(date -u +%H:%M:%S)"
  "$S2D" eval --model "$MODEL" --task "$task" --method "$method" --out-dir "$OUT" --seed 0 \
    --log-samples --no-progress "$@" || echo "FAILED: $task/$method $*"
}

if [ "$PART" = caps ] || [ "$PART" = all ]; then
  for task in last_letter coin_flip; do
    run "$task" system1 "system1+limit=$LIMIT" --limit "$LIMIT"
    run "$task" cot "cot+limit=$LIMIT" --limit "$LIMIT"
    run "$task" rar1 "rar1+limit=$LIMIT" --limit "$LIMIT"
    run "$task" rar2 "rar2+limit=$LIMIT" --limit "$LIMIT"
  done
fi
if [ "$PART" = sensitivity ] || [ "$PART" = all ]; then
  for task in last_letter coin_flip; do
    for wording in paper original; do
      run "$task" rar1 "rar1+wording=$wording+limit=$LIMIT" --set method_options.wording=$wording --limit "$LIMIT"
      run "$task" rar2 "rar2+wording=$wording+limit=$LIMIT" --set method_options.wording=$wording --limit "$LIMIT"
    done
    run "$task" cot "cot+wording=paper+limit=$LIMIT" --set method_options.wording=paper --limit "$LIMIT"
  done
fi
if [ "$PART" = caps ] || [ "$PART" = all ]; then
  run gsm8k system1 "system1+limit=$LIMIT" --limit "$LIMIT"
  run gsm8k cot "cot+limit=$LIMIT" --limit "$LIMIT"
  # TriviaQA: LIMIT questions under each of the four templates (not the first LIMIT prompts);
  # the judge: a seeded subset of LIMIT documents (pairs in both orders), over every category.
  tq=(--set task_options.test_questions=$LIMIT)
  run triviaqa_bias system1 "system1+questions=$LIMIT" "${tq[@]}" --label "system1+questions=$LIMIT"
  run triviaqa_bias s2a "s2a+questions=$LIMIT" "${tq[@]}" --label "s2a+questions=$LIMIT"
  run mt_bench_judge system1 "system1+subset=$LIMIT" --set task_options.subset=$LIMIT --label "system1+subset=$LIMIT"
  run mt_bench_judge bsm "bsm+subset=$LIMIT" --set task_options.subset=$LIMIT --label "bsm+subset=$LIMIT"
fi
"$S2D" leaderboard "$OUT" >/dev/null
