#!/usr/bin/env bash
# The label-free policy measurements of docs/results/label-free.md, for one model, one stage at a time:
#   bash bench/label_free.sh MODEL STAGE      MODEL: smollm2-135m | gemma3-270m
# Stages: chains (full depth and block-influence chains, ARC-Easy test 1000), cascade-bi, cascade-menu, vote (all
# three calibrated on ARC-Easy dev, and swept on test for the report's curves where --sweep is given),
# static, router, generate (ARC-Easy test 300, generate mode), transfer (ARC-Challenge test 500), wall (the timed run).
# Everything is chosen on train (prune, search runs, router) or dev (--calibrate); test only reports. An evaluation
# whose summary exists is not run again (delete it to re-measure). SWEEP= (empty) runs the vote live,
# without its test sweep (by default it is swept on test and replayed from the sweep's table: not timed).
set -euo pipefail
cd "$(dirname "$0")/.."
M=$1; STAGE=$2
OUT="results/evals/label-free/$M"; mkdir -p "$OUT"
BI="results/prune/$M-arc_easy-bi.json"
MENU="results/runs/$M-arc_easy-train-score-all-n40-s0"
EASY=(--model "$M" --task arc_easy --data-dir ../shared/data --mode score --split test --n 1000 --batch-size 16)
GEN=(--model "$M" --task arc_easy --data-dir ../shared/data --mode generate --split test --n 300 --batch-size 16 --dev-n 100)
HARD=(--model "$M" --task arc_challenge --data-dir ../shared/data --mode score --split test --n 500 --batch-size 16)
C() {  # cola eval ... --out F.jsonl, unless F.json exists
  local out="${@: -1}"; [ -f "${out%.jsonl}.json" ] && { echo "have ${out%.jsonl}.json"; return; }; .venv/bin/cola "$@"
}
bi() { .venv/bin/python -c "import sys; from cola.search.prune import load_pruned; print(load_pruned('$BI')[int(sys.argv[1])])" "$1"; }
most=$(.venv/bin/python -c "from cola.search.prune import load_pruned; print(max(load_pruned('$BI')))")
case $STAGE in
  chains)
    C eval "${EASY[@]}" --chain full --out "$OUT/full.jsonl"
    for m in $(seq 1 "$most"); do C eval "${EASY[@]}" --chain "$(bi "$m")" --name "BI m=$m" --out "$OUT/bi$m.jsonl"; done ;;
  cascade-bi)
    C eval "${EASY[@]}" --policy cascade --chain "$(bi "$most")" --calibrate consistency=0.95 --sweep --name "cascade BI m=$most (consistency 0.95)" --out "$OUT/cascade-bi-consistency.jsonl"
    C eval "${EASY[@]}" --policy cascade --chain "$(bi "$most")" --calibrate budget=0.85 --name "cascade BI m=$most (budget 0.85)" --out "$OUT/cascade-bi-budget.jsonl" ;;
  cascade-menu)
    C eval "${EASY[@]}" --policy cascade --chains-from "$MENU" --top 2 --calibrate consistency=0.95 --name "cascade menu top 2 (consistency 0.95)" --out "$OUT/cascade-menu-consistency.jsonl" ;;
  vote)
    C eval "${EASY[@]}" --dev-n 200 --policy vote --chain full --chains-from "$MENU" --top 8 --calibrate accuracy --ks 3,5,9 --rules majority,confident,weighted ${SWEEP---sweep --replay} --name "vote full + menu (k, rule on dev)" --out "$OUT/vote-menu.jsonl" ;;
  static)  # the best chain of `cola search --static` on 100 dev samples (or the chain given as a third argument)
    best=${3:-$(.venv/bin/python -c "from cola.search.static import best_static; from cola.storage import read_records; print(best_static(read_records('results/runs/$M-arc_easy-dev-static-n100-s0'))['chain'])")}
    C eval "${EASY[@]}" --chain "$best" --name "best static (dev)" --out "$OUT/static.jsonl" ;;
  router)
    C eval "${EASY[@]}" --router "results/routers/$M-arc_easy" --name "router" --out "$OUT/router.jsonl" ;;
  generate)
    C eval "${GEN[@]}" --policy vote --chain full --chains-from "$MENU" --top 8 --calibrate accuracy --ks 1,3,5,9 --rules majority --sweep --replay --name "vote full + menu, generate" --out "$OUT/gen-vote.jsonl"
    C eval "${GEN[@]}" --policy self-consistency --calibrate accuracy --ks 1,3,5,9 --temperatures 0.7 --sweep --replay --name "self-consistency, generate" --out "$OUT/gen-sc.jsonl" ;;
  transfer)
    for p in cascade-bi-budget vote-menu; do
      C eval "${HARD[@]}" --policy "$OUT/$p.json" --name "$p (chosen on ARC-Easy dev)" --out "$OUT/hard-$p.jsonl"
    done
    C eval "${HARD[@]}" --chain full --out "$OUT/hard-full.jsonl" ;;
  wall)  # the chosen budget cascade and full depth timed side by side on 300 inputs; run it alone on the machine
    C eval "${EASY[@]}" --n 300 --policy "${3:-$OUT/cascade-bi-budget.json}" --name "cascade (budget 0.85), timed" --out "$OUT/wall-cascade-bi-budget.jsonl" ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
