"""Part-aware mechanism, image side (paper eq. 9-13): part mask, largest region, zoom.

The network side (the two squeeze-and-excitation blocks, eq. 6-8) lives in the
model; the object branch outputs ``part_maps``: the channel sums of U1 and U2
(eq. 9), shape ``(N, 2, h, w)`` float32. Everything after that is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import PreprocessConfig
from .object_aware import mask_box
from .sampling import zoom_boxes


@dataclass
class PartBatch:
    """Part-scale images of a batch.

    Attributes:
        images: ``(N, S, S)`` uint8 part zooms.
        masks: ``(N, h, w)`` bool part masks after the largest-component step.
        boxes: ``(N, 4)`` int32 ``(y0, x0, y1, x1)`` on the object image.
        fallback: ``(N,)`` bool, the mask was empty and the whole object image was used.
    """

    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    fallback: np.ndarray


def part_mask(part_maps: np.ndarray) -> np.ndarray:
    """Eq. 10-12: each map above its own mean, then the intersection.

    Args:
        part_maps: ``(N, 2, h, w)`` float (channel sums of U1 and U2).

    Returns:
        ``(N, h, w)`` bool. Means are accumulated in float64 so the kernel can agree.
    """
    if part_maps.ndim != 4 or part_maps.shape[1] != 2:
        raise ValueError(f"expected part maps of shape (N, 2, h, w), got {part_maps.shape}")
    maps = part_maps.astype(np.float64)
    means = maps.mean(axis=(2, 3), keepdims=True)
    above = maps > means
    return above[:, 0] & above[:, 1]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected region of a 2-D mask; ties go to the region met first in raster order."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = np.flatnonzero(areas == areas.max()) + 1
    flat = labels.reshape(-1)
    first_pixel = [int(np.argmax(flat == label)) for label in best]
    chosen = best[int(np.argmin(first_pixel))]
    return labels == chosen


def grid_box_to_image(
    box: tuple[int, int, int, int], grid: tuple[int, int], size: int
) -> tuple[int, int, int, int]:
    """Scale a box on the ``h x w`` feature grid to ``size x size`` image pixels (outward)."""
    y0, x0, y1, x1 = box
    h, w = grid
    return (y0 * size) // h, (x0 * size) // w, -((-y1 * size) // h), -((-x1 * size) // w)


def part_zoom(object_images: np.ndarray, part_maps: np.ndarray, cfg: PreprocessConfig) -> PartBatch:
    """Part-scale images from object images and the object branch's part maps.

    Args:
        object_images: ``(N, S, S)`` uint8.
        part_maps: ``(N, 2, h, w)`` float.
        cfg: preprocessing parameters.
    """
    n, s, _ = object_images.shape
    if part_maps.shape[0] != n:
        raise ValueError(f"{n} object images but {part_maps.shape[0]} part maps")
    raw = part_mask(part_maps)
    masks = np.zeros_like(raw)
    images = object_images.copy()  # the fall-back for empty masks
    boxes = np.zeros((n, 4), dtype=np.int32)
    fallback = np.zeros(n, dtype=bool)
    grid = raw.shape[1:]
    for k in range(n):
        masks[k] = largest_component(raw[k])
        box = mask_box(masks[k])
        fallback[k] = box is None
        boxes[k] = (0, 0, s, s) if box is None else grid_box_to_image(box, grid, s)
    zoom = np.flatnonzero(~fallback)
    if zoom.size:
        images[zoom] = zoom_boxes(object_images[zoom], boxes[zoom], s)
    return PartBatch(images=images, masks=masks, boxes=boxes, fallback=fallback)
