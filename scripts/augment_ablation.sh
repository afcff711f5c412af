#!/usr/bin/env bash
# Issue #7: each lab augmentation on its own, zero-shot from one lab to another.
#
# Trains IAPP-CNN on SOURCE with --size-mode cell and --augment V for each V in VARIANTS
# (none, all, and each augmentation alone), one run after the other, each held to a time
# budget; evaluates each on SOURCE's test part (class-balanced subset) and zero-shot on
# TARGET's whole test part. Seeds in SEEDS repeat the none and all runs, to show the
# run-to-run spread that the single-augmentation rows must be read against.
#
# Usage: scripts/augment_ablation.sh DATA_ROOT OUT [BUDGET_MIN] [INPUT] [CANVAS] [CELL_LENGTH]
#   DATA_ROOT holds gband612/ and bioimlab/ (read only), e.g. ../shared/data
#   OUT gets logs/, runs/, evals/ and summary.md (models stay under OUT, never the repo)
# Environment: SOURCE (gband612), TARGET (bioimlab), DEVICE (cpu), MAX_PER_CLASS (60),
#   OWN_EVAL_MAX (20 per class), VARIANTS (NAME or NAME:SEED; NAME none, all, one augmentation
#   or a comma list), SEEDS ("0 1", for none and all without :SEED), THREADS (2).
set -u
DATA=$1
OUT=$2
BUDGET=${3:-3}
INPUT=${4:-64}
CANVAS=${5:-88}
CELL_LENGTH=${6:-36}
PY=${PYTHON:-python3}
EI=("$PY" -m edge_iapp)
SOURCE=${SOURCE:-gband612}
TARGET=${TARGET:-bioimlab}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-0 1}
VARIANTS=${VARIANTS:-none all scale contrast blur noise sharpness rotation bend}
declare -A SPLIT=([gband612]=docs/splits/gband612_case.json
                  [bioimlab]=docs/splits/bioimlab_karyotype.json)
mkdir -p "$OUT/logs" "$OUT/runs" "$OUT/evals" "$OUT/cache"
stamp() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT/logs/timeline.txt"; }

one() {  # variant seed
  local v=$1 seed=$2 name="${SOURCE}_${1}_s$2"
  stamp "$name: training"
  "${EI[@]}" train "$DATA/$SOURCE" --split "${SPLIT[$SOURCE]}" --out "$OUT/runs/$name" \
    --size-mode cell --cell-length "$CELL_LENGTH" --augment "$v" \
    --input-size "$INPUT" --canvas "$CANVAS" --max-per-class "${MAX_PER_CLASS:-60}" \
    --val-max-per-class 5 --time-budget "$BUDGET" --device "$DEVICE" --threads "$THREADS" \
    --keep 1 --cache "$OUT/cache" --seed "$seed" > "$OUT/logs/train_$name.log" 2>&1 \
    || { stamp "$name: training failed (see logs/train_$name.log)"; return; }
  "${EI[@]}" evaluate "$OUT/runs/$name" --data "$DATA/$SOURCE" --split "${SPLIT[$SOURCE]}" \
    --max-per-class "${OWN_EVAL_MAX:-20}" --out "$OUT/evals/${name}_on_$SOURCE" \
    --device "$DEVICE" --threads "$THREADS" --cache "$OUT/cache" \
    > "$OUT/logs/eval_${name}_on_$SOURCE.log" 2>&1
  "${EI[@]}" evaluate "$OUT/runs/$name" --data "$DATA/$TARGET" --split "${SPLIT[$TARGET]}" \
    --out "$OUT/evals/${name}_on_$TARGET" --device "$DEVICE" --threads "$THREADS" \
    --cache "$OUT/cache" > "$OUT/logs/eval_${name}_on_$TARGET.log" 2>&1
  stamp "$name: evaluated"
}

for item in $VARIANTS; do  # "NAME" or "NAME:SEED"; NAME may be a comma list of augmentations
  v=${item%%:*}
  if [ "$item" != "$v" ]; then
    one "$v" "${item#*:}"
  elif [ "$v" = none ] || [ "$v" = all ]; then
    for seed in $SEEDS; do one "$v" "$seed"; done
  else
    one "$v" 0
  fi
done

"$PY" - "$OUT" "$SOURCE" "$TARGET" <<'PYEOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out, source, target = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def metrics(run, lab):
    f = out / "evals" / f"{run}_on_{lab}" / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None
def acc(m):
    return f"{100 * m['main']['accuracy']:.1f}" if m else "failed"
def ood(m):  # the OOD rule on the other lab: share of errors / of correct calls flagged
    by = (m or {}).get("ood", {}).get("by", {}).get("ood")
    return f"{100 * by['errors_flagged']:.0f} / {100 * by['correct_flagged']:.0f}" if by else "-"
print(f"| augment | seed | epochs | {source} test (subset) % | zero-shot {target} % "
      f"| OOD flags on {target}: errors / correct % |")
print("|---|---|---|---|---|---|")
for run in sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()):
    cfg = json.loads((out / "runs" / run / "config.json").read_text())
    v, seed = run[len(source) + 1 :].rsplit("_s", 1)
    own, other = metrics(run, source), metrics(run, target)
    print(f"| {v} | {seed} | {cfg['epochs']} | {acc(own)} | {acc(other)} | {ood(other)} |")
PYEOF
stamp "done"
