"""Bilinear placement of a grey image into a square output: the one resampling rule.

Every resize in the pipeline (global canvas, object zoom, part zoom) is this one
function, so that the CUDA kernel has one formula to match. For output pixel
``(i, j)`` the source position is::

    v = (i + 0.5 - top) / scale - 0.5        u = (j + 0.5 - left) / scale - 0.5

sampled bilinearly in float32, where a neighbour outside the source reads ``fill``.
The result is rounded half up to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    f32 = np.float32
    h, w = src.shape
    # One fill pixel around the source: every neighbour outside it reads the border.
    padded = np.full((h + 2, w + 2), fill, dtype=f32)
    padded[1 : h + 1, 1 : w + 1] = src
    grid = np.arange(out_size, dtype=f32) + f32(0.5)
    v = (grid - f32(top)) / f32(scale) - f32(0.5)
    u = (grid - f32(left)) / f32(scale) - f32(0.5)
    y0, x0 = np.floor(v), np.floor(u)
    fy, fx = (v - y0)[:, None], (u - x0)[None, :]
    if not (float(fill).is_integer() and 0 <= fill <= 255):
        row_a, row_b = _padded_neighbours(y0, h)
        col_a, col_b = _padded_neighbours(x0, w)
        return _interpolate(padded, row_a, row_b, col_a, col_b, fy, fx)
    # An output pixel whose four neighbours are all padding is fill*(1-f) + fill*f twice,
    # within 1e-4 of the integer fill, so it rounds to exactly fill: interpolate only the
    # rows and columns that read the source (the global canvas is mostly background).
    # Those are the lines with -1 <= floor <= size - 1; floor never decreases along a
    # line (scale > 0), so they form one run, found by bisection.
    r = _source_run(y0, h)
    c = _source_run(x0, w)
    out = np.full((out_size, out_size), int(fill), dtype=np.uint8)
    if r.stop > r.start and c.stop > c.start:
        # Inside the run the padded neighbours floor + 1 and floor + 2 lie in 0..size + 1.
        row_a = y0[r].astype(np.intp) + 1
        col_a = x0[c].astype(np.intp) + 1
        out[r, c] = _interpolate(padded, row_a, row_a + 1, col_a, col_a + 1, fy[r], fx[:, c])
    return out


def _source_run(floor: np.ndarray, size: int) -> slice:
    """The output lines with a neighbour inside the source: ``-1 <= floor <= size - 1``."""
    return slice(
        int(np.searchsorted(floor, -1.0, "left")), int(np.searchsorted(floor, size - 1.0, "right"))
    )


def _interpolate(padded, row_a, row_b, col_a, col_b, fy, fx) -> np.ndarray:
    """Bilinear values at the given padded neighbour indices and fractions, as uint8.

    Separable, with the same float32 operations per output pixel as the formula in the
    module docstring: first each needed source row along x, then the two rows along y.
    Only rows some output pixel reads are interpolated (a zoom reads few of them).
    """
    f32 = np.float32
    first, last = int(row_a.min()), int(row_b.max()) + 1
    rows = padded[first:last]
    one = f32(1.0)
    # In-place steps: the same products and sums, fewer temporaries.
    along_x = rows[:, col_a]
    along_x *= one - fx
    right = rows[:, col_b]
    right *= fx
    along_x += right
    values = along_x[row_a - first]
    values *= one - fy
    bottom = along_x[row_b - first]
    bottom *= fy
    values += bottom
    return round_u8(values, inplace=True)


def _padded_neighbours(floor: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the padded source of the two neighbours at ``floor`` and ``floor + 1``.

    Anything outside the source lands on the padding (index 0 or ``size + 1``). Plain
    minimum/maximum: ``np.clip`` costs more in call overhead than in work at these sizes.
    """
    first = floor.astype(np.intp) + 1
    low, high = 0, size + 1
    return (
        np.minimum(np.maximum(first, low), high),
        np.minimum(np.maximum(first + 1, low), high),
    )


def place_batch(
    srcs: Sequence[np.ndarray],
    out_size: int,
    scales: Sequence[float],
    tops: Sequence[float],
    lefts: Sequence[float],
    fill: float = 255.0,
) -> np.ndarray:
    """:func:`place` for N sources: ``(N, out_size, out_size)`` uint8."""
    out = np.empty((len(srcs), out_size, out_size), dtype=np.uint8)
    for k, src in enumerate(srcs):
        out[k] = place(src, out_size, scales[k], tops[k], lefts[k], fill)
    return out


def round_u8(values: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Round half up and clip to uint8 (``floor(v + 0.5)``, as ``floorf`` in the kernel).

    ``inplace=True`` uses ``values`` (float32) as scratch space.
    """
    if not inplace:
        return np.clip(np.floor(values + np.float32(0.5)), 0, 255).astype(np.uint8)
    values += np.float32(0.5)
    np.floor(values, out=values)
    np.maximum(values, 0, out=values)
    np.minimum(values, 255, out=values)
    return values.astype(np.uint8)


def zoom_boxes(
    images: Sequence[np.ndarray], boxes: Sequence[Sequence[int]], out_size: int
) -> np.ndarray:
    """Crop each ``box = (y0, x0, y1, x1)`` (end-exclusive) and fit it, aspect kept, centred.

    The crop is scaled so its longer side fills ``out_size``; the rest is background.
    Returns ``(N, out_size, out_size)`` uint8.
    """
    f32 = np.float32
    crops, scales, tops, lefts = [], [], [], []
    for image, box in zip(images, boxes, strict=True):
        y0, x0, y1, x1 = (int(b) for b in box)
        crop = image[y0:y1, x0:x1]
        bh, bw = crop.shape
        scale = f32(out_size) / f32(max(bh, bw))
        crops.append(crop)
        scales.append(scale)
        tops.append((f32(out_size) - f32(bh) * scale) / f32(2))
        lefts.append((f32(out_size) - f32(bw) * scale) / f32(2))
    return place_batch(crops, out_size, scales, tops, lefts)
