"""Time the reference (NumPy/OpenCV) preprocessing, stage by stage, on real crops.

    python scripts/bench_preprocess.py DATA [--input-size 128] [--canvas 176] [--images 184]

DATA is a labelled chromosome folder (e.g. ../shared/data/gband612); every k-th file is
read so the crops span the classes. Prints milliseconds per image for the size step, the
global canvas, the object zoom, the network input and the part zoom (fed random part
maps of the object branch's shape: the zoom's cost does not depend on their values),
median of ``--repeats`` passes over 46-image batches. Compare trees by running it twice
in one session (``PYTHONPATH=OTHER_TREE``): the machine is shared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

BATCH = 46  # one cell


def main(argv: list[str] | None = None) -> None:
    from edge_iapp.backends.base import sized_crops
    from edge_iapp.data import read_image
    from edge_iapp.preprocess import (
        PreprocessConfig,
        global_canvas,
        network_input,
        object_zoom,
        part_zoom,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--canvas", type=int, default=176)
    ap.add_argument("--images", type=int, default=4 * BATCH)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args(argv)

    cfg = PreprocessConfig(canvas=args.canvas, input_size=args.input_size)
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".tif", ".tiff", ".png"})
    if not files:
        raise SystemExit(f"no .tif/.tiff/.png images under {args.data}")
    step = max(1, len(files) // args.images)
    images = [read_image(f) for f in files[::step][: args.images]]
    grid = args.input_size // 32  # resnet feature grid
    maps = np.random.default_rng(0).random((BATCH, 2, grid, grid)).astype(np.float32)

    stages = ("size", "global canvas", "object zoom", "network input", "part zoom")
    seconds = dict.fromkeys(stages, 0.0)

    def timed(name, fn, *fn_args):
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn(*fn_args)
            runs.append(time.perf_counter() - t)
        seconds[name] += float(np.median(runs))
        return out

    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH]
        crops, backgrounds, _ = timed("size", sized_crops, batch, cfg)
        g = timed("global canvas", global_canvas, crops, backgrounds, cfg)
        o = timed("object zoom", object_zoom, g.images, cfg)
        timed("network input", network_input, np.concatenate([g.images, o.images]))
        timed("part zoom", part_zoom, o.images, maps[: len(batch)], cfg)
    n = len(images)
    print(f"{n} crops from {args.data}, input {args.input_size}, canvas {args.canvas}")
    for name in stages:
        print(f"  {name:14s} {seconds[name] / n * 1e3:.3f} ms/img")
    print(f"  {'total':14s} {sum(seconds.values()) / n * 1e3:.3f} ms/img")


if __name__ == "__main__":
    main()
