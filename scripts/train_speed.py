"""Training images/s of IAPP-CNN on one device, without reading any data.

    python scripts/train_speed.py [--device cuda] [--input-size 224] [--images 2600]
        [--batch-size 26] [--epochs 2] [--amp] [--backbone resnet18] [--json OUT]
        [--profile TABLE.txt]

The images are synthetic chromosomes preprocessed once (``edge_iapp.data.synth``, the
same uint8 arrays training keeps in memory), so what is timed is the training loop
alone: batches, three branches forward and backward, the part zoom between them, SGD.
Epoch 1 includes cuDNN's autotuning; the last epoch is the steady rate. Prints one JSON
line per epoch and the summary (device name, torch version, settings). ``--profile``
runs the whole training under ``torch.profiler`` and writes the operators with the most
host time and the most device time: where a step waits when the GPU is not busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_images(n: int, input_size: int, canvas: int, seed: int = 0):
    """``PreparedImages`` of ``n`` synthetic chromosomes (24 classes), preprocessed once."""
    from edge_iapp.classes import CLASS_NAMES
    from edge_iapp.data.synth import synth_cell
    from edge_iapp.preprocess import PreprocessConfig, normalize_polarity
    from edge_iapp.train.data import PreparedImages, canvases

    cfg = PreprocessConfig(canvas=canvas, input_size=input_size)
    crops, backgrounds, labels = [], [], []
    cell = 0
    while len(crops) < n:
        for name, image in synth_cell(np.random.default_rng([seed, cell])):
            grey, polarity = normalize_polarity(image if image.ndim == 2 else image[..., 0])
            crops.append(grey)
            backgrounds.append(int(polarity.background))
            labels.append(CLASS_NAMES.index(name))
        cell += 1
    crops, backgrounds, labels = crops[:n], backgrounds[:n], labels[:n]
    g, o = canvases(crops, backgrounds, cfg)
    return cfg, PreparedImages(
        global_images=g.images,
        object_images=o.images,
        labels=np.asarray(labels, np.int64),
        paths=[f"synthetic/{k}" for k in range(n)],
        groups=["synthetic"] * n,
        object_fallback=o.fallback,
        shrunk=g.shrunk,
    )


def main(argv: list[str] | None = None) -> None:
    import torch

    from edge_iapp.train.run import RunConfig
    from edge_iapp.train.trainer import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--canvas", type=int, default=0, help="default: input size x 11/8")
    ap.add_argument("--images", type=int, default=2600)
    ap.add_argument("--batch-size", type=int, default=26)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--json", type=Path, help="write the summary here too")
    ap.add_argument("--profile", type=Path, help="write torch.profiler tables here")
    args = ap.parse_args(argv)

    canvas = args.canvas or args.input_size * 11 // 8
    t = time.perf_counter()
    pre, data = synthetic_images(args.images, args.input_size, canvas)
    prepare_s = time.perf_counter() - t
    cfg = RunConfig(
        backbone=args.backbone,
        preprocess=pre,
        epochs=args.epochs,
        batch_size=args.batch_size,
        extra={"amp": True} if args.amp else {},
    )
    epochs: list[dict] = []

    def record(entry: dict, _model) -> None:
        row = {"epoch": entry["epoch"], "images_per_s": round(entry["images_per_s"], 1)}
        epochs.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as run_dir, _profiler(args.profile, args.device):
        train(cfg, data, Path(run_dir) / "run", device=args.device, keep=1, on_epoch=record)
    device = args.device
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    summary = {
        "device": device,
        "host": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "backbone": args.backbone,
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "images": args.images,
        "amp": args.amp,
        "prepare_s": round(prepare_s, 1),
        "epochs": epochs,
        "steady_images_per_s": epochs[-1]["images_per_s"] if epochs else None,
    }
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _profiler(table: Path | None, device: str, rows: int = 30):
    """Profile the block when ``table`` is given; write host- and device-time tables there."""
    if table is None:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        yield
    wall = time.perf_counter() - t
    averages = prof.key_averages()
    parts = [f"wall {wall:.2f} s under the profiler\n"]
    for key in ("self_cpu_time_total", "self_device_time_total"):
        if key == "self_device_time_total" and len(activities) == 1:
            continue
        total = sum(getattr(e, key, 0) for e in averages) / 1e6
        parts.append(f"\n## sorted by {key} (sum {total:.2f} s)\n")
        parts.append(averages.table(sort_by=key, row_limit=rows))
    table.write_text("".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
