#!/usr/bin/env bash
# Issue #7 on one GPU: does a model trained in one lab work in another?
#
#   1. train IAPP-CNN on each lab with every combination of the two switches
#      (size: absolute | cell-relative; lab augmentations: none | all), time-budgeted;
#   2. evaluate each on its own lab's test part and zero-shot on the other lab's
#      (with the out-of-distribution review flag calibrated on its own val part);
#   3. few-shot: fine-tune the best zero-shot model of each direction with 1, 5 and 20
#      cells of the other lab and evaluate on that lab's held-out test part; each K
#      without and with BatchNorm statistics re-estimated on 20 unlabelled cells
#      (--adapt-cells; K = 0 gives the adapted zero-shot point).
#
# Usage: scripts/cross_lab_gpu.sh DATA_ROOT OUT [BUDGET_MIN] [INPUT] [CANVAS]
#   DATA_ROOT holds gband612/ and bioimlab/ (read only), e.g. ../shared/data.
#   OUT gets logs/, runs/, evals/, fewshot/, summary.json (with its table in logs/summary.md,
#   scripts/cross_lab_summary.py) and results.tar.gz (no checkpoints).
# Environment: DEVICE (cuda; cpu for a smoke test, without --amp), GB_MAX_PER_CLASS
# (gband612 training images per class, default 300), BI_MAX_PER_CLASS (bioimlab, default
# all), TRAIN_ARGS / EVAL_ARGS / FT_ARGS (extra options of train / evaluate / finetune),
# FEWSHOT (labelled cell counts, default "0 1 5 20"), ADAPT (unlabelled cell counts for
# --adapt-cells, default "0 20"), PSEUDO (pseudo-labelled cell counts for --pseudo-cells,
# each run with every non-zero FEWSHOT count, default "40"; "" for none), FT_EPOCHS
# (default 10), VARIANTS (default all four), TRAIN_LIMIT_S (hard stop per training run;
# default 1.5 x budget + 4 min), LABS (the training labs, default "gband612 bioimlab"; each is
# evaluated on both and fine-tuned to the other), CELL_LENGTH (cell variants: canvas px of a
# cell's median chromosome; default 72, scaled as 72/176 of CANVAS below a canvas of 72).
#
# #7's target in one call of under 10 minutes on one GPU (gband612 -> bioimlab only, the
# variant that transferred best on the CPU, 5 labelled + 78 pseudo-labelled cells):
#   LABS=gband612 VARIANTS=cell-all FEWSHOT=5 ADAPT=0 PSEUDO=78 FT_EPOCHS=20 \
#     scripts/cross_lab_gpu.sh DATA_ROOT OUT 4 224 176
# Models trained on real data are written under OUT only, never into the repository.
set -u
DATA=$1
OUT=$2
BUDGET=${3:-2}
INPUT=${4:-128}
CANVAS=${5:-176}
CELL_LENGTH=${CELL_LENGTH:-$(( CANVAS < 72 ? CANVAS * 72 / 176 : 72 ))}
PY=${PYTHON:-python3}
EI=("$PY" -m edge_iapp)
DEVICE=${DEVICE:-cuda}
FEWSHOT=${FEWSHOT:-0 1 5 20}
ADAPT=${ADAPT:-0 20}
PSEUDO=${PSEUDO-40}
FT_EPOCHS=${FT_EPOCHS:-10}
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_ARGS:-}"
read -r -a FT_EXTRA <<< "${FT_ARGS:-}"
mkdir -p "$OUT/logs" "$OUT/runs" "$OUT/evals" "$OUT/fewshot" "$OUT/cache"
stamp() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT/logs/timeline.txt"; }
# data preparation + the budget, with room for epochs slowed once other runs start training
# (each budget is judged by its epoch 2)
LIMIT=${TRAIN_LIMIT_S:-$(awk -v b="$BUDGET" 'BEGIN { printf "%d", b * 60 * 1.5 + 240 }')}
COMMON=(--input-size "$INPUT" --canvas "$CANVAS" --cell-length "$CELL_LENGTH"
        --device "$DEVICE" --threads 2 --keep 1
        --cache "$OUT/cache" --seed 0 --time-budget "$BUDGET" "${TRAIN_EXTRA[@]}")
[ "$DEVICE" = cuda ] && COMMON+=(--amp)
EV=(--device "$DEVICE" --threads 2 --cache "$OUT/cache" "${EVAL_EXTRA[@]}")
declare -A SPLIT=([gband612]=docs/splits/gband612_case.json
                  [bioimlab]=docs/splits/bioimlab_karyotype.json)
declare -A OTHER=([gband612]=bioimlab [bioimlab]=gband612)
declare -A LIMITS=([gband612]="--max-per-class ${GB_MAX_PER_CLASS:-300}"
                   [bioimlab]="${BI_MAX_PER_CLASS:+--max-per-class $BI_MAX_PER_CLASS}")
VARIANTS=${VARIANTS:-abs-none cell-none abs-all cell-all}
LABS=${LABS:-gband612 bioimlab}

stamp "start: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo no GPU)"
pids=()
for lab in $LABS; do
  for v in $VARIANTS; do
    size=${v%-*}; aug=${v#*-}
    [ "$size" = abs ] && size=absolute
    read -r -a lim <<< "${LIMITS[$lab]}"
    timeout "$LIMIT" "${EI[@]}" train "$DATA/$lab" --split "${SPLIT[$lab]}" \
      --out "$OUT/runs/${lab}_$v" --size-mode "$size" --augment "$aug" "${lim[@]}" \
      "${COMMON[@]}" > "$OUT/logs/train_${lab}_$v.log" 2>&1 &
    pids+=($!)
  done
done
wait "${pids[@]}"
stamp "training done"

pids=()
for lab in $LABS; do
  for v in $VARIANTS; do
    for target in "$lab" "${OTHER[$lab]}"; do
      "${EI[@]}" evaluate "$OUT/runs/${lab}_$v" --data "$DATA/$target" \
        --split "${SPLIT[$target]}" --out "$OUT/evals/${lab}_${v}_on_$target" "${EV[@]}" \
        > "$OUT/logs/eval_${lab}_${v}_on_$target.log" 2>&1 &
      pids+=($!)
    done
  done
done
wait "${pids[@]}"
stamp "evaluations done"

best() {  # the variant of lab $1 with the best zero-shot accuracy on the other lab
  "$PY" - "$OUT/evals" "$1" "${OTHER[$1]}" "$VARIANTS" <<'PYEOF'
import json, sys
from pathlib import Path
evals, lab, other, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split()
def acc(v):
    f = evals / f"{lab}_{v}_on_{other}" / "metrics.json"
    return json.loads(f.read_text())["main"]["accuracy"] if f.is_file() else -1.0
print(max(variants, key=acc))
PYEOF
}

fewshot() {  # fine-tune ${lab}_$v on $target in the background: NAME, then finetune's options
  local name=$1
  shift
  "${EI[@]}" finetune "$OUT/runs/${lab}_$v" --data "$DATA/$target" \
    --split "${SPLIT[$target]}" "$@" --epochs "$FT_EPOCHS" --device "$DEVICE" "${FT_EXTRA[@]}" \
    --out "$OUT/fewshot/${lab}_${v}_to_${target}_$name" \
    > "$OUT/logs/fewshot_${lab}_to_${target}_$name.log" 2>&1 &
  pids+=($!)
}

pids=()
for lab in $LABS; do
  v=$(best "$lab")
  target=${OTHER[$lab]}
  stamp "few-shot $lab -> $target from variant $v"
  for m in $ADAPT; do
    for k in $FEWSHOT; do
      [ "$k" = 0 ] && [ "$m" = 0 ] && continue  # the zero-shot point is every record's "before"
      fewshot "k${k}_m$m" --cells "$k" --adapt-cells "$m"
    done
  done
  for p in $PSEUDO; do
    for k in $FEWSHOT; do
      [ "$k" = 0 ] && continue  # pseudo-labels come from the model fine-tuned on K cells
      fewshot "k${k}_p$p" --cells "$k" --pseudo-cells "$p"
    done
  done
done
wait "${pids[@]}"
stamp "few-shot done"
"$PY" "$(dirname "$0")/cross_lab_summary.py" "$OUT" | tee "$OUT/logs/summary.md"
(cd "$OUT" && tar czf results.tar.gz --exclude='*.pt' --exclude='*.npz' logs evals summary.json \
  runs/*/config.json runs/*/metrics.json runs/*/ood.json fewshot/*/finetune.json \
  fewshot/*/pseudo_labels.csv fewshot/*/config.json fewshot/*/metrics.json \
  fewshot/*/review.json 2>/dev/null)
stamp "packed"
