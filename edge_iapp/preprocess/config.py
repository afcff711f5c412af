"""Preprocessing parameters: one frozen record shared by training, export and every runtime."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

ThresholdMode = Literal["paper", "foreground"]
THRESHOLD_MODES: tuple[str, ...] = ("paper", "foreground")
SizeMode = Literal["absolute", "cell"]
SIZE_MODES: tuple[str, ...] = ("absolute", "cell")

BACKGROUND = 255
"""Background grey level after polarity normalisation (dark chromosome on white)."""

UPPER_LIMIT = 254
"""Eq. 3's upper limit: pixels at or above it are background."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How one chromosome image becomes the three network inputs.

    Attributes:
        canvas: side, in source pixels, of the square background canvas the crop is
            pasted into (NOTES.md section 1). Crops larger than it are shrunk to fit.
        input_size: side of every network input (global, object and part images).
        threshold: reading of eq. 3. ``"paper"`` keeps ``P_ave < p < 254`` as printed;
            ``"foreground"`` keeps ``p <= P_ave and p < 254`` (the dark chromosome).
        morph_kernel: side of the square structuring element of the opening (erosion
            then dilation) applied to the object mask; odd, 1 disables it.
        object_margin: pixels (at input resolution) added around the object box.
        normalize_background: scale grey levels so the crop's own background level
            (border median) maps to 255, so that eq. 3's ``p < 254`` means "not background"
            on crops whose background is grey (gband612's is about 243).
        size_mode: ``"absolute"`` (the paper: crops keep their pixel size) or
            ``"cell"``: each crop is resized so that its cell's median chromosome
            length becomes ``cell_length`` (see ``size_reference``).
        cell_length: cell mode: canvas (source) pixels of the cell's median chromosome
            length; chromosome 1 is about 1.9x the median, so 72 still fits a 176 canvas.
        reference_length: the training set's median chromosome length in source pixels,
            set at training time; the fall-back for crops without a usable cell.
            0 means unknown (those crops keep their size).
        min_cell_chromosomes: cell mode: a cell with fewer measured chromosomes uses
            the fall-back.
    """

    canvas: int = 176
    input_size: int = 128
    threshold: ThresholdMode = "foreground"
    morph_kernel: int = 3
    object_margin: int = 2
    normalize_background: bool = True
    size_mode: SizeMode = "absolute"
    cell_length: int = 72
    reference_length: float = 0.0
    min_cell_chromosomes: int = 10

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_MODES:
            raise ValueError(f"threshold must be one of {THRESHOLD_MODES}, got {self.threshold!r}")
        if self.morph_kernel < 1 or self.morph_kernel % 2 == 0:
            raise ValueError(f"morph_kernel must be an odd number >= 1, got {self.morph_kernel}")
        if self.input_size < 16 or self.canvas < 16:
            raise ValueError(
                f"input_size and canvas must be >= 16, got {self.input_size} and {self.canvas}"
            )
        if self.object_margin < 0:
            raise ValueError(f"object_margin must be >= 0, got {self.object_margin}")
        if self.size_mode not in SIZE_MODES:
            raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {self.size_mode!r}")
        if self.cell_length < 8 or (self.size_mode == "cell" and self.cell_length > self.canvas):
            raise ValueError(
                f"cell_length must be between 8 and the canvas ({self.canvas}) source px, "
                f"got {self.cell_length}"
            )
        if not (math.isfinite(self.reference_length) and self.reference_length >= 0):
            raise ValueError(
                "reference_length must be a finite number >= 0 (0 = unknown), "
                f"got {self.reference_length}"
            )
        if self.min_cell_chromosomes < 1:
            raise ValueError(f"min_cell_chromosomes must be >= 1, got {self.min_cell_chromosomes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build from a manifest entry; unknown keys are an error (a newer bundle)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown preprocessing parameters {sorted(unknown)}; "
                f"this edge-iapp knows {sorted(known)}"
            )
        return cls(**data)
