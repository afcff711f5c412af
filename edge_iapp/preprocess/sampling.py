"""Bilinear placement of a grey image into a square output: the one resampling rule.

Every resize in the pipeline (global canvas, object zoom, part zoom) is this one
function, so that the CUDA kernel has one formula to match. For output pixel
``(i, j)`` the source position is::

    v = (i + 0.5 - top) / scale - 0.5        u = (j + 0.5 - left) / scale - 0.5

sampled bilinearly in float32, where a neighbour outside the source reads ``fill``.
The result is rounded half up to uint8.
"""

from __future__ import annotations

import numpy as np


def place(
    src: np.ndarray, out_size: int, scale: float, top: float, left: float, fill: float = 255.0
) -> np.ndarray:
    """Resample ``src`` into an ``(out_size, out_size)`` uint8 image.

    Args:
        src: ``(h, w)`` grey levels, any real dtype (float32 is used inside).
        out_size: side of the output.
        scale: output pixels per source pixel.
        top, left: output position of the source's top-left corner (pixel edges).
        fill: value read for neighbours outside ``src``.

    Returns:
        ``(out_size, out_size)`` uint8.
    """
    f32 = np.float32
    h, w = src.shape
    padded = np.full((h + 2, w + 2), fill, dtype=f32)
    padded[1:-1, 1:-1] = src
    grid = np.arange(out_size, dtype=f32) + f32(0.5)
    v = (grid - f32(top)) / f32(scale) - f32(0.5)
    u = (grid - f32(left)) / f32(scale) - f32(0.5)
    y0 = np.floor(v)
    x0 = np.floor(u)
    fy = (v - y0)[:, None]
    fx = (u - x0)[None, :]
    # +1 for the padding; anything beyond the padding reads the padding (== fill).
    ya = np.clip(y0.astype(np.int64) + 1, 0, h + 1)
    yb = np.clip(y0.astype(np.int64) + 2, 0, h + 1)
    xa = np.clip(x0.astype(np.int64) + 1, 0, w + 1)
    xb = np.clip(x0.astype(np.int64) + 2, 0, w + 1)
    p00 = padded[np.ix_(ya, xa)]
    p01 = padded[np.ix_(ya, xb)]
    p10 = padded[np.ix_(yb, xa)]
    p11 = padded[np.ix_(yb, xb)]
    one = f32(1.0)
    top_row = p00 * (one - fx) + p01 * fx
    bottom_row = p10 * (one - fx) + p11 * fx
    out = top_row * (one - fy) + bottom_row * fy
    return round_u8(out)


def round_u8(values: np.ndarray) -> np.ndarray:
    """Round half up and clip to uint8 (``floor(v + 0.5)``, as ``floorf`` in the kernel)."""
    return np.clip(np.floor(values + np.float32(0.5)), 0, 255).astype(np.uint8)


def zoom_box(image: np.ndarray, box: tuple[int, int, int, int], out_size: int) -> np.ndarray:
    """Crop ``box = (y0, x0, y1, x1)`` (end-exclusive) and fit it, aspect kept, centred.

    The crop is scaled so its longer side fills ``out_size``; the rest is background.
    """
    y0, x0, y1, x1 = (int(b) for b in box)
    crop = image[y0:y1, x0:x1]
    bh, bw = crop.shape
    f32 = np.float32
    scale = f32(out_size) / f32(max(bh, bw))
    top = (f32(out_size) - f32(bh) * scale) / f32(2)
    left = (f32(out_size) - f32(bw) * scale) / f32(2)
    return place(crop, out_size, float(scale), float(top), float(left))
