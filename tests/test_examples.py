"""The scripts in examples/ run as a user would run them, on a tiny bundle."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
from conftest import chromosome_crop

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


CALL = re.compile(r"class (\d+|X|Y) confidence (0|1)\.\d{3}")


def test_embed_predict_synthetic_and_files(tiny_bundle, tmp_path):
    out = run_example("embed_predict.py", str(tiny_bundle))
    lines = [ln for ln in out.splitlines() if ln.startswith("synthetic-")]
    assert len(lines) == 3 and all(CALL.search(ln) for ln in lines)
    assert all("[onnxruntime fp32]" in ln for ln in lines)

    good = tmp_path / "a.png"
    cv2.imwrite(str(good), chromosome_crop(seed=1))
    out = run_example("embed_predict.py", str(tiny_bundle), str(good), str(tmp_path / "nope.png"))
    assert CALL.search(out.splitlines()[0]) and out.splitlines()[0].startswith(str(good))
    assert "nope.png: not classified" in out


def test_embed_async_calls_back_every_frame(tiny_bundle):
    out = run_example("embed_async.py", str(tiny_bundle), "--threads", "4", "--frames", "5")
    assert "20/20 frames called back" in out
    assert re.search(r"latency per call: p50 \d+ ms, p95 \d+ ms over 20 calls", out)
    frames = [ln for ln in out.splitlines() if ln.startswith("camera ")]
    assert len(frames) == 20 and not any("error" in ln or "dropped" in ln for ln in frames)


def test_pycromanager_hook_runs_without_pycromanager(tiny_bundle):
    out = run_example("pycromanager_hook.py", str(tiny_bundle), "--frames", "3")
    assert "3 frames classified, 0 errors" in out
    frames = [ln for ln in out.splitlines() if ln.startswith("frame ")]
    assert len(frames) == 3 and all("'EdgeIAPP-Class'" in ln for ln in frames)


def test_watch_folder_example(tiny_bundle, tmp_path):
    out = run_example("watch_folder.py", str(tiny_bundle), str(tmp_path / "work"))
    assert sum(bool(CALL.search(ln)) for ln in out.splitlines()) == 4
    assert "broken.png: ERROR" in out
    assert (tmp_path / "work" / "out" / "processed.jsonl").is_file()
