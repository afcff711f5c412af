#!/usr/bin/env bash
# Install edge-iapp and its watched-folder service on an NVIDIA Jetson (JetPack 6 or 7).
#
#   sudo deploy/jetson/install.sh [--bundle DIR] [--profile jetson-orin-nano] [--start]
#   deploy/jetson/install.sh --dry-run ...      # print what would run, change nothing
#
# What it does (see README.md in this folder):
#   1. detects JetPack from /etc/nv_tegra_release (R36 = JetPack 6, R38 = JetPack 7);
#   2. installs python3-venv and TensorRT's Python bindings (python3-libnvinfer, a
#      JetPack Debian package: TensorRT does not come from PyPI on Jetson);
#   3. creates the system user edge-iapp (group video for the GPU);
#   4. makes /opt/edge-iapp/venv with --system-site-packages (so it sees TensorRT) and
#      installs edge-iapp from this checkout, cuda-bindings pinned for the JetPack's
#      CUDA, and ONNX Runtime (the CPU fall-back);
#   5. installs the target profiles, copies the bundle and builds its TensorRT
#      engines on this device (optional);
#   6. installs the systemd unit and /etc/edge-iapp/watch.env (kept if present).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PREFIX=/opt/edge-iapp
ETC=/etc/edge-iapp
STATE=/var/lib/edge-iapp
SERVICE_USER=edge-iapp
BUNDLE=""
PROFILE=jetson-orin-nano
START=0
DRY_RUN=0
JETPACK=""

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --bundle DIR      model bundle (edge-iapp export) to install and build engines for
  --profile NAME    engine build profile (default jetson-orin-nano)
  --jetpack 6|7     skip detection
  --prefix DIR      install root (default /opt/edge-iapp)
  --start           start the service now (default: enable only)
  --dry-run         print the commands instead of running them
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --jetpack) JETPACK=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --start) START=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

die() { echo "install.sh: $*" >&2; exit 1; }

detect_jetpack() {
  local release=/etc/nv_tegra_release
  if [ ! -r "$release" ]; then
    [ "$DRY_RUN" = 1 ] && { echo 6; return; }
    die "$release not found: not a Jetson (pass --jetpack 6|7 to force)"
  fi
  case "$(head -n 1 "$release")" in
    *R36*) echo 6 ;;
    *R38*) echo 7 ;;
    *) die "unknown L4T release: $(head -n 1 "$release") (JetPack 6 = R36, 7 = R38)" ;;
  esac
}

[ -n "$JETPACK" ] || JETPACK=$(detect_jetpack)
case "$JETPACK" in
  # JetPack 6.x: CUDA 12.6, TensorRT 10.3, Python 3.10. cuda-bindings 13.x needs a
  # driver >= 580, which JetPack 6 does not have: stay on 12.x (pin <= 12.9.10).
  6) CUDA_BINDINGS='cuda-bindings>=12.6,<=12.9.10' ;;
  # JetPack 7.x: CUDA 13.0 (7.0/7.1, Thor) or 13.2 (7.2, Orin + Thor), Python 3.12.
  7) CUDA_BINDINGS='cuda-bindings>=13.0,<14' ;;
  *) die "--jetpack must be 6 or 7, got $JETPACK" ;;
esac
echo "install.sh: JetPack $JETPACK, source $SRC, prefix $PREFIX"

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo), or with --dry-run"
fi
if [ -n "$BUNDLE" ] && [ ! -f "$BUNDLE/manifest.json" ]; then
  die "$BUNDLE is not a bundle (no manifest.json); make one with: edge-iapp export RUN --out BUNDLE"
fi

# 2. System packages. TensorRT's Python module comes with JetPack (python3-libnvinfer).
run apt-get update
run apt-get install -y --no-install-recommends python3-venv python3-pip
if ! python3 -c 'import tensorrt' 2>/dev/null; then
  run apt-get install -y --no-install-recommends python3-libnvinfer
fi

# 3. Service user; group video owns /dev/nvhost-* and /dev/nvmap.
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
  run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin \
    --groups video "$SERVICE_USER"
fi

# 4. Virtual environment that also sees the system TensorRT bindings.
run mkdir -p "$PREFIX" "$ETC" "$STATE/results"
run python3 -m venv --system-site-packages "$PREFIX/venv"
run "$PREFIX/venv/bin/python" -m pip install --upgrade pip
run "$PREFIX/venv/bin/python" -m pip install "$SRC" "$CUDA_BINDINGS" onnxruntime
run "$PREFIX/venv/bin/python" -c \
  'import tensorrt, edge_iapp; print("tensorrt", tensorrt.__version__, "edge-iapp", edge_iapp.__version__)'

# 5. Target profiles (export/*.json in the repository; a wheel install does not carry
#    them, so they go to $PREFIX/profiles and EDGE_IAPP_PROFILES points there).
run mkdir -p "$PREFIX/profiles"
run cp "$SRC"/export/*.json "$PREFIX/profiles/"

# Bundle and engines (built here: engines are tied to the GPU and TensorRT version;
# they go to BUNDLE/engines/, so the bundle belongs to the service user).
if [ -n "$BUNDLE" ]; then
  run rm -rf "$PREFIX/bundle"
  run cp -r "$BUNDLE" "$PREFIX/bundle"
  run chown -R "$SERVICE_USER:$SERVICE_USER" "$PREFIX/bundle"
  run runuser -u "$SERVICE_USER" -- env EDGE_IAPP_PROFILES="$PREFIX/profiles" \
    "$PREFIX/venv/bin/edge-iapp" build "$PREFIX/bundle" --profile "$PROFILE"
fi
run chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE"

# 6. systemd unit and settings (an existing watch.env is kept: it holds local choices).
run mkdir -p "$PREFIX/deploy/jetson"
run cp "$SRC/deploy/jetson/README.md" "$PREFIX/deploy/jetson/README.md"
run install -m 0644 "$SRC/deploy/jetson/edge-iapp-watch.service" \
  /etc/systemd/system/edge-iapp-watch.service
if [ ! -f "$ETC/watch.env" ]; then
  run install -m 0644 "$SRC/deploy/jetson/edge-iapp-watch.env" "$ETC/watch.env"
fi
run systemctl daemon-reload
run systemctl enable edge-iapp-watch.service
if [ "$START" = 1 ]; then
  run systemctl restart edge-iapp-watch.service
fi
echo "install.sh: done. Edit $ETC/watch.env (watched folder, backend), then:"
echo "  sudo systemctl restart edge-iapp-watch && journalctl -u edge-iapp-watch -f"
