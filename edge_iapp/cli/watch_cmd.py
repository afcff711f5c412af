"""CLI command: ``edge-iapp watch DIR --bundle B --out OUT`` (the watched-folder service)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail, refuse_file_output


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("watch")(watch)


def _planned_model(bundle: Path, backend: str, precision: str) -> dict | None:
    """The model the index records, from the names alone (nothing loaded): bundle path
    and manifest hash, backend (aliases resolved), precision. None where the bundle or a
    name is wrong: loading the classifier then says what is wrong."""
    from ..backends import BackendUnavailable, backend_name
    from ..export.bundle import MANIFEST, precision_name
    from ..ioutil import sha256_file

    try:
        return {
            "bundle": str(bundle.resolve()),
            "bundle_sha256": sha256_file(bundle / MANIFEST),
            "backend": backend_name(backend),
            "precision": precision_name(precision),
        }
    except (BackendUnavailable, ValueError, OSError):
        return None


def watch(
    folder: Annotated[Path, typer.Argument(help="Folder the capture system writes images to.")],
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Model bundle folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: results, index, CSVs.")],
    backend: str = typer.Option("onnxruntime", help="Backend: onnxruntime, openvino, tensorrt."),
    precision: str = typer.Option("fp32", help="Precision: fp32, fp16, int8."),
    once: bool = typer.Option(False, "--once", help="Process what is there now and exit."),
    poll: float = typer.Option(2.0, min=0.05, help="Seconds between scans of the folder."),
    settle: float = typer.Option(
        2.0, min=0.0, help="Seconds a file's size and mtime must stay unchanged."
    ),
    batch_size: int = typer.Option(46, "--batch-size", min=1, help="Images per backend call."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Watch sub-folders."),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Classify again the files listed in errors.csv."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Classify every file again with this model: OUT's earlier rows and result "
        "files are dropped (needed when OUT was written with another bundle, backend or "
        "precision).",
    ),
) -> None:
    """Classify every chromosome image written into FOLDER; restart-safe, never touches inputs.

    Writes OUT/results/<file>.json, OUT/results.csv, OUT/errors.csv and the
    processed-index OUT/processed.jsonl. A restart skips what the index has. OUT holds
    the calls of one model: an OUT written with another bundle, backend or precision is
    refused before the bundle is loaded (choose a new OUT to keep both, or --force to
    classify everything again). Stops on SIGTERM/SIGINT after the current batch. Bad
    files go to errors.csv and do not change the exit code (0); a setup error (bundle,
    folders, another model's OUT, full disk) exits 2.
    """
    import signal
    import threading

    from ..runtime.watch import (
        FolderWatcher,
        PassReport,
        WatchLocked,
        check_index_model,
    )

    if not folder.is_dir():
        fail(f"watched folder {folder} does not exist or is not a folder")
    refuse_file_output(out)  # said before the bundle is loaded
    if out.resolve() == folder.resolve():
        fail(
            f"output folder {out} is the watched folder; choose another --out "
            "(a sub-folder of it is fine: it is not scanned)"
        )
    planned = _planned_model(bundle, backend, precision)
    if planned is not None:
        try:  # an OUT of another model is said before the bundle is loaded
            check_index_model(out, planned, force)
        except ValueError as exc:
            fail(str(exc))
    try:
        from ..runtime.classifier import Classifier

        classifier = Classifier(bundle, backend=backend, precision=precision)
    except Exception as exc:  # a missing or corrupted bundle, a backend that is absent
        fail(f"cannot load bundle {bundle} ({backend}, {precision}): {exc}")
    from ..backends.base import precision_label

    try:  # what runs, in the backend's own words (aliases resolved, compute precision)
        ran = classifier.describe()
    except Exception:  # noqa: BLE001 - the description is informative only
        ran = {"backend": backend, "precision": precision}
    ran_backend = str(ran.get("backend", backend))
    ran_precision = str(ran.get("precision", precision))
    # the planned description (path, manifest hash), with what actually runs
    model = {**(planned or {"bundle": str(bundle.resolve())})}
    model.update(backend=ran_backend, precision=ran_precision)
    console.print(f"edge-iapp watch: {folder} -> {out} ({ran_backend}, {precision_label(ran)})")
    if classifier.backend.cfg.size_mode == "cell":
        # the watcher sees files one by one, never a whole cell: say so once, up front
        console.print(
            "[yellow]note:[/] this bundle sizes each crop by its cell's median chromosome "
            "length; watched images come one by one, without their cell, so each is sized "
            "by the training set's median and flagged for review (size_fallback). Score "
            "whole cells with `edge-iapp score SLIDES --bundle ...`."
        )

    def show(report: PassReport) -> None:
        if report.classified or report.errors:
            console.print(
                f"classified {report.classified}, errors {report.errors}, "
                f"waiting {report.waiting}, done before {report.already_done} "
                f"({report.seconds:.1f} s)"
            )
        for line in report.new_errors:
            console.print(f"[yellow]bad file[/] {line}")

    try:
        watcher = FolderWatcher(
            classifier.predict,
            folder,
            out,
            settle_s=settle,
            recursive=recursive,
            batch_size=batch_size,
            model=model,
            retry_errors=retry_errors,
            force=force,
        )
    except (WatchLocked, ValueError, OSError) as exc:
        classifier.close()
        fail(str(exc))
    with watcher, classifier:
        if once:
            try:
                report = watcher.run_once()
            except OSError as exc:
                fail(
                    f"cannot write results to {out}: {exc}; nothing of the failed batch "
                    "was recorded, rerun to redo it"
                )
            show(report)
            console.print(
                f"done: {report.classified} classified, {report.errors} errors, "
                f"{report.waiting} still being written, {report.already_done} done before"
            )
            return
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            console.print(f"signal {signum}: stopping after the current batch")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        watcher.run_forever(poll_s=poll, stop=stop, on_pass=show)
