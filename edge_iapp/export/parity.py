"""Parity of an exported graph against PyTorch: logit differences and top-1 agreement.

No torch here: both sides are NumPy arrays.
"""

from __future__ import annotations

import numpy as np


def logits_parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """``(N, K)`` reference vs candidate logits -> max/mean abs difference, top-1 agreement."""
    ref = np.asarray(reference, np.float64)
    cand = np.asarray(candidate, np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"logits shapes differ: {ref.shape} vs {cand.shape}")
    diff = np.abs(ref - cand)
    return {
        "images": int(ref.shape[0]),
        "max_abs_logit_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_logit_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()) if ref.size else 1.0,
    }


def part_maps_parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """``(N, 2, h, w)`` part maps -> max abs difference and how often the part mask is identical."""
    from ..preprocess.part_aware import largest_component, part_mask

    ref_masks = part_mask(reference)
    cand_masks = part_mask(candidate)
    same = [
        np.array_equal(largest_component(a), largest_component(b))
        for a, b in zip(ref_masks, cand_masks, strict=True)
    ]
    scale = float(np.abs(reference).max()) or 1.0
    return {
        "part_maps_max_abs_diff": float(np.abs(reference - candidate).max()),
        "part_maps_max_rel_diff": float(np.abs(reference - candidate).max() / scale),
        "part_mask_agreement": float(np.mean(same)) if same else 1.0,
    }


def fused_top1(logits: dict[str, np.ndarray], mode: str = "lambda") -> np.ndarray:
    """Fused class per image from ``{"global", "object", "part"}`` logits."""
    from ..fusion import fuse

    fused, _ = fuse(np.stack([logits[b] for b in ("global", "object", "part")]), mode)
    return fused.argmax(1)
