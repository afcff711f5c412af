"""Place the review flag's confidence threshold on labelled images.

The runtime sends a call to review when it is out of distribution (the OOD flag) or its
fused confidence is below ``min_confidence`` = T (:mod:`edge_iapp.runtime.review`; branch
disagreement and mask fall-backs flag too, but no threshold moves them). On labelled
images, :func:`sweep` gives the share of errors and of correct calls flagged at a few
values of T, and :func:`place` the smallest T that flags a target share of the errors, to
be written into a bundle with ``edge-iapp export RUN --min-confidence T``.

On the images T was placed on it meets the target by construction: place it on one part
(``evaluate --subset val``) and check it on another (the test part, ``evaluate
--min-confidence T``). Issue #7's target is 80% of the errors with at most 20% of the
correct calls.

A val part of a few cells places T only roughly: on bioimlab's 12 val cells, T landed 2-4
points of errors off what the test cells needed (docs/RESULTS.md, rounds 7-8).
:func:`spread` says how far: it places T again on the cells resampled with replacement
(a cluster bootstrap, since the chromosomes of one cell share its staining and its
errors), and its upper bound is the T that met the target on 90% of the resamples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # NumPy is imported where it runs: the CLI imports DEFAULT_TARGET
    import numpy as np

SWEEP_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
DEFAULT_TARGET = 0.8
"""Share of the errors the placed threshold must flag (issue #7's target)."""
STEP = 0.001
"""T is rounded up to this step, so that it prints and reads back exactly."""
RESAMPLES = 1000
"""Resamples of the cells in :func:`spread`."""
LEVEL = 0.9
"""Share of the resamples on which :func:`spread`'s upper bound meets the target."""


def flagged_shares(flag: np.ndarray, correct: np.ndarray) -> dict[str, float | None]:
    """Shares of the errors, of the correct calls and of all calls that ``flag`` marks.

    Args:
        flag: ``(N,)`` bool, the calls sent to review.
        correct: ``(N,)`` bool, the calls that are right.

    Returns:
        ``{"errors_flagged", "correct_flagged", "all_flagged"}``; None where there is no
        error, no correct call or no call.
    """

    def share(where: np.ndarray) -> float | None:
        return float(flag[where].mean()) if where.any() else None

    return {
        "errors_flagged": share(~correct),
        "correct_flagged": share(correct),
        "all_flagged": float(flag.mean()) if flag.size else None,
    }


def _flags(confidence: np.ndarray, t: float, ood: np.ndarray | None) -> np.ndarray:
    low = confidence < t
    return low if ood is None else (low | ood)


def sweep(
    confidence: np.ndarray,
    correct: np.ndarray,
    ood: np.ndarray | None = None,
    thresholds: tuple[float, ...] = SWEEP_THRESHOLDS,
) -> list[dict[str, Any]]:
    """What the review flag marks at each threshold T.

    Args:
        confidence: ``(N,)`` fused confidence of each call.
        correct: ``(N,)`` bool.
        ood: ``(N,)`` bool OOD flag, flagged at every T (None: the confidence rule alone).
        thresholds: the values of T.

    Returns:
        One ``{"min_confidence": T, **flagged_shares}`` row per T.
    """
    return [
        {"min_confidence": float(t), **flagged_shares(_flags(confidence, t, ood), correct)}
        for t in thresholds
    ]


def place(
    confidence: np.ndarray,
    correct: np.ndarray,
    target: float = DEFAULT_TARGET,
    ood: np.ndarray | None = None,
) -> dict[str, Any]:
    """The smallest threshold T (a multiple of :data:`STEP`, at most 1) that flags ``target``.

    Args:
        confidence: ``(N,)`` fused confidence of each call.
        correct: ``(N,)`` bool.
        target: share of the errors to flag, in (0, 1].
        ood: ``(N,)`` bool OOD flag (None: the confidence rule alone).

    Returns:
        ``{"target", "min_confidence", "reached", "note", **flagged_shares}`` at that T.
        ``min_confidence`` is None when no T is needed (no error, or the OOD flag alone
        reaches the target); ``reached`` is False when even T = 1 does not (errors at a
        confidence of exactly 1).
    """
    import numpy as np

    if not 0.0 < target <= 1.0:
        raise ValueError(f"the target share of errors must be in (0, 1], got {target}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    errors = ~correct
    always = np.zeros_like(correct) if ood is None else np.asarray(ood, dtype=bool)
    need = math.ceil(target * int(errors.sum()) - 1e-9)
    already = int((always & errors).sum())
    # a NaN confidence is below no threshold: no T flags it
    rest = np.sort(confidence[errors & ~always & ~np.isnan(confidence)])
    if need == 0 or already >= need:
        t, note = None, "no errors here" if need == 0 else "the OOD flag alone reaches it"
    elif need - already > rest.size:
        t, note = 1.0, "errors at a NaN confidence cannot be flagged by T"
    else:
        c = float(rest[need - already - 1])  # the confidence of the last error to catch
        t = round((math.floor(c / STEP) + 1) * STEP, 6)
        if t <= c:  # c a multiple of STEP that c / STEP rounded just below
            t = round(t + STEP, 6)
        t = min(1.0, t)
        note = "" if c < t else "errors at a confidence of 1 cannot be flagged by T"
    flag = always if t is None else _flags(confidence, t, always)
    shares = flagged_shares(flag, correct)
    reached = shares["errors_flagged"] is None or shares["errors_flagged"] >= target - 1e-12
    return {
        "target": float(target),
        "min_confidence": t,
        "reached": bool(reached),
        "note": note,
        **shares,
    }


def spread(
    confidence: np.ndarray,
    correct: np.ndarray,
    cells: list[str | None],
    target: float = DEFAULT_TARGET,
    ood: np.ndarray | None = None,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any] | None:
    """How far T placed on these cells moves when other cells of the lab are drawn.

    The cells are resampled with replacement ``resamples`` times, and T is placed on each
    resample as :func:`place` places it (0 where no T is needed, 1 where none reaches the
    target). An image without a cell counts as a cell of its own.

    Args:
        confidence, correct, target, ood: as for :func:`place`.
        cells: N cell ids (``data.cell_key``), None for a crop without a cell.
        resamples: B, the number of resamples.
        level: the share of resamples the ``upper`` T meets the target on, in (0, 1).
        seed: the resampling's seed.

    Returns:
        ``{"cells", "resamples", "level", "low", "median", "upper", "unreached",
        "at_upper"}``: the ``1 - level`` quantile, median and ``level`` quantile of the
        placed T (multiples of :data:`STEP`), the share of resamples on which no T reaches
        the target (errors at a confidence of 1), and :func:`flagged_shares` at ``upper``
        on these images. None with fewer than 2 cells or no error (nothing to resample).
    """
    import numpy as np

    if not 0.0 < level < 1.0:
        raise ValueError(f"the level must be in (0, 1), got {level}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    always = np.zeros_like(correct) if ood is None else np.asarray(ood, dtype=bool)
    if len(cells) != correct.size:
        raise ValueError(f"expected {correct.size} cell ids, got {len(cells)}")
    keys = [f"cell:{c}" if c is not None else f"image:{i}" for i, c in enumerate(cells)]
    names, index = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    if names.size < 2 or correct.all():
        return None
    # the images of cell k are order[start[k] : start[k] + size[k]]
    order = np.argsort(index, kind="stable")
    size = np.bincount(index)
    start = np.cumsum(size) - size
    rng = np.random.default_rng(seed)
    placed = np.empty(resamples)
    unreached = 0
    for b in range(resamples):
        drawn = rng.integers(0, names.size, names.size)
        lengths = size[drawn]
        offset = np.repeat(start[drawn] - (np.cumsum(lengths) - lengths), lengths)
        rows = order[offset + np.arange(lengths.sum())]
        got = place(confidence[rows], correct[rows], target, always[rows])
        t = got["min_confidence"]
        unreached += not got["reached"]
        placed[b] = 1.0 if not got["reached"] else (0.0 if t is None else t)
    low, median, upper = (
        float(np.quantile(placed, q, method=m))
        for q, m in ((1.0 - level, "lower"), (0.5, "nearest"), (level, "higher"))
    )
    return {
        "cells": int(names.size),
        "resamples": int(resamples),
        "level": float(level),
        "low": low,
        "median": median,
        "upper": upper,
        "unreached": unreached / resamples,
        "at_upper": flagged_shares(_flags(confidence, upper, always), correct),
    }


def suggest(placement: dict[str, Any]) -> tuple[float | None, str]:
    """The T to write into a bundle from a placement on a val part, and which one it is.

    Args:
        placement: ``evaluate.review_threshold``'s record (``"placed"``, ``"spread"``).

    Returns:
        ``(T, "upper")``: :func:`spread`'s upper bound, when it is a bound (no more than
        ``1 - level`` of the resamples left the target unreached) and above the placed T,
        the safer value for cells the val part does not hold (docs/RESULTS.md, round 9);
        ``(T, "placed")``: the placed T; ``(None, why)``: no T needed, or none reaches the
        target (errors at a confidence of 1).
    """
    placed = placement["placed"]
    t = placed["min_confidence"]
    if t is None:
        return None, f"no threshold needed ({placed['note']})"
    if not placed["reached"]:
        return None, f"no threshold reaches the target ({placed['note']})"
    moved = placement.get("spread")
    if moved and moved["unreached"] <= 1.0 - moved["level"] and moved["upper"] > t:
        return float(moved["upper"]), "upper"
    return float(t), "placed"
