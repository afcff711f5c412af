"""``finetune --pseudo-cells P``: which cells get pseudo-labels, making them, and the rounds.

Beyond the paper; :mod:`edge_iapp.train.finetune` explains the recipe and calls
:func:`fine_tune_on_pseudo_labels`. The labels themselves (fused calls made consistent per
cell) are :mod:`edge_iapp.train.pseudo`'s.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import CLASS_NAMES
from ..data.dataset import cell_key
from ..data.held_out import held_out_images
from .evaluate import fused_scores
from .finetune import FinetuneError, of_cells, pick_cells, pick_ids
from .pseudo import pseudo_labels

PSEUDO_FILE = "pseudo_labels.csv"
"""RUN2's record of what each pseudo-labelled image was trained as (path, label, call)."""
LABELLER_DIR = ".labeller"
"""RUN2's stage for the model that makes the next round's pseudo-labels (removed after)."""


def fine_tune_on_pseudo_labels(
    session,
    labelled,
    labelled_raw,
    pool,
    pool_raw,
    samples: Sequence,
    ids: list[str],
    *,
    rounds: int,
    consistency: bool,
    slides: str | Path | None,
    out: Path,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Fine-tune RUN's weights on K labelled plus P pseudo-labelled cells, into ``out``.

    Round 1's labeller is RUN fine-tuned on the K labelled cells only; round r > 1's is
    round r - 1's model. Every round fine-tunes RUN's weights afresh (an error learnt in
    one round is not carried over as weights); the last round's model is RUN2.

    Args:
        session: the fine-tuning's :class:`~edge_iapp.train.finetune.Session` (``score``,
            ``fine_tune``, ``cfg``, ``device``, ``batch_size``).
        labelled, labelled_raw: the K cells' ``PreparedImages`` (and ``RawImages`` when
            RUN augments, else None).
        pool, pool_raw: the P cells' images, alike; their labels are overwritten.
        samples: the P cells' samples (their cells, for the consistency step).
        ids: the P cells' ids.
        rounds: R >= 1.
        consistency: make each cell's pseudo-labels consistent.
        slides: where the P cells came from (None: the train part, whose folder labels are
            compared with the pseudo-labels for the record).
        out: RUN2.
        log: messages.

    Returns:
        ``(the labelled-only model's test scores, the "pseudo" record, images trained on)``.
    """
    from ..ioutil import atomic_write_text
    from .run import load_model

    augment = labelled_raw is not None
    stage = out / LABELLER_DIR
    shutil.rmtree(stage, ignore_errors=True)  # left by a killed run
    session.fine_tune(stage, labelled, labelled_raw)
    history: list[dict[str, Any]] = []
    labelled_only = None
    for r in range(1, rounds + 1):
        labeller, _ = load_model(stage)
        scored = session.score(labeller)
        labelled_only = labelled_only or scored
        labels, info, table = label_pool(
            labeller.to(session.device),
            pool,
            samples,
            session.cfg,
            consistency,
            session.device,
            session.batch_size,
            folder_labels=slides is None,
        )
        info["labeller_accuracy"] = scored["fused"]["accuracy"]
        history.append(info)
        for images in (pool, pool_raw):
            if images is not None:
                images.labels = labels.copy()
        log(
            f"round {r}/{rounds}: pseudo-labelled {len(pool)} images of {len(ids)} cell(s), "
            f"{info['changed_by_consistency']} call(s) changed by consistency"
        )
        del labeller
        shutil.rmtree(stage)
        both = join(labelled, pool)
        session.fine_tune(
            out if r == rounds else stage, both, join(labelled_raw, pool_raw) if augment else None
        )
    atomic_write_text(out / PSEUDO_FILE, table)
    record = {
        **history[-1],
        "source": f"slides {slides}" if slides else "train part",
        "rounds": history,
        "cell_ids": ids,
        "file": PSEUDO_FILE,
    }
    return labelled_only, record, len(both)


def pseudo_pool(
    train_samples: Sequence,
    cells: int,
    pseudo_cells: int,
    rounds: int,
    seed: int,
    slides: str | Path | None,
    out: Path,
    log: Callable[[str], None],
    held_out: Sequence = (),
) -> tuple[list[str], list]:
    """``(cell ids, samples)`` of the P cells to pseudo-label.

    From the train part: the next P cells after the K labelled ones in the seeded order
    (their labels are not read for training). From ``slides``: P of its cells, seeded;
    refused when ``slides`` holds any image of ``held_out`` (the split's val and test
    parts: training on them, even unlabelled, would inflate the scores), as a file, a link,
    a copy or the same pixels in another encoding (:mod:`edge_iapp.data.held_out`).
    """
    if pseudo_cells < 0:
        raise FinetuneError(f"--pseudo-cells must be 0 or more, got {pseudo_cells}")
    if rounds < 1:
        raise FinetuneError(f"--pseudo-rounds must be 1 or more, got {rounds}")
    if not pseudo_cells:
        if slides is not None:
            raise FinetuneError("--pseudo-slides needs --pseudo-cells P: how many of its cells")
        return [], []
    if cells < 1:
        raise FinetuneError(
            "--pseudo-cells needs --cells 1 or more: the pseudo-labels come from the model "
            "fine-tuned on the labelled cells"
        )
    if slides is not None:
        from .adapt_bn import slide_cells

        try:
            by_cell, notes = slide_cells(slides, out)
        except (OSError, ValueError) as exc:
            raise FinetuneError(f"--pseudo-slides {slides}: {exc}") from exc
        for note in notes:
            log(f"note: {note}")
        if pseudo_cells > len(by_cell):
            raise FinetuneError(
                f"--pseudo-cells {pseudo_cells}: {slides} has {len(by_cell)} cell folder(s) "
                "of crops (SLIDE/<cell>/<crop files>)"
            )
        shared = held_out_images([s for c in by_cell.values() for s in c], held_out)
        if shared:
            raise FinetuneError(
                f"--pseudo-slides {slides} holds {len(shared)} image(s) of the split's val or "
                f"test part (e.g. {shared[0]}): the scores would be inflated; keep them out"
            )
        ids = pick_ids(by_cell, pseudo_cells, seed)
        return ids, [s for c in ids for s in by_cell[c]]
    available = len({cell_key(s) for s in train_samples})
    if cells + pseudo_cells > available:
        raise FinetuneError(
            f"--cells {cells} plus --pseudo-cells {pseudo_cells}: the split's train part has "
            f"only {available} cell(s) in this folder"
        )
    both = pick_cells(train_samples, cells + pseudo_cells, seed)
    labelled = set(pick_cells(train_samples, cells, seed))
    ids = [c for c in both if c not in labelled]
    return ids, of_cells(train_samples, ids)


def label_pool(
    model, pool, samples: Sequence, cfg, consistency: bool, device, batch_size, folder_labels=True
):
    """``(pseudo-labels of pool's images, the record of how they were made, its CSV)``.

    ``folder_labels``: the pool's images carry real labels, to compare with (slides do not).
    """
    import csv
    import io

    from .predict import predict

    if len(pool) == 0:
        raise FinetuneError(f"none of the {len(samples)} pseudo-label images could be read")
    cell_of = {str(s.path): cell_key(s) for s in samples}
    preds = predict(model, pool, cfg.branches, device=device, batch_size=batch_size)
    probs, _ = fused_scores(preds, preds.branches, cfg.fusion)
    pseudo = pseudo_labels(probs, [cell_of.get(p) for p in pool.paths], consistency=consistency)
    folder = pool.labels  # the folder's labels: compared below, never trained on
    agreement = None
    if folder_labels:
        agreement = {
            "plain": float((pseudo.plain == folder).mean()),
            "used": float((pseudo.labels == folder).mean()),
        }
    table = io.StringIO()
    rows = csv.writer(table, lineterminator="\n")
    rows.writerow(["path", "cell", "pseudo_label", "plain_call", "confidence"])
    for i, path in enumerate(pool.paths):
        rows.writerow(
            [
                path,
                cell_of.get(path) or "",
                CLASS_NAMES[pseudo.labels[i]],
                CLASS_NAMES[pseudo.plain[i]],
                f"{pseudo.confidence[i]:.4f}",
            ]
        )
    return (
        pseudo.labels,
        {
            **pseudo.summary(),
            "consistency": bool(consistency),
            "agreement_with_folder_labels": agreement,
        },
        table.getvalue(),
    )


def join(a, b):
    """Two :class:`~edge_iapp.train.data.PreparedImages` (or two ``RawImages``) as one."""
    import dataclasses

    joined = {}
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        joined[f.name] = np.concatenate([x, y]) if isinstance(x, np.ndarray) else [*x, *y]
    return type(a)(**joined)
