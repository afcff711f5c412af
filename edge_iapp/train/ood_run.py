"""A run's OOD calibration file ``RUN/ood.json``: write it from predictions, read it back.

The threshold (:mod:`edge_iapp.ood`) is calibrated on the training lab's validation
images with the weights of ``RUN/last.pt``; the file records that checkpoint's sha256
so that a reader never applies it to other weights silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..ood import (
    DEFAULT_QUANTILE,
    OOD_FILE,
    calibrate_combined,
    calibrate_ood,
    check_calibration,
    ood_scores,
)
from .predict import Predictions
from .run import LAST_CHECKPOINT

FIT_PER_CLASS = 50
"""Train images per class the class Gaussians of the OOD score are fitted on."""

MIN_CALIBRATION_IMAGES = 50
"""Fewer val images than this give a threshold near their largest score: said as a warning."""


def calibration_from_predictions(
    preds: Predictions, quantile: float = DEFAULT_QUANTILE, fit: Predictions | None = None
) -> dict[str, Any]:
    """The OOD record of ``preds`` (the val part), over all of its branches.

    Args:
        preds: logits of the training lab's validation images.
        quantile: share of them to accept.
        fit: logits and labels of (a class-balanced subset of) the train part: the
            ``energy+mahalanobis`` score; None: the ``energy`` score alone (also when
            the fit fails, with the reason in ``fit_error``).
    """
    fit_error = None
    if fit is not None:
        try:
            return calibrate_combined(
                preds.logits, fit.select(preds.branches), fit.labels, quantile, preds.branches
            )
        except ValueError as exc:  # e.g. one class in the train part: the energy still works
            fit_error = f"class Gaussians not fitted ({exc}); the energy score alone is used"
    record = calibrate_ood(ood_scores(preds.logits), quantile, branches=preds.branches)
    return {**record, "fit_error": fit_error} if fit_error else record


def calibration_warnings(record: dict[str, Any]) -> list[str]:
    """What a user should hear about an OOD record: a Gaussian fit that failed, or a
    threshold taken from too few images (the 0.95 quantile of 5 scores is nearly their
    maximum, and one unusual val image moves it)."""
    warnings = [f"OOD score: {record['fit_error']}"] if record.get("fit_error") else []
    n = int(record.get("n", 0))
    if n < MIN_CALIBRATION_IMAGES:
        warnings.append(
            f"the OOD threshold comes from {n} val image(s), fewer than "
            f"{MIN_CALIBRATION_IMAGES}: the review flag's OOD rule is rough; calibrate on a "
            "larger val part (edge-iapp ood-calibrate RUN --data DATA --split SPLIT)"
        )
    return warnings


def write_run_ood(
    run_dir: str | Path,
    preds: Predictions,
    quantile: float = DEFAULT_QUANTILE,
    source: dict[str, Any] | None = None,
    fit: Predictions | None = None,
) -> dict[str, Any]:
    """Calibrate on ``preds`` (the val part) and write ``RUN/ood.json`` atomically.

    Args:
        run_dir: the run folder (its ``last.pt`` made ``preds``).
        preds: logits of the training lab's validation images.
        quantile: see :func:`~edge_iapp.ood.calibrate_ood`.
        source: facts to record (data folder, split, part).
        fit: see :func:`calibration_from_predictions`.

    Returns:
        The record written.
    """
    from ..ioutil import atomic_write_text
    from .checkpoint import weights_source

    run_dir = Path(run_dir)
    record = calibration_from_predictions(preds, quantile, fit)
    record["source"] = {
        **(source or {}),
        "fit_images": None if fit is None else int(fit.labels.shape[0]),
        **weights_source(run_dir),
    }
    atomic_write_text(run_dir / OOD_FILE, json.dumps(record, indent=1) + "\n")
    return record


def load_run_ood(
    run_dir: str | Path, checkpoint: str | Path | None = None
) -> tuple[dict[str, Any] | None, str]:
    """``RUN/ood.json`` if it fits the weights in use, else ``None``; plus a note saying why.

    Args:
        run_dir: the run folder.
        checkpoint: the checkpoint in use (default ``RUN/last.pt``).
    """
    from .checkpoint import weights_changed

    path = Path(run_dir) / OOD_FILE
    if not path.is_file():
        return None, f"{path} does not exist (run `edge-iapp ood-calibrate {run_dir}`)"
    try:
        record = check_calibration(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        return None, f"{path} is unusable: {exc}"
    if weights_changed(record, run_dir, checkpoint):
        ckpt = Path(checkpoint) if checkpoint else Path(run_dir) / LAST_CHECKPOINT
        return None, (
            f"{path} was calibrated for other weights than {ckpt}; "
            f"run `edge-iapp ood-calibrate {run_dir}` again"
        )
    return record, f"OOD threshold {record['threshold']:.4f} from {path}"
