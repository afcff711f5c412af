"""When a call needs a cytogeneticist's eye: the review flag and its reasons.

Thresholds come from the bundle manifest (``review``); defaults
(:data:`~edge_iapp.export.bundle.DEFAULT_REVIEW`):

* ``min_confidence`` 0.9: the fused probability of the call is below it ->
  ``"low_confidence"``.
* ``min_branch_agreement`` 2: fewer than this many of the three branches vote for
  the fused class -> ``"branch_disagreement"``.
* ``flag_fallbacks`` true: an empty object or part mask made the pipeline fall back
  -> ``"object_fallback"`` / ``"part_fallback"``; in the cell-relative size mode an
  image without a usable cell (``ChromosomeResult.size_fallback``) -> ``"size_fallback"``.
* ``ood``: the training run's OOD calibration (``edge_iapp/ood.py``, copied from
  ``RUN/ood.json`` at export); the image's OOD score (the mean branch energy, or the
  ``energy+mahalanobis`` score the record defines) is above its ``threshold`` (or not
  finite) -> ``"out_of_distribution"``. Absent (older bundles, runs without a val
  part): no OOD check.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..export.bundle import DEFAULT_REVIEW
from ..ood import check_calibration, is_ood


@dataclass(frozen=True)
class ReviewPolicy:
    """Review-flag thresholds (see module docstring)."""

    min_confidence: float = DEFAULT_REVIEW["min_confidence"]
    min_branch_agreement: int = DEFAULT_REVIEW["min_branch_agreement"]
    flag_fallbacks: bool = DEFAULT_REVIEW["flag_fallbacks"]
    ood: dict[str, Any] | None = field(default=None, hash=False, compare=True)

    def __post_init__(self) -> None:
        if self.ood is not None:
            check_calibration(self.ood)  # a broken record is refused, not ignored

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ReviewPolicy:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def reasons(
        self,
        confidence: float,
        branch_votes: int,
        object_fallback: bool,
        part_fallback: bool,
        ood_score: float | None = None,
        size_fallback: bool = False,
    ) -> list[str]:
        """Reasons to review one call (empty: no review needed).

        Args:
            confidence: fused probability of the predicted class.
            branch_votes: how many branches' own argmax equals the fused class.
            object_fallback, part_fallback: the empty-mask fall-backs of that image.
            ood_score: the image's OOD score (:func:`edge_iapp.ood.ood_scores`).
            size_fallback: cell size mode, the image had no usable cell.
        """
        out = []
        if confidence < self.min_confidence:
            out.append("low_confidence")
        if branch_votes < self.min_branch_agreement:
            out.append("branch_disagreement")
        if self.flag_fallbacks and object_fallback:
            out.append("object_fallback")
        if self.flag_fallbacks and part_fallback:
            out.append("part_fallback")
        if self.flag_fallbacks and size_fallback:
            out.append("size_fallback")
        if self.ood and ood_score is not None and bool(is_ood(np.array([ood_score]), self.ood)[0]):
            out.append("out_of_distribution")
        return out
