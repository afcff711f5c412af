"""``edge-iapp bench``: every backend x precision of a bundle on one labelled set, one row each.

Per row: status, graph size, top-1 and macro-F1, top-1 drop and prediction agreement
against the reference row (default onnxruntime fp32), throughput, latency per batch
(a 46-chromosome cell by default) and per single chromosome, the split of time
between preprocessing, branches and fusion, the review flag (share of all calls, of
the wrong calls and of the right calls it sends to review, with the bundle's rule), and
the resident memory the backend added. Images are decoded once before timing;
preprocessing is inside the timing.

Images carry their cell (``group/cell`` of the folder's file names) and are ordered by
it; a cell-relative bundle gets whole cells per call, as ``score`` and ``evaluate`` give
them, so its accuracy here is the one they measure.

No torch unless the torch backend is benchmarked.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .export.bundle import PRECISIONS

DEFAULT_BACKENDS = ("onnxruntime", "openvino", "torch")
DEFAULT_PRECISIONS = PRECISIONS  # every precision a bundle can hold


@dataclass
class BenchRow:
    """One backend x precision (times in milliseconds)."""

    backend: str
    precision: str
    status: str = "ok"
    device: str = ""
    file_mb: float | None = None
    images: int = 0
    accuracy: float | None = None
    macro_f1: float | None = None
    drop_points: float | None = None
    agreement: float | None = None
    img_per_s: float | None = None
    ms_per_img: float | None = None
    batch_p50_ms: float | None = None
    batch_p95_ms: float | None = None
    batch_p99_ms: float | None = None
    single_p50_ms: float | None = None
    single_p95_ms: float | None = None
    single_p99_ms: float | None = None
    preprocess_ms_per_img: float | None = None
    branches_ms_per_img: float | None = None
    fusion_ms_per_img: float | None = None
    preprocess_share: float | None = None
    review_rate: float | None = None
    review_errors: float | None = None
    review_correct: float | None = None
    rss_added_mb: float | None = None
    info: dict = field(default_factory=dict)
    predictions: list[int] | None = field(default=None, repr=False)


def macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean F1 over the classes present in ``labels`` (eq. 18-21)."""
    scores = []
    for c in np.unique(labels):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def review_shares(correct: np.ndarray, review: np.ndarray) -> tuple[float | None, float | None]:
    """Share of the wrong calls and of the right calls that ``review`` flags (None: none)."""
    wrong = ~correct
    errors = float(review[wrong].mean()) if wrong.any() else None
    right = float(review[correct].mean()) if correct.any() else None
    return errors, right


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return float("nan")


def load_labelled(
    data: str | Path,
    split: str | Path | None = None,
    subset: str = "test",
    limit: int | None = None,
    log: Callable[[str], None] = print,
    whole_cells: bool = False,
):
    """Decoded images and labels of a labelled folder (optionally one split part).

    ``limit`` keeps that many images, stratified by class and group; with ``whole_cells``
    (a cell-relative bundle) whole cells instead, in seeded order until ``limit`` images,
    since an image's size comes from the rest of its cell.

    A split that names groups the folder lacks is accepted (the folder may hold only the
    part benchmarked); ``log`` says so, and an empty part says why.

    Returns:
        ``(images: list[ChromosomeImage], labels (N,) int, skipped: list[str])``; images
        in cell order, each with its ``cell``.
    """
    from .data import ImageReadError, apply_split, cell_key, load_split, read_image, scan_folder
    from .data.dataset import no_images_reason
    from .data.split import absent_groups, scan_for_split

    record = load_split(split) if split is not None else None
    scan = scan_folder(data) if record is None else scan_for_split(data, record)
    if not scan.samples:
        raise ValueError(no_images_reason(scan))
    samples = scan.samples
    if record is not None:
        parts = apply_split(samples, record, allow_missing=True)
        if subset not in parts:
            raise ValueError(f"unknown split part {subset!r}; expected train, val or test")
        samples = parts[subset]
        absent = absent_groups(record, subset, scan.samples)
        if absent and not samples:
            raise ValueError(
                f"no image of {data} is in the {subset} part of {split}: {absent}; the split "
                "was made for other data or another --group-pattern"
            )
        if absent:
            log(f"note: {absent}; benchmarking the {len(samples)} images that are")
    if limit and limit < len(samples):
        if whole_cells:
            samples = whole_cell_subset(samples, limit)
            log(f"--limit {limit}: {len(samples)} images in whole cells (cell-relative size)")
        else:
            samples = stratified_subset(samples, limit)
    # a cell's images next to each other, so that batches can keep cells whole
    samples = sorted(samples, key=lambda s: (str(cell_key(s)), str(s.path)))
    images, labels, skipped = [], [], [f"{p}: {why}" for p, why in scan.skipped]
    for s in samples:
        try:
            images.append(read_image(s.path, cell=cell_key(s)))
            labels.append(s.label)
        except ImageReadError as exc:
            skipped.append(str(exc))
    return images, np.array(labels, dtype=np.int64), skipped


def whole_cell_subset(samples: Sequence, limit: int, seed: int = 0) -> list:
    """Whole cells in seeded order until at least ``limit`` samples (images without a
    cell count one each)."""
    from .data import cell_key

    cells: dict[object, list] = {}
    for k, s in enumerate(samples):
        key = cell_key(s)
        cells.setdefault(key if key is not None else ("image", k), []).append(s)
    order = np.random.default_rng(seed).permutation(len(cells))
    units, chosen = list(cells.values()), []
    for i in order:
        if len(chosen) >= limit:
            break
        chosen.extend(units[i])
    return chosen


def stratified_subset(samples: Sequence, limit: int, seed: int = 0) -> list:
    """``limit`` samples spread over classes and groups (the calibration rule), in path order."""
    from .export.calibration import select_samples

    present = {s.class_name for s in samples}
    if limit < len(present):
        return list(samples)[:limit]
    chosen = select_samples(samples, limit, seed, require_all_classes=False)
    return sorted(chosen, key=lambda s: str(s.path))


def bench_one(
    bundle,
    backend: str,
    precision: str,
    images: Sequence,
    labels: np.ndarray,
    batch: int,
    single: int = 20,
    **options,
) -> BenchRow:
    """Benchmark one backend x precision; an unavailable combination is a status, not an error."""
    from .backends import BackendUnavailable
    from .backends.base import cell_batches
    from .runtime.classifier import Classifier

    row = BenchRow(backend=backend, precision=precision)
    if precision not in bundle.precisions:
        row.status = f"not in bundle (has {', '.join(bundle.precisions)})"
        return row
    rss0 = _rss_mb()
    try:
        clf = Classifier(bundle, backend=backend, precision=precision, batch_size=batch, **options)
    except BackendUnavailable as exc:
        row.status = f"unavailable: {exc}"
        return row
    except Exception as exc:  # noqa: BLE001 - a failing backend is a row, not a crash
        row.status = f"failed to load: {type(exc).__name__}: {str(exc)[:200]}"
        return row
    row.file_mb = bundle.file_bytes(precision) / 1e6  # the graphs this row loaded
    try:
        info = clf.describe()
        row.device = str(info.get("device", ""))
        row.info = {
            k: (v if isinstance(v, (str, int, float, bool, list)) else str(v))
            for k, v in info.items()
        }
        preds, reviews, batch_ms = [], [], []
        split = {"preprocess": 0.0, "branches": 0.0, "fusion": 0.0}
        # whole cells per call for a cell-relative bundle (images come in cell order)
        chunks = cell_batches(list(enumerate(images)), batch, bundle.preprocess.size_mode == "cell")
        t_all = time.perf_counter()
        for chunk in chunks:
            t = time.perf_counter()
            results, timings = clf.predict_with_timings([im for _, im in chunk])
            batch_ms.append((time.perf_counter() - t) * 1000.0)
            for k in split:
                split[k] += timings[k]
            preds.extend(r.class_index for r in results)
            reviews.extend(r.review for r in results)
        wall = time.perf_counter() - t_all
        single_ms = []
        for im in list(images)[:single]:
            t = time.perf_counter()
            clf.predict([im])
            single_ms.append((time.perf_counter() - t) * 1000.0)
        row.rss_added_mb = _rss_mb() - rss0
    except Exception as exc:  # noqa: BLE001
        row.status = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        clf.close()
        return row
    clf.close()
    n = len(preds)
    p = np.array(preds)
    row.images = n
    row.predictions = [int(x) for x in p]
    if n:
        row.accuracy = float((p == labels[:n]).mean())
        row.macro_f1 = macro_f1(labels[:n], p)
        row.img_per_s = n / wall
        row.ms_per_img = wall * 1000.0 / n
        row.batch_p50_ms, row.batch_p95_ms, row.batch_p99_ms = (
            float(np.percentile(batch_ms, q)) for q in (50, 95, 99)
        )
        if single_ms:
            row.single_p50_ms, row.single_p95_ms, row.single_p99_ms = (
                float(np.percentile(single_ms, q)) for q in (50, 95, 99)
            )
        row.preprocess_ms_per_img = split["preprocess"] * 1000.0 / n
        row.branches_ms_per_img = split["branches"] * 1000.0 / n
        row.fusion_ms_per_img = split["fusion"] * 1000.0 / n
        total = sum(split.values())
        row.preprocess_share = split["preprocess"] / total if total else None
        row.review_rate = float(np.mean(reviews))
        row.review_errors, row.review_correct = review_shares(p == labels[:n], np.array(reviews))
    return row


def _options_taken(backend: str, options: dict, log: Callable[[str], None]) -> dict:
    """``options`` less those ``backend`` does not take (``--threads`` for TensorRT, whose
    work is on the GPU), said in the log; backends refuse unknown options."""
    from .backends import BackendUnavailable, backend_class
    from .backends.base import unknown_options

    try:
        unknown = unknown_options(backend_class(backend), options)
    except BackendUnavailable:  # not importable here: its row says so
        return options
    for name in unknown:
        log(f"  --{name} does not apply to {backend}: not passed to it")
    return {k: v for k, v in options.items() if k not in unknown}


def run_bench(
    bundle_path: str | Path,
    data: str | Path,
    split: str | Path | None = None,
    subset: str = "test",
    backends: Sequence[str] = DEFAULT_BACKENDS,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    batch: int = 46,
    reference: tuple[str, str] = ("onnxruntime", "fp32"),
    limit: int | None = None,
    single: int = 20,
    threads: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict:
    """Run every row and return the report (``rows`` as dicts, plus machine and data).

    The reference row runs first, also when ``backends`` x ``precisions`` leaves it out
    (drop and agreement are against it; its row is then marked ``"added": true``).
    """
    from .backends import BackendUnavailable, backend_name
    from .export.bundle import load_bundle, precision_name

    if batch < 1:
        raise ValueError(f"--batch must be at least 1 image per call, got {batch}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1 image (leave it out for all), got {limit}")
    if single < 0:
        raise ValueError(f"--single must be 0 or more images, got {single}")
    if threads is not None and threads < 1:
        raise ValueError(
            f"--threads must be at least 1 (leave it out for the default), got {threads}"
        )
    try:  # a typo is an error, not an "unavailable" row
        backends = [backend_name(b) for b in backends]
        reference = (backend_name(reference[0]), precision_name(reference[1]))
    except BackendUnavailable as exc:
        raise ValueError(str(exc)) from None
    precisions = [precision_name(p) for p in precisions]
    bundle = load_bundle(bundle_path)
    whole_cells = bundle.preprocess.size_mode == "cell"
    images, labels, skipped = load_labelled(data, split, subset, limit, log, whole_cells)
    if not images:
        raise ValueError(
            f"no readable labelled images in {data}" + (f" ({subset} part)" if split else "")
        )
    combos = [(b, p) for b in backends for p in precisions]
    added = reference not in combos
    if added:
        log(f"adding the reference row {reference[0]} {reference[1]}: drop and agreement need it")
    else:
        combos.remove(reference)
    combos.insert(0, reference)
    options = {"threads": threads} if threads else {}
    rows: list[BenchRow] = []
    for backend, precision in combos:
        log(f"bench {backend} {precision} on {len(images)} images")
        taken = _options_taken(backend, options, log)
        rows.append(bench_one(bundle, backend, precision, images, labels, batch, single, **taken))
        log(f"  -> {rows[-1].status}")
    ref = next(
        (r for r in rows if (r.backend, r.precision) == reference and r.status == "ok"), None
    )
    for r in rows:
        if ref is not None and r.status == "ok" and r.predictions is not None:
            r.drop_points = 100.0 * (ref.accuracy - r.accuracy)
            r.agreement = float(np.mean(np.array(r.predictions) == np.array(ref.predictions)))
    return {
        "bundle": str(Path(bundle_path).resolve()),
        "backbone": bundle.backbone,
        "input_size": bundle.input_size,
        "data": str(Path(data).resolve()),
        "split": str(split) if split else None,
        "subset": subset if split else "all",
        "images": len(images),
        "skipped": skipped,
        "batch": batch,
        "reference": f"{reference[0]}:{reference[1]}",
        "reference_added": added,
        "reference_status": rows[0].status,
        "machine": machine(),
        "rows": [{k: v for k, v in asdict(r).items() if k != "predictions"} for r in rows],
    }


def check_floor(
    report: dict, min_accuracy: float | None = None, max_drop: float | None = None
) -> list[str]:
    """Rows (status ok) below ``min_accuracy`` (0..1) or dropping more than ``max_drop`` points."""
    out = []
    for r in report["rows"]:
        if r["status"] != "ok":
            continue
        name = f"{r['backend']} {r['precision']}"
        if min_accuracy is not None and r["accuracy"] is not None and r["accuracy"] < min_accuracy:
            out.append(f"{name}: accuracy {r['accuracy']:.4f} < {min_accuracy}")
        if max_drop is None:
            continue
        if r["drop_points"] is None:  # no reference ran: a floor that cannot be checked fails
            ref = report.get("reference", "the reference row")
            out.append(f"{name}: top-1 drop not measured ({ref}: {report.get('reference_status')})")
        elif r["drop_points"] > max_drop:
            out.append(f"{name}: top-1 drop {r['drop_points']:.2f} points > {max_drop}")
    return out


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


CSV_COLUMNS = (
    "backend",
    "precision",
    "status",
    "device",
    "file_mb",
    "images",
    "accuracy",
    "macro_f1",
    "drop_points",
    "agreement",
    "img_per_s",
    "ms_per_img",
    "batch_p50_ms",
    "batch_p95_ms",
    "batch_p99_ms",
    "single_p50_ms",
    "single_p95_ms",
    "single_p99_ms",
    "preprocess_ms_per_img",
    "branches_ms_per_img",
    "fusion_ms_per_img",
    "preprocess_share",
    "review_rate",
    "review_errors",
    "review_correct",
    "rss_added_mb",
)


def to_csv(report: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for r in report["rows"]:
        writer.writerow(["" if r.get(c) is None else r.get(c) for c in CSV_COLUMNS])
    return buf.getvalue()
