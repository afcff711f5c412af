#!/usr/bin/env bash
# Issue #7: few-shot curve with and without BatchNorm adaptation to the new lab.
#
# For one trained RUN and a new lab, runs `edge-iapp finetune` for K labelled cells in
# KS and, for each K, without adaptation and with --adapt-cells M (unlabelled cells of
# the new lab's train part, the K labelled ones among them when M >= K: the fine-tuned
# model's BatchNorm statistics are re-estimated on them). Also the unsupervised curve:
# K = 0 with M in ADAPT_CURVE (RUN's weights, statistics of M cells). Prints one table line per point
# (accuracy on the new lab's test part) and writes OUT/summary.md.
#
# Usage: scripts/adapt_study.sh RUN NEWLAB SPLIT OUT
# Environment: KS ("0 1 5 20"), M (20), ADAPT_CURVE ("1 5 20"), EPOCHS (10), LR (0.005),
#   MAX_TEST (unset: the whole test part), THREADS (2), CACHE (unset), SEED (0).
set -u
RUN=$1
DATA=$2
SPLIT=$3
OUT=$4
PY=${PYTHON:-python3}
KS=${KS:-0 1 5 20}
M=${M:-20}
ADAPT_CURVE=${ADAPT_CURVE:-1 5 20}
extra=(--epochs "${EPOCHS:-10}" --lr "${LR:-0.005}" --threads "${THREADS:-2}" --device cpu
       --seed "${SEED:-0}")
[ -n "${MAX_TEST:-}" ] && extra+=(--max-test-per-class "$MAX_TEST")
[ -n "${CACHE:-}" ] && extra+=(--cache "$CACHE")
mkdir -p "$OUT"
one() {  # name cells adapt
  local dir="$OUT/$1"
  [ -f "$dir/finetune.json" ] || "$PY" -m edge_iapp finetune "$RUN" --data "$DATA" \
    --split "$SPLIT" --cells "$2" --adapt-cells "$3" --out "$dir" "${extra[@]}" \
    > "$OUT/$1.log" 2>&1 || { echo "$1 failed (see $OUT/$1.log)"; return; }
  "$PY" - "$dir/finetune.json" "$2" "$3" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
acc = lambda s: f"{100 * s['fused']['accuracy']:.1f}" if s else "-"
k = r["cells_requested"]
tuned = r.get("finetuned") or (r["after"] if k else None)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {acc(r['before'])} | {acc(r['adapted'])} | "
      f"{acc(tuned)} | {acc(r['after'] if k and r.get('finetuned') else None)} |")
PYEOF
}
{
  echo "RUN=$RUN DATA=$DATA SPLIT=$SPLIT $(date -u +%FT%TZ)"
  echo
  echo "| labelled cells K | unlabelled cells M | before | BN-adapted | fine-tuned | fine-tuned, then BN-adapted |"
  echo "|---|---|---|---|---|---|"
  for m in $ADAPT_CURVE; do one "k0_m$m" 0 "$m"; done
  for k in $KS; do
    [ "$k" = 0 ] && continue
    one "k${k}_m0" "$k" 0
    one "k${k}_m$M" "$k" "$M"
  done
} | tee "$OUT/summary.md"
