"""Global-scale image: the crop on a square background canvas, absolute size kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import BACKGROUND, PreprocessConfig
from .sampling import place_batch


@dataclass
class GlobalBatch:
    """Global-scale images of a batch.

    Attributes:
        images: ``(N, S, S)`` uint8, S = ``input_size``, dark chromosome on 255.
        shrunk: ``(N,)`` bool, the crop was larger than the canvas and was shrunk.
        scale: ``(N,)`` float32, output pixels per source pixel.
    """

    images: np.ndarray
    shrunk: np.ndarray
    scale: np.ndarray


def level_gain(background: int, cfg: PreprocessConfig) -> np.float32:
    """Grey-level gain that maps the crop's background level to 255 (1 when disabled)."""
    if not cfg.normalize_background or background <= 0 or background >= BACKGROUND:
        return np.float32(1.0)
    return np.float32(BACKGROUND) / np.float32(background)


def canvas_geometry(h: int, w: int, cfg: PreprocessConfig) -> tuple[float, float, float, bool]:
    """``(scale, top, left, shrunk)`` placing an ``h x w`` crop on the canvas (float32 maths)."""
    f32 = np.float32
    longest = max(h, w)
    shrunk = longest > cfg.canvas
    scale = f32(cfg.input_size) / f32(longest if shrunk else cfg.canvas)
    top = (f32(cfg.input_size) - f32(h) * scale) / f32(2)
    left = (f32(cfg.input_size) - f32(w) * scale) / f32(2)
    return float(scale), float(top), float(left), shrunk


def global_canvas(
    crops: Sequence[np.ndarray], backgrounds: Sequence[int], cfg: PreprocessConfig
) -> GlobalBatch:
    """Paste each dark-on-white crop in the centre of the canvas, at input resolution.

    Args:
        crops: N ``(h_i, w_i)`` uint8 grey crops, dark on white (see ``polarity``).
        backgrounds: N border medians (``Polarity.background``), for level normalisation.
        cfg: preprocessing parameters.

    Returns:
        A :class:`GlobalBatch` with ``(N, input_size, input_size)`` images.
    """
    if len(crops) != len(backgrounds):
        raise ValueError(f"{len(crops)} crops but {len(backgrounds)} background levels")
    n, s = len(crops), cfg.input_size
    shrunk = np.zeros(n, dtype=bool)
    scales = np.zeros(n, dtype=np.float32)
    sources, tops, lefts = [], [], []
    for k, (crop, bg) in enumerate(zip(crops, backgrounds, strict=True)):
        if crop.dtype != np.uint8 or crop.ndim != 2 or min(crop.shape) < 1:
            raise ValueError(
                f"crop {k}: expected non-empty (h, w) uint8, got {crop.dtype} {crop.shape}"
            )
        gain = level_gain(int(bg), cfg)
        levels = np.minimum(crop.astype(np.float32) * gain, np.float32(BACKGROUND))
        scale, top, left, shrunk[k] = canvas_geometry(*crop.shape, cfg)
        scales[k] = scale
        sources.append(levels)
        tops.append(top)
        lefts.append(left)
    images = place_batch(sources, s, scales, tops, lefts, fill=BACKGROUND)
    return GlobalBatch(images=images, shrunk=shrunk, scale=scales)
