#!/usr/bin/env bash
# Real-data runs behind docs/RESULTS.md: single-branch baseline vs IAPP-CNN on gband612
# (case split) and bioimlab (karyotype split), same backbone and budget.
# Runs and caches live OUTSIDE the repo (models trained on real data are never committed).
# Usage: scripts/real_runs.sh [EPOCHS] [MAX_PER_CLASS] [INPUT] [CANVAS] [TEST_MAX_PER_CLASS]
#        (defaults: 5 50 64 128 40, the budget of docs/RESULTS.md on a shared 2-core CPU)
set -u
EPOCHS=${1:-5}
MPC=${2:-50}
INPUT=${3:-64}
CANVAS=${4:-128}
TEST_MPC=${5:-40}
RUNS=${RUNS:-/work/runs}
TAG=${TAG:-}   # suffix of the run names, to keep several budgets side by side
COMMON=(--input-size "$INPUT" --canvas "$CANVAS" --epochs "$EPOCHS" --max-per-class "$MPC"
        --val-max-per-class 5 --threads 1 --cache "$RUNS/cache" --seed 0)
mkdir -p "$RUNS/logs"

run_set() {  # name data split
  local name=$1$TAG data=$2 split=$3
  nice -n 10 edge-iapp train "$data" --split "$split" --out "$RUNS/${name}_baseline" \
    --branches global "${COMMON[@]}" > "$RUNS/logs/${name}_baseline.log" 2>&1 &
  local pb=$!
  nice -n 10 edge-iapp train "$data" --split "$split" --out "$RUNS/${name}_iapp" \
    "${COMMON[@]}" > "$RUNS/logs/${name}_iapp.log" 2>&1 &
  local pi=$!
  wait $pb $pi
  nice -n 10 edge-iapp evaluate "$RUNS/${name}_iapp" --data "$data" --split "$split" \
    --baseline "$RUNS/${name}_baseline" --out "$RUNS/${name}_eval" --threads 1 \
    --max-per-class "$TEST_MPC" --cache "$RUNS/cache" > "$RUNS/logs/${name}_eval.log" 2>&1
}

run_set gband612 /work/shared/data/gband612 "$RUNS/splits/gband612_case.json" &
run_set bioimlab /work/shared/data/bioimlab "$RUNS/splits/bioimlab_karyotype.json" &
wait
