"""What the runtime returns for one chromosome."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class ChromosomeResult:
    """The call for one chromosome image.

    Attributes:
        class_name: predicted class (``"1"``..``"22"``, ``"X"``, ``"Y"``), or None when
            the input could not be classified (see ``error``).
        class_index: 0..23, or -1.
        confidence: fused probability of the predicted class, 0..1.
        probabilities: ``(24,)`` fused class probabilities (softmax of the fused logits).
        lambdas: per-branch confidence weights (eq. 16), e.g. ``{"global": 0.98, ...}``.
        branch_classes: per-branch argmax class names.
        review: True when a person should check this call.
        review_reasons: why (``"low_confidence"``, ``"branch_disagreement"``,
            ``"object_fallback"``, ``"out_of_distribution"``, ``"unreadable"``...).
        inverted: the image was bright-on-dark and was inverted.
        shrunk: the crop was larger than the canvas and was shrunk.
        object_fallback, part_fallback: an empty mask made that stage use the
            previous image.
        ood_score: out-of-distribution score, as the bundle's calibration defines it
            (``edge_iapp/ood.py``; higher = less like the training lab); None when no
            call was made.
        size_fallback: cell-relative size mode only: the image had no usable cell
            (no cell ID, or too few measured chromosomes in it), so the training
            set's reference length (or, unknown, its own size) was used.
        backend, precision: what actually ran (e.g. ``"onnxruntime"``, ``"int8"``).
        error: why the image gave no call (None when it did).
    """

    class_name: str | None
    class_index: int
    confidence: float
    probabilities: np.ndarray
    lambdas: dict[str, float] = field(default_factory=dict)
    branch_classes: dict[str, str] = field(default_factory=dict)
    review: bool = False
    review_reasons: list[str] = field(default_factory=list)
    inverted: bool = False
    shrunk: bool = False
    object_fallback: bool = False
    part_fallback: bool = False
    ood_score: float | None = None
    size_fallback: bool = False
    backend: str = ""
    precision: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["probabilities"] = [float(p) for p in self.probabilities]
        return data
