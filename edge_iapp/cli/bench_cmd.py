"""CLI: ``edge-iapp bench``, accuracy and speed of every backend x precision of a bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail


def _split_list(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def bench_command(
    bundle: Annotated[
        Path | None,
        typer.Argument(
            help="bundle folder (from edge-iapp export); omit it for the built-in default "
            "(synthetic chromosomes and a small model, made on first use and cached)"
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="labelled image folder <class>/<images> (needed with BUNDLE)"),
    ] = None,
    split: Annotated[
        Path | None, typer.Option("--split", help="split file; default: all images")
    ] = None,
    subset: Annotated[
        str, typer.Option("--subset", help="split part: train, val or test")
    ] = "test",
    backend: Annotated[
        list[str],
        typer.Option(
            "--backend", "-b", help="onnxruntime, openvino, torch, tensorrt (repeat or comma list)"
        ),
    ] = ["onnxruntime,openvino,torch"],  # noqa: B006
    precision: Annotated[
        list[str], typer.Option("--precision", "-p", help="fp32, fp16, int8 (repeat or comma list)")
    ] = ["fp32,fp16,int8"],  # noqa: B006
    batch: Annotated[int, typer.Option("--batch", help="images per call (46 = one cell)")] = 46,
    reference: Annotated[
        str, typer.Option("--reference", help="backend:precision for drop/agreement")
    ] = "onnxruntime:fp32",
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="use N images, stratified by class and group (whole cells for a "
            "cell-relative bundle)",
        ),
    ] = None,
    single: Annotated[
        int, typer.Option("--single", help="images timed one at a time (latency)")
    ] = 20,
    threads: Annotated[int | None, typer.Option("--threads", help="threads per backend")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the report as JSON")
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="write the rows as CSV")] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option("--min-accuracy", help="fail (exit 1) if a row's top-1 is below (0..1)"),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="fail (exit 1) if a row drops more top-1 points than this"),
    ] = None,
) -> None:
    """Benchmark a bundle: one row per backend x precision (accuracy, drop, speed, latency)."""
    from ..bench import check_floor, run_bench, to_csv
    from ..export.bundle import BundleError

    if ":" not in reference:
        fail("--reference must be backend:precision, e.g. onnxruntime:fp32")
    if bundle is None:
        bundle, data, split = _builtin_default(data, split)
    elif data is None:
        fail("--data is needed with a bundle: the labelled images to measure accuracy on")
    for option, path in (("--json", json_out), ("--csv", csv_out)):
        if path is not None and path.is_dir():  # said now, not after the whole benchmark
            example = path / f"bench.{option[2:]}"
            fail(f"{option} {path} is a folder; give a file name, e.g. {example}")
    ref_backend, ref_precision = reference.split(":", 1)
    try:
        report = run_bench(
            bundle,
            data,
            split,
            subset,
            _split_list(backend),
            _split_list(precision),
            batch,
            (ref_backend, ref_precision),
            limit,
            single,
            threads,
            log=lambda m: console.print(m),
        )
    except (BundleError, ValueError, OSError) as exc:
        fail(str(exc))
    _print(report)
    if json_out is not None:
        _save(json_out, json.dumps(report, indent=1) + "\n")
    if csv_out is not None:
        _save(csv_out, to_csv(report))
    violations = check_floor(report, min_accuracy, max_drop)
    if violations:
        for v in violations:
            console.print(f"[bold red]below the floor:[/] {v}")
        raise typer.Exit(1)


def _save(path: Path, text: str) -> None:
    from ..ioutil import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        fail(
            f"cannot write {path}: {exc.strerror or exc}; the table above is the result "
            "(choose a writable path and run again to keep it)",
            code=3,
        )


def _builtin_default(data: Path | None, split: Path | None) -> tuple[Path, Path, Path]:
    from ..demo import demo_dir, ensure_demo

    if data is not None or split is not None:
        fail("--data/--split need a BUNDLE; without one the built-in default is used")
    console.print(
        f"no bundle given: using the built-in default in {demo_dir()} (synthetic chromosomes, "
        "a small resnet18 IAPP-CNN at 64 px; made on first use, a few minutes on 2 cores)"
    )
    try:
        return ensure_demo(log=lambda m: console.print(m))
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}"


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{report['images']} images ({report['subset']}), batch {report['batch']}, "
        f"reference {report['reference']}, {report['machine']['cpu']}"
    )
    for col in (
        "backend",
        "prec",
        "status",
        "MB",
        "top-1",
        "F1",
        "drop pt",
        "agree",
        "img/s",
        "batch p50/p95/p99 ms",
        "single p50 ms",
        "pre/br/fus ms/img",
        "pre %",
        "review % all/wrong/right",
    ):
        table.add_column(col)
    from ..backends.base import precision_label

    for r in report["rows"]:
        ok = r["status"] == "ok"
        table.add_row(
            r["backend"],
            precision_label(r["info"]) if r.get("info") else r["precision"],
            r["status"].split(":")[0],
            _fmt(r["file_mb"], ".1f"),
            _fmt(r["accuracy"], ".4f"),
            _fmt(r["macro_f1"], ".4f"),
            _fmt(r["drop_points"], "+.2f"),
            _fmt(r["agreement"], ".4f"),
            _fmt(r["img_per_s"], ".1f"),
            "/".join(_fmt(r[k], ".0f") for k in ("batch_p50_ms", "batch_p95_ms", "batch_p99_ms"))
            if ok
            else "",
            _fmt(r["single_p50_ms"], ".1f"),
            "/".join(
                _fmt(r[k], ".2f")
                for k in ("preprocess_ms_per_img", "branches_ms_per_img", "fusion_ms_per_img")
            )
            if ok
            else "",
            _fmt(100 * r["preprocess_share"] if r["preprocess_share"] is not None else None, ".0f"),
            "/".join(_percent(r.get(k)) for k in ("review_rate", "review_errors", "review_correct"))
            if ok
            else "",
        )
    out = Console(width=max(200, Console().width))
    out.print(table)
    for r in report["rows"]:
        if r["status"] != "ok":
            out.print(f"{r['backend']} {r['precision']}: {r['status']}")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to ``app``."""
    app.command("bench")(bench_command)
