#!/usr/bin/env bash
# One training run longer than one device call, on one GPU machine held warm between calls.
#
# A lent device machine runs each command for at most 10 minutes and kills what the
# command leaves running, except processes in a session of their own. 50 epochs of
# gband612 at 224 px need about 24 minutes at the rate of docs/RESULTS.md round 6, so the
# run is started in its own session (setsid) by one call and collected by the next.
#
#   scripts/gpu_long_train.sh start WORK DATA SPLIT [train options...]
#       starts `edge-iapp train DATA --split SPLIT --out WORK/run [options]` detached
#       (log: WORK/train.log) and returns at once; refuses when WORK/run is in progress
#   scripts/gpu_long_train.sh wait WORK SECONDS
#       returns when the run has ended or SECONDS have passed; prints the latest epochs
#   scripts/gpu_long_train.sh finish WORK DATA SPLIT [evaluate options...]
#       evaluates WORK/run on the split's test part into WORK/eval and packs
#       WORK/results.tar.gz (logs, metrics, config, evaluation; no checkpoints); a run whose
#       metrics.json does not say "finished" is evaluated too, with a warning naming its status
#
# Each call must leave the machine warm for the next (the tool gives it back when idle),
# so chain them: start + wait in one call, wait + finish in the next. A run killed
# anyway resumes from its last epoch with `start ... --resume`.
# Environment: PYTHON (default python3).
set -u
PY=${PYTHON:-python3}
cmd=${1:-}
WORK=${2:?usage: $0 start|wait|finish WORK ...}
shift 2 || true
RUN=$WORK/run
PIDFILE=$WORK/train.pid

running() {  # the recorded pid is alive and still our training (pids get reused)
  [ -f "$PIDFILE" ] && ps -p "$(cat "$PIDFILE")" -o args= 2>/dev/null | grep -q edge_iapp
}

status() {  # the run's status as metrics.json records it
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('status', '?'))" \
    "$RUN/metrics.json" 2>/dev/null || echo "no metrics.json"
}

latest() {  # the last epochs of the run, one line each
  grep -E "^epoch [0-9]+/[0-9]+:|^done|rror|--time-budget" "$WORK/train.log" 2>/dev/null | tail -n 4
}

case "$cmd" in
  start)
    DATA=${1:?start needs DATA}; SPLIT=${2:?start needs SPLIT}; shift 2
    if running; then
      echo "a run is already in progress in $WORK (pid $(cat "$PIDFILE"))" >&2
      exit 1
    fi
    mkdir -p "$WORK"
    setsid "$PY" -m edge_iapp train "$DATA" --split "$SPLIT" --out "$RUN" "$@" \
      >> "$WORK/train.log" 2>&1 < /dev/null &  # appended: a --resume keeps the first part
    echo $! > "$PIDFILE"
    sleep 3
    if ! running; then
      echo "the training ended at once; the end of $WORK/train.log:" >&2
      tail -n 5 "$WORK/train.log" >&2
      exit 1
    fi
    echo "started pid $(cat "$PIDFILE"): log $WORK/train.log"
    ;;
  wait)
    SECONDS_MAX=${1:?wait needs SECONDS}
    end=$(( $(date +%s) + SECONDS_MAX ))
    while running && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    latest
    if running; then echo "still running"; else echo "ended: $(status)"; fi
    ;;
  finish)
    DATA=${1:?finish needs DATA}; SPLIT=${2:?finish needs SPLIT}; shift 2
    if running; then
      echo "the run is still in progress; wait first" >&2
      exit 1
    fi
    state=$(status)
    [ "$state" = finished ] || echo "warning: $RUN is not finished ($state): evaluating its last checkpoint" >&2
    echo "$state" > "$WORK/run_status.txt"
    "$PY" -m edge_iapp evaluate "$RUN" --data "$DATA" --split "$SPLIT" --out "$WORK/eval" "$@" \
      > "$WORK/eval.log" 2>&1
    status=$?
    (cd "$WORK" && tar czf results.tar.gz --exclude='*.pt' train.log eval.log eval run_status.txt \
      run/config.json run/metrics.json run/split.json 2>/dev/null)
    tail -n 3 "$WORK/eval.log"
    exit $status
    ;;
  *)
    echo "usage: $0 start|wait|finish WORK ..." >&2
    exit 2
    ;;
esac
