"""Out-of-distribution score of the branch logits, and its calibrated threshold. NumPy only.

The score is the **mean over branches of the energy** of each branch's logits
(Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020)::

    E_b(x) = -logsumexp_k(y_bk(x))          (temperature 1)
    score(x) = mean_b E_b(x)

Higher is more unusual. Why this one:

* each branch was trained with its own cross-entropy (eq. 14), so each branch's
  ``logsumexp`` is (up to a constant) the log-density that softmax training shapes;
  the fused logits are not trained as such (eq. 17 weights them after the fact by
  confidences), so their energy mixes scale and confidence;
* averaging over branches uses the three views (canvas, object, part) at once: a crop
  unlike the training lab tends to look unlike it at every scale;
* it needs only the logits every backend already returns (no features, no extra output).

The threshold is a high quantile (default 0.95) of the scores of the training lab's
validation images, so about 5% of in-distribution images are flagged by design.
A NaN or infinite score is always flagged (never silently accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCORE_NAME = "energy"
DEFINITION = "mean over branches of -logsumexp(logits_b) (temperature 1); higher = more unusual"
DEFAULT_QUANTILE = 0.95
OOD_FILE = "ood.json"
"""Written into a run folder (``RUN/ood.json``) and copied into the bundle manifest."""


def energy(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp`` over the last axis, in float64 (no overflow).

    Args:
        logits: ``(..., K)``.

    Returns:
        ``(...)`` float64 energies.
    """
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # all -inf or NaN rows: let NaN/inf propagate
    return -(np.log(np.exp(z - m).sum(axis=-1)) + m[..., 0])


def ood_scores(logits: np.ndarray) -> np.ndarray:
    """The OOD score of each image.

    Args:
        logits: ``(B, N, K)`` branch logits (B branches, N images, K classes).

    Returns:
        ``(N,)`` float64: the mean over the B branches of :func:`energy`.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"expected (branches, N, classes) logits, got shape {logits.shape}")
    return energy(logits).mean(axis=0)


def calibrate_ood(
    scores: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    branches: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The threshold: the ``quantile`` of in-distribution scores (NumPy's linear rule).

    Args:
        scores: ``(N,)`` scores of the training lab's validation images.
        quantile: share of those images to accept, in (0, 1).
        branches: the branches the scores were computed on (recorded).

    Returns:
        ``{"score", "definition", "branches", "quantile", "threshold", "n", "mean",
        "std", "min", "max", "flagged_fraction"}`` (``flagged_fraction``: share of
        the calibration scores above the threshold).

    Raises:
        ValueError: quantile outside (0, 1), or no finite score.
    """
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"the OOD quantile must be between 0 and 1, got {quantile}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("cannot calibrate the OOD threshold: no finite scores (no images?)")
    threshold = float(np.quantile(s, float(quantile)))
    return {
        "score": SCORE_NAME,
        "definition": DEFINITION,
        "branches": list(branches) if branches is not None else None,
        "quantile": float(quantile),
        "threshold": threshold,
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        "min": float(s.min()),
        "max": float(s.max()),
        "flagged_fraction": float((s > threshold).mean()),
    }


def is_ood(scores: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """``scores > threshold``; non-finite scores count as out of distribution.

    Args:
        scores: ``(N,)`` scores from :func:`ood_scores`.
        calibration: a record from :func:`calibrate_ood`.

    Returns:
        ``(N,)`` bool.
    """
    s = np.asarray(scores, dtype=np.float64)
    return ~np.isfinite(s) | (s > float(calibration["threshold"]))


def check_calibration(calibration: Any) -> dict[str, Any]:
    """Validate a calibration record read from a file or a manifest.

    Raises:
        ValueError: not a dict, another score, or no finite threshold.
    """
    if not isinstance(calibration, dict):
        raise ValueError("the OOD calibration must be a JSON object")
    if calibration.get("score", SCORE_NAME) != SCORE_NAME:
        raise ValueError(
            f"unknown OOD score {calibration.get('score')!r}; "
            f"this edge-iapp computes {SCORE_NAME!r}"
        )
    try:
        threshold = float(calibration["threshold"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the OOD calibration has no numeric 'threshold'") from None
    if not np.isfinite(threshold):
        raise ValueError(f"the OOD threshold is not finite ({threshold})")
    return calibration
