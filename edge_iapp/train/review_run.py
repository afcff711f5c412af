"""``RUN/review.json``: the review threshold placed on a run's labelled val part, for export.

``finetune`` writes it for RUN2: T placed on the new lab's val part (labelled, neither
fine-tuned nor scored on) by :mod:`edge_iapp.train.review_threshold`, the upper bound over
resampled cells where there is one (:func:`~edge_iapp.train.review_threshold.suggest`).
``export`` then writes that T into the bundle unless ``--min-confidence`` says otherwise,
so a lab that fine-tunes and exports gets a review flag placed for its own cells without a
separate ``evaluate --subset val``. Like ``ood.json`` it holds the sha256 of the weights it
was placed for, and is ignored, with a note, when they changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REVIEW_FILE = "review.json"
FORMAT = "edge-iapp-review-threshold/1"


def write_run_review(
    run_dir: str | Path, placement: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
    """Write ``RUN/review.json`` atomically from a placement on the val part.

    Args:
        run_dir: the run folder (its ``last.pt`` made the placement's predictions).
        placement: :func:`edge_iapp.train.evaluate.review_threshold`'s record.
        source: facts to record (part, images, cells, data folder).

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
    }
    atomic_write_text(run_dir / REVIEW_FILE, json.dumps(record, indent=1) + "\n")
    return record


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
    if t is None:
        return None, f"{path} holds no threshold: {record.get('chosen')}"
    source = record["source"]
    where = f"{source.get('images', '?')} {source.get('part', '?')} images"
    return record, f"T = {float(t):g} ({record['chosen']}, placed on {where}: {path})"
