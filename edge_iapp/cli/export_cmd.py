"""CLI: ``edge-iapp export``, a training run -> a model bundle (ONNX fp32/fp16/int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail


def export_command(
    run: Annotated[Path, typer.Argument(help="training run folder (config.json, last.pt)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")],
    precision: Annotated[
        list[str],
        typer.Option(
            "--precision",
            "-p",
            help="fp32, fp16, int8 (repeat or comma list); fp32 always included",
        ),
    ] = ["fp32"],  # noqa: B006 - typer needs a literal default
    calib_data: Annotated[
        Path | None,
        typer.Option("--calib-data", help="labelled image folder (calibration and parity)"),
    ] = None,
    calib_split: Annotated[
        Path | None,
        typer.Option("--calib-split", help="split file; default RUN/split.json (train part used)"),
    ] = None,
    calib_size: Annotated[int, typer.Option("--calib-size", help="calibration images")] = 256,
    calib_method: Annotated[
        str, typer.Option("--calib-method", help="max | entropy | percentile")
    ] = "max",
    calib_seed: Annotated[int, typer.Option("--calib-seed", help="selection seed")] = 0,
    calib_manifest: Annotated[
        Path | None,
        typer.Option(
            "--calib-manifest",
            help="reuse this calibration manifest if it exists, else write it "
            "(e.g. calibration/gband612.json)",
        ),
    ] = None,
    parity_size: Annotated[
        int, typer.Option("--parity-size", help="held-out images for parity")
    ] = 128,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 17)")] = 17,
    exporter: Annotated[str, typer.Option("--exporter", help="legacy | dynamo")] = "legacy",
    simplifier: Annotated[
        str,
        typer.Option(
            "--simplifier",
            help="auto (onnxsim, else onnxscript's optimizer) | onnxsim | onnxscript",
        ),
    ] = "auto",
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="default RUN/last.pt")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing bundle")] = False,
    engines: Annotated[
        bool,
        typer.Option(
            "--engines/--no-engines",
            help="also build TensorRT engines when TensorRT and a GPU are here",
        ),
    ] = True,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="target profile of the TensorRT engines: export/<NAME>.json or a path "
            "(default: one for this GPU); checked before the export",
        ),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            "--min-confidence",
            help="review flag: calls less confident than this go to review (default: the T "
            "that finetune placed on the new lab's val part, RUN/review.json, else 0.9; "
            "higher catches more errors and flags more correct calls, docs/RESULTS.md)",
        ),
    ] = None,
) -> None:
    """Export the three branches to ONNX (fp32, fp16, int8 Q/DQ), check parity, write a bundle."""
    from ..export.build import export_bundle
    from ..export.calibration import CalibrationError
    from ..export.onnx_export import ExportError
    from ..export.quantize import CALIBRATION_METHODS, QuantizationError

    if calib_method not in CALIBRATION_METHODS:
        fail(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}")
    if not run.is_dir():
        fail(f"{run} does not exist: expected a training run folder (edge-iapp train --out)")
    if not (run / "config.json").is_file():
        fail(f"{run} is not a training run (no config.json)")
    if min_confidence is not None and not 0.0 < min_confidence <= 1.0:
        fail(f"--min-confidence must be in (0, 1], got {min_confidence}")
    if profile is not None:
        _check_profile(profile, engines)
    try:
        bundle = export_bundle(
            run,
            out,
            precision,
            calib_data=calib_data,
            calib_split=calib_split,
            calib_size=calib_size,
            calib_method=calib_method,
            calib_seed=calib_seed,
            calib_manifest=calib_manifest,
            parity_size=parity_size,
            opset=opset,
            exporter=exporter,
            simplifier=simplifier,
            review=None if min_confidence is None else {"min_confidence": min_confidence},
            checkpoint=checkpoint,
            force=force,
            log=lambda m: console.print(m),
        )
    except (ExportError, CalibrationError, QuantizationError, ValueError, OSError) as exc:
        fail(str(exc))
    _print_parity(bundle)
    t = bundle.review["min_confidence"]
    placed = bundle.review.get("min_confidence_source")
    how = (
        "--min-confidence"
        if min_confidence is not None
        else f"placed on the run's {placed.get('part', 'val')} part: {run / placed['file']}"
        if placed
        else "the default"
    )
    console.print(f"review flag: calls with fused confidence below {t:g} ({how}) go to review")
    if engines:
        _build_engines(bundle, profile)


def _check_profile(profile: str, engines: bool) -> None:
    """Load ``--profile`` now, whatever is installed: a typo is said before the export,
    not after it (with TensorRT) or never (without it)."""
    from ..backends.tensorrt.profiles import ProfileError, load_profile, profiles_dir

    try:
        load_profile(profile)
    except ProfileError as exc:
        fail(
            f"--profile: {exc}; a profile is a file export/<NAME>.json in {profiles_dir()} "
            "($EDGE_IAPP_PROFILES) or a path to one"
        )
    if not engines:
        console.print(
            f"note: --profile {profile} is for the engine build, which --no-engines skips; "
            f"build later with: edge-iapp build BUNDLE --profile {profile}"
        )


def _build_engines(bundle, profile: str | None) -> None:
    """Build engines where TensorRT and a GPU exist; otherwise say what is missing."""
    from ..backends.tensorrt.builder import build_if_possible

    try:
        _, message = build_if_possible(bundle, list(bundle.precisions), profile=profile)
    except Exception as exc:  # a failed build must not lose the exported bundle
        fail(f"bundle written to {bundle.path}, but the TensorRT engine build failed: {exc}")
    console.print(message)


def _print_parity(bundle) -> None:
    from rich.table import Table

    table = Table(title=f"parity vs PyTorch ({bundle.parity.get('inputs', '')})")
    for col in ("precision", "branch", "max |dlogit|", "top-1 agree", "part mask agree", "MB"):
        table.add_column(col)
    for precision in bundle.precisions:
        for branch in ("global", "object", "part", "pipeline"):
            p = bundle.parity.get(precision, {}).get(branch, {})
            mb = ""
            if branch != "pipeline":
                mb = f"{bundle.manifest['files'][branch][precision]['bytes'] / 1e6:.1f}"
            table.add_row(
                precision,
                branch,
                f"{p['max_abs_logit_diff']:.4g}" if "max_abs_logit_diff" in p else "",
                f"{p.get('top1_agreement', p.get('fused_top1_agreement', float('nan'))):.4f}",
                f"{p['part_mask_agreement']:.4f}" if "part_mask_agreement" in p else "",
                mb,
            )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""
    app.command("export")(export_command)
