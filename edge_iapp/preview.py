"""Preview images: the global, object and part views of chromosome images, side by side.

Until a trained model gives part maps, the part view uses :func:`centre_part_maps`,
which select the centre of the object image (so the part zoom is exercised end to end).
No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_iapp.ioutil import atomic_write_bytes
from edge_iapp.preprocess import (
    PreprocessConfig,
    global_canvas,
    object_zoom,
    part_zoom,
    rescale_to_reference,
)

from .data.imread import ChromosomeImage

GAP = 2
"""Pixels of mid-grey between the views of one image."""
TILE_GAP = 6
"""Pixels of dark grey between the images of a contact sheet."""


@dataclass
class Views:
    """The three network inputs of a batch, for looking at.

    Attributes:
        global_images, object_images, part_images: ``(N, S, S)`` uint8.
        object_boxes: ``(N, 4)`` int32 ``(y0, x0, y1, x1)`` on the global image.
        object_fallback, part_fallback: ``(N,)`` bool, the empty-mask fall-back was taken.
    """

    global_images: np.ndarray
    object_images: np.ndarray
    part_images: np.ndarray
    object_boxes: np.ndarray
    object_fallback: np.ndarray
    part_fallback: np.ndarray


def centre_part_maps(n: int, grid: int = 7) -> np.ndarray:
    """``(n, 2, grid, grid)`` float32 part maps whose mask is the centre ``3 x 3`` cells."""
    maps = np.zeros((n, 2, grid, grid), dtype=np.float32)
    c = grid // 2
    maps[:, :, max(c - 1, 0) : c + 2, max(c - 1, 0) : c + 2] = 1.0
    return maps


def compute_views(
    images: Sequence[ChromosomeImage], cfg: PreprocessConfig, part_maps: np.ndarray | None = None
) -> Views:
    """Run the reference preprocessing on a batch (part maps default to the centre)."""
    backgrounds = [im.polarity.background for im in images]
    cells = [im.cell for im in images]  # cell size mode: scaled as the runtime does
    size = rescale_to_reference([im.pixels for im in images], backgrounds, cells, cfg)
    g = global_canvas(size.crops, backgrounds, cfg)
    o = object_zoom(g.images, cfg)
    maps = centre_part_maps(len(images)) if part_maps is None else part_maps
    p = part_zoom(o.images, maps, cfg)
    return Views(g.images, o.images, p.images, o.boxes, o.fallback, p.fallback)


def strip(views: Views, k: int) -> np.ndarray:
    """``(S, 3 S + 2 GAP)`` uint8: global | object | part of image ``k``."""
    s = views.global_images.shape[1]
    gap = np.full((s, GAP), 128, dtype=np.uint8)
    return np.hstack(
        [views.global_images[k], gap, views.object_images[k], gap, views.part_images[k]]
    )


def contact_sheet(tiles: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Lay equal-size ``(h, w)`` or ``(h, w, 3)`` uint8 tiles in a grid, row by row."""
    if not tiles:
        raise ValueError("no tiles for the contact sheet")
    h, w = tiles[0].shape[:2]
    channels = tiles[0].shape[2:]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = np.full(
        (rows * (h + TILE_GAP) + TILE_GAP, columns * (w + TILE_GAP) + TILE_GAP, *channels),
        64,
        dtype=np.uint8,
    )
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = TILE_GAP + r * (h + TILE_GAP), TILE_GAP + c * (w + TILE_GAP)
        sheet[y : y + h, x : x + w] = tile
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 grey or RGB image as PNG, atomically."""
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    return atomic_write_bytes(path, buf.tobytes())
