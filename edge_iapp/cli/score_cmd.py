"""CLI: ``edge-iapp score`` (slide folders) and ``edge-iapp dataset from-karyograms``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..scoring import PENALTY, THRESHOLD  # no NumPy at CLI start
from .common import console, fail

SHOWN_SLIDES = 10
"""Slides whose karyotypes by cell ``score`` prints at the end (the rest: index.html)."""

dataset_app = typer.Typer(help="Build labelled chromosome folders from other material.")


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``dataset from-karyograms`` to ``app``."""
    app.command("score")(score)
    app.add_typer(dataset_app, name="dataset")
    dataset_app.command("from-karyograms")(from_karyograms)


def score(
    slides: Annotated[
        Path, typer.Argument(help="a slide folder (one folder per cell) or a folder of slides")
    ],
    bundle: Annotated[
        Path, typer.Option("--bundle", "-b", help="model bundle folder (edge-iapp export)")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (outside SLIDES)")],
    backend: Annotated[
        str, typer.Option(help="onnxruntime | openvino | tensorrt | torch")
    ] = "onnxruntime",
    precision: Annotated[
        str, typer.Option(help="fp32 | fp16 | int8 (never changed silently)")
    ] = "fp32",
    force: Annotated[
        bool, typer.Option("--force", help="re-score cells that are already finished")
    ] = False,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency/--no-consistency",
            help="add the karyotype-level consistency re-assignment beside the plain calls",
        ),
    ] = True,
    threshold: Annotated[
        float,
        typer.Option(help="consistency: calls at or above this fused confidence never change"),
    ] = THRESHOLD,
    penalty: Annotated[
        float, typer.Option(help="consistency: log-cost of a copy beyond the normal number")
    ] = PENALTY,
    batch_size: Annotated[int, typer.Option(help="images per classifier call")] = 64,
    pipeline: Annotated[
        bool,
        typer.Option(
            "--pipeline/--no-pipeline",
            help="write each cell's files on a background thread while the next cell "
            "is classified (for GPU backends; same outputs)",
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="progress bar with ETA")
    ] = True,
) -> None:
    """Score every cell: predictions CSV, summary JSON, karyogram PNG; slide tables and reports.

    Resumable: finished cells (summary.json present) are skipped unless --force.
    """
    from edge_iapp.backends.base import precision_label
    from edge_iapp.ioutil import sha256_file
    from edge_iapp.scoring.cell import CellOptions
    from edge_iapp.scoring.layout import discover, loose_images
    from edge_iapp.scoring.score import OutputLockedError, OutputWriteError, run_scoring

    if not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be between 0 and 1, got {threshold}")
    if not 0.0 <= penalty < float("inf"):  # NaN fails too (it went into every summary.json)
        fail(f"--penalty must be a number >= 0 (natural-log units), got {penalty}")
    if batch_size < 1:
        fail(f"--batch-size must be at least 1 image per call, got {batch_size}")
    # Cheap checks first, then the bundle: nothing is written before both are fine.
    try:
        jobs = discover(slides, out)
    except (NotADirectoryError, ValueError, OSError) as exc:
        fail(str(exc))
    n_cells = sum(len(s.cells) for s in jobs)
    if n_cells == 0:
        fail(
            f"no cell folders found under {slides} "
            "(expected SLIDE/<cell>/ or SLIDES/<slide>/<cell>/)"
        )
    if all(s.source != slides for s in jobs):  # a folder of slides: images beside them
        stray = loose_images(slides)
        if stray:
            console.print(
                f"[yellow]warning:[/] {len(stray)} image(s) directly in {escape(str(slides))}, "
                f"outside every slide folder, are not scored (e.g. {escape(stray[0])}); put "
                "them in SLIDES/<slide>/<cell>/"
            )
    clf = _load_classifier(bundle, backend, precision)
    info = {"bundle": str(bundle), "requested": {"backend": backend, "precision": precision}}
    try:
        info["ran"] = clf.describe()
    except Exception as exc:  # noqa: BLE001 - description is informative only
        info["ran"] = {"backend": backend, "precision": precision, "describe_error": str(exc)}
    ran = info["ran"]
    # what the cells' calls depend on: a resumed run must match it (scoring/score.py)
    info["model"] = {
        "bundle_sha256": sha256_file(clf.bundle.path / "manifest.json"),
        "backend": clf.backend_name,  # the backend's own name, not the option as typed
        "precision": clf.precision,
    }
    console.print(
        f"scoring {n_cells} cell(s) in {len(jobs)} slide(s) with "
        f"[bold]{ran.get('backend', backend)} {precision_label({'precision': precision, **ran})}"
        f"[/] -> {out}"
    )
    options = CellOptions(
        consistency=consistency, threshold=threshold, penalty=penalty, batch_size=batch_size
    )
    try:
        with clf:
            stats = run_scoring(
                slides,
                out,
                clf,
                options,
                force=force,
                progress=progress,
                run_info=info,
                pipeline=pipeline,
            )
    except OutputWriteError as exc:
        fail(str(exc), code=3)
    except OutputLockedError as exc:
        fail(str(exc))
    except (NotADirectoryError, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"done: {stats.scored} scored, {stats.skipped} already finished, {stats.failed} not "
        f"scored, {stats.errors} error row(s); reports: {Path(out) / 'index.html'}"
    )
    for slide in stats.slides[:SHOWN_SLIDES]:
        if slide.get("karyotypes"):
            console.print(f"  {escape(slide['slide'])}: {escape(slide['karyotypes'])}")
    if len(stats.slides) > SHOWN_SLIDES:
        console.print(f"  ... {len(stats.slides) - SHOWN_SLIDES} more slide(s) in index.html")
    if stats.failed or stats.errors:
        console.print("[yellow]see errors.csv in each slide folder[/]")
    unlike = sum(int(s.get("unlike_training_lab") or 0) for s in stats.slides)
    if unlike:
        console.print(
            f"[yellow]warning:[/] {unlike} cell(s) flagged unlike_training_lab (more than a "
            f"quarter of their calls out of distribution): {_lab_advice(clf.bundle.manifest)}"
        )


def _lab_advice(manifest: dict) -> str:
    """What to do about cells unlike the bundle's reference cells, by how the model was made."""
    source = manifest.get("source")
    adapted = source.get("adapted") if isinstance(source, dict) else None
    if adapted:
        return (
            f"this bundle was already adapted, to {len(adapted.get('cells') or [])} cell(s) of "
            f"{adapted.get('slides')}, and these cells still look unlike them: adapt "
            f"{adapted.get('run')} on cells of these slides, or fine-tune it with a few "
            "labelled cells of them (`edge-iapp finetune`, README) before trusting the calls"
        )
    return (
        "these slides differ from the training lab's; adapt the model to them "
        "(`edge-iapp adapt`, README) before trusting the calls"
    )


def _load_classifier(bundle: Path, backend: str, precision: str):
    """The Classifier, or a clear message (missing/corrupted bundle, backend not here)."""
    if not bundle.exists():
        fail(f"bundle {bundle} not found (create one with `edge-iapp export RUN --out {bundle}`)")
    try:  # load_bundle names what is wrong (a file, no manifest.json, a modified graph)
        from edge_iapp.runtime.classifier import Classifier

        return Classifier(bundle, backend=backend, precision=precision)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bundle/backend problem
        fail(f"cannot load bundle {bundle} with {backend} {precision}: {exc}")


def from_karyograms(
    karyograms: Annotated[Path, typer.Argument(help="a karyogram image or a folder of them")],
    layout: Annotated[Path, typer.Option("--layout", help="layout JSON (see docs/SCORING.md)")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="output folder: <class>/clase<N>_<k>_<stem>.png")
    ],
) -> None:
    """Cut labelled single-chromosome crops out of karyograms using a layout of class positions."""
    from edge_iapp.scoring.from_karyograms import LayoutError, cut_karyograms, load_layout

    if not karyograms.exists():
        fail(f"{karyograms} not found")
    expected = "expected karyogram images (TIFF, PNG, BMP or JPEG)"
    if karyograms.is_dir() and not any(
        p.is_file() and not p.name.startswith(".") for p in karyograms.iterdir()
    ):
        fail(f"no files in {karyograms}: {expected}")
    try:
        spec = load_layout(layout)
    except LayoutError as exc:
        fail(str(exc))
    try:
        stats = cut_karyograms(karyograms, spec, out)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}", code=3)
    console.print(
        f"{stats.karyograms} karyogram(s): {stats.crops} crops written, {stats.clusters} "
        f"cluster(s) skipped, {stats.warnings} warning(s), {stats.errors} unreadable file(s); "
        f"see {out / 'from_karyograms.csv'}"
    )
    if stats.karyograms == 0:
        fail(f"none of the {stats.errors} file(s) in {karyograms} could be read: {expected}")
    if stats.crops == 0:
        console.print(
            "[yellow]warning:[/] no crop was cut: does the layout's image_size and slot boxes "
            "match these karyograms? (docs/SCORING.md, 'Karyograms to labelled crops')"
        )
