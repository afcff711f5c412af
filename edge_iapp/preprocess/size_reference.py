"""Cell-relative size: scale each crop by its own cell's median chromosome length.

The paper pastes every crop on the global canvas at its absolute pixel size. Pixel
size differs between labs, scanners and cells, so in ``size_mode="cell"`` each crop
is first resized so that the median chromosome length of its cell becomes
``cell_length`` source pixels; the global branch then sees *relative* length.

Definitions (the specification; every backend and training use this code):

* Foreground of a crop: the object zoom's ``"foreground"`` rule applied to the crop
  itself after background normalisation: ``levels = min(p * 255 / background, 255)``,
  foreground = ``levels <= mean(levels)`` and ``levels < 254``. The largest
  8-connected region and every region at least a quarter of its area are kept
  (drops specks and small pieces of neighbours, keeps a chromosome split by a pale band).
* Length: ``sqrt(12 * lambda_max)`` of the covariance of the foreground pixel
  coordinates: the length of a straight rod with the same second moment along its
  major axis. It does not depend on orientation; a bent chromosome measures shorter
  than its arc, which the per-cell median tolerates. An empty mask measures 0.
* Scale of a crop: ``cell_length / median length of its cell``.
* Fall-back (``fallback`` True): a crop without a cell (``None``), or in a cell with
  fewer than ``min_cell_chromosomes`` measured (length > 0) crops, uses
  ``cell_length / reference_length`` (the training set's median length); when
  ``reference_length`` is 0 (unknown) it keeps its size (scale 1). Both are flagged.
* In cell mode a crop is trimmed to its foreground box grown by
  :data:`TRIM_MARGIN` source pixels before resizing, so that wide empty framing
  (some labs paste crops on large canvases) does not make it shrink on the canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .config import BACKGROUND, UPPER_LIMIT, PreprocessConfig

TRIM_MARGIN = 2
"""Source pixels of background kept around the foreground box when trimming (cell mode)."""
KEEP_REGION_FRACTION = 0.25
"""Foreground regions at least this fraction of the largest one count toward the length."""


@dataclass
class SizeReference:
    """Crops rescaled to the cell-relative size.

    Attributes:
        crops: N uint8 ``(h_i, w_i)`` crops (the inputs themselves in absolute mode).
        scales: ``(N,)`` float64, output pixels per source pixel (1 in absolute mode).
        fallback: ``(N,)`` bool, no usable cell: the training reference (or scale 1)
            was used.
        lengths: ``(N,)`` float64 chromosome lengths in source pixels (0 when empty;
            not measured, all 0, in absolute mode).
    """

    crops: list[np.ndarray]
    scales: np.ndarray
    fallback: np.ndarray
    lengths: np.ndarray


def foreground_mask(crop: np.ndarray, background: int, cfg: PreprocessConfig) -> np.ndarray:
    """``(h, w)`` bool foreground of a dark-on-white uint8 crop (see the module docstring)."""
    levels = crop.astype(np.float32)
    if cfg.normalize_background and 0 < int(background) < BACKGROUND:
        levels = np.minimum(levels * (np.float32(BACKGROUND) / np.float32(background)), 255.0)
    keep = (levels <= levels.mean(dtype=np.float64)) & (levels < UPPER_LIMIT)
    if not keep.any():
        return keep
    count, labels, stats, _ = cv2.connectedComponentsWithStats(keep.astype(np.uint8), 8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = np.flatnonzero(areas >= KEEP_REGION_FRACTION * areas.max()) + 1
    return np.isin(labels, big)


def mask_length(mask: np.ndarray) -> float:
    """Rod-equivalent major-axis length ``sqrt(12 * lambda_max)`` of a bool mask (0 if empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    if ys.size == 1:
        return 1.0
    cov = np.cov(np.stack([ys, xs]).astype(np.float64), bias=True)
    lam = float(np.linalg.eigvalsh(cov)[-1])
    # a pixel is a unit square: a 1-px-long line still has length 1, not 0
    return float(np.sqrt(12.0 * lam + 1.0))


def chromosome_length(crop: np.ndarray, background: int, cfg: PreprocessConfig) -> float:
    """Orientation-independent chromosome length of a crop, in source pixels.

    Args:
        crop: ``(h, w)`` uint8, dark chromosome on a light background.
        background: the crop's background level (``Polarity.background``).
        cfg: preprocessing parameters (``normalize_background``).

    Returns:
        ``sqrt(12 * lambda_max)`` of the foreground's coordinate covariance (module
        docstring); 0.0 for an empty foreground.
    """
    if crop.ndim != 2 or crop.size == 0:
        return 0.0
    return mask_length(foreground_mask(crop, background, cfg))


def _trim(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return crop
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = crop.shape
    y0, y1 = max(0, rows[0] - TRIM_MARGIN), min(h, rows[-1] + 1 + TRIM_MARGIN)
    x0, x1 = max(0, cols[0] - TRIM_MARGIN), min(w, cols[-1] + 1 + TRIM_MARGIN)
    return crop[y0:y1, x0:x1]


def resize_crop(crop: np.ndarray, scale: float) -> np.ndarray:
    """Resize an ``(h, w)`` uint8 crop by ``scale`` (INTER_AREA shrinking, INTER_LINEAR
    enlarging); at least 1 x 1; scale 1 returns a copy."""
    h, w = crop.shape
    if scale == 1.0:
        return crop.copy()
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (nw, nh), interpolation=interp)


def rescale_to_reference(
    crops: Sequence[np.ndarray],
    backgrounds: Sequence[int],
    cells: Sequence[str | None] | None,
    cfg: PreprocessConfig,
) -> SizeReference:
    """Resize crops so that their cell's median chromosome length is ``cfg.cell_length``.

    Args:
        crops: N ``(h_i, w_i)`` uint8 dark-on-white crops.
        backgrounds: N background levels (``Polarity.background``).
        cells: N cell IDs (None: no cell), or None (no crop has a cell). Crops with the
            same ID are one metaphase and share one scale.
        cfg: ``size_mode``, ``cell_length``, ``reference_length``, ``min_cell_chromosomes``.

    Returns:
        A :class:`SizeReference`. In absolute mode the crops come back unchanged
        (the same objects), scales 1, no fall-back.
    """
    n = len(crops)
    if len(backgrounds) != n or (cells is not None and len(cells) != n):
        raise ValueError(
            f"{n} crops but {len(backgrounds)} backgrounds and "
            f"{'no' if cells is None else len(cells)} cell IDs"
        )
    if cfg.size_mode == "absolute":
        return SizeReference(list(crops), np.ones(n), np.zeros(n, bool), np.zeros(n))
    ids = list(cells) if cells is not None else [None] * n
    masks = [
        foreground_mask(c, b, cfg) if c.ndim == 2 and c.size else np.zeros((1, 1), bool)
        for c, b in zip(crops, backgrounds, strict=True)
    ]
    lengths = np.array([mask_length(m) for m in masks], dtype=np.float64)
    by_cell: dict[str, list[int]] = {}
    for k, cell in enumerate(ids):
        if cell is not None and lengths[k] > 0:
            by_cell.setdefault(str(cell), []).append(k)
    ref = cfg.reference_length
    fallback_scale = cfg.cell_length / ref if ref > 0 else 1.0
    scales = np.full(n, fallback_scale, dtype=np.float64)
    fallback = np.ones(n, dtype=bool)
    cell_scale = {
        cell: cfg.cell_length / float(np.median(lengths[members]))
        for cell, members in by_cell.items()
        if len(members) >= cfg.min_cell_chromosomes
    }
    for k, cell in enumerate(ids):
        if cell is not None and str(cell) in cell_scale:
            scales[k] = cell_scale[str(cell)]
            fallback[k] = False
    out = [
        resize_crop(_trim(c, m) if c.shape == m.shape else c, float(s))
        for c, m, s in zip(crops, masks, scales, strict=True)
    ]
    return SizeReference(out, scales, fallback, lengths)
