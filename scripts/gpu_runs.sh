#!/usr/bin/env bash
# One GPU session, as a script: kernel checks first, then the real-data runs of docs/RESULTS.md
# at the paper's input size, each training run held to a time budget.
#
# Usage: scripts/gpu_runs.sh DATA_ROOT OUT [BUDGET_MIN] [INPUT] [CANVAS]
#   DATA_ROOT  holds gband612/ and bioimlab/ (read only), e.g. ../shared/data
#   OUT        gets gpu-check.md, logs/, runs/ (checkpoints), evals/ and results.tar.gz
#   BUDGET_MIN training minutes of each IAPP-CNN run (default 4); its baseline (global
#              branch alone) then trains for the same number of epochs
# Needs: a CUDA GPU, PyTorch, and this repository (installed, or PYTHONPATH=<repo>).
# Environment: DEVICE (default cuda; cpu runs the same steps without --amp, for a smoke
# test), TRAIN_ARGS and EVAL_ARGS (extra options, e.g. "--max-per-class 5"), BASELINE=0
# (IAPP-CNN alone: the whole GPU for its budget, no baseline run), CROSS=0 (no zero-shot
# evaluation on the other lab at the end).
# Runs and evaluations are written under OUT, never into the repository: models trained on
# real data are not redistributable.
set -u
DATA=$1
OUT=$2
BUDGET=${3:-4}
INPUT=${4:-224}
CANVAS=${5:-176}
PY=${PYTHON:-python3}
EI=("$PY" -m edge_iapp)
mkdir -p "$OUT/logs" "$OUT/runs" "$OUT/evals" "$OUT/cache"
pack() {  # everything but checkpoints and caches, for the way back
  (cd "$OUT" && tar czf results.tar.gz --exclude='*.pt' --exclude=cache logs evals \
    runs/*/config.json runs/*/metrics.json runs/*/split.json gpu-check.md 2>/dev/null)
}
stamp() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT/logs/timeline.txt"; }
DEVICE=${DEVICE:-cuda}
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_ARGS:-}"
COMMON=(--input-size "$INPUT" --canvas "$CANVAS" --device "$DEVICE" --threads 4 --keep 1
        --cache "$OUT/cache" --seed 0 "${TRAIN_EXTRA[@]}")
[ "$DEVICE" = cuda ] && COMMON+=(--amp)
EV=(--device "$DEVICE" "${EVAL_EXTRA[@]}")
# per run: data preparation + the budget, with room for later epochs slowed by the baseline
# (the budget is judged by epoch 2, before the baseline starts sharing the GPU)
LIMIT=$(awk -v b="$BUDGET" 'BEGIN { printf "%d", b * 60 * 1.5 + 240 }')

train_pair() {  # name data split: IAPP-CNN with the budget, then the baseline at its epochs
  local name=$1 data=$2 split=$3 run="$OUT/runs/$1"
  stamp "$name: IAPP-CNN starts"
  timeout "$LIMIT" "${EI[@]}" train "$data" --split "$split" --out "${run}_iapp" \
    --time-budget "$BUDGET" "${COMMON[@]}" > "$OUT/logs/${name}_iapp.log" 2>&1 &
  local pi=$! epochs=""
  if [ "${BASELINE:-1}" = 0 ]; then
    wait "$pi"
    stamp "$name: training done (no baseline)"
    "${EI[@]}" evaluate "${run}_iapp" --data "$data" --split "$split" \
      --out "$OUT/evals/$name" "${EV[@]}" > "$OUT/logs/${name}_eval.log" 2>&1
    stamp "$name: evaluated"
    return
  fi
  while kill -0 "$pi" 2>/dev/null && [ -z "$epochs" ]; do
    sleep 2
    epochs=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('epochs_fit_in_budget',''))" \
      "${run}_iapp/metrics.json" 2>/dev/null)
  done
  epochs=${epochs:-1}
  stamp "$name: IAPP-CNN fits $epochs epochs; baseline starts"
  timeout "$LIMIT" "${EI[@]}" train "$data" --split "$split" --out "${run}_baseline" \
    --branches global --epochs "$epochs" "${COMMON[@]}" > "$OUT/logs/${name}_baseline.log" 2>&1
  wait "$pi"
  stamp "$name: training done"
  "${EI[@]}" evaluate "${run}_iapp" --data "$data" --split "$split" \
    --baseline "${run}_baseline" --out "$OUT/evals/$name" "${EV[@]}" \
    > "$OUT/logs/${name}_eval.log" 2>&1
  stamp "$name: evaluated"
}

stamp "start on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
train_pair gband612 "$DATA/gband612" docs/splits/gband612_case.json &
p1=$!
train_pair bioimlab "$DATA/bioimlab" docs/splits/bioimlab_karyotype.json &
p2=$!
# the kernels run while the training processes are still reading and preprocessing on the CPU
stamp "gpu-check starts"
"$PY" scripts/gpu-check "$OUT/gpu-check.md" --data "$DATA/gband612" --images 128 \
  > "$OUT/logs/gpu-check.log" 2>&1
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py > "$OUT/logs/pytest-gpu.log" 2>&1
stamp "gpu-check and gpu tests done (rc $?)"
wait $p1 $p2
if [ "${CROSS:-1}" = 0 ]; then
  stamp "all done (no cross-lab evaluation)"
  pack
  exit 0
fi
# zero-shot across labs: each lab's model on the other lab's test part
"${EI[@]}" evaluate "$OUT/runs/gband612_iapp" --data "$DATA/bioimlab" \
  --split docs/splits/bioimlab_karyotype.json --out "$OUT/evals/gband612_on_bioimlab" \
  "${EV[@]}" > "$OUT/logs/cross1.log" 2>&1
"${EI[@]}" evaluate "$OUT/runs/bioimlab_iapp" --data "$DATA/gband612" \
  --split docs/splits/gband612_case.json --out "$OUT/evals/bioimlab_on_gband612" \
  "${EV[@]}" > "$OUT/logs/cross2.log" 2>&1
stamp "all done"
pack
