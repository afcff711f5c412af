"""Cut labelled single-chromosome crops out of karyogram images (paper Section 2).

In a karyogram every class sits at a fixed position, so a *layout* of class positions
turns segmentation into labelling: the image is segmented once (binarise, open/close,
connected components: :mod:`edge_iapp.scoring.segment`) and each component goes to the
class whose box contains the centre of the component's bounding box. Components in no
box (titles, class numbers, group letters) are ignored, and so are components in a box
smaller than 0.15 x the median in-box area (review marks, stray labels); components that look like
several chromosomes touching are listed, not written.

Layout file (JSON)::

    {
      "format": "edge-iapp-karyogram-layout/1",
      "description": "free text: which software/template the karyograms come from",
      "image_size": [1070, 930],
      "slots": {"1": [x, y, w, h], "2": [...], ..., "X": [...], "Y": [...]}
    }

- ``image_size`` is ``[width, height]`` of the karyograms the boxes were measured on;
  a karyogram of another size has its boxes scaled by ``width``/``height`` ratios.
- ``slots`` maps class names (``1``..``22``, ``X``, ``Y``; ``23``/``24`` accepted) to
  boxes ``[x, y, w, h]`` in pixels: left, top, width, height. A box should hold the
  class's chromosomes and exclude its printed class number. Classes may be left out.
- Optional ``"segment"``: overrides of :class:`SegmentConfig` fields (e.g. ``"threshold"``).
  The default differs from spreads in one field: ``cluster_area_factor`` is 4.0, because a
  karyogram shows chromosome 1 at its full size beside small G-group chromosomes, so the
  largest single chromosomes reach ~3x the median area there.

Output: ``OUT/<class>/clase<N>_<k>_<stem>.png`` (``N`` = 1..24 with X = 23, Y = 24; ``k``
the copy index left to right; ``stem`` the karyogram's file stem, so a stem such as
``97002023.12`` keeps case and cell for group-aware splits), and
``OUT/from_karyograms.csv`` listing every crop, cluster and warning.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import CLASS_NAMES, canonical_class
from ..data.imread import ImageReadError, read_image
from ..ioutil import atomic_write_bytes, atomic_write_text
from .karyogram import KaryogramLayout, encode_png
from .segment import SegmentConfig, cluster_reasons, segment

LAYOUT_FORMAT = "edge-iapp-karyogram-layout/1"
KARYOGRAM_SEGMENT = {"cluster_area_factor": 4.0}
MIN_SLOT_FRACTION = 0.15
"""In-slot objects smaller than this fraction of the in-slot median area are marks, not
chromosomes."""
"""Segmentation defaults for karyograms (layout ``segment`` entries override them)."""
MANIFEST = "from_karyograms.csv"
MANIFEST_COLUMNS = ["karyogram", "class", "file", "bbox", "area", "status", "note"]


class LayoutError(ValueError):
    """The layout file is missing, not JSON, or does not follow the format."""


@dataclass
class KaryogramLayoutSpec:
    """A parsed layout file.

    Attributes:
        image_size: ``(width, height)`` the boxes refer to.
        slots: ``{class: (x, y, w, h)}``.
        segment: segmentation parameters.
        description: free text.
    """

    image_size: tuple[int, int]
    slots: dict[str, tuple[int, int, int, int]]
    segment: SegmentConfig = field(default_factory=lambda: SegmentConfig(**KARYOGRAM_SEGMENT))
    description: str = ""

    def to_json(self) -> str:
        """The layout file text (one slot per line)."""
        items = self.slots.items()
        slots = ",\n".join(f"  {json.dumps(n)}: {json.dumps(list(b))}" for n, b in items)
        return (
            "{\n"
            f' "format": {json.dumps(LAYOUT_FORMAT)},\n'
            f' "description": {json.dumps(self.description)},\n'
            f' "image_size": {json.dumps(list(self.image_size))},\n'
            f' "slots": {{\n{slots}\n }}\n'
            "}\n"
        )


def load_layout(path: str | Path) -> KaryogramLayoutSpec:
    """Read and check a layout file.

    Raises:
        LayoutError: with a message saying what is wrong.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LayoutError(f"layout file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise LayoutError(f"layout file {path} is not readable JSON: {exc}") from None
    return parse_layout(data, str(path))


def parse_layout(data: Any, source: str = "layout") -> KaryogramLayoutSpec:
    """Check a layout dictionary (see the module docstring)."""
    if not isinstance(data, dict) or data.get("format") != LAYOUT_FORMAT:
        raise LayoutError(f'{source}: expected a JSON object with "format": "{LAYOUT_FORMAT}"')
    size = data.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_pos_int(v) for v in size)):
        raise LayoutError(f"{source}: image_size must be [width, height] in pixels, got {size!r}")
    raw = data.get("slots")
    if not isinstance(raw, dict) or not raw:
        raise LayoutError(f"{source}: slots must map class names to [x, y, w, h] boxes")
    slots: dict[str, tuple[int, int, int, int]] = {}
    for key, box in raw.items():
        try:
            name = canonical_class(str(key))
        except ValueError as exc:
            raise LayoutError(f"{source}: {exc}") from None
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, int) for v in box)
            and box[2] > 0
            and box[3] > 0
        ):
            raise LayoutError(f"{source}: slot {key!r} must be [x, y, w, h] integers, got {box!r}")
        if name in slots:
            raise LayoutError(f"{source}: class {name} has two slots")
        slots[name] = (box[0], box[1], box[2], box[3])
    overrides = data.get("segment", {}) or {}
    known = {f.name for f in fields(SegmentConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise LayoutError(
            f"{source}: unknown segment options {sorted(unknown)}; known: {sorted(known)}"
        )
    return KaryogramLayoutSpec(
        image_size=(int(size[0]), int(size[1])),
        slots=slots,
        segment=SegmentConfig(**{**KARYOGRAM_SEGMENT, **overrides}),
        description=str(data.get("description", "")),
    )


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and v > 0


def layout_of_renderer(layout: KaryogramLayout | None = None) -> KaryogramLayoutSpec:
    """The layout of the karyograms ``edge-iapp score`` draws (the shipped example)."""
    layout = layout or KaryogramLayout()
    return KaryogramLayoutSpec(
        image_size=layout.size,
        slots=layout.slot_boxes(),
        description="karyogram.png written by `edge-iapp score` (KaryogramLayout defaults)",
    )


@dataclass
class CutStats:
    """Totals of one :func:`cut_karyograms` run."""

    karyograms: int = 0
    crops: int = 0
    clusters: int = 0
    errors: int = 0
    warnings: int = 0
    per_class: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CLASS_NAMES})


def file_number(name: str) -> int:
    """``clase<N>`` number of a class: 1..22, X = 23, Y = 24."""
    return CLASS_NAMES.index(name) + 1


def cut_karyograms(
    karyograms: str | Path, spec: KaryogramLayoutSpec, out: str | Path, max_side: int = 16384
) -> CutStats:
    """Cut every karyogram under ``karyograms`` into labelled crops.

    Args:
        karyograms: a karyogram image file, or a folder of them (not recursive).
        spec: the layout.
        out: output folder (class sub-folders and the manifest CSV).
        max_side: refuse larger images (pixels, either side).

    Returns:
        :class:`CutStats`. Unreadable files are listed in the manifest, never fatal.
    """
    src = Path(karyograms)
    files = (
        [src]
        if src.is_file()
        else sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    )
    out = Path(out)
    stats = CutStats()
    rows: list[list[Any]] = []
    for path in files:
        try:
            image = read_image(path, max_side=max_side)
        except ImageReadError as exc:
            stats.errors += 1
            rows.append([path.name, "", "", "", "", "error", exc.reason])
            continue
        stats.karyograms += 1
        rows += _cut_one(path, image.pixels, spec, out, stats)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(out / MANIFEST, buf.getvalue())
    return stats


def _slot_note(name: str, written: int, found: bool) -> str:
    """Why a slot of class ``name`` with ``written`` crops needs a look ("" when it does not)."""
    if not found:
        return "no chromosome in this slot"
    if written == 1 and name in CLASS_NAMES[:22]:
        return (
            "1 chromosome cut from this slot (a missing homologue, a cluster, or two "
            "touching homologues cut as one crop: check it)"
        )
    if written > 2 and name != "X":
        return f"{written} objects in this slot (pieces of one chromosome, or an extra copy)"
    return ""


def _cut_one(path: Path, pixels, spec: KaryogramLayoutSpec, out: Path, stats: CutStats):
    h_img, w_img = pixels.shape
    sx, sy = w_img / spec.image_size[0], h_img / spec.image_size[1]
    boxes = {
        name: (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        for name, (x, y, w, h) in spec.slots.items()
    }
    seg = segment(pixels, spec.segment)
    found: dict[str, list] = {name: [] for name in boxes}
    for obj in seg.objects:
        x, y, w, h = obj.bbox
        cx, cy = x + w / 2, y + h / 2
        for name, (x0, y0, x1, y1) in boxes.items():
            if x0 <= cx < x1 and y0 <= cy < y1:
                found[name].append(obj)
                break
    # Cluster rules against the chromosomes in slots only: printed labels and titles
    # (many small components) would drag the whole-image median down.
    in_slots = [o for objs in found.values() for o in objs]
    median = float(np.median([o.area for o in in_slots])) if in_slots else 0.0
    # Marks drawn inside slots (review "?" glyphs, small labels) are far smaller than the
    # smallest chromosome (~0.25x the median in a karyogram).
    floor = MIN_SLOT_FRACTION * median
    found = {name: [o for o in objs if o.area >= floor] for name, objs in found.items()}
    in_slots = [o for objs in found.values() for o in objs]
    use_area = len(in_slots) >= spec.segment.min_objects_for_area
    for obj in in_slots:
        obj.cluster_reasons = cluster_reasons(
            obj.area, obj.concavities, median, use_area, spec.segment
        )
        obj.cluster = bool(obj.cluster_reasons)
    rows: list[list[Any]] = []
    for name in (c for c in CLASS_NAMES if c in found):
        objs = sorted(found[name], key=lambda o: (o.bbox[0], o.bbox[1]))
        k = 0
        for obj in objs:
            bbox = " ".join(str(v) for v in obj.bbox)
            if obj.cluster:
                stats.clusters += 1
                note = "touching chromosomes (" + ";".join(obj.cluster_reasons) + "); not written"
                rows.append([path.name, name, "", bbox, obj.area, "cluster", note])
                continue
            rel = f"{name}/clase{file_number(name)}_{k}_{path.stem}.png"
            atomic_write_bytes(out / rel, encode_png(obj.crop))
            k += 1
            stats.crops += 1
            stats.per_class[name] += 1
            rows.append([path.name, name, rel, bbox, obj.area, "ok", ""])
        note = _slot_note(name, k, bool(objs))
        if note:
            stats.warnings += 1
            rows.append([path.name, name, "", "", "", "warning", note])
    return rows
