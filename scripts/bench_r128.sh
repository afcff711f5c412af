#!/usr/bin/env bash
# Issue #4 at 128 px on gband612: train a quick IAPP-CNN, export fp32/fp16/int8 with the
# committed calibration manifest, bench every CPU backend x precision in one run, then
# re-export INT8 with the other calibration methods and bench those (ORT + OpenVINO).
# Models and bundles stay outside the repo (OUT, default /work/runs). Results: docs/BENCH.md
# section 5 and docs/CALIBRATION.md. Usage: scripts/bench_r128.sh [STEP...]
# with STEP in train export bench methods (default: all, in that order).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/shared/data/gband612}
SPLIT=docs/splits/gband612_case.json
OUT=${OUT:-/work/runs}
RUN=$OUT/gband612_r128
BUNDLE=$OUT/gband612_r128_bundle
LIMIT=${LIMIT:-}              # empty: the whole test part
steps=${*:-train export bench methods}
limit_arg=()
[ -n "$LIMIT" ] && limit_arg=(--limit "$LIMIT")

for step in $steps; do
  case $step in
    train)
      nice edge-iapp train "$DATA" --split "$SPLIT" --out "$RUN" --input-size 128 --canvas 176 \
        --epochs 8 --time-budget 36 --max-per-class 100 --val-max-per-class 5 --threads 1 \
        --device cpu --cache "$OUT/cache" ;;
    export)
      nice edge-iapp export "$RUN" --precision fp32,fp16,int8 --calib-data "$DATA" \
        --calib-split "$SPLIT" --calib-manifest calibration/gband612-n256-seed0.json \
        --parity-size 240 --no-engines --out "$BUNDLE" --force ;;
    bench)
      uptime
      edge-iapp bench "$BUNDLE" --data "$DATA" --split "$SPLIT" --subset test "${limit_arg[@]}" \
        --backend onnxruntime,openvino,torch --precision fp32,fp16,int8 --batch 46 --threads 2 \
        --json "$OUT/bench_r128.json"
      uptime ;;
    methods)
      for m in entropy percentile; do
        nice edge-iapp export "$RUN" --precision fp32,int8 --calib-data "$DATA" \
          --calib-split "$SPLIT" --calib-manifest calibration/gband612-n256-seed0.json \
          --calib-method "$m" --parity-size 240 --no-engines --out "${BUNDLE}_$m" --force
        uptime
        edge-iapp bench "${BUNDLE}_$m" --data "$DATA" --split "$SPLIT" --subset test \
          "${limit_arg[@]}" --backend onnxruntime,openvino --precision fp32,int8 --batch 46 \
          --threads 2 --single 0 --json "$OUT/bench_r128_$m.json"
        uptime
      done ;;
    *) echo "unknown step $step (train export bench methods)" >&2; exit 2 ;;
  esac
done
