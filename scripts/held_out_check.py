"""How well ``edge_iapp.data.held_out`` tells a held-out image saved again from another image.

On a labelled folder and its split:

1. false alarms: the train part checked against the val and test parts (a correct
   split has no image in both; every image found is either a real duplicate in the data
   or a false alarm, and is printed);
2. the margin: every pair of the folder's images of one size (up to ``--pairs``), the
   pairs at or under the threshold (copies within the data, printed: a look at them
   tells a copy from a false alarm) and the smallest differences above it;
3. re-encodings: ``--reencoded`` held-out images saved again as JPEG at qualities 30, 50,
   75 and 95 (in a temporary folder), their largest difference, and how many are found.

docs/RESULTS.md (round 10) quotes:

    python scripts/held_out_check.py ../shared/data/bioimlab docs/splits/bioimlab_karyotype.json
    python scripts/held_out_check.py ../shared/data/gband612 docs/splits/gband612_case.json
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2

from edge_iapp.data.dataset import Sample
from edge_iapp.data.held_out import SAME_PIXELS_LEVELS, held_out_images, pixel_difference
from edge_iapp.data.imread import read_image
from edge_iapp.train.loading import load_parts

QUALITIES = (30, 50, 75, 95)


def false_alarms(train: list, held_out: list) -> None:
    start = time.perf_counter()
    found = held_out_images(train, held_out)
    seconds = time.perf_counter() - start
    print(
        f"train ({len(train)}) against val + test ({len(held_out)}): {len(found)} found "
        f"in {seconds:.1f} s"
    )
    for match in found[:20]:
        print(f"  {match}")


def margin(images: list, pairs: int) -> None:
    by_shape: dict[tuple[int, ...], list] = defaultdict(list)  # (path, pixels), read once
    for s in images:
        pixels = read_image(s.path).pixels
        by_shape[pixels.shape].append((s.path, pixels))
    same_shape = (pair for group in by_shape.values() for pair in itertools.combinations(group, 2))
    differences, same = [], []
    for (path_a, a), (path_b, b) in itertools.islice(same_shape, pairs):
        difference = pixel_difference(a, b)
        if difference is None:
            continue
        if difference <= SAME_PIXELS_LEVELS:
            same.append((difference, path_a, path_b))
        else:
            differences.append(difference)
    differences.sort()
    print(
        f"pairs of images of one size: {len(differences) + len(same)}; at or under the "
        f"threshold ({SAME_PIXELS_LEVELS}): {len(same)}; smallest differences above it "
        f"{[round(d, 1) for d in differences[:5]]}"
    )
    for difference, a, b in same[:20]:
        print(f"  {difference:.1f}: {a} and {b}")


def reencodings(held_out: list, count: int) -> None:
    chosen = held_out[:: max(1, len(held_out) // count)][:count]
    with tempfile.TemporaryDirectory() as folder:
        pool, worst = [], dict.fromkeys(QUALITIES, 0.0)
        for i, s in enumerate(chosen):
            quality = QUALITIES[i % len(QUALITIES)]
            path = Path(folder) / f"{i}.jpg"
            cv2.imwrite(
                str(path),
                cv2.imread(str(s.path), cv2.IMREAD_UNCHANGED),
                [cv2.IMWRITE_JPEG_QUALITY, quality],
            )
            difference = pixel_difference(read_image(s.path).pixels, read_image(path).pixels)
            worst[quality] = max(worst[quality], difference or 0.0)
            pool.append(Sample(path, s.label, s.class_name, s.group, s.cell))
        found = held_out_images(pool, held_out)
    largest = ", ".join(f"q{q} {d:.1f}" for q, d in worst.items())
    print(f"re-encoded as JPEG: {len(found)} of {len(pool)} found; largest difference {largest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="labelled folder")
    parser.add_argument("split", help="its split file")
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--reencoded", type=int, default=400)
    args = parser.parse_args()
    parts = load_parts(args.data, args.split).parts
    held_out = [*parts["val"], *parts["test"]]
    false_alarms(parts["train"], held_out)
    margin([*parts["train"], *held_out], args.pairs)
    reencodings(held_out, args.reencoded)


if __name__ == "__main__":
    main()
