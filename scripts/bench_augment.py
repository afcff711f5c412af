"""Throughput of the training data paths: prepared arrays vs per-batch augmentation.

Usage (one core, as in docs/AUGMENT.md)::

    OMP_NUM_THREADS=1 python scripts/bench_augment.py /work/shared/data/gband612 \
        --split /work/runs/splits/gband612_case.json --images 1024 --input-size 128

Prints, per data path, images/s of the batches alone (best of ``--repeats``), and images/s
of whole CPU training steps (forward + backward of all three branches) for the prepared
path and for ``--augment all``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _rate(dataset, n: int, batch: int, workers: int | None = None) -> float:
    """Images/s of one shuffled epoch: the plain loop, or ``online_batches`` threads."""
    from edge_iapp.train.data import batches
    from edge_iapp.train.online import online_batches

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if workers is None:
        stream = batches(dataset, batch, shuffle=True, rng=rng)
    else:
        stream = online_batches(dataset, batch, rng, workers=workers)
    for _ in stream:
        pass
    return n / (time.perf_counter() - t0)


def _train_rate(dataset, model, branches, steps: int, batch: int) -> float:
    import torch

    from edge_iapp.train.predict import forward_branches

    params = [p for b in branches for p in getattr(model, f"{b}_branch").parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    order = np.random.default_rng(1).permutation(len(dataset))
    model.train()
    t0, seen = 0.0, 0
    for step in range(steps + 1):  # step 0 warms up and is not timed
        if step == 1:
            t0, seen = time.perf_counter(), 0
        b = dataset.__getitems__(order[step * batch : (step + 1) * batch])
        out = forward_branches(model, {k: b[k] for k in ("global", "object")}, branches)
        loss = sum(torch.nn.functional.cross_entropy(out[k], b["label"]) for k in branches)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += int(b["label"].shape[0])
    return seen / (time.perf_counter() - t0)


def main() -> None:
    import torch

    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.augment import AUGMENTATIONS, parse_augment
    from edge_iapp.train.data import ChromosomeDataset, load_raw, prepare_raw
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.online import OnlineDataset
    from edge_iapp.train.run import RunConfig
    from edge_iapp.train.trainer import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--split", required=True)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--canvas", type=int, default=176)
    ap.add_argument("--batch-size", type=int, default=26)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=4, help="0 skips the training steps")
    ap.add_argument("--workers", type=int, default=2, help="threads of the threaded row")
    args = ap.parse_args()
    torch.set_num_threads(1)

    samples = load_parts(args.data, args.split).parts["train"]
    pick = np.random.default_rng(0).choice(len(samples), min(args.images, len(samples)), False)
    samples = [samples[int(i)] for i in sorted(pick)]
    cfg = PreprocessConfig(canvas=args.canvas, input_size=args.input_size)
    t0 = time.perf_counter()
    raw = load_raw(samples)
    read_s = time.perf_counter() - t0
    prepared = prepare_raw(raw, cfg)
    n = len(raw)
    print(
        f"{n} train crops of {args.data}, {args.input_size} px, canvas {args.canvas}, "
        f"batch {args.batch_size}, 1 thread; reading {n / read_s:.0f} img/s"
    )
    print("data path (batches only)        images/s")

    rows = [("prepared (ChromosomeDataset)", lambda s: ChromosomeDataset(prepared, 0.5, s))]
    for name in ("none", *AUGMENTATIONS, "all"):
        aug = parse_augment(name)
        rows.append((f"online {name}", lambda s, a=aug: OnlineDataset(raw, cfg, a, 0.5, s)))
    threaded = f"online all, {args.workers} threads"
    rows.append((threaded, rows[-1][1]))
    # round robin, best of the repeats: other load on the machine hits every path alike
    rates = {label: 0.0 for label, _ in rows}
    for seed in range(args.repeats):
        for label, make in rows:
            workers = args.workers if label == threaded else None
            rates[label] = max(rates[label], _rate(make(seed), n, args.batch_size, workers))
    for label, rate in rates.items():
        print(f"  {label:<30} {rate:8.0f}")
    if args.train_steps > 0:
        model = build_model(RunConfig(preprocess=cfg))
        branches = ("global", "object", "part")
        for label, ds in (
            ("prepared", ChromosomeDataset(prepared, 0.5, 0)),
            ("online all", OnlineDataset(raw, cfg, parse_augment("all"), 0.5, 0)),
        ):
            rate = _train_rate(ds, model, branches, args.train_steps, args.batch_size)
            print(f"training steps, resnet18 IAPP, {label:<12} {rate:6.1f} img/s")


if __name__ == "__main__":
    main()
