"""``RUN/review.json``: the review threshold placed on a run's labelled val part, for export.

``finetune`` writes it for RUN2: T placed on the new lab's val part (labelled, neither
fine-tuned nor scored on) by :mod:`edge_iapp.train.review_threshold`, the upper bound over
resampled cells where there is one (:func:`~edge_iapp.train.review_threshold.suggest`).
``export`` then writes that T into the bundle unless ``--min-confidence`` says otherwise,
so a lab that fine-tunes and exports gets a review flag placed for its own cells without a
separate ``evaluate --subset val``. Like ``ood.json`` it holds the sha256 of the weights it
was placed for, and is ignored, with a note, when they changed. Under the "ood or
confidence" rule T only has to catch the errors the OOD flag misses, so the record also
holds the sha256 of the ``ood.json`` it was placed with: ``ood-calibrate`` places T again
when it rewrites that file, and a T placed with another OOD calibration is not used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..ood import OOD_FILE

REVIEW_FILE = "review.json"
FORMAT = "edge-iapp-review-threshold/1"


def place_run_review(
    run_dir: str | Path,
    preds,
    paths: Sequence[str],
    samples: Sequence,
    ood: dict[str, Any] | None,
    fusion: str,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Place T on a run's labelled val part and write ``RUN/review.json``.

    Args:
        run_dir: the run folder; its ``ood.json``, when given as ``ood``, must be on disk.
        preds: :class:`~edge_iapp.train.predict.Predictions` of the val images (labels read).
        paths: the image of each prediction (``PreparedImages.paths``).
        samples: the val part's samples (their cells give the spread over resampled cells).
        ood: the run's OOD calibration (the rule becomes "ood or confidence"), or None.
        fusion: the run's fusion (``cfg.fusion``).
        source: facts to record (part, data folder); images and cells are added.

    Returns:
        The record written (:func:`write_run_review`).
    """
    from ..data import cell_key
    from .evaluate import fused_scores, ood_flag, review_threshold

    probs, _ = fused_scores(preds, preds.branches, fusion)
    cell_of = {str(s.path): cell_key(s) for s in samples}
    cells = [cell_of.get(str(path)) for path in paths]
    is_out = None if ood is None else ood_flag(preds, ood)[1]
    placement = review_threshold(preds, probs, is_out, cells=cells)
    source = {**source, "images": len(cells), "cells": len({c for c in cells if c})}
    return write_run_review(run_dir, placement, source, with_ood=ood is not None)


def write_run_review(
    run_dir: str | Path, placement: dict[str, Any], source: dict[str, Any], with_ood: bool
) -> dict[str, Any]:
    """Write ``RUN/review.json`` atomically from a placement on the val part.

    Args:
        run_dir: the run folder (its ``last.pt`` made the placement's predictions).
        placement: :func:`edge_iapp.train.evaluate.review_threshold`'s record.
        source: facts to record (part, images, cells, data folder).
        with_ood: whether the placement used ``RUN/ood.json`` (its sha256 is recorded).

    Returns:
        The record written: ``min_confidence`` (T for the bundle, or None), ``chosen``
        (``"upper"``, ``"placed"`` or why there is none), the target, the rule, the
        placed T and the spread, and the source with the checkpoint's sha256.
    """
    from ..ioutil import atomic_write_text
    from .checkpoint import weights_source
    from .review_threshold import suggest

    run_dir = Path(run_dir)
    t, chosen = suggest(placement)
    record = {
        "format": FORMAT,
        "min_confidence": t,
        "chosen": chosen,
        "target": placement["placed"]["target"],
        "rule": placement["rule"],
        "placed": placement["placed"],
        "spread": placement["spread"],
        "source": {**source, **weights_source(run_dir)},
        "ood_sha256": _ood_sha256(run_dir) if with_ood else None,
    }
    atomic_write_text(run_dir / REVIEW_FILE, json.dumps(record, indent=1) + "\n")
    return record


def review_note(record: dict[str, Any], path: Path, where: str) -> str:
    """One line on the T of a record just written to ``path``, placed on ``where``."""
    t, target = record["min_confidence"], f"{100 * record['target']:g}% of the errors"
    if t is None:
        return f"review threshold for {target} on {where}: none ({record['chosen']})"
    placed = record["placed"]["min_confidence"]
    which = f"upper bound over resampled val cells; placed T {placed:g}"
    return (
        f"review threshold for {target} on {where}: T = {t:g} "
        f"({which if record['chosen'] == 'upper' else 'placed'}); `export` writes it into "
        f"the bundle: {path}"
    )


def load_run_review(
    run_dir: str | Path, checkpoint: str | Path | None = None
) -> tuple[dict[str, Any] | None, str]:
    """``RUN/review.json`` when it holds a T placed for the weights in use, else None; and
    a note that says which T, or why there is none."""
    from .checkpoint import weights_changed
    from .run import LAST_CHECKPOINT

    path = Path(run_dir) / REVIEW_FILE
    if not path.is_file():
        return None, f"{path} does not exist"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        t = record["min_confidence"]
        if record.get("format") != FORMAT or not (t is None or 0.0 < float(t) <= 1.0):
            raise ValueError(f"not a {FORMAT} record with min_confidence in (0, 1]")
        missing = [k for k in ("chosen", "target", "rule", "source") if k not in record]
        if missing or not isinstance(record["source"], dict):
            raise ValueError(f"missing or malformed {', '.join(missing) or 'source'}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{path} is unusable: {exc}"
    if weights_changed(record, run_dir, checkpoint):
        ckpt = Path(checkpoint) if checkpoint else Path(run_dir) / LAST_CHECKPOINT
        return None, f"{path} was placed for other weights than {ckpt}"
    # a T placed without the OOD flag still catches its share with it (it flags more);
    # one placed with it must see the same calibration (older records carry no sha256)
    if record.get("ood_sha256") is not None and record["ood_sha256"] != _ood_sha256(run_dir):
        return None, (
            f"{path} was placed with another OOD calibration than {Path(run_dir) / OOD_FILE} "
            "(place T again: `edge-iapp ood-calibrate RUN` does, or pass --min-confidence)"
        )
    if t is None:
        return None, f"{path} holds no threshold: {record.get('chosen')}"
    source = record["source"]
    where = f"{source.get('images', '?')} {source.get('part', '?')} images"
    return record, f"T = {float(t):g} ({record['chosen']}, placed on {where}: {path})"


def _ood_sha256(run_dir: str | Path) -> str | None:
    """sha256 of ``RUN/ood.json``, None when there is none."""
    from ..ioutil import sha256_file

    path = Path(run_dir) / OOD_FILE
    return sha256_file(path) if path.is_file() else None
