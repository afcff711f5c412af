"""How well the object box holds the chromosome, per eq. 3 reading, on a real labelled set.

Usage::

    python scripts/preprocess_report.py DATA --n 100 [--out /tmp/preprocess_report/NAME]
        [--sample 0] [--seed 0] [--variants]

Writes to ``--out`` (must be outside the repository: the images may not be
redistributed): contact sheets of ``--n`` random images per reading (tile: global image
with the chromosome's extent in green and the object box in red | object zoom), a
sheet of clipped examples per reading, and ``report.json``; prints a Markdown table.

"Clips" (the definition used in docs/PREPROCESSING.md): the chromosome's extent is the
bounding box of the Otsu foreground of the dark-on-white source crop (8-connected
components with at least 10% of the largest one's area, so that specks do not count),
mapped to global-image pixels through ``canvas_geometry`` (``floor(y0 * scale + top)``
to ``ceil(y1 * scale + top)``, likewise for x). The object box clips the chromosome when
that extent reaches more than ``TOL`` = 1 pixel beyond the object box on any side.
Also reported: ``coverage``, the fraction of the chromosome's pixels (the Otsu mask
resampled onto the global image) that the object mask keeps, since pixels outside the
mask are set to background in the object image.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge_iapp.data.dataset import scan_folder
from edge_iapp.data.imread import ImageReadError, read_image
from edge_iapp.ioutil import atomic_write_text
from edge_iapp.preprocess import PreprocessConfig, global_canvas, object_zoom
from edge_iapp.preprocess.global_canvas import canvas_geometry
from edge_iapp.preprocess.sampling import place
from edge_iapp.preview import contact_sheet, write_png

TOL = 1
MIN_PART = 0.10
REPO = Path(__file__).resolve().parents[1]
READINGS = ("paper", "foreground")


def chromosome_extent(pixels: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Otsu foreground (dark) of an (h, w) uint8 crop and its box; None when blank."""
    if int(pixels.max()) - int(pixels.min()) < 8:
        return None
    _, fg = cv2.threshold(pixels, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= MIN_PART * areas.max()) + 1
    mask = np.isin(labels, keep)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask, (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def mapped_extent(box, shape, cfg: PreprocessConfig) -> tuple[int, int, int, int]:
    scale, top, left, _ = canvas_geometry(*shape, cfg)
    y0, x0, y1, x1 = box
    return (
        math.floor(y0 * scale + top),
        math.floor(x0 * scale + left),
        math.ceil(y1 * scale + top),
        math.ceil(x1 * scale + left),
    )


def mapped_mask(mask: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    scale, top, left, _ = canvas_geometry(*mask.shape, cfg)
    return place(mask.astype(np.float32) * 255, cfg.input_size, scale, top, left, fill=0.0) >= 128


def clips(extent, box) -> bool:
    return (
        box[0] > extent[0] + TOL
        or box[1] > extent[1] + TOL
        or box[2] < extent[2] - TOL
        or box[3] < extent[3] - TOL
    )


def draw_boxes(grey: np.ndarray, extent, box) -> np.ndarray:
    rgb = np.repeat(grey[:, :, None], 3, axis=2).copy()
    for (y0, x0, y1, x1), colour in ((extent, (0, 170, 0)), (box, (230, 0, 0))):
        cv2.rectangle(rgb, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colour, 1)
    return rgb


def tile(g, ext, obox, oimg) -> np.ndarray:
    left = draw_boxes(g, ext, obox)
    right = np.repeat(oimg[:, :, None], 3, axis=2)
    gap = np.full((g.shape[0], 2, 3), 128, dtype=np.uint8)
    return np.hstack([left, gap, right])


def configs(base: PreprocessConfig, variants: bool) -> list[PreprocessConfig]:
    out = [replace(base, threshold=r) for r in READINGS]
    if variants:
        for r in READINGS:
            for k in (1, 3, 5):
                for m in (0, 2, 4):
                    for nb in (True, False):
                        c = replace(
                            base,
                            threshold=r,
                            morph_kernel=k,
                            object_margin=m,
                            normalize_background=nb,
                        )
                        if c not in out:
                            out.append(c)
    return out


def label(cfg: PreprocessConfig) -> str:
    return (
        f"{cfg.threshold} k={cfg.morph_kernel} margin={cfg.object_margin} "
        f"normbg={int(cfg.normalize_background)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--n", type=int, default=100, help="images on the contact sheets")
    ap.add_argument("--sample", type=int, default=0, help="images measured (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--variants",
        action="store_true",
        help="also measure morph_kernel 1/3/5, margin 0/2/4, normalize_background",
    )
    args = ap.parse_args(argv)
    out = (args.out or Path("/tmp/preprocess_report") / args.data.name).resolve()
    if out == REPO or REPO in out.parents:
        print(f"error: --out {out} is inside the repository; real images may not go there")
        return 2
    scan = scan_folder(args.data)
    samples = scan.samples
    rng = random.Random(args.seed)
    measured = samples if args.sample <= 0 else rng.sample(samples, min(args.sample, len(samples)))
    picked = random.Random(args.seed).sample(samples, min(args.n, len(samples)))
    shown = {str(s.path) for s in picked}
    base = PreprocessConfig()
    cfgs = configs(base, args.variants)
    stats = {
        label(c): {
            "clipped": 0,
            "fallback": 0,
            "coverage_sum": 0.0,
            "coverage_lt_90": 0,
            "clipped_examples": [],
        }
        for c in cfgs
    }
    sheets: dict[str, list[np.ndarray]] = {r: [] for r in READINGS}
    clip_tiles: dict[str, list[np.ndarray]] = {r: [] for r in READINGS}
    unreadable, blank, done = [], 0, 0
    t0 = time.time()
    for start in range(0, len(measured), 256):
        chunk = []
        for s in measured[start : start + 256]:
            try:
                im = read_image(s.path)
            except ImageReadError as exc:
                unreadable.append(str(exc))
                continue
            ext = chromosome_extent(im.pixels)
            if ext is None:
                blank += 1
                continue
            chunk.append((s, im, ext))
        if not chunk:
            continue
        done += len(chunk)
        globals_by_norm = {}
        for cfg in cfgs:
            key = cfg.normalize_background
            if key not in globals_by_norm:
                globals_by_norm[key] = global_canvas(
                    [c[1].pixels for c in chunk], [c[1].polarity.background for c in chunk], cfg
                ).images
            g = globals_by_norm[key]
            obj = object_zoom(g, cfg)
            st = stats[label(cfg)]
            is_default_variant = cfg == replace(base, threshold=cfg.threshold)
            for k, (s, _im, (fg, box)) in enumerate(chunk):
                ext = mapped_extent(box, fg.shape, cfg)
                chrom = mapped_mask(fg, cfg)
                cov = float((chrom & obj.masks[k]).sum()) / max(int(chrom.sum()), 1)
                st["coverage_sum"] += cov
                st["coverage_lt_90"] += cov < 0.9
                st["fallback"] += bool(obj.fallback[k])
                clipped = clips(ext, obj.boxes[k])
                if clipped:
                    st["clipped"] += 1
                    if len(st["clipped_examples"]) < 200:
                        st["clipped_examples"].append(str(s.path))
                if not is_default_variant:
                    continue
                t = None
                if str(s.path) in shown:
                    t = tile(g[k], ext, obj.boxes[k], obj.images[k])
                    sheets[cfg.threshold].append(t)
                if clipped and len(clip_tiles[cfg.threshold]) < 50:
                    clip_tiles[cfg.threshold].append(
                        t if t is not None else tile(g[k], ext, obj.boxes[k], obj.images[k])
                    )
        print(
            f"  {start + len(chunk)}/{len(measured)} images, {time.time() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    rows = []
    for name, st in stats.items():
        rows.append(
            {
                "config": name,
                "measured": done,
                "clipped": st["clipped"],
                "clipped_fraction": st["clipped"] / max(done, 1),
                "fallback": st["fallback"],
                "mean_coverage": st["coverage_sum"] / max(done, 1),
                "coverage_below_90pct": st["coverage_lt_90"],
                "clipped_examples": st["clipped_examples"][:20],
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    for reading in READINGS:
        if sheets[reading]:
            write_png(out / f"sheet_{reading}_{args.n}.png", contact_sheet(sheets[reading], 10))
            for i in range(0, len(sheets[reading]), 25):
                write_png(
                    out / f"sheet_{reading}_{i // 25}.png",
                    contact_sheet(sheets[reading][i : i + 25], 5),
                )
        if clip_tiles[reading]:
            write_png(out / f"clipped_{reading}.png", contact_sheet(clip_tiles[reading][:25], 5))
    report = {
        "data": str(args.data),
        "images": len(samples),
        "measured": done,
        "blank": blank,
        "unreadable": unreadable,
        "seed": args.seed,
        "tolerance_px": TOL,
        "base_config": base.to_dict(),
        "results": rows,
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    print(
        f"{args.data}: {done} images measured ({blank} blank, {len(unreadable)} unreadable); "
        f"outputs in {out}"
    )
    print("| config | clipped | clipped % | fall-backs | mean coverage | coverage < 90% |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['clipped']} | {100 * r['clipped_fraction']:.2f} | "
            f"{r['fallback']} | {r['mean_coverage']:.3f} | {r['coverage_below_90pct']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
