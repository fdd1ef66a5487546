#!/usr/bin/env bash
# PoLar's supervision searches (docs/results/polar.md): `cola search --preset polar` on ARC-Easy, score mode, bf16,
# one thread per search. QUEUE=a: SmolLM2 train (real gold), SmolLM2 test (the "as released" metric's trusted hits
# only), Gemma test; QUEUE=b: SmolLM2 train (decoy gold), Gemma train. Each run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
search() {  # model split n [control]
  local control=${4:-none} suffix=""
  [ "$control" = none ] || suffix="-$control"
  .venv/bin/cola search --preset polar --model "$1" --task arc_easy --data-dir ../shared/data --split "$2" --n "$3" \
    --mode score --dtype bfloat16 --batch 8 --control "$control" --quiet \
    --out "results/runs/$1-arc_easy-$2-score-polar$suffix-bfloat16-n$3-s0"
}
case "${QUEUE:-a}" in
  a) search smollm2-135m train 1000; search smollm2-135m test 500; search gemma3-270m test 500 ;;
  b) search smollm2-135m train 1000 decoy; search gemma3-270m train 1000 ;;
esac
