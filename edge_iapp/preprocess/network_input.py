"""What the networks read: grey levels scaled to [0, 1], one channel, NCHW float32.

The ImageNet normalisation and the grey-to-RGB repeat are the first layer of each
branch (in the model and in its ONNX graph), so every backend feeds the same tensor.
"""

from __future__ import annotations

import numpy as np


def network_input(images: np.ndarray) -> np.ndarray:
    """``(N, S, S)`` uint8 -> ``(N, 1, S, S)`` float32 in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected (N, S, S) uint8 images, got {images.dtype} {images.shape}")
    return (images.astype(np.float32) / np.float32(255.0))[:, None]
