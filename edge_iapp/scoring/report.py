"""Per-slide summary table, errors table and HTML reports.

Everything here is rebuilt from the cells' ``summary.json`` files at the end of every
run, so a resumed run and an uninterrupted one write the same bytes (no timestamps).
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..ioutil import atomic_write_text
from .karyotype import cell_tally
from .layout import (
    ERRORS,
    INDEX,
    KARYOGRAM,
    PREDICTIONS,
    SLIDE_REPORT,
    SLIDE_TABLE,
    SUMMARY,
    SlideJob,
)

TABLE_COLUMNS = [
    "cell",
    "status",
    "input",
    "count",
    "karyotype",
    "karyotype_consistent",
    "changed_by_consistency",
    "not_46",
    "aneuploidy",
    "doubtful",
    "clusters",
    "unclassified",
    "errors",
    "flags",
    "backend",
    "precision",
]
ERROR_COLUMNS = ["slide", "cell", "file", "error"]


def load_summary(path: Path) -> dict[str, Any] | None:
    """A cell summary, or None when it is missing or unreadable (the cell is re-scored)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def slide_rows(
    slide: SlideJob, problems: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Table rows and error rows of one slide.

    Args:
        slide: the slide.
        problems: ``{cell: message}`` for cells without a summary (empty, failed).

    Returns:
        ``(table rows, error rows)``, cells in name order.
    """
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for job in slide.cells:
        summary = load_summary(job.summary_path)
        if summary is None:
            message = problems.get(job.cell, "not scored")
            rows.append({"cell": job.cell, "status": "not scored", "errors": 1})
            errors.append({"slide": slide.name, "cell": job.cell, "file": "", "error": message})
            continue
        cons = summary.get("consistency") or {}
        rows.append(
            {
                "cell": job.cell,
                "status": "scored",
                "input": summary["input"],
                "count": summary["count"],
                "karyotype": summary["karyotype"],
                "karyotype_consistent": cons.get("karyotype", ""),
                "changed_by_consistency": cons.get("changed", ""),
                "not_46": int(summary["not_46"]),
                "aneuploidy": int(summary["aneuploidy"]),
                "doubtful": summary["doubtful"],
                "clusters": summary["clusters"],
                "unclassified": summary["unclassified"],
                "errors": len(summary["errors"]),
                "flags": ";".join(summary["flags"]),
                "backend": summary["backend"],
                "precision": summary["precision"],
            }
        )
        for e in summary["errors"]:
            errors.append(
                {"slide": slide.name, "cell": job.cell, "file": e["file"], "error": e["error"]}
            )
    for name in slide.loose:
        errors.append(
            {
                "slide": slide.name,
                "cell": "",
                "file": name,
                "error": "image outside every cell folder; not scored (put each cell's "
                "images in SLIDE/<cell>/)",
            }
        )
    return rows, errors


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_slide_reports(slide: SlideJob, problems: dict[str, str]) -> dict[str, Any]:
    """Write ``slide_summary.csv``, ``errors.csv`` and ``report.html`` of one slide.

    Returns:
        Slide totals (cells, scored, not_46, aneuploid, doubtful, errors).
    """
    rows, errors = slide_rows(slide, problems)
    slide.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(slide.out / SLIDE_TABLE, _csv(TABLE_COLUMNS, rows))
    atomic_write_text(slide.out / ERRORS, _csv(ERROR_COLUMNS, errors))
    totals = {
        "slide": slide.name,
        "cells": len(rows),
        "scored": sum(r["status"] == "scored" for r in rows),
        "not_46": sum(int(r.get("not_46") or 0) for r in rows),
        "aneuploid": sum(int(r.get("aneuploidy") or 0) for r in rows),
        "doubtful": sum(int(r.get("doubtful") or 0) for r in rows),
        "errors": len(errors),
        "unlike_training_lab": sum("unlike_training_lab" in str(r.get("flags")) for r in rows),
        "karyotypes": cell_tally(r.get("karyotype", "") for r in rows),
        "karyotypes_consistent": cell_tally(r.get("karyotype_consistent", "") for r in rows),
    }
    atomic_write_text(slide.out / SLIDE_REPORT, slide_html(slide.name, rows, errors, totals))
    return totals


def _link(cell: str, name: str, text: str) -> str:
    return f'<a href="{quote(cell)}/{quote(name)}">{html.escape(text)}</a>'


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}"
    "tr.flag td{background:#fff3e0}img{max-width:260px}"
)


def slide_html(
    name: str, rows: list[dict[str, Any]], errors: list[dict[str, str]], totals: dict[str, Any]
) -> str:
    """The slide report: totals, one row per cell with links and a karyogram thumbnail."""
    e = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Slide {e(name)}</h1>",
        f"<p>{totals['scored']} of {totals['cells']} cells scored; {totals['not_46']} not 46; "
        f"{totals['aneuploid']} aneuploid; {totals['doubtful']} doubtful calls to review; "
        f"{totals['errors']} error rows (<a href='{ERRORS}'>{ERRORS}</a>, "
        f"<a href='{SLIDE_TABLE}'>{SLIDE_TABLE}</a>).</p>",
        _tally_html(totals),
        "<p>Karyotypes are numeric only (counts per class); every call should be checked by a "
        "person, starting with the doubtful ones (red frames on the karyograms).</p>",
        "<table><tr><th>cell</th><th>karyogram</th><th>count</th><th>karyotype</th>"
        "<th>with consistency</th><th>doubtful</th><th>clusters</th><th>flags</th>"
        "<th>files</th><th>ran on</th></tr>",
    ]
    for r in rows:
        cell = r["cell"]
        if r["status"] != "scored":
            out.append(
                f"<tr class='flag'><td>{e(cell)}</td><td colspan='9'>not scored "
                "(see errors)</td></tr>"
            )
            continue
        cls = " class='flag'" if r["not_46"] or r["aneuploidy"] or r["clusters"] else ""
        thumb = f'<a href="{quote(cell)}/{KARYOGRAM}"><img src="{quote(cell)}/{KARYOGRAM}"></a>'
        files = " ".join([_link(cell, PREDICTIONS, "predictions"), _link(cell, SUMMARY, "summary")])
        out.append(
            f"<tr{cls}><td>{e(cell)}</td><td>{thumb}</td><td>{r['count']}</td>"
            f"<td>{e(r['karyotype'])}</td><td>{e(str(r['karyotype_consistent']))}</td>"
            f"<td>{r['doubtful']}</td><td>{r['clusters']}</td><td>{e(r['flags'])}</td>"
            f"<td>{files}</td><td>{e(r['backend'])} {e(r['precision'])}</td></tr>"
        )
    out.append("</table>")
    if errors:
        out.append("<h2>Errors</h2><table><tr><th>cell</th><th>file</th><th>error</th></tr>")
        for er in errors:
            out.append(
                f"<tr><td>{e(er['cell'])}</td><td>{e(er['file'])}</td>"
                f"<td>{e(er['error'])}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _tally_html(totals: dict[str, Any]) -> str:
    """The slide's karyotypes by cell count, plain and after the consistency step."""
    if not totals["karyotypes"]:
        return ""
    e = html.escape
    text = f"<p>Karyotypes by cell, automatic calls before review: {e(totals['karyotypes'])}"
    if totals["karyotypes_consistent"]:
        text += f"; after the consistency step: {e(totals['karyotypes_consistent'])}"
    return text + ".</p>"


def write_index(out: Path, totals: list[dict[str, Any]]) -> None:
    """``OUT/index.html`` linking every slide report."""
    e = html.escape
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>edge-iapp scoring</title>",
        f"<style>{_STYLE}</style></head><body><h1>Slides</h1>",
        "<table><tr><th>slide</th><th>cells</th><th>scored</th><th>not 46</th>"
        "<th>aneuploid</th><th>doubtful calls</th><th>errors</th>"
        "<th>karyotypes by cell (before review)</th></tr>",
    ]
    for t in totals:
        link = f'<a href="{quote(t["slide"])}/{SLIDE_REPORT}">{e(t["slide"])}</a>'
        lines.append(
            f"<tr><td>{link}</td><td>{t['cells']}</td><td>{t['scored']}</td>"
            f"<td>{t['not_46']}</td><td>{t['aneuploid']}</td><td>{t['doubtful']}</td>"
            f"<td>{t['errors']}</td><td>{e(t['karyotypes'])}</td></tr>"
        )
    lines.append(
        "</table><p>Run details (backend, precision, bundle, times): "
        "<a href='run_info.json'>run_info.json</a>.</p></body></html>\n"
    )
    atomic_write_text(out / INDEX, "\n".join(lines))
