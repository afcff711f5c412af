"""Unsupervised adaptation to a new lab: re-estimate BatchNorm statistics on its images.

A model trained on one lab normalises every layer with that lab's feature statistics
(BatchNorm running mean and variance). Another lab's stain, scanner and pixel size
shift those statistics, and much of the cross-lab error comes from that shift alone.
AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation",
ICLR workshop 2017) replaces the running statistics with those of the new lab's
images and keeps every learned weight. It needs **no labels**: a few unlabelled cells
from the new lab's own slides are enough (docs/RESULTS.md measures 1, 5 and 20).

The part branch is adapted on the part crops the (adapting) object branch draws, as in
training (:func:`~edge_iapp.train.predict.forward_branches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import ChromosomeDataset, PreparedImages, batches

MIN_BATCH = 2
"""A batch of one image can give a single value per channel at the last layers
(BatchNorm cannot estimate a variance from it); such a last batch is left out."""


def batchnorm_layers(model) -> list:
    """Every BatchNorm layer of ``model`` (any dimension), in module order."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def adapt_batchnorm(
    model,
    data: PreparedImages,
    branches: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Replace the running statistics of ``model``'s BatchNorm layers with ``data``'s.

    Each layer's running mean and variance become the plain average of the batch
    statistics over ``data`` (``momentum=None``), the batches drawn in one seeded random
    order. Weights, biases and labels are not touched or read. The model is left in
    eval mode.

    Args:
        model: :class:`~edge_iapp.model.IAPPCNN` (changed in place).
        data: the new lab's preprocessed images (``data.labels`` is never read).
        branches: the active branches (as in :func:`~edge_iapp.train.predict.check_branches`).
        device: where ``model`` is.
        batch_size: images per forward pass; larger batches give steadier statistics.

    Returns:
        ``{"layers", "images", "batches", "left_out"}``: BatchNorm layers reset, images
        used, batches run, images of a too-small last batch left out.

    Raises:
        ValueError: fewer than :data:`MIN_BATCH` images, or a model without BatchNorm.
    """
    import torch

    from .predict import check_branches, forward_branches

    branches = check_branches(branches)
    if len(data) < MIN_BATCH:
        raise ValueError(
            f"BatchNorm adaptation needs at least {MIN_BATCH} images of the new lab, "
            f"got {len(data)}"
        )
    # only the active branches: an inactive branch sees no image, and resetting its
    # statistics would leave them at the defaults (mean 0, variance 1)
    layers = [m for b in branches for m in batchnorm_layers(getattr(model, f"{b}_branch"))]
    if not layers:
        raise ValueError("the model's active branches have no BatchNorm layer: nothing to adapt")
    saved = [(m.momentum, m.track_running_stats) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.track_running_stats = True
    used = n_batches = 0
    model.train()
    try:
        with torch.no_grad():
            # shuffled (seeded): a batch of one or two cells would miss the variance
            # between cells, which the averaged batch statistics cannot recover
            rng = np.random.default_rng(0)
            for batch in batches(ChromosomeDataset(data), batch_size, shuffle=True, rng=rng):
                n = int(batch["global"].shape[0])
                if n < MIN_BATCH:
                    continue
                x = {k: batch[k].to(device) for k in ("global", "object")}
                forward_branches(model, x, branches)
                used += n
                n_batches += 1
    finally:
        for m, (momentum, track) in zip(layers, saved, strict=True):
            m.momentum, m.track_running_stats = momentum, track
        model.eval()
    return {
        "layers": len(layers),
        "images": used,
        "batches": n_batches,
        "left_out": len(data) - used,
    }


ADAPT_FILE = "adapt.json"
"""What ``edge-iapp adapt`` did: the run it started from, the cells, the images."""


def save_adapted(model, out: str | Path, adaptation: dict[str, Any], cfg=None) -> Path:
    """Write the adapted weights as ``out/last.pt`` (atomically).

    Args:
        model: the adapted model.
        out: the run folder (created).
        adaptation: :func:`adapt_batchnorm`'s record (stored in the checkpoint).
        cfg: the :class:`~edge_iapp.train.run.RunConfig` to save beside it (a new run
            that ``export`` accepts); None keeps the folder's own ``config.json`` and
            the rest of its ``last.pt`` (optimizer, epoch, metrics: a fine-tuned run).

    Returns:
        ``out/last.pt``.
    """
    import io

    import torch

    from ..ioutil import atomic_write_bytes
    from .checkpoint import load_checkpoint
    from .run import LAST_CHECKPOINT

    out = Path(out)
    last = out / LAST_CHECKPOINT
    state = {"epoch": 0} if cfg is not None else load_checkpoint(last)
    state.update(model=model.state_dict(), adaptation=adaptation)
    buf = io.BytesIO()
    torch.save(state, buf)
    out.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        cfg.save(out)
    # a new file (never writing through last.pt's hard link to the epoch checkpoint)
    return atomic_write_bytes(last, buf.getvalue())


def write_adapted_run(
    out: Path, model, cfg, adaptation: dict, data: PreparedImages, device: str, source: dict, log
) -> float | None:
    """Make ``out`` a run of the adapted ``model``: ``config.json`` (``cfg``), ``last.pt``
    (:func:`save_adapted`) and ``ood.json``, the energy threshold on the adaptation images.

    The review flag's out-of-distribution test then refers to the new lab. The energy
    alone: the class-distance part of the score needs labels, which adaptation has not.
    The threshold is set on the same images the statistics came from (in-sample).

    Returns:
        The threshold, or None when no record could be made (said through ``log``).
    """
    from .ood_run import write_run_ood
    from .predict import predict

    save_adapted(model, out, adaptation, cfg)
    try:
        return write_run_ood(
            out,
            predict(model, data, cfg.branches, device=device),
            source={"part": "adaptation cells (unlabelled, in-sample)", **source},
        )["threshold"]
    except ValueError as exc:
        log(f"warning: no OOD calibration written: {exc}")
        return None


def slide_cells(slides: str | Path, out: str | Path) -> tuple[dict[str, list], list[str]]:
    """The crop cells under a slides folder (the layout ``edge-iapp score`` reads).

    Args:
        slides: one slide folder (``SLIDE/<cell>/<crops>``) or a folder of slides.
        out: the output folder (must not overlap ``slides``).

    Returns:
        ``({"slide/cell": [Sample, ...]}, notes)``: samples carry no label (class index
        0, never read) and their cell, so that a cell-relative size sees the whole cell;
        notes say which cells were left out and why (a whole image, no image file).

    Raises:
        NotADirectoryError, ValueError: from :func:`edge_iapp.scoring.layout.discover`.
    """
    from ..classes import CLASS_NAMES
    from ..data.dataset import Sample
    from ..data.imread import IMAGE_SUFFIXES
    from ..scoring.layout import discover, visible_children

    cells: dict[str, list] = {}
    notes: list[str] = []
    for slide in discover(Path(slides), Path(out)):
        for job in slide.cells:
            key = f"{job.slide}/{job.cell}"
            files = [
                p
                for p in visible_children(job.source)
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
            if len(files) < 2:
                notes.append(
                    f"{key}: left out ({len(files)} image file(s); adaptation reads cells of "
                    "single-chromosome crops, not whole images)"
                )
                continue
            cells[key] = [Sample(p, 0, "1", job.slide, job.cell) for p in files]
        # the dataset reader takes x and y in either case; 23/24 are left out, so that a
        # slide of 23 or more numbered cells is not taken for a labelled folder
        names = {job.cell.upper() if job.cell in ("x", "y") else job.cell for job in slide.cells}
        if names and names <= set(CLASS_NAMES) and names & {"X", "Y"}:
            raise ValueError(
                f"{slide.source} looks like a labelled folder, not slides: its cell folders "
                f"are class names ({', '.join(sorted(names))}); slides hold one folder per "
                "cell (SLIDE/<cell>/<crops>)"
            )
    return cells, notes


def adapt_run(
    run: str | Path,
    slides: str | Path,
    out: str | Path,
    cells: int = 5,
    *,
    seed: int = 0,
    device: str = "cpu",
    prepare_fn=None,
    log=print,
) -> dict[str, Any]:
    """``edge-iapp adapt``: RUN's model with BatchNorm statistics of a new lab's slides.

    Picks ``cells`` crop cells of ``slides`` (seeded, as fine-tuning picks cells), reads
    and preprocesses them with RUN's preprocessing, re-estimates the statistics and
    writes RUN2 (``out``): ``config.json`` (RUN's, with ``extra["adapted"]``), ``last.pt``,
    ``adapt.json``, ``ood.json`` (the energy threshold on the same cells: the review
    flag's out-of-distribution test now refers to the new lab) and RUN's ``split.json``
    (INT8 export calibrates on RUN's training images). No label is needed or read.

    Raises:
        ValueError: RUN2 already holds a run, too few cells or readable images, or a
            slides folder that overlaps ``out``.
        FileNotFoundError: RUN is not a run.
    """
    import json

    from ..ioutil import atomic_write_text
    from .checkpoint import SPLIT_FILE
    from .data import prepare
    from .finetune import pick_ids
    from .run import LAST_CHECKPOINT, RunConfig, load_model

    run, out = Path(run), Path(out)
    model, cfg = load_model(run)
    if (out / LAST_CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run ({out / LAST_CHECKPOINT}); choose a new --out")
    by_cell, notes = slide_cells(slides, out)
    for note in notes:
        log(f"note: {note}")
    if cells < 1:
        raise ValueError(f"--cells must be at least 1, got {cells}")
    if cells > len(by_cell):
        raise ValueError(
            f"--cells {cells}: {slides} has {len(by_cell)} cell folder(s) of crops "
            "(SLIDE/<cell>/<crop files>)"
        )
    chosen = pick_ids(by_cell, cells, seed)
    samples = [s for c in chosen for s in by_cell[c]]
    data = (prepare_fn or (lambda s, p, _label: prepare(s, p)))(samples, cfg.preprocess, "cells")
    adaptation = adapt_batchnorm(model.to(device), data, cfg.branches, device)
    new_cfg = RunConfig.from_dict(cfg.to_dict())
    new_cfg.epochs = 0
    record = {
        "run": str(run.resolve()),
        "slides": str(slides),
        "cells": chosen,
        "seed": int(seed),
        "images": len(data),
        "unreadable": [{"file": str(p), "error": r} for p, r in data.skipped],
        "adaptation": adaptation,
        "labels_used": False,
        "training_data": cfg.extra.get("data"),
    }
    new_cfg.extra = {**new_cfg.extra, "adapted": {k: record[k] for k in ("run", "slides", "cells")}}
    record["ood_threshold"] = write_adapted_run(
        out, model, new_cfg, adaptation, data, device, {"slides": str(slides)}, log
    )
    if (run / SPLIT_FILE).is_file():  # RUN's split: what export's INT8 calibration reads
        atomic_write_text(out / SPLIT_FILE, (run / SPLIT_FILE).read_text(encoding="utf-8"))
    atomic_write_text(out / ADAPT_FILE, json.dumps(record, indent=1) + "\n")
    return record
