"""The repository's shell scripts pass shellcheck; ``python -m edge_iapp`` is the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shell_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_iapp", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--time-budget" in result.stdout and "--size-mode" in result.stdout


def test_train_speed_and_preprocess_benchmarks_run_on_the_cpu(tmp_path) -> None:
    """The GPU-session scripts work before they reach a GPU: a tiny CPU run of each."""
    import json

    pytest.importorskip("torch")
    out = tmp_path / "speed.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_speed.py"),
            "--device",
            "cpu",
            "--input-size",
            "32",
            "--images",
            "40",
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["device"] == "cpu" and summary["steady_images_per_s"] > 0

    import cv2
    import numpy as np

    from edge_iapp.data.synth import synth_cell

    for k, (name, image) in enumerate(synth_cell(np.random.default_rng(0))[:12]):
        (tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "data" / name / f"c{k}.png"), image)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_preprocess.py"),
            str(tmp_path / "data"),
            "--input-size",
            "32",
            "--canvas",
            "64",
            "--images",
            "12",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12 crops" in result.stdout and "part zoom" in result.stdout
