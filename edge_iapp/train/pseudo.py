"""Pseudo-labels for a new lab's unlabelled cells, made consistent per cell.

Beyond the paper. After fine-tuning on K labelled cells (:mod:`edge_iapp.train.finetune`),
the model's fused probabilities on M unlabelled cells of the same lab are turned into
labels, and the model is fine-tuned again on the K + M cells. Each cell's labels go
through the karyotype-level consistency step (:func:`edge_iapp.scoring.consistency.reassign`:
two of each autosome, XX or XY, a penalty for extra copies), which corrects a share of
the plain calls because a cell's chromosomes compete for the same classes. Crops without
a cell keep their plain call. Nothing here reads a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PseudoLabels:
    """Labels for N unlabelled images.

    Attributes:
        labels: ``(N,)`` int64 class index per image (the consistent call where it had a
            cell, else the plain call).
        plain: ``(N,)`` int64 argmax of the fused probabilities.
        confidence: ``(N,)`` float fused probability of ``labels``.
        cells: number of cells the consistency step ran on.
        without_cell: images that had no cell (plain calls kept).
    """

    labels: np.ndarray
    plain: np.ndarray
    confidence: np.ndarray
    cells: int
    without_cell: int

    def summary(self) -> dict[str, Any]:
        """Counts for ``finetune.json``."""
        return {
            "images": int(self.labels.size),
            "cells": self.cells,
            "without_cell": self.without_cell,
            "changed_by_consistency": int((self.labels != self.plain).sum()),
            "mean_confidence": float(self.confidence.mean()) if self.labels.size else None,
        }


def pseudo_labels(
    probabilities: np.ndarray,
    cells: list[str | None],
    *,
    consistency: bool = True,
    threshold: float | None = None,
    penalty: float | None = None,
) -> PseudoLabels:
    """Labels for unlabelled images from their fused probabilities, per cell.

    Args:
        probabilities: ``(N, 24)`` fused class probabilities.
        cells: N cell ids (``data.cell_key``), None for a crop without a cell.
        consistency: run the karyotype-level consistency step on each cell; False keeps
            the plain calls.
        threshold, penalty: the consistency step's settings (None: ``score``'s defaults).

    Returns:
        :class:`PseudoLabels`.

    Raises:
        ValueError: shapes disagree, or the probabilities are not finite.
    """
    from ..scoring.consistency import PENALTY, THRESHOLD, reassign_cells

    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(cells) != len(p):
        raise ValueError(f"expected (N, 24) probabilities for {len(cells)} cells, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    plain = p.argmax(axis=1) if len(p) else np.zeros(0, np.int64)
    if consistency:
        threshold = THRESHOLD if threshold is None else threshold
        labels = reassign_cells(p, cells, threshold, PENALTY if penalty is None else penalty)
    else:
        labels = plain.copy()
    has_cell = np.array([c is not None for c in cells], dtype=bool)
    names = {str(c) for c in cells if c is not None}
    return PseudoLabels(
        labels=labels.astype(np.int64),
        plain=plain.astype(np.int64),
        confidence=p[np.arange(len(p)), labels] if len(p) else np.zeros(0),
        cells=len(names) if consistency else 0,
        without_cell=int((~has_cell).sum()),
    )
