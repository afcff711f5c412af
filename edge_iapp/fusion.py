"""Fusion of the branch votes (paper eq. 15-17), NumPy only.

``logits`` is ``(B, N, K)``: B branches in the order given, N images, K classes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FusionMode = Literal["sum", "lambda"]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64 inside, so no overflow to NaN)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def confidence_weights(logits: np.ndarray) -> np.ndarray:
    """Eq. 16: ``lambda_b = max_k softmax(y_b)_k``; ``(B, N, K)`` -> ``(B, N)``."""
    return softmax(logits).max(axis=-1)


def fuse(logits: np.ndarray, mode: FusionMode = "lambda") -> tuple[np.ndarray, np.ndarray]:
    """Fuse branch logits.

    Args:
        logits: ``(B, N, K)``.
        mode: ``"sum"`` (eq. 15, ``y = sum_b y_b``) or ``"lambda"``
            (eq. 17, ``y = sum_b lambda_b y_b``).

    Returns:
        ``(fused (N, K) float64, lambdas (B, N))``; lambdas are returned for both modes.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected (branches, N, classes) logits, got shape {logits.shape}")
    lambdas = confidence_weights(logits)
    x = logits.astype(np.float64)
    if mode == "sum":
        return x.sum(axis=0), lambdas
    if mode == "lambda":
        return (lambdas[..., None] * x).sum(axis=0), lambdas
    raise ValueError(f"unknown fusion mode {mode!r}; expected 'sum' or 'lambda'")
