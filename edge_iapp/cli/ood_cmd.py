"""CLI command ``ood-calibrate``: (re)compute a run's OOD review threshold ``RUN/ood.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail, refuse_file_output

Opt = typer.Option


def ood_calibrate_command(
    run: Annotated[Path, typer.Argument(help="Training run folder.")],
    data: Annotated[
        Path | None, Opt("--data", help="Labelled folder (default: the run's training data).")
    ] = None,
    split: Annotated[
        Path | None, Opt("--split", help="Split file (default: RUN/split.json).")
    ] = None,
    quantile: Annotated[
        float, Opt(help="Share of the val images to accept (threshold = this quantile).")
    ] = 0.95,
    max_per_class: Annotated[int | None, Opt(help="Class-balanced subset of val.")] = None,
    fit_per_class: Annotated[
        int,
        Opt(
            help="Train images per class to fit the logit Gaussians on "
            "(0: the energy score alone, as before; a fine-tuned run: its fine-tuning "
            "cells' images, as finetune fits them)."
        ),
    ] = 50,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = 64,
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    cache: Annotated[Path | None, Opt(help="Folder for preprocessed-image caches.")] = None,
) -> None:
    """Calibrate RUN's out-of-distribution threshold on the val part of its training lab."""

    from ..train.data import balanced_subset
    from ..train.finetune import of_cells
    from ..train.loading import DataProblem, load_parts
    from ..train.ood_run import calibration_warnings, write_run_ood
    from ..train.predict import predict
    from ..train.run import load_model
    from .train_cmd import _at_least, _device, _prepare, _report_scan, _set_threads

    _set_threads(threads)
    dev = _device(device)
    if not 0.0 < quantile < 1.0:
        fail(f"--quantile must be between 0 and 1, got {quantile}")
    _at_least(1, batch_size=batch_size, max_per_class=max_per_class)
    _at_least(0, fit_per_class=fit_per_class)
    refuse_file_output(cache, "--cache")
    try:
        model, cfg = load_model(run)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
        fail(f"cannot load the run: {exc}")
    if data is None:
        saved = cfg.extra.get("data")
        if not saved:
            fail(f"{run}/config.json records no data folder: pass --data")
        data = Path(saved)
        if not data.is_dir():
            fail(
                f"the run's training data {data} (recorded in {run}/config.json) is not "
                "there: pass --data with the folder it was trained on"
            )
    split = split or run / "split.json"
    if not split.is_file():
        fail(f"split file {split} does not exist: pass --split")
    try:
        parts = load_parts(data, split)
    except DataProblem as exc:
        fail(str(exc))
    _report_scan(parts)
    tuned = (cfg.extra.get("finetune") or {}).get("cells") or []
    fit_samples = []
    if fit_per_class > 0 and tuned:
        # a fine-tuned run: the labelled cells it was fine-tuned on, as finetune fits them
        # (the new lab's other train cells count as unlabelled); checked before the val
        # predictions, which take a while
        fit_samples = of_cells(parts.parts["train"], tuned)
        if not fit_samples:
            fail(
                f"none of this fine-tuned run's {len(tuned)} fine-tuning cell(s) is in the train "
                f"part of {data}: pass the new lab's --data, or --fit-per-class 0"
            )
        console.print(
            f"class Gaussians from the {len(tuned)} fine-tuning cell(s) of this run, as "
            "finetune fitted them"
        )
    elif fit_per_class > 0:
        # in the cell size mode whole cells (each crop scaled as in training), then at
        # most N per class
        fit_samples = balanced_subset(parts.parts["train"], fit_per_class, 0, cfg.preprocess)
    samples = parts.parts["val"]
    if max_per_class:
        samples = balanced_subset(samples, max_per_class, 0, cfg.preprocess)
    if not samples:
        fail(
            f"the split's val part has no images in {data}: the OOD threshold is calibrated on "
            "the training lab's validation images"
        )
    prepared = _prepare(samples, cfg.preprocess, "val", cache)
    if len(prepared) == 0:
        fail(f"none of the {len(samples)} val images could be read")
    preds = predict(model.to(dev), prepared, cfg.branches, device=dev, batch_size=batch_size)
    fit = None
    if fit_per_class > 0:
        fit_data = (
            _prepare(fit_samples, cfg.preprocess, "train (fit)", cache) if fit_samples else None
        )
        if fit_data is None or len(fit_data) == 0:
            fail(
                f"the split's train part has no readable images in {data}: the class Gaussians "
                "are fitted on it (or pass --fit-per-class 0 for the energy score alone)"
            )
        if not tuned:
            fit_data = fit_data.balanced(fit_per_class)
        fit = predict(model, fit_data, cfg.branches, device=dev, batch_size=batch_size)
    try:
        record = write_run_ood(
            run,
            preds,
            quantile,
            source={"part": "val", "data": str(data), "split": str(split), "images": len(prepared)},
            fit=fit,
        )
    except ValueError as exc:
        fail(str(exc))
    for warning in calibration_warnings(record):
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(
        f"OOD score: {record['definition']}\n"
        f"threshold {record['threshold']:.4f} = the {quantile:g} quantile of {record['n']} val "
        f"images (mean {record['mean']:.4f}, std {record['std']:.4f}); written: {run / 'ood.json'}"
    )
    _replace_review(run, preds, prepared.paths, samples, record, cfg, data)


def _replace_review(run: Path, preds, paths, samples, ood, cfg, data: Path) -> None:
    """Place RUN's review threshold again with the new ``ood.json``, where it has one.

    ``review.json``'s T (``finetune`` places it) only catches what the OOD flag misses, so
    it belongs to one OOD calibration: left as it was, ``export`` would not use it.
    """
    from ..train.review_run import REVIEW_FILE, place_run_review, review_note

    if not (run / REVIEW_FILE).is_file():
        return
    source = {"part": "val", "data": str(data)}
    record = place_run_review(run, preds, paths, samples, ood, cfg.fusion, source)
    console.print(review_note(record, run / REVIEW_FILE, f"the {len(paths)} val images"))


def register(app: typer.Typer) -> None:
    """Add ``ood-calibrate`` to ``app``."""
    app.command("ood-calibrate")(ood_calibrate_command)
