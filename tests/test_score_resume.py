"""A scoring run killed with SIGKILL and restarted ends with the same files as an
uninterrupted run (real CLI subprocesses, tiny bundle, ONNX Runtime on the CPU).

Compared: every output file except ``run_info.json`` (it records start/end times and
is documented as the one file that changes between runs).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_iapp.scoring.score import LOCK, OutputLockedError, run_scoring

CELLS = 12


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import torch
    from export_helpers import tiny_bundle

    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory, precisions=("fp32",))


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    from edge_iapp.data.synth import synth_cells, write_slides

    out = tmp_path_factory.mktemp("resume") / "slides"
    write_slides(out, synth_cells(CELLS, seed=7), seed=7, cells_per_slide=4)
    return out


def _command(slides: Path, bundle: Path, out: Path) -> list[str]:
    # --pipeline: the killed run may die with one cell's files in flight on the writer.
    return [
        sys.executable,
        "-m",
        "edge_iapp.cli.main",
        "score",
        str(slides),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--no-progress",
        "--pipeline",
    ]


def _env() -> dict[str, str]:
    # Same thread count in every process, so ONNX Runtime sums in the same order.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _outputs(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "run_info.json"
    }


def test_sigkill_then_resume_equals_uninterrupted(slides, bundle, tmp_path):
    full = tmp_path / "full"
    res = subprocess.run(
        _command(slides, bundle, full), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(slides, bundle, killed),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(killed.rglob("summary.json"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = len(list(killed.rglob("summary.json")))
    assert 3 <= done < CELLS
    assert (killed / LOCK).exists()  # left behind by the killed process

    res = subprocess.run(
        _command(slides, bundle, killed), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    assert f"{done} already finished" in " ".join(res.stderr.split())
    assert not (killed / LOCK).exists()
    assert not list(killed.rglob("*.tmp"))
    assert _outputs(killed) == _outputs(full)
    assert len(_outputs(full)) == CELLS * 3 + 3 * 3 + 1  # cells, slide files, index


def test_a_second_run_on_the_same_output_is_refused(slides, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(OutputLockedError, match="another scoring run"):
        run_scoring(slides, out, predictor=None, progress=False)
