"""deploy/jetson/: the checks that run without a Jetson (see deploy/jetson/README.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JETSON = Path(__file__).resolve().parents[1] / "deploy" / "jetson"


def test_check_script_passes():
    if not (shutil.which("shellcheck") or shutil.which("systemd-analyze")):
        pytest.skip("neither shellcheck nor systemd-analyze is installed")
    proc = subprocess.run(
        ["bash", str(JETSON / "check.sh")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "FAILED" not in proc.stdout, proc.stdout + proc.stderr
    assert "environment file: OK" in proc.stdout


@pytest.mark.parametrize(
    ("jetpack", "pin"), [("6", "cuda-bindings>=12.6,<=12.9.10"), ("7", "cuda-bindings>=13.0,<14")]
)
def test_install_dry_run_pins_cuda_bindings_per_jetpack(jetpack, pin, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    proc = subprocess.run(
        [
            "bash",
            str(JETSON / "install.sh"),
            "--dry-run",
            "--jetpack",
            jetpack,
            "--bundle",
            str(bundle),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.replace("\\", "")  # printf %q escapes
    assert pin in out
    assert "venv --system-site-packages /opt/edge-iapp/venv" in out
    assert "edge-iapp build /opt/edge-iapp/bundle --profile jetson-orin-nano" in out
    assert "systemctl enable edge-iapp-watch.service" in out


def test_install_refuses_what_is_not_a_bundle(tmp_path):
    proc = subprocess.run(
        [
            "bash",
            str(JETSON / "install.sh"),
            "--dry-run",
            "--jetpack",
            "6",
            "--bundle",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "is not a bundle" in proc.stderr
