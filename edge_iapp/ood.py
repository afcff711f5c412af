"""Out-of-distribution score of the branch logits, and its calibrated threshold. NumPy only.

Two scores; a run's calibration record (``RUN/ood.json``, copied into the bundle
manifest) says which one it uses, and every backend computes it from the logits it
already returns (no extra graph output):

``energy`` (the first version): the **mean over branches of the energy** of each
branch's logits (Liu et al., "Energy-based out-of-distribution detection", NeurIPS
2020)::

    E_b(x) = -logsumexp_k(y_bk(x))          (temperature 1)
    energy(x) = mean_b E_b(x)

Each branch was trained with its own cross-entropy (eq. 14), so each branch's
``logsumexp`` is (up to a constant) the log-density that softmax training shapes.

``energy+mahalanobis`` (written by training and ``ood-calibrate`` since it was
measured, docs/RESULTS.md): the energy misses images the model gets wrong *with
confidence*, which is how a model trained on one lab fails on another (its logits are
large, only their pattern is unusual). So a second score measures that pattern: per
branch, one Gaussian per class in logit space with a covariance shared by the classes
(Lee et al., "A simple unified framework for detecting out-of-distribution samples",
NeurIPS 2018, applied to the K = 24 logits instead of the features), fitted on the
training lab's train part::

    M_b(x) = min_c (y_b(x) - mu_bc)^T P_b (y_b(x) - mu_bc)
    mahalanobis(x) = mean_b M_b(x)

Each score is put on a common scale by the validation images (``(s - median) /
(q97.5 - median)``) and the combined score is the larger of the two: an image is
unusual when either view says so.

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
COMBINED_SCORE = "energy+mahalanobis"
COMBINED_DEFINITION = (
    "max of the energy and the logit-space Mahalanobis distance to the closest class "
    "(shared covariance, fitted on the train part), each scaled by the val images as "
    "(s - median) / (q97.5 - median); higher = more unusual"
)
SCORES = (SCORE_NAME, COMBINED_SCORE)
DEFINITIONS = {SCORE_NAME: DEFINITION, COMBINED_SCORE: COMBINED_DEFINITION}
KNOWN_BRANCHES = ("global", "object", "part")
COMPONENTS = ("energy", "mahalanobis")
SCALE_QUANTILE = 0.975
RIDGE = 1e-3
"""Added to the shared covariance, times its mean variance: keeps it invertible when a
class has few images or the logits are nearly collinear."""
DEFAULT_QUANTILE = 0.95
_CHUNK = 1024
"""Images per step of :func:`mahalanobis`."""
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


def _check_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"expected (branches, N, classes) logits, got shape {logits.shape}")
    return logits


def fit_class_gaussians(
    logits: np.ndarray, labels: np.ndarray, ridge: float = RIDGE
) -> dict[str, Any]:
    """Per branch: the class means of the logits and the inverse of their shared covariance.

    Args:
        logits: ``(B, N, K)`` logits of labelled in-distribution images (the train part).
        labels: ``(N,)`` their class indices.
        ridge: see :data:`RIDGE`.

    Returns:
        ``{"classes": [C], "means": (B, C, K), "precision": (B, K, K), "ridge", "n"}``
        as nested lists (JSON-ready).

    Raises:
        ValueError: fewer than two classes, or non-finite logits.
    """
    x = _check_logits(logits).astype(np.float64)
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (x.shape[1],):
        raise ValueError(f"expected {x.shape[1]} labels, got shape {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("cannot fit the class Gaussians: the logits are not all finite")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError("cannot fit the class Gaussians: fewer than two classes")
    index = np.searchsorted(classes, y)
    means, precisions = [], []
    for xb in x:
        mu = np.stack([xb[y == c].mean(0) for c in classes])
        centred = xb - mu[index]
        cov = centred.T @ centred / len(xb)
        cov += ridge * max(np.trace(cov) / len(cov), 1e-12) * np.eye(len(cov))
        means.append(mu)
        precisions.append(np.linalg.inv(cov))
    return {
        "classes": classes.tolist(),
        "means": np.stack(means).tolist(),
        "precision": np.stack(precisions).tolist(),
        "ridge": float(ridge),
        "n": int(x.shape[1]),
    }


def mahalanobis(logits: np.ndarray, gaussians: dict[str, Any]) -> np.ndarray:
    """Mean over branches of the squared distance to the closest class Gaussian.

    Args:
        logits: ``(B, N, K)``.
        gaussians: :func:`fit_class_gaussians`'s record (same B and K).

    Returns:
        ``(N,)`` float64.
    """
    x = _check_logits(logits).astype(np.float64)
    means = np.asarray(gaussians["means"], np.float64)  # (B, C, K)
    precision = np.asarray(gaussians["precision"], np.float64)  # (B, K, K)
    if means.shape[0] != x.shape[0] or means.shape[2] != x.shape[2]:
        raise ValueError(
            f"the OOD calibration is for {means.shape[0]} branch(es) of {means.shape[2]} "
            f"classes, got logits of shape {x.shape}"
        )
    out = np.empty(x.shape[1], np.float64)
    for start in range(0, x.shape[1], _CHUNK):  # (B, n, C, K) stays a few MB
        d = x[:, start : start + _CHUNK, None, :] - means[:, None, :, :]
        d2 = np.einsum("bnck,bkl,bncl->bnc", d, precision, d, optimize=True)
        out[start : start + _CHUNK] = d2.min(axis=2).mean(axis=0)
    return out


def component_scores(logits: np.ndarray, gaussians: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{"energy", "mahalanobis"}``: the two raw scores of each image, ``(N,)`` each."""
    logits = _check_logits(logits)
    return {"energy": energy(logits).mean(axis=0), "mahalanobis": mahalanobis(logits, gaussians)}


def ood_scores(logits: np.ndarray, calibration: dict[str, Any] | None = None) -> np.ndarray:
    """The OOD score of each image, as ``calibration`` defines it.

    Args:
        logits: ``(B, N, K)`` branch logits (B branches, N images, K classes).
        calibration: a record of :func:`calibrate_ood` / :func:`calibrate_combined`;
            None (or an ``energy`` record): the mean branch energy.

    Returns:
        ``(N,)`` float64, higher = more unusual.
    """
    logits = _check_logits(logits)
    if calibration is None or calibration.get("score", SCORE_NAME) == SCORE_NAME:
        return energy(logits).mean(axis=0)
    comps = calibration["components"]
    raw = component_scores(logits, comps["mahalanobis"])
    scaled = [(raw[k] - comps[k]["center"]) / comps[k]["scale"] for k in COMPONENTS]
    return np.maximum(*scaled)  # NaN in either stays NaN (and is flagged)


def with_arrays(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``calibration`` whose class Gaussians are NumPy arrays.

    The record keeps them as JSON lists; a runtime that scores batch after batch
    converts them once here instead of in every :func:`ood_scores` call.
    """
    if not calibration or calibration.get("score", SCORE_NAME) == SCORE_NAME:
        return calibration
    g = calibration["components"]["mahalanobis"]
    arrays = {k: np.asarray(g[k], np.float64) for k in ("means", "precision")}
    components = {**calibration["components"], "mahalanobis": {**g, **arrays}}
    return {**calibration, "components": components}


def _scale(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        raise ValueError("cannot calibrate the OOD score: no finite scores (no images?)")
    center = float(np.median(v))
    spread = float(np.quantile(v, SCALE_QUANTILE)) - center
    return {"center": center, "scale": spread if spread > 0 else float(v.std() or 1.0)}


def calibrate_combined(
    val_logits: np.ndarray,
    fit_logits: np.ndarray,
    fit_labels: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    branches: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``energy+mahalanobis`` record: Gaussians from the train part, scales and
    threshold from the val part.

    Args:
        val_logits: ``(B, N, K)`` logits of the training lab's validation images.
        fit_logits, fit_labels: ``(B, M, K)`` logits and ``(M,)`` labels of its train part.
        quantile: share of the val images to accept.
        branches: the B branches (recorded).

    Returns:
        :func:`calibrate_ood`'s record with ``score``, ``definition`` and ``components``
        (each component's ``center`` and ``scale``; the Gaussians under ``mahalanobis``).

    Raises:
        ValueError: see :func:`fit_class_gaussians` and :func:`calibrate_ood`.
    """
    gaussians = fit_class_gaussians(fit_logits, fit_labels)
    raw = component_scores(val_logits, gaussians)
    components = {k: _scale(raw[k]) for k in COMPONENTS}
    components["mahalanobis"].update(gaussians)
    record = {"score": COMBINED_SCORE, "components": components}
    out = calibrate_ood(ood_scores(val_logits, record), quantile, branches)
    out.update(score=COMBINED_SCORE, definition=COMBINED_DEFINITION, components=components)
    return out


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
        ValueError: not a dict, an unknown score, no finite threshold; for
            ``energy+mahalanobis`` also missing or unusable component scales, unknown
            branch names, or class Gaussians whose shapes disagree.
    """
    if not isinstance(calibration, dict):
        raise ValueError("the OOD calibration must be a JSON object")
    score = calibration.get("score", SCORE_NAME)
    if score not in SCORES:
        raise ValueError(
            f"unknown OOD score {score!r}; this edge-iapp computes one of {list(SCORES)}"
        )
    try:
        threshold = float(calibration["threshold"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the OOD calibration has no numeric 'threshold'") from None
    if not np.isfinite(threshold):
        raise ValueError(f"the OOD threshold is not finite ({threshold})")
    if score == COMBINED_SCORE:
        _check_components(calibration.get("components"), calibration.get("branches"))
    return calibration


def _check_components(components: Any, branches: Any) -> None:
    """A combined record's scales and Gaussians are usable (shapes agree, values finite)."""
    if not isinstance(components, dict) or any(k not in components for k in COMPONENTS):
        raise ValueError(f"the {COMBINED_SCORE} OOD calibration lacks its 'components'")
    for k in COMPONENTS:
        try:
            center, scale = float(components[k]["center"]), float(components[k]["scale"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"the OOD component {k!r} has no numeric center/scale") from None
        if not (np.isfinite(center) and np.isfinite(scale) and scale > 0):
            raise ValueError(f"the OOD component {k!r} has an unusable scale ({scale})")
    g = components["mahalanobis"]
    try:
        means = np.asarray(g["means"], np.float64)
        precision = np.asarray(g["precision"], np.float64)
    except (KeyError, TypeError, ValueError):
        raise ValueError("the OOD class Gaussians are missing or not numeric") from None
    if isinstance(branches, list) and any(b not in KNOWN_BRANCHES for b in branches):
        raise ValueError(f"the OOD calibration names unknown branches {branches}")
    b = len(branches) if isinstance(branches, list) else means.shape[0] if means.ndim else 0
    ok = (
        means.ndim == 3
        and precision.ndim == 3
        and means.shape[0] == precision.shape[0] == b
        and precision.shape[1] == precision.shape[2] == means.shape[2]
        and np.isfinite(means).all()
        and np.isfinite(precision).all()
    )
    if not ok:
        raise ValueError(
            f"the OOD class Gaussians have inconsistent shapes (means {means.shape}, "
            f"precision {precision.shape}, {b} branch(es))"
        )
