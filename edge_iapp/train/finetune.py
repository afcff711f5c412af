"""Few-shot fine-tuning: adapt a trained run to a new lab with K labelled cells, score it.

``finetune(RUN, NEWLAB, SPLIT, K, RUN2)`` picks K cells of the new lab's *train* part
(seeded; the K cells of a larger K include those of a smaller one with the same seed,
so a few-shot curve 0, 1, 5, 20 is nested), trains all branches of RUN's model on them
with RUN's recipe and preprocessing (:func:`~edge_iapp.train.trainer.train` with
``init_from``), and evaluates RUN ("before") and RUN2 ("after") on the new lab's *test*
part with the functions of :mod:`edge_iapp.train.evaluate`. K = 0 only evaluates RUN:
the zero-shot point of the curve. Everything is recorded in ``RUN2/finetune.json``.

With ``adapt_cells=M``, M cells of the new lab's train part are also read without their
labels (the same seeded order as the K labelled ones, so they include them when M >= K)
and the model's BatchNorm statistics are re-estimated on them
(:mod:`edge_iapp.train.adapt_bn`): RUN's model as it is ("adapted": the unsupervised
point of the curve; with K = 0, RUN2 is that adapted run) and, for K > 0, the fine-tuned
model after fine-tuning ("after"; "finetuned" is its score before). Fine-tuning itself
starts from RUN's weights either way: in training mode BatchNorm normalises with each
batch's own statistics and overwrites the running ones, so adapting *before* it changes
nothing measurable (docs/RESULTS.md); adapting after it gives the statistics of M cells
instead of the K labelled ones.

With ``pseudo_cells=P`` (and K > 0), the model fine-tuned on the K cells labels P more
cells of the new lab's train part (the next P of the same seeded order, so they never
include the K; their labels are not read for training), each cell's calls made
consistent by :mod:`edge_iapp.train.pseudo`, and RUN's model is fine-tuned again, on the
K labelled plus the P pseudo-labelled cells: RUN2 is that model. The K-cell model is
scored ("labelled_only") and removed. With ``pseudo_rounds=R`` the model of round r
labels the P cells again for round r + 1, each round starting from RUN's weights (so an
error learnt in one round is not carried over as weights). The folder's labels of the P
cells are compared with the pseudo-labels for the record only. With ``pseudo_slides``
the P cells come from unlabelled slides (the layout ``score`` reads) instead, and there is
nothing to compare with.

RUN2 gets its own review flag from the new lab's val part: ``ood.json`` (the OOD
threshold, labels unread) and ``review.json`` (the confidence threshold T placed on the
val part's labels, :mod:`edge_iapp.train.review_run`), which ``export`` writes into the
bundle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import CLASS_NAMES
from ..data.dataset import cell_key
from .evaluate import fused_scores, ood_review, summarize
from .predict import Predictions

FINETUNE_FILE = "finetune.json"
DROPPED_EXTRA = (
    "time_budget_min",
    "planned_epochs",
    "max_per_class",
    "val_max_per_class",
    "adapted",
)
"""RUN's ``extra`` settings that describe how RUN was sized or made (an adaptation whose
statistics and OOD threshold fine-tuning replaces), not how to train: not copied."""


class FinetuneError(ValueError):
    """The fine-tuning request cannot be carried out (the message says why)."""


def pick_ids(ids: Iterable[str], k: int, seed: int = 0) -> list[str]:
    """K of the distinct ``ids`` (0 <= K <= their number), chosen by ``seed``; sorted.

    The choice is the first K of one seeded permutation of the sorted ids, so the ids of
    a smaller K are among those of a larger K.
    """
    pool = sorted({str(i) for i in ids})
    order = np.random.default_rng(seed).permutation(len(pool))
    return sorted(pool[int(i)] for i in order[:k])


def pick_cells(samples: Sequence, k: int, seed: int = 0, option: str = "--cells") -> list[str]:
    """K distinct cells of ``samples``, chosen by ``seed`` (:func:`pick_ids`); sorted.

    A cell is keyed ``group/cell`` (:func:`~edge_iapp.data.cell_key`): cell names may
    repeat across cases, and two cases' cell ``1`` are two cells, not one.

    Raises:
        FinetuneError: negative K, or more cells asked for than there are (the message
            names ``option``).
    """
    cells = {str(cell_key(s)) for s in samples}
    if k < 0:
        raise FinetuneError(f"{option} must be 0 or more, got {k}")
    if k > len(cells):
        raise FinetuneError(
            f"{option} {k}: the split's train part has only {len(cells)} cell(s) in this folder"
        )
    return pick_ids(cells, k, seed)


def of_cells(samples: Sequence, cells: Iterable[str]) -> list:
    """The ``samples`` of the given cells (keys from :func:`pick_cells`), in their order.

    Runs fine-tuned before cells were keyed by group recorded bare cell names (no ``/``);
    such a name matches every sample of that cell name, as it did then.
    """
    wanted = set(cells)
    return [s for s in samples if str(cell_key(s)) in wanted or str(s.cell) in wanted]


def missing_classes(chosen: Sequence, reference: Sequence) -> list[str]:
    """Class names present in ``reference`` samples but absent from ``chosen`` samples."""
    have = {int(s.label) for s in chosen}
    want = {int(s.label) for s in reference}
    return [CLASS_NAMES[c] for c in sorted(want - have)]


def score(preds: Predictions, fusion: str, ood: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accuracy and macro-F1 of the fused call and of each branch (evaluate.py's functions).

    Args:
        preds: per-branch logits on the test images.
        fusion: ``"lambda"`` or ``"sum"`` (the run's).
        ood: the run's OOD calibration; adds :func:`~edge_iapp.train.evaluate.ood_review`.
    """
    probs, _ = fused_scores(preds, preds.branches, fusion)
    fused = summarize(preds.labels, probs)
    out: dict[str, Any] = {
        "images": int(preds.labels.size),
        "fused": {"accuracy": fused["accuracy"], "macro_f1": fused["macro_f1"]},
        "branches": {},
    }
    for b in preds.branches:
        s = summarize(preds.labels, fused_scores(preds, (b,), "sum")[0])
        out["branches"][b] = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
    if ood is not None:
        out["ood"] = ood_review(preds, probs, ood)
    return out


def finetune_config(cfg, *, epochs: int, lr: float, seed: int, device: str, extra: dict):
    """RUN's :class:`~edge_iapp.train.run.RunConfig` with the fine-tuning epochs, LR, seed.

    Everything else (backbone, preprocessing incl. any size mode, batch size, momentum,
    schedule, flips, augmentation settings in ``extra``) is RUN's. bf16 autocast is kept
    only on CUDA.
    """
    from .run import RunConfig

    new = RunConfig.from_dict(cfg.to_dict())
    new.epochs, new.lr, new.seed = int(epochs), float(lr), int(seed)
    new.extra = {k: v for k, v in new.extra.items() if k not in DROPPED_EXTRA}
    if new.extra.get("amp") and not str(device).startswith("cuda"):
        new.extra["amp"] = False
    new.extra.update(extra)
    return new


def _weight_change(run_a: Path, run_b: Path) -> float:
    """Largest absolute difference between the floating-point tensors of two runs
    (weights, and BatchNorm statistics, which ``--adapt-cells`` re-estimates)."""
    from .checkpoint import load_checkpoint
    from .run import LAST_CHECKPOINT

    a = load_checkpoint(run_a / LAST_CHECKPOINT)["model"]
    b = load_checkpoint(run_b / LAST_CHECKPOINT)["model"]
    diff = 0.0
    for name, t in a.items():
        if t.is_floating_point():
            diff = max(diff, float((t - b[name]).abs().max()))
    return diff


def finetune(
    run: str | Path,
    data: str | Path,
    split: str | Path,
    cells: int,
    out: str | Path,
    *,
    epochs: int = 10,
    lr: float = 0.005,
    seed: int = 0,
    device: str = "cpu",
    max_test_per_class: int | None = None,
    adapt_cells: int = 0,
    pseudo_cells: int = 0,
    pseudo_consistency: bool = True,
    pseudo_rounds: int = 1,
    pseudo_slides: str | Path | None = None,
    batch_size: int = 64,
    prepare_fn: Callable[[Sequence, Any, str], Any] | None = None,
    log: Callable[[str], None] = print,
    console=None,
) -> dict[str, Any]:
    """Fine-tune RUN on ``cells`` cells of a new lab, evaluate before and after.

    Args:
        run: the trained run (``config.json``, ``last.pt``).
        data: the new lab's labelled folder.
        split: its split file (cells are taken from ``train``, scores from ``test``).
        cells: K; 0 evaluates RUN only.
        out: RUN2, the new run folder (``finetune.json`` is written there even for K = 0).
        epochs, lr, seed: the fine-tuning recipe (the rest is RUN's).
        device: ``"cpu"`` or ``"cuda"``.
        max_test_per_class: class-balanced subset of the test part (quick looks).
        adapt_cells: M unlabelled cells to re-estimate BatchNorm statistics on, of RUN's
            model and of the fine-tuned one (0: none).
        pseudo_cells: P more cells to fine-tune on with pseudo-labels (0: none; needs K > 0).
        pseudo_consistency: make each pseudo-labelled cell's calls consistent (else the
            plain calls are the labels).
        pseudo_rounds: R rounds of pseudo-labelling: round r > 1 labels the P cells with
            round r-1's model, and fine-tunes RUN's weights afresh on them (1: once).
        pseudo_slides: take the P cells from these slides (``SLIDE/<cell>/<crops>``, the
            layout ``score`` reads; no labels) instead of the rest of the train part.
        batch_size: images per forward pass in evaluation.
        prepare_fn: ``(samples, PreprocessConfig, label) -> PreparedImages``; default
            :func:`~edge_iapp.train.data.prepare`.
        log: messages and warnings.
        console: rich console for the training progress.

    Returns:
        The ``finetune.json`` record.

    Raises:
        FinetuneError: K too large or negative, no matching cells or test images,
            RUN2 already holds a run. ``DataProblem`` from the data folder or split.
    """
    from ..ioutil import atomic_write_text, sha256_file
    from .data import balanced_subset, prepare
    from .loading import load_parts
    from .ood_run import load_run_ood
    from .pseudo_rounds import pseudo_pool
    from .run import LAST_CHECKPOINT, RunConfig, load_model

    run, data, split, out = Path(run), Path(data), Path(split), Path(out)
    prepare_fn = prepare_fn or (lambda samples, pcfg, _label: prepare(samples, pcfg))
    try:
        cfg = RunConfig.load(run)
    except ValueError as exc:
        raise FinetuneError(f"cannot fine-tune {run}: {exc}") from None
    if not (run / LAST_CHECKPOINT).is_file():
        raise FinetuneError(f"{run} has no {LAST_CHECKPOINT}: nothing to fine-tune")
    if (cells > 0 or adapt_cells > 0) and (out / LAST_CHECKPOINT).exists():
        raise FinetuneError(
            f"{out} already holds a run ({out / LAST_CHECKPOINT}); choose a new --out"
        )
    parts = load_parts(data, split)
    train_samples, test_samples = parts.parts["train"], parts.parts["test"]
    if not train_samples and not test_samples:
        raise FinetuneError(f"no image of {data} belongs to the train or test part of {split}")
    chosen = pick_cells(train_samples, cells, seed)
    pseudo_ids, pseudo_samples = pseudo_pool(
        train_samples,
        cells,
        pseudo_cells,
        pseudo_rounds,
        seed,
        pseudo_slides,
        out,
        log,
        held_out=[*parts.parts["val"], *test_samples],
    )
    adapt_chosen = set(pick_cells(train_samples, adapt_cells, seed, "--adapt-cells"))
    adapt_samples = of_cells(train_samples, adapt_chosen)
    ft_samples = of_cells(train_samples, chosen)
    missing = missing_classes(ft_samples, [*train_samples, *test_samples]) if cells else []
    if missing:
        log(
            f"warning: the {cells} fine-tuning cell(s) have no image of class(es) "
            f"{', '.join(missing)} (present elsewhere in {data}): those classes are not adapted"
        )
    if max_test_per_class:
        test_samples = balanced_subset(test_samples, max_test_per_class, seed, cfg.preprocess)
    if not test_samples:
        raise FinetuneError(f"the split's test part has no images in {data}: nothing to score")

    test = prepare_fn(test_samples, cfg.preprocess, "test")
    if len(test) == 0:
        raise FinetuneError(f"none of the {len(test_samples)} test images could be read")
    split_sha256 = sha256_file(split)
    new_cfg = finetune_config(
        cfg,
        epochs=epochs if cells else 0,
        lr=lr,
        seed=seed,
        device=device,
        extra={
            "data": str(data),
            "split_sha256": split_sha256,
            "finetune": {
                "from": str(run.resolve()),
                "cells": chosen,
                "adapt_cells": sorted(adapt_chosen),
                "pseudo_cells": pseudo_ids,
            },
        },
    )
    session = Session(run, new_cfg, test, parts.split, device, batch_size, console)
    ood, ood_note = load_run_ood(run)
    try:
        model, _ = load_model(run)
    except (ValueError, RuntimeError) as exc:  # a damaged or foreign last.pt
        raise FinetuneError(f"cannot fine-tune {run}: {exc}") from None
    record: dict[str, Any] = {
        "run": str(run),
        "out": str(out),
        "data": str(data),
        "split": str(split),
        "split_sha256": split_sha256,
        "cells_requested": int(cells),
        "cells": chosen,
        "seed": int(seed),
        "epochs": int(epochs) if cells else 0,
        "lr": float(lr),
        "device": device,
        "train_cells_available": len({cell_key(s) for s in train_samples}),
        "train_images": 0,
        "missing_classes": missing,
        "test_images": len(test),
        "test_cells": len({cell_key(s) for s in test_samples}),
        "test_max_per_class": max_test_per_class,
        "ood_calibration": ood_note,
        "before": session.score(model, ood),
        "adapt_cells": sorted(adapt_chosen),
        "adaptation": None,
        "adapted": None,
        "finetuned": None,
        "readaptation": None,
        "labelled_only": None,
        "pseudo": None,
        "after": None,
    }
    adapt_data = None
    if adapt_cells:
        adapt_data = prepare_fn(adapt_samples, cfg.preprocess, f"{adapt_cells} adaptation cell(s)")
        record["adaptation"] = _adapt(model, adapt_data, cfg.branches, device, log)
        record["adapted"] = session.score(model)
        if not cells:  # RUN2 is the adapted run
            from .adapt_bn import write_adapted_run

            write_adapted_run(
                out,
                model,
                new_cfg,
                record["adaptation"],
                adapt_data,
                device,
                {"data": str(data)},
                log,
            )
            record["after"] = record["adapted"]
    if cells:
        augment = bool(new_cfg.extra.get("augment"))
        if augment:  # RUN's augmentations: per batch, from raw crops
            log(f"fine-tuning with RUN's augmentations: {', '.join(new_cfg.extra['augment'])}")
        ft, raw = _training_images(ft_samples, new_cfg, augment, prepare_fn, f"{cells} fine-tuning")
        if len(ft) == 0:
            raise FinetuneError(f"none of the {len(ft_samples)} fine-tuning images could be read")
        record["train_images"] = len(ft)
        if pseudo_samples:
            from .pseudo_rounds import fine_tune_on_pseudo_labels

            pool, pool_raw = _training_images(
                pseudo_samples, new_cfg, augment, prepare_fn, f"{len(pseudo_ids)} pseudo-label"
            )
            record["labelled_only"], record["pseudo"], record["train_images"] = (
                fine_tune_on_pseudo_labels(
                    session,
                    ft,
                    raw,
                    pool,
                    pool_raw,
                    pseudo_samples,
                    pseudo_ids,
                    rounds=pseudo_rounds,
                    consistency=pseudo_consistency,
                    slides=pseudo_slides,
                    out=out,
                    log=log,
                )
            )
        else:
            session.fine_tune(out, ft, raw)
        model, _ = load_model(out)
        model.to(device)
        if adapt_data is not None:
            from .adapt_bn import save_adapted

            record["finetuned"] = session.score(model)
            record["readaptation"] = _adapt(model, adapt_data, new_cfg.branches, device, log)
            save_adapted(model, out, record["readaptation"])
        ood_out, record["ood_calibration_out"], val = _calibrate_ood(
            out, model, new_cfg, parts.parts["val"], ft, prepare_fn, device, batch_size, log
        )
        if val is not None:
            record["review_threshold_out"] = _place_review(
                out, *val, ood_out, parts.parts["val"], new_cfg, log
            )
        record["after"] = session.score(model, ood_out)
        record["max_abs_weight_change"] = _weight_change(run, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / FINETUNE_FILE, json.dumps(record, indent=1) + "\n")
    return record


@dataclass
class Session:
    """What the steps of one fine-tuning share: RUN's weights, RUN2's recipe, the test part.

    Attributes:
        run: RUN (its ``last.pt`` is where every fine-tuning starts).
        cfg: RUN2's :class:`~edge_iapp.train.run.RunConfig` (:func:`finetune_config`).
        test: the new lab's test part (``PreparedImages``), the only images scored.
        split: the split record saved with each fine-tuned run.
        device, batch_size: where the model runs, images per forward pass in scoring.
        console: rich console for the training progress.
    """

    run: Path
    cfg: Any
    test: Any
    split: dict[str, Any]
    device: str
    batch_size: int
    console: Any = None

    def score(self, model, ood: dict[str, Any] | None = None) -> dict[str, Any]:
        """:func:`score` of ``model`` on the test part (``ood``: add its review flags)."""
        from .predict import predict

        preds = predict(
            model.to(self.device),
            self.test,
            self.cfg.branches,
            device=self.device,
            batch_size=self.batch_size,
        )
        return score(preds, self.cfg.fusion, ood)

    def fine_tune(self, into: Path, images, raw=None) -> None:
        """Train RUN's weights on ``images`` into the run folder ``into``.

        ``raw``: their raw crops, to augment per batch with RUN's augmentations (None: none).
        """
        from .run import LAST_CHECKPOINT
        from .trainer import train

        train(
            self.cfg,
            images,
            into,
            None,
            device=self.device,
            init_from=self.run / LAST_CHECKPOINT,
            split=self.split,
            console=self.console,
            train_raw=raw,
        )


def _training_images(samples: Sequence, cfg, augment: bool, prepare_fn, what: str):
    """``(PreparedImages, RawImages or None)`` of ``samples``: raw crops too when augmenting."""
    from .data import load_raw, prepare_raw

    if augment:
        raw = load_raw(samples)
        return prepare_raw(raw, cfg.preprocess), raw
    return prepare_fn(samples, cfg.preprocess, f"{what} cell(s)"), None


def _calibrate_ood(
    out: Path, model, cfg, val_samples: Sequence, ft, prepare_fn, device, batch_size, log
) -> tuple[dict[str, Any] | None, str, tuple[Any, Predictions] | None]:
    """Write RUN2's ``ood.json`` for the fine-tuned weights.

    The threshold comes from the new lab's val part (neither fine-tuned nor scored on; its
    labels are not read), the class Gaussians from the fine-tuning images, the only
    labelled images of the new lab the run has seen. Classes missing from them are not
    modelled, so their calls look unfamiliar and go to review. Without readable val
    images RUN2 gets no ``ood.json`` (the note says so), as before.

    Returns:
        ``(the record or None, a note, (the val images, their predictions) or None)``.
    """
    from .ood_run import calibration_warnings, write_run_ood
    from .predict import predict

    if not val_samples:
        note = "no ood.json: the split's val part is empty (run `edge-iapp ood-calibrate`)"
        log(f"warning: {note}")
        return None, note, None
    val = prepare_fn(val_samples, cfg.preprocess, "val (OOD threshold)")
    if len(val) == 0:
        note = f"no ood.json: none of the {len(val_samples)} val images could be read"
        log(f"warning: {note}")
        return None, note, None
    val_preds = predict(model.to(device), val, cfg.branches, device=device, batch_size=batch_size)
    record = write_run_ood(
        out,
        val_preds,
        source={"part": "val", "data": cfg.extra.get("data"), "images": len(val)},
        fit=predict(model, ft, cfg.branches, device=device, batch_size=batch_size),
    )
    for warning in calibration_warnings(record):
        log(f"warning: {warning}")
    note = (
        f"{record['score']} threshold {record['threshold']:.4f} from {len(val)} val images of "
        f"the new lab, Gaussians from the {len(ft)} fine-tuning images: {out / 'ood.json'}"
    )
    return record, note, (val, val_preds)


def _place_review(
    out: Path, val, val_preds: Predictions, ood: dict[str, Any] | None, val_samples, cfg, log
) -> str:
    """Write RUN2's ``review.json``: T placed on the new lab's labelled val part (with its
    spread over resampled cells) for ``export`` to write into the bundle; return a note."""
    from .review_run import REVIEW_FILE, place_run_review, review_note

    source = {"part": "val", "data": cfg.extra.get("data")}
    record = place_run_review(out, val_preds, val.paths, val_samples, ood, cfg.fusion, source)
    note = review_note(record, out / REVIEW_FILE, "the new lab's val part")
    log(note)
    return note


def _adapt(model, data, branches, device: str, log) -> dict[str, Any]:
    """Re-estimate ``model``'s BatchNorm statistics on ``data`` (labels unread), in place."""
    from .adapt_bn import adapt_batchnorm

    try:
        info = adapt_batchnorm(model.to(device), data, branches, device)
    except ValueError as exc:
        raise FinetuneError(f"cannot adapt to the new lab: {exc}") from None
    log(f"BatchNorm statistics re-estimated on {info['images']} unlabelled images")
    return info


def read_finetune(run_dir: str | Path) -> dict[str, Any]:
    """``RUN2/finetune.json``."""
    return json.loads((Path(run_dir) / FINETUNE_FILE).read_text(encoding="utf-8"))
