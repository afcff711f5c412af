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

PAD_BUDGET_BYTES = 32 << 20
"""Largest padded source stack resampled in one batched step (bigger batches are chunked)."""


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
    return place_batch([src], out_size, [scale], [top], [left], fill)[0]


def place_batch(
    srcs: Sequence[np.ndarray],
    out_size: int,
    scales: Sequence[float],
    tops: Sequence[float],
    lefts: Sequence[float],
    fill: float = 255.0,
) -> np.ndarray:
    """:func:`place` for N sources at once: ``(N, out_size, out_size)`` uint8.

    The same float32 operations per pixel as one-by-one placement, vectorised over the
    batch (each source sits in a fill-padded stack), so the result is identical; the
    stack is chunked to stay under :data:`PAD_BUDGET_BYTES`.
    """
    n = len(srcs)
    out = np.empty((n, out_size, out_size), dtype=np.uint8)
    start = 0
    while start < n:
        stop, h_max, w_max = start, 0, 0
        while stop < n:
            h, w = srcs[stop].shape
            h_next, w_next = max(h_max, h), max(w_max, w)
            stack_bytes = (stop - start + 1) * (h_next + 2) * (w_next + 2) * 4
            if stop > start and stack_bytes > PAD_BUDGET_BYTES:
                break
            h_max, w_max, stop = h_next, w_next, stop + 1
        out[start:stop] = _place_chunk(
            srcs[start:stop],
            out_size,
            scales[start:stop],
            tops[start:stop],
            lefts[start:stop],
            fill,
            h_max,
            w_max,
        )
        start = stop
    return out


def _place_chunk(srcs, out_size, scales, tops, lefts, fill, h_max, w_max) -> np.ndarray:
    f32 = np.float32
    n = len(srcs)
    padded = np.full((n, h_max + 2, w_max + 2), fill, dtype=f32)
    for k, src in enumerate(srcs):
        h, w = src.shape
        padded[k, 1 : h + 1, 1 : w + 1] = src
    grid = np.arange(out_size, dtype=f32) + f32(0.5)
    scale = np.asarray(scales, dtype=f32)[:, None]
    v = (grid[None, :] - np.asarray(tops, dtype=f32)[:, None]) / scale - f32(0.5)
    u = (grid[None, :] - np.asarray(lefts, dtype=f32)[:, None]) / scale - f32(0.5)
    y0 = np.floor(v)
    x0 = np.floor(u)
    fy = (v - y0)[:, :, None]
    fx = (u - x0)[:, None, :]
    # +1 for the padding; anything beyond a source reads padding (== fill). Gathers go
    # through flat indices (np.take), several times faster than 3-array fancy indexing.
    rows, cols = h_max + 2, w_max + 2
    image_base = (np.arange(n) * rows)[:, None]
    row_a = ((image_base + np.clip(y0.astype(np.int64) + 1, 0, h_max + 1)) * cols)[:, :, None]
    row_b = ((image_base + np.clip(y0.astype(np.int64) + 2, 0, h_max + 1)) * cols)[:, :, None]
    col_a = np.clip(x0.astype(np.int64) + 1, 0, w_max + 1)[:, None, :]
    col_b = np.clip(x0.astype(np.int64) + 2, 0, w_max + 1)[:, None, :]
    flat = padded.reshape(-1)
    one = f32(1.0)
    top_row = np.take(flat, row_a + col_a) * (one - fx) + np.take(flat, row_a + col_b) * fx
    bottom_row = np.take(flat, row_b + col_a) * (one - fx) + np.take(flat, row_b + col_b) * fx
    return round_u8(top_row * (one - fy) + bottom_row * fy)


def round_u8(values: np.ndarray) -> np.ndarray:
    """Round half up and clip to uint8 (``floor(v + 0.5)``, as ``floorf`` in the kernel)."""
    return np.clip(np.floor(values + np.float32(0.5)), 0, 255).astype(np.uint8)


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
