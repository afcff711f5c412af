"""When a call needs a cytogeneticist's eye: the review flag and its reasons.

Thresholds come from the bundle manifest (``review``); defaults
(:data:`~edge_iapp.export.bundle.DEFAULT_REVIEW`):

* ``min_confidence`` 0.9: the fused probability of the call is below it ->
  ``"low_confidence"``.
* ``min_branch_agreement`` 2: fewer than this many of the three branches vote for
  the fused class -> ``"branch_disagreement"``.
* ``flag_fallbacks`` true: an empty object or part mask made the pipeline fall back
  -> ``"object_fallback"`` / ``"part_fallback"``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..export.bundle import DEFAULT_REVIEW


@dataclass(frozen=True)
class ReviewPolicy:
    """Review-flag thresholds (see module docstring)."""

    min_confidence: float = DEFAULT_REVIEW["min_confidence"]
    min_branch_agreement: int = DEFAULT_REVIEW["min_branch_agreement"]
    flag_fallbacks: bool = DEFAULT_REVIEW["flag_fallbacks"]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ReviewPolicy:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def reasons(
        self, confidence: float, branch_votes: int, object_fallback: bool, part_fallback: bool
    ) -> list[str]:
        """Reasons to review one call (empty: no review needed).

        Args:
            confidence: fused probability of the predicted class.
            branch_votes: how many branches' own argmax equals the fused class.
            object_fallback, part_fallback: the empty-mask fall-backs of that image.
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
        return out
