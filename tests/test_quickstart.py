"""The README's quick start, run end to end as a new user would (slow: a few minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_offline_and_scores_a_slide(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "quickstart.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    demo = tmp_path / "demo"
    manifest = json.loads((demo / "bundle" / "manifest.json").read_text())
    assert {"fp32", "int8"} <= set(manifest["precisions"])
    bench = json.loads((demo / "bench.json").read_text())
    ok_rows = [r for r in bench["rows"] if r["status"] == "ok"]
    assert {(r["backend"], r["precision"]) for r in ok_rows} >= {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    }
    summaries = sorted((demo / "scores").glob("slide_*/cell_*/summary.json"))
    assert len(summaries) == 4
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["count"] == 46
        assert summary["precision"] == "int8" and summary["backend"] == "openvino"
    assert (demo / "scores" / "index.html").is_file()
