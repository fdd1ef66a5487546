#!/usr/bin/env bash
# Dr.LLM's per-layer routers held to the study's controls (docs/results/drllm.md), for one model (MODEL, default
# smollm2-135m; or gemma3-270m): fit real and decoy-trained routers on the same train samples, make the random and
# execute controls, then evaluate each on ARC-Easy test, ARC-Challenge test and CommonsenseQA's labelled validation
# set (transfer; its test set has no labels), full depth run beside each, in score mode: the mode of the
# supervision searches, whose prompts the routers read. Stages run two at a time; every step is skipped when its
# output exists, so the script resumes after a crash and adds only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
COLA=.venv/bin/cola
MODEL=${MODEL:-smollm2-135m}
RUNS=results/runs
REAL=$RUNS/$MODEL-arc_easy-train-score-drllm-bfloat16-n2251-s0
DECOY=$RUNS/$MODEL-arc_easy-train-score-drllm-decoy-bfloat16-n2251-s0
DEV=$RUNS/$MODEL-arc_easy-dev-score-drllm-bfloat16-n200-s0
R=results/routers
P=$R/$MODEL-drllm
E=results/evals/drllm/$MODEL
N=${N:-1000}
CHALLENGE_N=${CHALLENGE_N:-500}
CSQA_N=${CSQA_N:-500}
export OMP_NUM_THREADS=1
mkdir -p "$E"

fit() {  # name runs [same-as]
  [ -f "$P-$1/config.json" ] || $COLA router fit-layers --runs "$2" --dev-runs "$DEV" \
    ${3:+--same-samples-as "$3"} --out "$P-$1" --quiet
}
fit real "$REAL" "$DECOY" &
fit decoy "$DECOY" "$REAL" &
# Dr.LLM's own setting: every sample the real search keeps, not only those the decoy search keeps too
fit real-all "$REAL" &
wait
control() {  # kind routers
  [ -f "$P-$2-$1/config.json" ] || $COLA router layer-control "$1" --routers "$P-$2" --out "$P-$2-$1"
}
control random real
control random real-all
# the execute control: routers told to run every layer, which must equal full depth on every answer
[ -f "$E/arc_easy-execute.json" ] || control execute real-all

ev() {  # out task split n routers-folder
  [ -f "$E/$1.json" ] || $COLA eval --model "$MODEL" --policy layer-router --router "$P-$5" --task "$2" \
    --split "$3" --n "$4" --data-dir ../shared/data --mode score --dtype bfloat16 --batch-size 16 \
    --out "$E/$1.jsonl" > "$E/$1.log" 2>&1
}
for set in "real decoy" "real-random real-all" "real-all-random"; do
  for routers in $set; do ev "arc_easy-$routers" arc_easy test "$N" "$routers" & done
  wait
done
ev arc_easy-execute arc_easy test "$N" real-all-execute

# the other label-free ways to spend depth: the library router as fitted, and the block-influence chain that drops
# as many layers as the real routers skip on dev (chosen on dev, from the train-split block influence)
[ -f "$E/arc_easy-library-router.json" ] || $COLA eval --model "$MODEL" --router "$R/$MODEL-arc_easy" --task arc_easy \
  --split test --n "$N" --data-dir ../shared/data --mode score --dtype bfloat16 --batch-size 16 \
  --out "$E/arc_easy-library-router.jsonl" > "$E/arc_easy-library-router.log" 2>&1 &
M=$(.venv/bin/python -c "import json; c = json.load(open('$P-real/config.json')); \
print(max(1, min(7, round(c['depth'] - c['dev_mean_layers']))))")
CHAIN=$(.venv/bin/python -c "import json; print(json.load(open('results/prune/$MODEL-arc_easy-bi.json'))['chains']['$M'])")
[ -f "$E/arc_easy-bi$M.json" ] || $COLA eval --model "$MODEL" --chain "$CHAIN" --task arc_easy --split test --n "$N" \
  --data-dir ../shared/data --mode score --dtype bfloat16 --batch-size 16 --out "$E/arc_easy-bi$M.jsonl" \
  > "$E/arc_easy-bi$M.log" 2>&1 &
wait

# held out in domain (ARC-Challenge) and out of domain (CommonsenseQA), the ARC-Easy routers unchanged
for set in "real-all real-all-random" "real decoy"; do
  for routers in $set; do ev "arc_challenge-$routers" arc_challenge test "$CHALLENGE_N" "$routers" & done
  wait
  for routers in $set; do ev "csqa-$routers" csqa dev "$CSQA_N" "$routers" & done
  wait
done

# Dr.LLM's ARC routers: ARC-Easy and ARC-Challenge train supervision together (where an ARC-Challenge train run
# exists), selected on ARC-Easy dev, with their random control, on both test sets
CHALLENGE=$RUNS/$MODEL-arc_challenge-train-score-drllm-bfloat16-n1119-s0
if [ -d "$CHALLENGE" ]; then
  [ -f "$P-arc/config.json" ] || $COLA router fit-layers --runs "$REAL" "$CHALLENGE" --dev-runs "$DEV" --out "$P-arc" \
    --quiet
  control random arc
  for routers in arc arc-random; do ev "arc_easy-$routers" arc_easy test "$N" "$routers" & done
  wait
  for routers in arc arc-random; do ev "arc_challenge-$routers" arc_challenge test "$CHALLENGE_N" "$routers" & done
  wait
fi
