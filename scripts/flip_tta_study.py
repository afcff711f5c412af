#!/usr/bin/env python3
"""Issue #3: does averaging each branch over the image and its mirror (flip TTA) help?

    python scripts/flip_tta_study.py RUN DATA SPLIT [--subset test] [--json OUT.json]

Runs RUN's model on the split's ``--subset`` twice: on the prepared global and object
images as they are, and mirrored left-right (the training recipe flips with probability
0.5, so both views are in distribution); the part branch takes its zoom from each view's
own object maps. Prints test accuracy for each branch and the fused call, plain, mirrored
and with each branch's logits averaged over the two views before fusion. Averaging costs
a second pass of all three branches, so it is worth shipping only for a clear gain.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("split", type=Path)
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from edge_iapp.train.data import prepare
    from edge_iapp.train.evaluate import fused_scores
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.predict import Predictions, predict
    from edge_iapp.train.run import load_model

    torch.set_num_threads(args.threads)
    model, cfg = load_model(args.run)
    images = prepare(load_parts(args.data, args.split).parts[args.subset], cfg.preprocess)
    mirrored = dataclasses.replace(
        images,
        global_images=np.ascontiguousarray(images.global_images[:, :, ::-1]),
        object_images=np.ascontiguousarray(images.object_images[:, :, ::-1]),
    )
    plain = predict(model, images, cfg.branches)
    flipped = predict(model, mirrored, cfg.branches)
    both = dataclasses.replace(plain, logits=(plain.logits + flipped.logits) / 2)

    def accuracy(preds: Predictions, subset: tuple[str, ...]) -> float:
        probs, _ = fused_scores(preds, subset, cfg.fusion)
        return float((probs.argmax(1) == preds.labels).mean())

    subsets = [(b,) for b in cfg.branches] + [tuple(cfg.branches)]
    record = {
        "run": str(args.run),
        "subset": args.subset,
        "images": len(images),
        "accuracy": {
            view: {"+".join(s): accuracy(preds, s) for s in subsets}
            for view, preds in (("plain", plain), ("mirrored", flipped), ("average", both))
        },
    }
    print(f"{len(images)} {args.subset} images of {args.data}")
    for view, row in record["accuracy"].items():
        print(f"  {view:<9}" + "  ".join(f"{k} {100 * v:.2f}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
