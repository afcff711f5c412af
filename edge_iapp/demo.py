"""The built-in default: synthetic chromosomes, a small model, its bundle, cached on disk.

``edge-iapp bench`` with no bundle uses it, so a new user sees the product's main job
(export + per-precision benchmark) offline, without data and without a GPU. The steps
are the public CLI commands (the same ones the README lists), run once and cached in
``DEMO_DIR`` (default ``~/.cache/edge-iapp/demo``, or ``$EDGE_IAPP_DEMO_DIR``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

DEMO_CELLS = 16
DEMO_EPOCHS = 4
DEMO_INPUT = 64
DEMO_CANVAS = 160
DEMO_PRECISIONS = "fp32,fp16,int8"


def demo_dir() -> Path:
    return Path(os.environ.get("EDGE_IAPP_DEMO_DIR", Path.home() / ".cache" / "edge-iapp" / "demo"))


def demo_steps(root: Path) -> list[tuple[Path, list[str]]]:
    """``(product, edge-iapp arguments)`` per step; a step is skipped when its product exists."""
    data, split, run, bundle = root / "data", root / "split.json", root / "run", root / "bundle"
    return [
        (data / "cells.csv", ["synth", str(data), "--cells", str(DEMO_CELLS)]),
        (split, ["data", "split", str(data), "--out", str(split)]),
        (
            run / "last.pt",
            [
                "train",
                str(data),
                "--split",
                str(split),
                "--out",
                str(run),
                "--input-size",
                str(DEMO_INPUT),
                "--canvas",
                str(DEMO_CANVAS),
                "--epochs",
                str(DEMO_EPOCHS),
                "--keep",  # one epoch checkpoint (270 MB each), not two
                "1",
            ],
        ),
        (
            bundle / "manifest.json",
            [
                "export",
                str(run),
                "--precision",
                DEMO_PRECISIONS,
                "--calib-data",
                str(data),
                "--out",
                str(bundle),
                "--no-engines",
                "--force",
            ],
        ),
    ]


def ensure_demo(
    root: Path | None = None, log: Callable[[str], None] = print
) -> tuple[Path, Path, Path]:
    """Make (or reuse) the demo data, split and bundle; returns ``(bundle, data, split)``.

    Raises:
        RuntimeError: a step failed (its command is named; its output was shown).
    """
    root = Path(root) if root else demo_dir()
    root.mkdir(parents=True, exist_ok=True)
    for product, args in demo_steps(root):
        if product.exists():
            continue
        log(f"built-in demo: edge-iapp {' '.join(args)}")
        done = subprocess.run([sys.executable, "-m", "edge_iapp.cli.main", *args], check=False)
        if done.returncode != 0 or not product.exists():
            raise RuntimeError(
                f"built-in demo step failed: edge-iapp {' '.join(args)} (exit {done.returncode})"
            )
    return root / "bundle", root / "data", root / "split.json"
