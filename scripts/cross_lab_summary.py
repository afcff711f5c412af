"""Summarise a ``scripts/cross_lab_gpu.sh`` OUT folder: ``OUT/summary.json`` and a table.

Usage: python scripts/cross_lab_summary.py OUT

Reads ``OUT/evals/*/metrics.json`` (``edge-iapp evaluate``: own lab and zero-shot) and
``OUT/fewshot/*/finetune.json`` (``edge-iapp finetune``), and prints one Markdown row per
run: test accuracy, and for the review flag the share of errors and of correct calls it
sends to review (#7's targets: >= 80% and <= 20%) at the threshold T the record names; a
few-shot run's deployed T is the one its ``review.json`` places on the new lab's val part
(``edge-iapp bench`` of its exported bundle measures the test part at that T). A folder
whose file is missing (a run that failed or was stopped) gets a row that says so; its log
is in ``OUT/logs``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REVIEW_RULES = ("review", "either")
"""Which row of an OOD record's ``by`` is the review flag (``train.evaluate.ood_review``):
``review``, the runtime's whole flag (OOD, fused confidence below ``min_confidence``,
branch disagreement, part fall-back), else ``either`` (OOD or confidence) in older
records."""


def review_shares(ood: dict | None) -> dict | None:
    """``{"rule", "min_confidence", "errors_flagged", "correct_flagged"}``, or None."""
    by = (ood or {}).get("by") or {}
    for rule in REVIEW_RULES:
        if rule in by:
            row = by[rule]
            return {
                "rule": rule,
                "min_confidence": ood.get("min_confidence"),
                "errors_flagged": row["errors_flagged"],
                "correct_flagged": row["correct_flagged"],
            }
    return None


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _eval_row(folder: Path, m: dict) -> dict:
    return {
        "images": m["images"],
        "accuracy": m["main"]["accuracy"],
        "review": review_shares(m.get("ood")),
    }


def _fewshot_row(folder: Path, r: dict) -> dict:
    after = r.get("after") or {}
    return {
        "cells": len(r["cells"]),
        "pseudo_cells": len((r.get("pseudo") or {}).get("cell_ids") or []),
        "adapt_cells": len(r.get("adapt_cells") or []),
        "test_images": r["test_images"],
        "before": r["before"]["fused"]["accuracy"],
        "after": (after.get("fused") or {}).get("accuracy"),
        "review": review_shares(after.get("ood")),
        "placed_t": (_read(folder / "review.json") or {}).get("min_confidence"),
    }


def _rows(out: Path, part: str, record: str, fields) -> list[dict]:
    """One row per folder of ``out/part``; ``ok`` False (with ``why``) where ``record``
    is missing or not the layout ``fields`` reads (a record of another version)."""
    rows = []
    for folder in sorted((out / part).glob("*")):
        row = {"name": folder.name, "ok": False, "why": f"no {record} (see logs/)"}
        data = _read(folder / record)
        if data is not None:
            try:
                row.update(fields(folder, data), ok=True)
                del row["why"]
            except (KeyError, TypeError, AttributeError) as e:
                row["why"] = f"{record} lacks {e} (another version?)"
        rows.append(row)
    return rows


def summarize(out: Path) -> dict:
    """The evaluations and few-shot runs under ``out``, one record each, sorted by name."""
    return {
        "out": str(out),
        "evals": _rows(out, "evals", "metrics.json", _eval_row),
        "fewshot": _rows(out, "fewshot", "finetune.json", _fewshot_row),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _review(r: dict | None) -> str:
    if r is None:
        return "n/a"
    t = r["min_confidence"]
    rule = r["rule"] if t is None else f"{r['rule']}, T {t:.3g}"
    return f"{_pct(r['errors_flagged'])} / {_pct(r['correct_flagged'])} ({rule})"


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    """One Markdown table; a short row (a run that left no record) is padded."""
    width = len(header)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * width,
        *("| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows),
    ]


def table(summary: dict) -> str:
    """The summary as two Markdown tables."""
    evals = [
        [e["name"], str(e["images"]), _pct(e["accuracy"]), _review(e["review"])]
        if e["ok"]
        else [e["name"], e["why"]]
        for e in summary["evals"]
    ]
    fewshot = [
        [
            f["name"],
            f"{f['cells']} (+{f['pseudo_cells']}, {f['adapt_cells']})",
            str(f["test_images"]),
            _pct(f["before"]),
            _pct(f["after"]),
            _review(f["review"]),
            str(f["placed_t"] or "n/a"),
        ]
        if f["ok"]
        else [f["name"], f["why"]]
        for f in summary["fewshot"]
    ]
    header = ["evaluation", "images", "accuracy %", "review: errors / correct %"]
    lines = _markdown(header, evals) + [""]
    header = ["few-shot", "cells (+pseudo, adapt)", "test images", "before %", "after %"]
    header += ["review after: errors / correct %", "placed T (review.json)"]
    return "\n".join(lines + _markdown(header, fewshot))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = Path(argv[0])
    summary = summarize(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
