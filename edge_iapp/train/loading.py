"""From a data folder and a split file to the samples of each part, with clear refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..classes import CLASS_NAMES


class DataProblem(ValueError):
    """The data folder or split cannot be used for training/evaluation (message says why)."""


@dataclass
class SplitSamples:
    """Samples of each split part, and what was left out on the way.

    Attributes:
        parts: ``{"train", "val", "test"}`` -> list of ``Sample``.
        skipped: ``(path, reason)`` from the folder scan (unreadable, unlabelled).
        unassigned: samples whose group the split does not name.
        split: the split record (dict, as in the split file).
    """

    parts: dict[str, list]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unassigned: int = 0
    split: dict = field(default_factory=dict)


def load_parts(
    data: str | Path, split_path: str | Path, allow_missing: bool = False
) -> SplitSamples:
    """Scan ``data``, read ``split_path``, sort the samples into train/val/test.

    Raises:
        DataProblem: no such folder, no labelled images, unreadable split, or a split
            that names groups the folder lacks.
    """
    from ..data.dataset import no_images_reason
    from ..data.split import SplitError, apply_split, load_split, scan_for_split

    data = Path(data)
    if not data.is_dir():
        raise DataProblem(f"data folder {data} does not exist or is not a folder")
    try:
        split = load_split(split_path)
    except SplitError as exc:  # its messages start with the file's path
        raise DataProblem(str(exc)) from None
    scan = scan_for_split(data, split)
    skipped = [(str(p), r) for p, r in scan.skipped]
    if not scan.samples:
        raise DataProblem(no_images_reason(scan))
    try:
        parts = apply_split(scan.samples, split, allow_missing=allow_missing)
    except SplitError as exc:
        raise DataProblem(f"split {split_path}: {exc}") from None
    unassigned = parts.pop("unassigned", [])
    return SplitSamples(parts=parts, skipped=skipped, unassigned=len(unassigned), split=split)


def check_training_classes(labels) -> list[str]:
    """Refuse a training set with fewer than two classes; return the missing class names.

    Raises:
        DataProblem: no images, or a single class.
    """
    seen = sorted(set(int(x) for x in labels))
    if not seen:
        raise DataProblem(
            "the training part is empty: the split puts no readable images in 'train'"
        )
    if len(seen) == 1:
        raise DataProblem(
            f"the training part has a single class ({CLASS_NAMES[seen[0]]}); a classifier "
            "needs images of at least two classes"
        )
    return [c for i, c in enumerate(CLASS_NAMES) if i not in seen]
