"""Classification metrics of the paper (eq. 18-22) and ours (calibration, risk-coverage).

NumPy only. ``labels`` are ``(N,)`` ints, ``pred`` ``(N,)`` ints, ``probs`` ``(N, K)``.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``(K, K)`` int64 counts; row = true class, column = predicted class."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), pred.astype(np.int64)), 1)
    return cm


def per_class_prf(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Eq. 18-20 per class from a confusion matrix.

    Returns:
        ``precision``, ``recall``, ``f1`` ``(K,)`` float64 (NaN where undefined: no
        prediction of the class, or no image of it) and ``support`` ``(K,)`` int64.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    # a class with images that is never predicted has precision NaN but F1 0 (recall 0)
    f1 = np.where(support > 0, np.nan_to_num(f1, nan=0.0), np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(cm: np.ndarray) -> float:
    """Eq. 21: mean F1 over the classes that have test images (absent classes are skipped)."""
    f1 = per_class_prf(cm)["f1"]
    present = ~np.isnan(f1)
    return float(f1[present].mean()) if present.any() else float("nan")


def accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Eq. 22."""
    return float((labels == pred).mean()) if labels.size else float("nan")


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` over all thresholds (ties handled as one step); starts at (0, 0)."""
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positive[order].astype(np.float64)
    distinct = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, int)
    tps = np.cumsum(pos)[distinct]
    fps = (distinct + 1) - tps
    p, n = pos.sum(), s.size - pos.sum()
    tpr = np.r_[0.0, tps / p] if p > 0 else np.r_[0.0, np.full(tps.size, np.nan)]
    fpr = np.r_[0.0, fps / n] if n > 0 else np.r_[0.0, np.full(fps.size, np.nan)]
    return fpr, tpr


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve (NaN when a class has no positives or no negatives)."""
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def one_vs_all_auc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(K,)`` one-vs-all AUC per class (NaN for classes absent from ``labels``)."""
    return np.array([auc(*roc_curve(probs[:, c], labels == c)) for c in range(probs.shape[1])])


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict:
    """Reliability diagram data and expected calibration error (equal-width bins).

    Returns:
        ``{"edges" (bins+1,), "confidence" (bins,), "accuracy" (bins,), "count" (bins,),
        "ece"}``; empty bins have NaN confidence/accuracy.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        mean_acc = np.where(count > 0, acc_sum / count, np.nan)
    n = max(int(count.sum()), 1)
    ece = float(np.nansum(count / n * np.abs(mean_acc - mean_conf)))
    return {
        "edges": edges,
        "confidence": mean_conf,
        "accuracy": mean_acc,
        "count": count,
        "ece": ece,
    }


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """Selective classification: accept the most confident calls first.

    Returns:
        ``{"coverage" (N,), "risk" (N,), "threshold" (N,), "aurc"}``: after accepting
        the ``i+1`` most confident images, the accepted fraction, the error rate among
        them, and the confidence of the last one accepted; ``aurc`` is the mean risk.
    """
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~correct[order].astype(bool))
    accepted = np.arange(1, order.size + 1)
    risk = errors / accepted
    return {
        "coverage": accepted / max(order.size, 1),
        "risk": risk,
        "threshold": confidence[order],
        "aurc": float(risk.mean()) if risk.size else float("nan"),
    }


def coverage_at_risk(rc: dict, max_risk: float) -> tuple[float, float]:
    """Largest coverage with accepted error rate <= ``max_risk``: ``(coverage, threshold)``.

    ``(0.0, inf)`` when even the single most confident call is wrong.
    """
    ok = np.flatnonzero(rc["risk"] <= max_risk)
    if ok.size == 0:
        return 0.0, float("inf")
    i = int(ok[-1])
    return float(rc["coverage"][i]), float(rc["threshold"][i])
