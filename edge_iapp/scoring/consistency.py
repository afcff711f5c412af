"""Karyotype-level consistency: re-assign low-confidence calls under per-cell constraints.

Beyond the paper. A normal cell has two of each autosome and XX or XY. Calls whose
fused confidence is at least ``threshold`` are kept; the others are re-assigned by a
minimum-cost assignment (Hungarian algorithm) of objects to class *slots*:

- each class has ``capacity`` free slots (2 per autosome; X/Y per sex hypothesis),
  minus the slots already taken by confident calls;
- every class also has extra slots that cost ``penalty`` more, so an aneuploid cell
  (three 21s) is not forced to look normal: a call keeps an over-full class when its
  probability is more than ``exp(penalty)`` times that of the best free alternative;
- the cost of putting object ``i`` in class ``c`` is ``-log p[i, c]`` (fused probabilities).

Both sex hypotheses (XX, XY) are solved and the cheaper one is kept (confident calls
beyond a hypothesis' capacity also pay ``penalty``). The result is reported beside the
plain per-chromosome calls, never instead of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..classes import CLASS_NAMES, NUM_CLASSES
from . import PENALTY, THRESHOLD

_X = CLASS_NAMES.index("X")
_Y = CLASS_NAMES.index("Y")
_EPS = 1e-12


@dataclass
class ConsistencyResult:
    """Consistency-adjusted calls for one cell.

    Attributes:
        class_indices: ``(N,)`` adjusted class index per object (network order).
        changed: ``(N,)`` bool, True where the adjusted class differs from the argmax.
        sex_hypothesis: ``"XX"`` or ``"XY"``, the capacity model that was cheaper.
        cost: total cost of the chosen assignment (for diagnostics).
    """

    class_indices: np.ndarray
    changed: np.ndarray
    sex_hypothesis: str
    cost: float

    @property
    def class_names(self) -> list[str]:
        return [CLASS_NAMES[i] for i in self.class_indices]


def capacities(sex: str) -> np.ndarray:
    """``(24,)`` normal copy numbers under sex hypothesis ``"XX"`` or ``"XY"``."""
    cap = np.full(NUM_CLASSES, 2, dtype=np.int64)
    if sex == "XX":
        cap[_X], cap[_Y] = 2, 0
    elif sex == "XY":
        cap[_X], cap[_Y] = 1, 1
    else:
        raise ValueError(f"sex hypothesis must be 'XX' or 'XY', got {sex!r}")
    return cap


def reassign(
    probabilities: np.ndarray,
    threshold: float = THRESHOLD,
    penalty: float = PENALTY,
) -> ConsistencyResult:
    """Re-assign the low-confidence calls of one cell.

    Args:
        probabilities: ``(N, 24)`` fused class probabilities, one row per classified object.
        threshold: calls with ``max(p) >= threshold`` are never changed.
        penalty: extra cost (natural-log units) of a copy beyond the normal number.

    Returns:
        :class:`ConsistencyResult` for the N objects.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected (N, {NUM_CLASSES}) probabilities, got shape {p.shape}")
    argmax = p.argmax(axis=1) if len(p) else np.zeros(0, dtype=np.int64)
    if not len(p):
        return ConsistencyResult(argmax, np.zeros(0, dtype=bool), "XY", 0.0)
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    cost = -np.log(np.clip(p, _EPS, 1.0))
    low = p.max(axis=1) < threshold
    best: tuple[float, str, np.ndarray] | None = None
    for sex in ("XY", "XX"):  # fixed order: ties keep XY
        total, classes = _solve(cost, argmax, low, capacities(sex), penalty)
        if best is None or total < best[0] - 1e-9:
            best = (total, sex, classes)
    assert best is not None
    total, sex, classes = best
    return ConsistencyResult(classes, classes != argmax, sex, float(total))


def reassign_cells(
    probabilities: np.ndarray,
    cells: list[str | None],
    threshold: float = THRESHOLD,
    penalty: float = PENALTY,
) -> np.ndarray:
    """:func:`reassign` on each cell of a set of objects from many cells.

    Args:
        probabilities: ``(N, 24)`` fused class probabilities.
        cells: N cell ids; objects with ``None`` (no cell) keep their argmax.
        threshold, penalty: as :func:`reassign`.

    Returns:
        ``(N,)`` int64 class index per object.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES or len(cells) != len(p):
        raise ValueError(
            f"expected ({len(cells)}, {NUM_CLASSES}) probabilities for {len(cells)} cell ids, "
            f"got shape {p.shape}"
        )
    classes = p.argmax(axis=1).astype(np.int64) if len(p) else np.zeros(0, np.int64)
    by_cell: dict[str, list[int]] = {}
    for i, cell in enumerate(cells):
        if cell is not None:
            by_cell.setdefault(str(cell), []).append(i)
    for rows in by_cell.values():
        classes[rows] = reassign(p[rows], threshold, penalty).class_indices
    return classes


def _solve(
    cost: np.ndarray, argmax: np.ndarray, low: np.ndarray, cap: np.ndarray, penalty: float
) -> tuple[float, np.ndarray]:
    fixed = np.bincount(argmax[~low], minlength=NUM_CLASSES)
    overflow = np.maximum(fixed - cap, 0).sum()
    classes = argmax.copy()
    total = float(cost[~low, argmax[~low]].sum() + penalty * overflow)
    rows = np.flatnonzero(low)
    if not len(rows):
        return total, classes
    free = np.maximum(cap - fixed, 0)
    # Columns: the free slots of every class, then len(rows) extra slots per class.
    slot_class = np.concatenate(
        [np.repeat(np.arange(NUM_CLASSES), free), np.repeat(np.arange(NUM_CLASSES), len(rows))]
    )
    slot_extra = np.concatenate([np.zeros(free.sum()), np.full(NUM_CLASSES * len(rows), penalty)])
    matrix = cost[rows][:, slot_class] + slot_extra[None, :]
    cols = solve_assignment(matrix)
    classes[rows] = slot_class[cols]
    total += float(matrix[np.arange(len(rows)), cols].sum())
    return total, classes


SMALL_PROBLEM = 16
"""Rows up to which :func:`hungarian` is used even when SciPy is installed."""


def solve_assignment(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment: :func:`hungarian` for few rows, else SciPy's C solver.

    Both are exact; the total cost is the same (tied optima may pick different columns).
    A trained model leaves a few low-confidence calls per cell, where the NumPy solver
    takes about a millisecond and importing ``scipy.optimize`` (~1.5 s) would cost more;
    with many rows (46 x 1150 when every call is doubtful) SciPy is ~100x faster.
    """
    if cost.shape[0] <= SMALL_PROBLEM:
        return hungarian(cost)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # the runtime does not require SciPy
        return hungarian(cost)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(cost.shape[0], dtype=np.int64)
    out[rows] = cols
    return out


def hungarian(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of every row to a distinct column.

    The O(n^2 m) shortest-augmenting-path Hungarian algorithm with potentials
    (rows <= columns), vectorised over columns: the fallback when SciPy is missing.

    Args:
        cost: ``(n, m)`` finite costs, ``n <= m``.

    Returns:
        ``(n,)`` column index assigned to each row.
    """
    a = np.asarray(cost, dtype=np.float64)
    n, m = a.shape
    if n > m:
        raise ValueError(f"need at least as many columns as rows, got {a.shape}")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = a[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            masked = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(masked)) + 1
            delta = masked[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    out = np.empty(n, dtype=np.int64)
    cols = np.flatnonzero(p[1:]) + 1
    out[p[cols] - 1] = cols - 1
    return out
