"""Classify chromosome images in-process: the smallest embedding of edge-iapp.

    python examples/embed_predict.py BUNDLE [IMAGE ...]

Without images it classifies three synthetic chromosome crops. ``predict`` takes
file paths, ``(H, W)`` uint8/uint16 arrays (a camera frame crop) or RGB(A) arrays, and
returns one ChromosomeResult per image: class, fused confidence, review flag, and the
backend and precision that actually ran. The Classifier is thread-safe and warms up
when it loads; use it as a context manager so its sessions are released.
"""

from __future__ import annotations

import sys

import numpy as np

from edge_iapp import Classifier


def synthetic_crop(seed: int, h: int = 60, w: int = 22) -> np.ndarray:
    """A banded dark rod on a light background, ``(h, w)`` uint8: a stand-in chromosome."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 <= 1
    bands = 60 + 90 * (np.sin(yy * (0.4 + 0.1 * seed)) > 0)
    image = np.where(inside, bands, 243) + rng.normal(0, 3, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    bundle, paths = argv[1], argv[2:]
    images = list(paths) or [synthetic_crop(seed) for seed in range(3)]
    names = list(paths) or [f"synthetic-{seed}" for seed in range(3)]
    with Classifier(bundle, backend="onnxruntime", precision="fp32") as clf:
        results = clf.predict(images)
        for name, r in zip(names, results, strict=True):
            if r.error:
                print(f"{name}: not classified: {r.error}")
                continue
            flag = f" REVIEW ({', '.join(r.review_reasons)})" if r.review else ""
            print(
                f"{name}: class {r.class_name} confidence {r.confidence:.3f} "
                f"[{r.backend} {r.precision}]{flag}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
