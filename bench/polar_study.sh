#!/usr/bin/env bash
# PoLar's predictor held to the study's controls (docs/results/polar.md), for one model and one supervision:
#   bash bench/polar_study.sh MODEL SUPERVISION     MODEL: smollm2-135m | gemma3-270m; SUPERVISION: polar | drllm
# Fits the predictor on the ARC-Easy train search run of that supervision (real gold) and its decoy twin, makes its
# controls (random programs at its rates, alone and after full depth; the fixed menu of train's most often right
# programs), and evaluates each on the same 500 ARC-Easy test items (bf16, score mode, as the searches): pass@1 beside
# full depth, and PoLar's own best-of-5, an oracle, online and (where the polar test search exists) as released.
# The block-influence chain at the predictor's mean layers on its held-out train samples runs beside them. Every step
# whose output exists is skipped: the script resumes. Nothing is chosen on test. The evaluations run two at a time.
# TASK=arc_challenge (test) or TASK=csqa (its labelled dev set): the ARC-Easy predictor and its controls unchanged on
# another task (transfer), in results/evals/polar/MODEL-SUPERVISION-TASK; no released row there (no test search).
set -euo pipefail
cd "$(dirname "$0")/.."
M=$1; SUP=$2
COLA=.venv/bin/cola
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
N=${N:-500}
TASK=${TASK:-arc_easy}
SPLIT=test; [ "$TASK" = csqa ] && SPLIT=dev
case $SUP in
  polar) REAL=results/runs/$M-arc_easy-train-score-polar-bfloat16-n1000-s0
         DECOY=results/runs/$M-arc_easy-train-score-polar-decoy-bfloat16-n1000-s0 ;;
  drllm) REAL=results/runs/$M-arc_easy-train-score-drllm-bfloat16-n2251-s0
         DECOY=results/runs/$M-arc_easy-train-score-drllm-decoy-bfloat16-n2251-s0 ;;
esac
TEST=results/runs/$M-arc_easy-test-score-polar-bfloat16-n500-s0
P=results/routers/$M-program-$SUP
E=results/evals/polar/$M-$SUP; [ "$TASK" = arc_easy ] || E=$E-$TASK
mkdir -p "$E"
[ -f "$P/config.json" ] || $COLA router fit-program --runs "$REAL" --out "$P" --quiet
[ -d "$DECOY" ] && { [ -f "$P-decoy/config.json" ] || $COLA router fit-program --runs "$DECOY" --out "$P-decoy" --quiet; }
[ -f "$P-random/config.json" ] || $COLA router program-control random --router "$P" --out "$P-random"
[ -f "$P-random-full/config.json" ] || $COLA router program-control random --with-full --router "$P" --out "$P-random-full"
[ -f "$P-menu/config.json" ] || $COLA router program-control menu --router "$P" --out "$P-menu"
ev() {  # name router [extra...]
  local name=$1 router=$2; shift 2
  [ -f "$E/$name.json" ] || $COLA eval --model "$M" --policy program --router "$router" --task "$TASK" --split "$SPLIT" \
    --n "$N" --data-dir ../shared/data --mode score --dtype bfloat16 --batch-size 16 "$@" --out "$E/$name.jsonl" \
    > "$E/$name.log" 2>&1
}
# the evaluations, two at a time (one thread each): a failure in either stops the script
PIDS=()
two() { "$@" & PIDS+=($!); [ "${#PIDS[@]}" -lt 2 ] || { wait "${PIDS[0]}"; wait "${PIDS[1]}"; PIDS=(); }; }
two ev predictor "$P" --top-k 5
two ev random-full "$P-random-full" --top-k 5
two ev menu "$P-menu" --top-k 5
# PoLar's released metric trusts the test search's verdicts: only once that search holds every evaluated item
if [ "$TASK" = arc_easy ] && [ -f "$TEST/config.json" ] && .venv/bin/python -c "import sys; from cola.storage import read_records; \
sys.exit(len({r['id'] for r in read_records('$TEST')}) < $N)"; then
  two ev released "$P" --top-k 5 --trust-runs "$TEST"
fi
[ ! -f "$P-decoy/config.json" ] || two ev decoy "$P-decoy" --top-k 5
two ev random "$P-random" --top-k 5
# the block-influence chain (pruned on train) dropping as many layers as the predictor's top programs on its held-out
# train samples are shorter than depth (none when they are not shorter)
MM=$(.venv/bin/python -c "import json; from cola.search.prune import load_pruned; \
c = json.load(open('$P/config.json')); most = max(load_pruned('results/prune/$M-arc_easy-bi.json')); \
print(min(most, max(0, round(c['depth'] - c['val_rates']['mean_length']))))")
if [ "$MM" -gt 0 ]; then
  CHAIN=$(.venv/bin/python -c "from cola.search.prune import load_pruned; print(load_pruned('results/prune/$M-arc_easy-bi.json')[$MM])")
  [ -f "$E/bi$MM.json" ] || two $COLA eval --model "$M" --chain "$CHAIN" --name "block influence m=$MM" --task "$TASK" \
    --split "$SPLIT" --n "$N" --data-dir ../shared/data --mode score --dtype bfloat16 --batch-size 16 \
    --out "$E/bi$MM.jsonl" > "$E/bi$MM.log" 2>&1
fi
for pid in "${PIDS[@]}"; do wait "$pid"; done
.venv/bin/python bench/polar_table.py "$M" "$SUP" "$TASK"
