"""Evaluate a run as the paper does (Tables 3 and 4), plus calibration and the review flag.

Writes ``DIR/metrics.json``, ``DIR/report.md`` and the figures ``confusion.png``,
``roc.png``, ``reliability.png``, ``risk_coverage.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import CLASS_NAMES
from ..fusion import fuse, softmax
from ..ood import DEFINITIONS
from . import metrics as M
from .predict import Predictions
from .review_threshold import (
    DEFAULT_TARGET,
    SWEEP_THRESHOLDS,
    flagged_shares,
    place,
    spread,
    sweep,
)

ABLATION_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("global",),
    ("global", "object"),
    ("global", "part"),
    ("global", "object", "part"),
)
"""Table 4's branch subsets (the part branch needs the object branch to run, not to vote)."""

REVIEW_RISKS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)


def fused_scores(
    preds: Predictions, subset: Sequence[str], mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (N, K), lambdas (B, N))``: softmax of the fused logits of ``subset``."""
    fused, lambdas = fuse(preds.select(subset), mode)  # type: ignore[arg-type]
    return softmax(fused), lambdas


def summarize(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1/support/AUC, confusion matrix for one scorer."""
    k = probs.shape[1]
    pred = probs.argmax(1)
    cm = M.confusion_matrix(labels, pred, k)
    prf = M.per_class_prf(cm)
    aucs = M.one_vs_all_auc(labels, probs)
    return {
        "accuracy": M.accuracy(labels, pred),
        "macro_f1": M.macro_f1(cm),
        # None (null, "n/a") where no class has both positives and negatives (one class)
        "macro_auc": _num(np.nanmean(aucs)) if np.isfinite(aucs).any() else None,
        "per_class": {
            CLASS_NAMES[c]: {
                "precision": _num(prf["precision"][c]),
                "recall": _num(prf["recall"][c]),
                "f1": _num(prf["f1"][c]),
                "support": int(prf["support"][c]),
                "auc": _num(aucs[c]),
            }
            for c in range(k)
        },
        "confusion": cm.tolist(),
    }


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def ablation(preds: Predictions) -> list[dict[str, Any]]:
    """Table 4: every subset the run has, with sum (eq. 15) and lambda (eq. 17) fusion."""
    rows = []
    subsets = [s for s in ABLATION_SUBSETS if all(b in preds.branches for b in s)]
    subsets += [(b,) for b in preds.branches if (b,) not in subsets]  # single branches too
    for subset in subsets:
        for mode in ("sum", "lambda"):
            probs, _ = fused_scores(preds, subset, mode)
            cm = M.confusion_matrix(preds.labels, probs.argmax(1), probs.shape[1])
            rows.append(
                {
                    "branches": list(subset),
                    "fusion": mode,
                    "accuracy": M.accuracy(preds.labels, probs.argmax(1)),
                    "macro_f1": M.macro_f1(cm),
                }
            )
    return rows


def review_analysis(preds: Predictions, probs: np.ndarray) -> dict[str, Any]:
    """Reliability, risk-coverage and branch agreement for the fused confidence."""
    labels = preds.labels
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    rel = M.reliability(confidence, correct)
    rc = M.risk_coverage(confidence, correct)
    votes = preds.logits.argmax(2)  # (B, N)
    agree = (votes == votes[0]).all(axis=0)
    at_risk = {}
    for r in REVIEW_RISKS:
        cov, thr = M.coverage_at_risk(rc, r)
        at_risk[f"{r:g}"] = {"coverage": cov, "threshold": _num(thr), "review_fraction": 1.0 - cov}
    return {
        "ece": rel["ece"],
        "aurc": rc["aurc"],
        "coverage_at_risk": at_risk,
        "branches_agree_fraction": float(agree.mean()) if agree.size else None,
        "error_when_agree": _num(float((~correct[agree]).mean())) if agree.any() else None,
        "error_when_disagree": _num(float((~correct[~agree]).mean())) if (~agree).any() else None,
        "part_fallback_fraction": float(preds.part_fallback.mean())
        if preds.part_fallback.size
        else 0.0,
        "_reliability": rel,
        "_risk_coverage": rc,
    }


def consistency_analysis(
    labels: np.ndarray, probs: np.ndarray, cells: Sequence[str | None]
) -> dict[str, Any]:
    """Accuracy of the calls after the karyotype-level consistency step, beside the plain ones.

    Beyond the paper: :func:`~edge_iapp.scoring.consistency.reassign_cells` with ``score``'s
    defaults, on each cell as far as its images are among those evaluated (a class-balanced
    subset leaves cells incomplete). Images without a cell keep their plain call.
    """
    from ..scoring.consistency import PENALTY, THRESHOLD, reassign_cells

    plain = probs.argmax(1)
    adjusted = reassign_cells(probs, list(cells))
    has_cell = np.array([c is not None for c in cells], dtype=bool)
    right, right_plain = adjusted == labels, plain == labels
    exact = exact_plain = 0
    names = sorted({str(c) for c in cells if c is not None})
    keys = np.array([str(c) for c in cells], dtype=object)
    for name in names:
        rows = has_cell & (keys == name)
        exact += int(right[rows].all())
        exact_plain += int(right_plain[rows].all())
    return {
        "threshold": THRESHOLD,
        "penalty": PENALTY,
        "cells": len(names),
        "images_without_cell": int((~has_cell).sum()),
        "accuracy_plain": float(right_plain.mean()) if labels.size else None,
        "accuracy": float(right.mean()) if labels.size else None,
        "changed": int((adjusted != plain).sum()),
        "fixed": int((right & ~right_plain).sum()),
        "broken": int((~right & right_plain).sum()),
        "cells_all_right_plain": exact_plain,
        "cells_all_right": exact,
    }


def ood_flag(preds: Predictions, calibration: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The OOD scores and flag of each image, from the calibration's branches.

    Returns:
        ``(scores, flag)``: ``(N,)`` float and ``(N,)`` bool.
    """
    from ..ood import is_ood, ood_scores

    scores = ood_scores(preds.select(_ood_branches(preds, calibration)), calibration)
    return scores, is_ood(scores, calibration)


def _ood_branches(preds: Predictions, calibration: dict[str, Any]) -> list[str]:
    wanted = calibration.get("branches") or list(preds.branches)
    return [b for b in wanted if b in preds.branches] or list(preds.branches)


def ood_review(
    preds: Predictions,
    probs: np.ndarray,
    calibration: dict[str, Any],
    min_confidence: float | None = None,
    scored: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """What the OOD flag and the other review flags send to review, among errors and correct calls.

    Args:
        preds: per-branch logits (the OOD score uses the calibration's branches).
        probs: ``(N, K)`` fused probabilities (the call and its confidence).
        calibration: a run's ``ood.json`` record (:func:`edge_iapp.ood.calibrate_ood`).
        min_confidence: the confidence flag's threshold; default the runtime's
            (:data:`~edge_iapp.export.bundle.DEFAULT_REVIEW`).
        scored: :func:`ood_flag` of these predictions, when the caller has it already.

    Returns:
        ``{"score", "threshold", "quantile", "min_confidence", "errors", "correct", "score_mean",
        "by": {flag: {"errors_flagged", "correct_flagged", "all_flagged"}}}``: shares
        (None when there is no error / no correct call). Flags: ``ood``, ``confidence``,
        ``either`` (ood or confidence), ``review`` (the runtime's whole flag as far as
        logits tell: either, or fewer than ``min_branch_agreement`` branches voting for
        the call, or a part-mask fall-back; object-mask fall-backs are not in ``preds``).
    """
    from ..export.bundle import DEFAULT_REVIEW

    if min_confidence is None:
        min_confidence = float(DEFAULT_REVIEW["min_confidence"])
    scores, is_out = scored if scored is not None else ood_flag(preds, calibration)
    correct = probs.argmax(1) == preds.labels
    flags = {"ood": is_out, "confidence": probs.max(1) < min_confidence}
    flags["either"] = flags["ood"] | flags["confidence"]
    votes = (preds.logits.argmax(2) == probs.argmax(1)).sum(0)  # (N,) branches for the call
    need = min(int(DEFAULT_REVIEW["min_branch_agreement"]), len(preds.branches))
    flags["review"] = flags["either"] | (votes < need) | preds.part_fallback.astype(bool)
    return {
        "score": calibration.get("score", "energy"),
        "threshold": float(calibration["threshold"]),
        "quantile": calibration.get("quantile"),
        "set_on": {k: (calibration.get("source") or {}).get(k) for k in ("part", "data", "images")},
        "branches": _ood_branches(preds, calibration),
        "min_confidence": float(min_confidence),
        "errors": int((~correct).sum()),
        "correct": int(correct.sum()),
        "score_mean": float(np.nanmean(scores)) if scores.size else None,
        "by": {name: flagged_shares(f, correct) for name, f in flags.items()},
    }


def review_threshold(
    preds: Predictions,
    probs: np.ndarray,
    is_out: np.ndarray | None,
    target: float = DEFAULT_TARGET,
    checked: float | None = None,
    cells: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Where the review flag's confidence threshold goes on these images (:mod:`.review_threshold`).

    The rule is the one a threshold moves: OOD (when the run has a calibration) or fused
    confidence below T.

    Args:
        is_out: ``(N,)`` the OOD flag (:func:`ood_flag`), None without a calibration.
        checked: a threshold being checked; added to the sweep, as is the placed one.
        cells: the cell of each image; adds how far T moves over resampled cells
            (:func:`~edge_iapp.train.review_threshold.spread`), None where it cannot.

    Returns:
        ``{"rule", "sweep": [rows], "placed": {...}, "spread": {...} or None,
        "checked": row or None}``.
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == preds.labels
    placed = place(confidence, correct, target, is_out)
    moved = None
    if cells is not None and placed["min_confidence"] is not None:
        moved = spread(confidence, correct, list(cells), target, is_out)
    upper = moved["upper"] if moved and moved["upper"] > 0 else None
    extra = {t for t in (placed["min_confidence"], checked, upper) if t is not None}
    rows = sweep(confidence, correct, is_out, tuple(sorted({*SWEEP_THRESHOLDS, *extra})))
    record = {
        "rule": "confidence" if is_out is None else "ood or confidence",
        "sweep": rows,
        "placed": placed,
        "spread": moved,
        "checked": None,
    }
    if checked is not None:
        row = next(r for r in rows if r["min_confidence"] == checked)
        errors = row["errors_flagged"]
        record["checked"] = {**row, "target_met": errors is None or errors >= target - 1e-12}
    return record


def evaluate_predictions(
    preds: Predictions,
    out_dir: str | Path,
    fusion: str,
    title: str,
    baseline: Predictions | None = None,
    info: dict[str, Any] | None = None,
    ood: dict[str, Any] | None = None,
    cells: Sequence[str | None] | None = None,
    min_confidence: float | None = None,
    review_target: float = DEFAULT_TARGET,
) -> dict[str, Any]:
    """Compute everything, write the figures, ``metrics.json`` and ``report.md``.

    Args:
        preds: per-branch logits of the evaluated run.
        out_dir: output folder.
        fusion: the run's main fusion (``"lambda"`` or ``"sum"``) over all its branches.
        title: used in figure titles and the report.
        baseline: optional logits of a single-branch baseline run on the same images
            (its ``global`` branch is compared per class, as in Table 3).
        info: extra facts for the report (run, data, split hash, checkpoint...).
        ood: the run's OOD calibration (``RUN/ood.json``); adds the ``"ood"`` key
            (:func:`ood_review`).
        cells: the cell of each image (None: none); adds the ``"consistency"`` key
            (:func:`consistency_analysis`).
        min_confidence: the confidence flag's threshold in the ``"ood"`` key (default the
            runtime's).
        review_target: the share of errors the ``"review_threshold"`` key places T for
            (:func:`review_threshold`).

    Returns:
        The metrics record (as written to ``metrics.json``).
    """
    from ..ioutil import atomic_write_text
    from . import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main_subset = preds.branches
    probs, lambdas = fused_scores(preds, main_subset, fusion)
    main = summarize(preds.labels, probs)
    review = review_analysis(preds, probs)
    record: dict[str, Any] = {
        "info": info or {},
        "images": int(preds.labels.size),
        "branches": list(main_subset),
        "fusion": fusion,
        "main": main,
        "ablation": ablation(preds),
        "review": {k: v for k, v in review.items() if not k.startswith("_")},
        "mean_lambdas": {b: float(lambdas[i].mean()) for i, b in enumerate(main_subset)}
        if preds.labels.size
        else {},
    }
    scored = None if ood is None else ood_flag(preds, ood)  # once, for both records
    if ood is not None:
        record["ood"] = ood_review(preds, probs, ood, min_confidence, scored)
    record["review_threshold"] = review_threshold(
        preds, probs, None if scored is None else scored[1], review_target, min_confidence, cells
    )
    if cells is not None and any(c is not None for c in cells):
        record["consistency"] = consistency_analysis(preds.labels, probs, cells)
    if baseline is not None:
        if not np.array_equal(baseline.labels, preds.labels):
            raise ValueError("the baseline was evaluated on different images")
        bprobs, _ = fused_scores(baseline, ("global",), "sum")
        record["baseline"] = summarize(baseline.labels, bprobs)
        bcorrect = bprobs.argmax(1) == baseline.labels
        record["baseline_review"] = {
            "ece": M.reliability(bprobs.max(1), bcorrect)["ece"],
            "aurc": M.risk_coverage(bprobs.max(1), bcorrect)["aurc"],
        }
    # figures
    names = list(CLASS_NAMES[: probs.shape[1]])
    plots.confusion_png(
        np.asarray(main["confusion"]),
        names,
        out / "confusion.png",
        f"{title}: confusion ({'+'.join(main_subset)}, {fusion})",
    )
    curves = {}
    for c, name in enumerate(names):
        fpr, tpr = M.roc_curve(probs[:, c], preds.labels == c)
        curves[name] = (fpr, tpr, M.auc(fpr, tpr))
    plots.roc_png(curves, out / "roc.png", f"{title}: one-vs-all ROC")
    plots.reliability_png(review["_reliability"], out / "reliability.png", f"{title}: reliability")
    rc_curves = {f"{'+'.join(main_subset)} {fusion}": review["_risk_coverage"]}
    if baseline is not None:
        bconf = bprobs.max(1)
        rc_curves["baseline (global)"] = M.risk_coverage(bconf, bprobs.argmax(1) == baseline.labels)
    plots.risk_coverage_png(rc_curves, out / "risk_coverage.png", f"{title}: review flag")
    text = json.dumps(_finite(record), indent=1, allow_nan=False)  # no NaN in the file
    atomic_write_text(out / "metrics.json", text + "\n")
    atomic_write_text(out / "report.md", render_report(record, title))
    return record


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON null)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _auc(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def _percent(x: float | None) -> str:
    """``_pct`` with its sign: ``"12.50%"``, or ``"n/a"`` alone."""
    text = _pct(x)
    return text if text == "n/a" else f"{text}%"


def render_report(record: dict[str, Any], title: str) -> str:
    """``report.md``: headline, Table 3 (per class), Table 4 (ablation), review flag."""
    main = record["main"]
    base = record.get("baseline")
    lines = [f"# Evaluation: {title}", ""]
    for k, v in record["info"].items():
        lines.append(f"- {k}: `{v}`")
    lines += [
        f"- images: {record['images']}; branches: {'+'.join(record['branches'])}; "
        f"fusion: {record['fusion']}",
        "",
        "## Headline",
        "",
        "| model | accuracy % | macro-F1 % | macro AUC |",
        "|---|---|---|---|",
    ]
    if base:
        lines.append(
            f"| baseline (global branch) | {_pct(base['accuracy'])} | {_pct(base['macro_f1'])} "
            f"| {_auc(base['macro_auc'])} |"
        )
    lines.append(
        f"| {'+'.join(record['branches'])} ({record['fusion']}) | {_pct(main['accuracy'])} "
        f"| {_pct(main['macro_f1'])} | {_auc(main['macro_auc'])} |"
    )
    if record.get("consistency"):
        c = record["consistency"]
        lines += [
            "",
            f"With the karyotype-level consistency step (beyond the paper; `score`'s defaults, "
            f"per cell over {c['cells']} cells): accuracy {_pct(c['accuracy'])}% "
            f"(plain {_pct(c['accuracy_plain'])}%); {c['changed']} calls changed, "
            f"{c['fixed']} fixed, {c['broken']} broken; cells with every call right "
            f"{c['cells_all_right']} (plain {c['cells_all_right_plain']}).",
        ]
    lines += ["", "## Per class (layout of the paper's Table 3; values in %)", ""]
    if base:
        lines += [
            "| class | support | P base | R base | F1 base | P | R | F1 | AUC |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            "| class | support | precision | recall | F1 | AUC |",
            "|---|---|---|---|---|---|",
        ]
    for name, row in main["per_class"].items():
        auc_s = "n/a" if row["auc"] is None else f"{row['auc']:.4f}"
        cells = [name, str(row["support"])]
        if base:
            b = base["per_class"][name]
            cells += [_pct(b["precision"]), _pct(b["recall"]), _pct(b["f1"])]
        cells += [_pct(row["precision"]), _pct(row["recall"]), _pct(row["f1"]), auc_s]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Ablation (layout of the paper's Table 4)",
        "",
        "| branches | fusion | accuracy % | macro-F1 % |",
        "|---|---|---|---|",
    ]
    for row in record["ablation"]:
        lines.append(
            f"| {' + '.join(row['branches'])} | {row['fusion']} | {_pct(row['accuracy'])} "
            f"| {_pct(row['macro_f1'])} |"
        )
    rv = record["review"]
    lines += [
        "",
        "## Review flag (fused confidence below a threshold)",
        "",
        f"- expected calibration error (15 bins): {rv['ece']:.4f}; AURC: {rv['aurc']:.4f}",
        f"- branches agree on {_percent(rv['branches_agree_fraction'])} of images; "
        "error when they agree "
        f"{_percent(rv['error_when_agree'])}, when they disagree "
        f"{_percent(rv['error_when_disagree'])}",
        f"- part mask fell back to the whole object image on {_pct(rv['part_fallback_fraction'])}%",
        "",
        "| target error among accepted | coverage % | review % | confidence threshold |",
        "|---|---|---|---|",
    ]
    for risk, row in rv["coverage_at_risk"].items():
        thr = "n/a" if row["threshold"] is None else f"{row['threshold']:.4f}"
        lines.append(
            f"| {100 * float(risk):g}% | {_pct(row['coverage'])} "
            f"| {_pct(row['review_fraction'])} | {thr} |"
        )
    if record.get("ood"):
        lines += render_ood(record["ood"])
    if record.get("review_threshold"):
        lines += render_review_threshold(record["review_threshold"])
    lines += [
        "",
        "Figures: `confusion.png`, `roc.png`, `reliability.png`, `risk_coverage.png`.",
        "",
    ]
    return "\n".join(lines)


def render_ood(ood: dict[str, Any]) -> list[str]:
    """The report's OOD section: share of errors and of correct calls each flag sends to review."""
    q, on = ood.get("quantile"), ood.get("set_on") or {}
    # where the threshold was set: the training lab's val part, or a new lab's for a
    # fine-tuned run, or an adapted run's own cells
    n, part = on.get("images"), on.get("part")
    images = f"{n or 'the'} {part} images" if part == "val" else f"{n or 'the'} images"
    images += f" ({part})" if part and part != "val" else ""
    of = f" of {on['data']}" if on.get("data") else ""
    where = f" (the {100 * q:g}th percentile of {images}{of})" if q else ""
    mean = ood.get("score_mean")
    lines = [
        "",
        "## Out-of-distribution flag",
        "",
        f"- score: {DEFINITIONS.get(ood.get('score', 'energy'), ood.get('score'))} "
        f"({', '.join(ood['branches'])}); threshold "
        f"{ood['threshold']:.4f}{where}; mean score here "
        + ("n/a" if mean is None else f"{mean:.4f}"),
        f"- {ood['errors']} errors, {ood['correct']} correct calls; confidence flag: fused "
        f"probability < {ood['min_confidence']:g}",
        "- `either`: OOD or confidence; `review`: either, or branch disagreement, or a "
        "part-mask fall-back (the runtime flag, less object-mask fall-backs)",
        "- target across labs: errors flagged >= 80% with correct calls flagged <= 20%",
        "",
        "| flag | errors flagged % | correct calls flagged % | all flagged % |",
        "|---|---|---|---|",
    ]
    for name, row in ood["by"].items():
        lines.append(
            f"| {name} | {_pct(row['errors_flagged'])} | {_pct(row['correct_flagged'])} "
            f"| {_pct(row['all_flagged'])} |"
        )
    return lines


RULES = {
    "confidence": "fused confidence below T (the run has no OOD calibration)",
    "ood or confidence": "the OOD flag, or fused confidence below T",
}


def render_spread(moved: dict[str, Any], target: float) -> str:
    """One paragraph (report and CLI): how far T moves over resampled cells, its upper bound."""
    at = moved["at_upper"]
    text = (
        f"Placed again on {moved['resamples']} resamples of these {moved['cells']} cells "
        f"(drawn with replacement), T falls between {moved['low']:g} and {moved['upper']:g} "
        f"on {100 * (2 * moved['level'] - 1):g}% of them (median {moved['median']:g}). "
    )
    unreached = moved.get("unreached", 0.0)
    if unreached > 1.0 - moved["level"]:  # the upper T is 1 and is not a bound
        return text + (
            f"On {100 * unreached:.1f}% of them no T flags {100 * target:g}% of the errors "
            "(errors at a confidence of 1): no threshold is safer for cells not seen here."
        )
    return text + (
        f"T = {moved['upper']:g} flagged at least {100 * target:g}% of the errors on "
        f"{100 * moved['level']:g}% of the resamples: for cells not seen here, it is the safer "
        f"value; here it flags {_percent(at['errors_flagged'])} of the errors and "
        f"{_percent(at['correct_flagged'])} of the correct calls."
    )


def render_review_threshold(placement: dict[str, Any]) -> list[str]:
    """The report's section on where the review flag's confidence threshold T could go."""
    placed = placement["placed"]
    t = placed["min_confidence"]
    if t is None:
        where = f"no threshold needed ({placed['note']})"
    else:
        where = (
            f"T = {t:g} flags {_percent(placed['errors_flagged'])} of the errors and "
            f"{_percent(placed['correct_flagged'])} of the correct calls"
            + ("" if placed["reached"] else f" (target not reached: {placed['note']})")
        )
    lines = [
        "",
        "## Review threshold",
        "",
        f"Rule: {RULES[placement['rule']]}. To flag {100 * placed['target']:g}% of the errors "
        f"here: {where}. On the images it was placed on, T flags that share of the errors "
        "by construction (the share of correct calls is what it costs): place it on the val "
        "part (`evaluate --subset val`), check it on test (`evaluate --min-confidence T`), "
        "write it with `export RUN --min-confidence T`.",
    ]
    moved = placement.get("spread")
    if moved:
        lines += ["", render_spread(moved, placed["target"])]
    checked = placement.get("checked")
    if checked:
        lines += [
            "",
            f"Checked (`--min-confidence {checked['min_confidence']:g}`): flags "
            f"{_percent(checked['errors_flagged'])} of the errors and "
            f"{_percent(checked['correct_flagged'])} of the correct calls; the target of "
            f"{100 * placed['target']:g}% of the errors is "
            f"{'met' if checked['target_met'] else 'not met'}.",
        ]
    lines += [
        "",
        "| T | errors flagged % | correct calls flagged % | all flagged % |",
        "|---|---|---|---|",
    ]
    for row in placement["sweep"]:
        lines.append(
            f"| {row['min_confidence']:g} | {_pct(row['errors_flagged'])} "
            f"| {_pct(row['correct_flagged'])} | {_pct(row['all_flagged'])} |"
        )
    return lines
