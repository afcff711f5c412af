"""Polarity and background level from the border of a crop.

G-band crops are dark on white; Q-band crops (BioImLab) are bright on black. The
pipeline always works on dark-on-white grey images; the border tells which is which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Polarity:
    """What :func:`normalize_polarity` did to one image.

    Attributes:
        inverted: the image was bright on dark and has been inverted.
        background: border median of the returned (dark-on-white) image, 0..255.
    """

    inverted: bool
    background: int


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The one-pixel frame of an ``(H, W)`` image as a flat array (all pixels if H or W < 3)."""
    h, w = image.shape
    if h < 3 or w < 3:
        return image.reshape(-1)
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def border_median(image: np.ndarray) -> int:
    """Median grey level of the border, rounded down (integer, so every backend agrees)."""
    values = np.sort(border_pixels(image), kind="stable")
    return int(values[(values.size - 1) // 2])


def normalize_polarity(grey: np.ndarray) -> tuple[np.ndarray, Polarity]:
    """Return the image as dark chromosome on a light background.

    Args:
        grey: ``(H, W)`` uint8.

    Returns:
        ``(image, polarity)``: the ``(H, W)`` uint8 image, inverted when its border
        median is below 128, and what was done.
    """
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise ValueError(f"expected an (H, W) uint8 grey image, got {grey.dtype} {grey.shape}")
    if border_median(grey) < 128:
        out = 255 - grey
        return out, Polarity(inverted=True, background=border_median(out))
    return grey, Polarity(inverted=False, background=border_median(grey))
