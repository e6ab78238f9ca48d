#!/usr/bin/env bash
# System 2 (few-shot CoT, 4 worked train examples) under several exemplar sets (shot_seed 0..4) on
# the distillation search's test sets: how much of a System 2 score is one exemplar set's luck.
# Greedy, seed 0, through the generation cache; one `s2d eval` per set, records in RESULTS_DIR.
#   S2D_DATA_DIR=../shared/data bash scripts/exemplar_sets.sh [RESULTS_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/distill_search/exemplar_sets}"
S2D="${S2D:-.venv/bin/s2d}"
: "${S2D_DATA_DIR:?set S2D_DATA_DIR to the data folder}"
for seed in 0 1 2 3 4; do
  # The search's last letter: one name per question, exemplars from the first 200 of 800 train inputs.
  "$S2D" eval --task last_letter --method cot --set method_options.shots=4 --set method_options.shot_pool=200 \
    --set method_options.shot_seed=$seed --set task_options.words_per_example=1 --set task_options.train_size=800 \
    --out-dir "$OUT" --seed 0 --no-progress || echo "FAILED: last_letter shot_seed=$seed"
  # The search's coin flip: the seeded 300-question subset of the 1,333 test set.
  "$S2D" eval --task coin_flip --method cot --set method_options.shots=4 --set method_options.shot_seed=$seed \
    --set task_options.subset=300 --out-dir "$OUT" --seed 0 --no-progress || echo "FAILED: coin_flip shot_seed=$seed"
done
"$S2D" leaderboard "$OUT"
