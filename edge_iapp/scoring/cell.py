"""Score one cell folder: read, (segment), classify, check consistency, write results.

A cell folder holds either single-chromosome crops (two or more files) or exactly one
whole image (a metaphase spread or a karyogram), which is segmented first
(:mod:`edge_iapp.scoring.segment`). Outputs are written atomically; ``summary.json``
is written last, so a cell with a summary is complete.

Every file or object that gives no call is listed in the summary's ``errors`` and
in the predictions CSV (kind ``unreadable`` or ``cluster``); nothing stops the cell.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..data.imread import DEFAULT_MAX_SIDE, ChromosomeImage, ImageReadError, from_array, read_image
from ..ioutil import atomic_write_bytes, atomic_write_text
from ..runtime.result import ChromosomeResult
from .consistency import PENALTY, THRESHOLD, reassign
from .karyogram import KaryogramItem, encode_indexed_png, render_indexed
from .karyotype import karyotype
from .layout import KARYOGRAM, PREDICTIONS, CellJob, visible_children
from .segment import SegmentConfig, segment

SUMMARY_FORMAT = "edge-iapp-cell-summary/1"
BRANCHES = ("global", "object", "part")
PREDICTION_COLUMNS = (
    ["object", "kind", "bbox", "class", "confidence"]
    + [f"lambda_{b}" for b in BRANCHES]
    + [f"class_{b}" for b in BRANCHES]
    + ["review", "review_reasons", "consistency_class", "consistency_changed", "notes", "error"]
)


CELL_OOD_SHARE = 0.25
"""A cell is flagged ``unlike_training_lab`` when more than this share of its calls are
out of distribution. The OOD threshold sends 1 in 20 of the training lab's images to
review by design; a quarter of a whole cell means the slide, not one chromosome, differs
(docs/RESULTS.md: another lab's cells reach 50-95%)."""
CELL_OOD_MIN_CALLS = 10
"""Fewer calls than this say too little about the cell as a whole."""
UNLIKE_TRAINING_LAB = "unlike_training_lab"


class Predictor(Protocol):
    """What the scorer needs from a classifier (``edge_iapp.runtime.Classifier``)."""

    def predict(self, images: Sequence[Any]) -> list[ChromosomeResult]: ...


class EmptyCellError(Exception):
    """The cell folder has no files."""


@dataclass
class CellOptions:
    """How cells are scored.

    Attributes:
        consistency: run the karyotype-level consistency step.
        threshold: calls with fused confidence at or above this are never re-assigned.
        penalty: cost of a copy beyond the normal number (see ``consistency``).
        batch_size: images per ``predict`` call for images without a cell ID; the
            objects of a cell (they carry its ID) go in one call so that the
            cell-relative size sees the whole cell (the classifier batches inside).
        max_side: largest accepted image side (pixels) for crops and whole images.
        segment: segmentation parameters for whole-image cells.
    """

    consistency: bool = True
    threshold: float = THRESHOLD
    penalty: float = PENALTY
    batch_size: int = 64
    max_side: int = DEFAULT_MAX_SIDE
    segment: SegmentConfig = field(default_factory=SegmentConfig)


@dataclass(eq=False)
class _Object:
    name: str
    kind: str  # chromosome | cluster | unreadable
    crop: np.ndarray | None = None
    image: ChromosomeImage | None = None
    bbox: tuple[int, int, int, int] | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    result: ChromosomeResult | None = None
    adjusted: str | None = None


def _r(x: float) -> float:
    return float(round(float(x), 6))


def cell_files(folder: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """Files of a cell (sorted) and error rows for sub-folders found inside it."""
    files, errors = [], []
    for p in visible_children(folder):
        if p.is_dir():
            errors.append({"file": p.name, "error": "folder inside a cell folder; ignored"})
        else:
            files.append(p)
    return files, errors


def load_objects(
    job: CellJob, options: CellOptions
) -> tuple[list[_Object], str, dict[str, Any] | None, list[dict[str, str]]]:
    """Read a cell's files into objects (segmenting a whole image).

    Returns:
        ``(objects, input_kind, segmentation_info, errors)``.

    Raises:
        EmptyCellError: no files at all.
    """
    files, errors = cell_files(job.source)
    cell_id = f"{job.slide}/{job.cell}"  # every image of the cell: scaled as one cell
    if not files:
        raise EmptyCellError(f"{job.source}: empty cell folder (no files)")
    objects: list[_Object] = []
    if len(files) == 1:
        path = files[0]
        try:
            image = read_image(path, max_side=options.max_side)
        except ImageReadError as exc:
            errors.append({"file": path.name, "error": exc.reason})
            return [_Object(path.name, "unreadable", error=exc.reason)], "whole_image", None, errors
        seg = segment(image.pixels, options.segment)
        info = {
            "file": path.name,
            "threshold": seg.threshold,
            "inverted": bool(image.polarity.inverted or seg.inverted),
            "median_area": _r(seg.median_area),
            "objects": len(seg.objects),
            "dropped_as_noise": seg.dropped,
            "warnings": seg.warnings,
        }
        if "too_many_objects" in seg.warnings:
            reason = (
                f"{len(seg.objects)} objects found (more than "
                f"{options.segment.max_objects}): not a metaphase image? not classified"
            )
            errors.append({"file": path.name, "error": reason})
            return [_Object(path.name, "unreadable", error=reason)], "whole_image", info, errors
        for o in seg.objects:
            obj = _Object(
                o.object_id, "cluster" if o.cluster else "chromosome", crop=o.crop, bbox=o.bbox
            )
            if o.cluster:
                obj.notes = [f"cluster:{r}" for r in o.cluster_reasons]
            else:
                obj.image = from_array(o.crop, source=f"{path.name}#{o.object_id}", cell=cell_id)
            objects.append(obj)
        return objects, "whole_image", info, errors
    for path in files:
        try:
            image = read_image(path, max_side=options.max_side, cell=cell_id)
        except ImageReadError as exc:
            errors.append({"file": path.name, "error": exc.reason})
            objects.append(_Object(path.name, "unreadable", error=exc.reason))
            continue
        objects.append(
            _Object(
                path.name, "chromosome", crop=image.pixels, image=image, notes=list(image.flags)
            )
        )
    return objects, "crops", None, errors


def classify(objects: list[_Object], predictor: Predictor, batch_size: int) -> None:
    """Fill ``result`` of every chromosome object, in batches of ``batch_size``."""
    todo = [o for o in objects if o.image is not None]
    if any(o.image.cell is not None for o in todo):
        batch_size = max(batch_size, len(todo))  # never split a cell across calls
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        results = predictor.predict([o.image for o in chunk])
        if len(results) != len(chunk):
            raise RuntimeError(
                f"classifier returned {len(results)} results for {len(chunk)} images"
            )
        for obj, res in zip(chunk, results, strict=False):
            obj.result = res
            if res.error is not None or res.class_name is None:
                obj.kind = "unreadable"
                obj.error = res.error or "no call"


@dataclass(eq=False)
class ScoredCell:
    """A classified cell whose outputs are not written yet (see :func:`write_cell`)."""

    job: CellJob
    objects: list[_Object]
    summary: dict[str, Any]
    title: str


def score_cell(
    job: CellJob,
    predictor: Predictor,
    options: CellOptions,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Score one cell and write its outputs (summary last).

    Args:
        job: the cell.
        predictor: the classifier.
        options: how to score.
        timings: if given, seconds per step are added to it (``load``, ``classify``,
            ``consistency``, ``karyogram``, ``write``); kept out of the outputs so that
            they stay byte-identical between runs.

    Returns:
        The summary dictionary that was written.

    Raises:
        EmptyCellError: the cell folder has no files (nothing is written).
        OSError: an output could not be written (a full disk, say).
    """
    return write_cell(prepare_cell(job, predictor, options, timings), timings)


def prepare_cell(
    job: CellJob,
    predictor: Predictor,
    options: CellOptions,
    timings: dict[str, float] | None = None,
) -> ScoredCell:
    """Read, segment, classify and summarise one cell; nothing is written.

    Raises:
        EmptyCellError: the cell folder has no files.
    """
    clock = _Clock(timings)
    objects, input_kind, seg_info, errors = load_objects(job, options)
    n_files = len(cell_files(job.source)[0])
    clock.lap("load")
    classify(objects, predictor, options.batch_size)
    clock.lap("classify")
    for o in objects:
        if o.kind == "unreadable" and o.error and not any(e["file"] == o.name for e in errors):
            errors.append({"file": o.name, "error": o.error})
    called = [o for o in objects if o.kind == "chromosome" and o.result is not None]
    consistency = None
    if options.consistency and called:
        probs = np.stack([np.asarray(o.result.probabilities, dtype=np.float64) for o in called])
        adj = reassign(probs, threshold=options.threshold, penalty=options.penalty)
        for o, name in zip(called, adj.class_names, strict=True):
            o.adjusted = name
        consistency = adj
    clock.lap("consistency")
    n_clusters = sum(o.kind == "cluster" for o in objects)
    called_ids = {id(o) for o in called}
    plain_calls = [o.result.class_name if id(o) in called_ids else None for o in objects]
    doubtful = sum(bool(o.result.review) for o in called)
    plain = karyotype(plain_calls, doubtful=doubtful, clusters=n_clusters)
    backend = next((o.result.backend for o in called if o.result.backend), "")
    precision = next((o.result.precision for o in called if o.result.precision), "")
    if not backend:  # nothing was classified: say what would have run
        backend = str(getattr(predictor, "backend_name", ""))
        precision = str(getattr(predictor, "precision", ""))
    lab = lab_shift([o.result for o in called], bool(getattr(predictor, "checks_ood", True)))
    flags = [*plain.flags, *([UNLIKE_TRAINING_LAB] if lab["unlike_training_lab"] else [])]
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "slide": job.slide,
        "cell": job.cell,
        "input": input_kind,
        "files": n_files,
        "backend": backend,
        "precision": precision,
        "karyotype": plain.iscn,
        **{k: v for k, v in plain.to_dict().items() if k != "iscn"},
        "flags": flags,
        "out_of_distribution": lab,
        "consistency": _consistency_block(objects, consistency, options, doubtful, n_clusters),
        "segmentation": seg_info,
        "errors": errors,
        "outputs": {"predictions": PREDICTIONS, "karyogram": KARYOGRAM},
    }
    title = f"{job.slide} / {job.cell}   {plain.iscn}   [{backend} {precision}]"
    return ScoredCell(job, objects, summary, title)


def lab_shift(results: Sequence[ChromosomeResult], checked: bool = True) -> dict[str, Any]:
    """How many of a cell's calls are out of distribution, and whether the cell is.

    Args:
        results: the cell's calls.
        checked: whether the classifier tests for it at all (a bundle without an OOD
            calibration does not: then nothing is counted, rather than a reassuring 0).

    Returns:
        ``{"checked", "calls", "flagged", "share", "unlike_training_lab"}``; ``flagged``
        and ``share`` are None when not checked, ``share`` also for a cell without calls
        (such cells are never flagged).
    """
    n = len(results)
    k = sum("out_of_distribution" in r.review_reasons for r in results) if checked else None
    return {
        "checked": bool(checked),
        "calls": n,
        "flagged": k,
        "share": _r(k / n) if n and k is not None else None,
        "unlike_training_lab": bool(
            k is not None and n >= CELL_OOD_MIN_CALLS and k > CELL_OOD_SHARE * n
        ),
    }


def write_cell(cell: ScoredCell, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Draw the karyogram and write the cell's files, ``summary.json`` last.

    Returns:
        The summary.

    Raises:
        OSError: an output could not be written.
    """
    clock = _Clock(timings)
    png = encode_indexed_png(render_indexed(_karyogram_items(cell.objects), title=cell.title))
    clock.lap("karyogram")
    job = cell.job
    job.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.out / PREDICTIONS, predictions_csv(cell.objects))
    atomic_write_bytes(job.out / KARYOGRAM, png)
    text = json.dumps(cell.summary, indent=1, sort_keys=False) + "\n"
    atomic_write_text(job.summary_path, text)
    clock.lap("write")
    return cell.summary


class _Clock:
    """Adds the seconds since the last lap to ``timings[name]`` (no-op without timings)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def _consistency_block(
    objects: list[_Object], adj: Any, options: CellOptions, doubtful: int, n_clusters: int
) -> dict[str, Any]:
    if adj is None:
        return {"enabled": bool(options.consistency), "applied": False}
    calls = [o.adjusted if o.adjusted is not None else None for o in objects]
    k = karyotype(calls, doubtful=doubtful, clusters=n_clusters)
    return {
        "enabled": True,
        "applied": True,
        "threshold": options.threshold,
        "penalty": options.penalty,
        "sex_hypothesis": adj.sex_hypothesis,
        "changed": int(adj.changed.sum()),
        "karyotype": k.iscn,
        "count": k.count,
        "class_counts": k.class_counts,
        "sex_chromosomes": k.sex_chromosomes,
        "gains": k.gains,
        "losses": k.losses,
        "aneuploidy": k.aneuploidy,
        "flags": k.flags,
    }


def predictions_csv(objects: list[_Object]) -> str:
    """The per-object table (one row per file or segmented object)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for o in objects:
        r = o.result if o.kind == "chromosome" else None
        bbox = " ".join(str(v) for v in o.bbox) if o.bbox else ""
        row: list[Any] = [o.name, o.kind, bbox]
        if r is None:
            row += ["", ""] + [""] * (2 * len(BRANCHES)) + ["", "", "", ""]
        else:
            row += [r.class_name, f"{r.confidence:.6f}"]
            row += [f"{r.lambdas[b]:.6f}" if b in r.lambdas else "" for b in BRANCHES]
            row += [r.branch_classes.get(b, "") for b in BRANCHES]
            row += [int(bool(r.review)), ";".join(r.review_reasons)]
            row += [o.adjusted or "", int(o.adjusted is not None and o.adjusted != r.class_name)]
        notes = list(o.notes)
        if r is not None:
            notes += [
                n
                for n, on in (
                    ("inverted", r.inverted),
                    ("shrunk", r.shrunk),
                    ("object_fallback", r.object_fallback),
                    ("part_fallback", r.part_fallback),
                )
                if on
            ]
        row += [";".join(notes), o.error or ""]
        writer.writerow(row)
    return buf.getvalue()


def _karyogram_items(objects: list[_Object]) -> list[KaryogramItem]:
    items = []
    for o in objects:
        if o.crop is None:
            continue
        if o.kind == "chromosome" and o.result is not None:
            items.append(
                KaryogramItem(
                    o.crop,
                    o.result.class_name,
                    doubtful=bool(o.result.review),
                    order=-float(o.result.confidence),
                )
            )
        else:
            items.append(KaryogramItem(o.crop, None, cluster=o.kind == "cluster"))
    return items
