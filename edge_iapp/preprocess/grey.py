"""Turn any supported pixel array into one 8-bit grey plane."""

from __future__ import annotations

import numpy as np


class UnsupportedImageError(ValueError):
    """The array cannot be read as a chromosome image (its shape or dtype says why)."""


def to_grey_u8(array: np.ndarray) -> np.ndarray:
    """Convert an image array to ``(H, W)`` uint8 grey.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (RGB) and ``(H, W, 4)`` (RGBA,
    composited over white) with dtype bool, uint8, uint16 (16-bit, or 12-bit when no
    value exceeds 4095, as many microscope cameras write) or float (0..1 when the
    maximum is <= 1, else 0..255).

    Raises:
        UnsupportedImageError: for any other shape or dtype, or an empty array.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise UnsupportedImageError(
            f"expected (H, W), (H, W, 3) or (H, W, 4) pixels, got shape {a.shape}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise UnsupportedImageError(f"image has no pixels (shape {a.shape})")
    f = _to_unit_float(a)
    if f.ndim == 3:
        rgb = f[:, :, :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if f.shape[2] == 4:
            alpha = f[:, :, 3]
            rgb = rgb * alpha + (1.0 - alpha)
        f = rgb
    return np.clip(np.floor(f * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _to_unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        full = 4095.0 if int(a.max()) <= 4095 else 65535.0
        return a.astype(np.float32) / full
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        if not np.all(np.isfinite(f)):
            raise UnsupportedImageError("image contains NaN or infinite values")
        peak = float(f.max())
        return np.clip(f if peak <= 1.0 else f / 255.0, 0.0, 1.0)
    raise UnsupportedImageError(
        f"unsupported pixel type {a.dtype}; expected uint8, uint16 or float"
    )
