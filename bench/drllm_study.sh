#!/usr/bin/env bash
# Dr.LLM's per-layer routers on SmolLM2-135M held to the study's controls (docs/results/drllm.md): fit real and
# decoy-trained routers on the same train samples, make the random and execute controls, then evaluate each on
# ARC-Easy test and on CommonsenseQA's labelled validation set (transfer; its test set has no labels), full depth run beside each. Stages run two at a time; every step
# resumes (rerun the script after a crash).
set -euo pipefail
cd "$(dirname "$0")/.."
COLA=.venv/bin/cola
RUNS=results/runs
REAL=$RUNS/smollm2-135m-arc_easy-train-score-drllm-bfloat16-n2251-s0
DECOY=$RUNS/smollm2-135m-arc_easy-train-score-drllm-decoy-bfloat16-n2251-s0
DEV=$RUNS/smollm2-135m-arc_easy-dev-score-drllm-bfloat16-n200-s0
R=results/routers
E=results/evals/drllm/smollm2-135m
N=${N:-1000}
CSQA_N=${CSQA_N:-500}
export OMP_NUM_THREADS=1
mkdir -p "$E"

fit() {  # name runs same-as
  [ -f "$R/$1/config.json" ] || $COLA router fit-layers --runs "$2" --dev-runs "$DEV" --same-samples-as "$3" \
    --out "$R/$1" --quiet
}
fit smollm2-135m-drllm-real "$REAL" "$DECOY" &
fit smollm2-135m-drllm-decoy "$DECOY" "$REAL" &
# Dr.LLM's own setting: every sample the real search keeps, not only those the decoy search keeps too
[ -f "$R/smollm2-135m-drllm-real-all/config.json" ] || $COLA router fit-layers --runs "$REAL" --dev-runs "$DEV" \
  --out "$R/smollm2-135m-drllm-real-all" --quiet &
wait
for kind in random execute; do
  [ -f "$R/smollm2-135m-drllm-real-$kind/config.json" ] || \
    $COLA router layer-control $kind --routers $R/smollm2-135m-drllm-real --out $R/smollm2-135m-drllm-real-$kind
done
[ -f "$R/smollm2-135m-drllm-real-all-random/config.json" ] || \
  $COLA router layer-control random --routers $R/smollm2-135m-drllm-real-all --out $R/smollm2-135m-drllm-real-all-random

ev() {  # out task split n routers-folder
  $COLA eval --policy layer-router --router "$5" --task "$2" --split "$3" --n "$4" --data-dir ../shared/data \
    --mode score --dtype bfloat16 --batch-size 16 --out "$E/$1.jsonl" > "$E/$1.log" 2>&1
}
ev arc_easy-real arc_easy test "$N" $R/smollm2-135m-drllm-real &
ev arc_easy-decoy arc_easy test "$N" $R/smollm2-135m-drllm-decoy &
wait
ev arc_easy-random arc_easy test "$N" $R/smollm2-135m-drllm-real-random &
ev arc_easy-execute arc_easy test "$N" $R/smollm2-135m-drllm-real-execute &
wait
ev arc_easy-real-all arc_easy test "$N" $R/smollm2-135m-drllm-real-all &
ev arc_easy-real-all-random arc_easy test "$N" $R/smollm2-135m-drllm-real-all-random &
ev csqa-real csqa dev "$CSQA_N" $R/smollm2-135m-drllm-real
wait
ev csqa-decoy csqa dev "$CSQA_N" $R/smollm2-135m-drllm-decoy &
ev csqa-random csqa dev "$CSQA_N" $R/smollm2-135m-drllm-real-random &
wait

# the other label-free ways to spend depth: the library router as fitted, and the block-influence chain that drops
# as many layers as the real routers skip on dev (chosen on dev, from the train-split block influence)
$COLA eval --router $R/smollm2-135m-arc_easy --task arc_easy --split test --n "$N" --data-dir ../shared/data \
  --mode score --dtype bfloat16 --batch-size 16 --out "$E/arc_easy-library-router.jsonl" > "$E/arc_easy-library-router.log" 2>&1 &
M=$(.venv/bin/python -c "import json; c = json.load(open('$R/smollm2-135m-drllm-real/config.json')); \
print(max(1, min(7, round(c['depth'] - c['dev_mean_layers']))))")
CHAIN=$(.venv/bin/python -c "import json; print(json.load(open('results/prune/smollm2-135m-arc_easy-bi.json'))['chains']['$M'])")
$COLA eval --chain "$CHAIN" --task arc_easy --split test --n "$N" --data-dir ../shared/data --mode score \
  --dtype bfloat16 --batch-size 16 --out "$E/arc_easy-bi$M.jsonl" > "$E/arc_easy-bi$M.log" 2>&1 &
wait
