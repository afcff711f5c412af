#!/usr/bin/env bash
# The README's quick start: the whole job on synthetic chromosomes, offline, CPU only.
# Usage: bash scripts/quickstart.sh [WORKDIR]   (default: ./demo; about 3-5 minutes on 2 cores)
set -euo pipefail
cd "${1:-.}"
if [ -e demo/run ]; then  # train would refuse to overwrite the run, after synth has redone data
  echo "demo/ holds an earlier run: remove it first (rm -rf demo) to run the quick start again" >&2
  exit 1
fi

# 1. A labelled folder of 16 synthetic cells (46 chromosomes each) and a split by case.
edge-iapp synth demo/data --cells 16
edge-iapp data split demo/data --out demo/split.json
# 2. Train IAPP-CNN (three resnet18 branches) briefly at 64 px.
edge-iapp train demo/data --split demo/split.json --out demo/run \
  --input-size 64 --canvas 160 --epochs 4 --keep 1
# 3. Export the bundle: ONNX per branch, FP32 and INT8 (Q/DQ calibrated on the train split).
edge-iapp export demo/run --precision fp32,int8 --calib-data demo/data --out demo/bundle
# 4. Throughput, latency and accuracy drop per backend and precision.
edge-iapp bench demo/bundle --data demo/data --split demo/split.json \
  --backend onnxruntime,openvino --precision fp32,int8 --json demo/bench.json
# 5. Score a slide of 4 new cells: calls, counts, karyotypes, karyograms, review flags.
edge-iapp synth demo/slides --cells 4 --layout slide --seed 1
edge-iapp score demo/slides --bundle demo/bundle --out demo/scores --backend openvino --precision int8
echo "open $PWD/demo/scores/index.html (then the slide's report.html)"
