"""CLI: ``edge-iapp build`` (TensorRT engines on the target) and ``edge-iapp doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import console, fail


def _precisions(values: list[str] | None, default: str) -> list[str]:
    from ..export.bundle import precision_name

    out: list[str] = []
    for v in values or [default]:
        for p in v.split(","):
            try:
                p = precision_name(p)
            except ValueError as exc:
                fail(str(exc))
            if p not in out:
                out.append(p)
    return out


def build_command(
    bundle: Annotated[Path, typer.Argument(help="model bundle folder (manifest.json)")],
    profile: Annotated[
        str, typer.Option("--profile", help="target profile: export/<NAME>.json or a path")
    ],
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            "-p",
            help="fp32, fp16, int8 (repeat or comma list); default the profile's",
        ),
    ] = None,
    trt_module: Annotated[
        str, typer.Option("--trt-module", help="tensorrt (default) | tensorrt_rtx (no GPU needed)")
    ] = "tensorrt",
    sm: Annotated[
        int | None,
        typer.Option("--sm", help="TensorRT-RTX only: SM to build for (default the profile's)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when cached")] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="draw build phases")
    ] = True,
) -> None:
    """Build the bundle's TensorRT engines for a target (run it on the target GPU)."""
    from ..backends.tensorrt.builder import BuildError, Target, build_bundle_engines
    from ..backends.tensorrt.cache import EngineMismatch
    from ..backends.tensorrt.probe import probe_gpus
    from ..backends.tensorrt.profiles import ProfileError, load_profile
    from ..backends.tensorrt.trtmod import TensorRTUnavailable, import_trt
    from ..export.bundle import BundleError, load_bundle

    try:
        prof = load_profile(profile)
        b = load_bundle(bundle)
    except (ProfileError, BundleError) as exc:
        fail(str(exc))
    precisions = _precisions(precision, prof.precision)
    missing = [p for p in precisions if p not in b.precisions]
    if missing:
        # a re-export replaces the whole bundle: ask for the precisions it has too
        source = b.manifest.get("source")
        run = source.get("run") if isinstance(source, dict) and source.get("run") else "RUN"
        wanted = ",".join(dict.fromkeys([*b.precisions, *missing]))
        fail(
            f"bundle {bundle} has no {', '.join(missing)} graphs "
            f"(it has {', '.join(b.precisions)}); export it again with them: edge-iapp export "
            f"{run} --out {bundle} --force --precision {wanted}"
            + (" --calib-data DATA" if "int8" in wanted else "")
        )
    try:
        trt = import_trt(trt_module)
    except TensorRTUnavailable as exc:
        fail(
            f"cannot build engines: {exc}\nChecked: import {trt_module}. Engines must be built "
            "on the target with its TensorRT (JetPack on Jetson). The ONNX bundle itself runs "
            "anywhere with --backend onnxruntime or openvino."
        )
    if trt.is_rtx:
        target_sm = sm or prof.sm
        target = Target(device=f"any sm_{target_sm} (TensorRT-RTX)", sm=target_sm)
        console.print(
            f"[yellow]TensorRT-RTX[/] builds for sm_{target_sm} without a GPU; these "
            "engines run only on RTX-class GPUs with TensorRT-RTX, not on Jetson/datacenter cards."
        )
    else:
        if sm is not None:
            fail("--sm is for --trt-module tensorrt_rtx; TensorRT builds for the GPU it runs on")
        probe = probe_gpus()
        if not probe.ok:
            fail(
                f"cannot build engines: no usable NVIDIA GPU ({probe.error}).\nChecked: "
                "cudaGetDeviceCount via cuda-python. TensorRT builds on the GPU it targets: run "
                "this on the target machine (nvidia-smi must work there)."
            )
        gpu = probe.gpus[0]
        if gpu.sm != prof.sm:
            fail(
                f"profile {prof.name} targets sm_{prof.sm}, but this GPU ({gpu.name}) is "
                f"sm_{gpu.sm}; build on the target, or choose the profile of this GPU"
            )
        target = Target(device=gpu.name, sm=gpu.sm)

    console.print(
        f"building {', '.join(precisions)} engines of {b.path.name} for {prof.name} "
        f"with {trt.label} on {target.device} (batch {prof.batch()}, workspace "
        f"{prof.workspace_mib} MiB, optimisation level {prof.builder_optimization_level})"
    )

    def report(record: dict[str, Any], cached: bool) -> None:
        k = record["key"]
        how = "cached" if cached else f"built in {record['build']['seconds']:.1f} s"
        console.print(
            f"  {k['branch']:6s} {k['precision']}: {record['engine']} "
            f"({record['bytes'] / 2**20:.1f} MiB, {how})"
        )

    try:
        if progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                records = build_bundle_engines(
                    b, prof, precisions, trt, target, force=force, progress=bar, on_engine=report
                )
        else:
            records = build_bundle_engines(
                b, prof, precisions, trt, target, force=force, on_engine=report
            )
    except (BuildError, EngineMismatch) as exc:
        fail(str(exc))
    console.print(f"[green]ok[/]: {len(records)} engines in {b.path / 'engines'} (engines.json)")


def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as JSON")] = False,
) -> None:
    """Show what can run here: GPU, TensorRT, TensorRT-RTX, NVRTC, cuda-python."""
    report = doctor_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edge-iapp doctor")
    for col in ("component", "status", "details"):
        table.add_column(col)
    for name, entry in report.items():
        status = "[green]yes[/]" if entry["ok"] else "[red]no[/]"
        table.add_row(name, status, entry["details"])
    Console().print(table)


def doctor_report() -> dict[str, dict[str, Any]]:
    """What the TensorRT path can use here; each entry ``{"ok": bool, "details": str}``."""
    from ..backends.tensorrt.probe import probe_gpus
    from ..backends.tensorrt.trtmod import TensorRTUnavailable, import_trt
    from ..kernels.launcher import KernelError, nvrtc_version, supported_archs

    out: dict[str, dict[str, Any]] = {}
    probe = probe_gpus()
    if probe.ok:
        gpus = "; ".join(
            f"{g.index}: {g.name} sm_{g.sm}, {g.total_memory / 2**30:.0f} GiB" for g in probe.gpus
        )
        out["gpu"] = {"ok": True, "details": f"{gpus} (driver {probe.driver_version})"}
    else:
        out["gpu"] = {"ok": False, "details": f"{probe.error}. Fix: an NVIDIA GPU with its driver"}
    for mod in ("tensorrt", "tensorrt_rtx"):
        try:
            t = import_trt(mod)
            typing = "always strongly typed" if not t.has_weak_typing else "STRONGLY_TYPED flag"
            out[mod] = {"ok": True, "details": f"{t.label} ({typing})"}
        except TensorRTUnavailable as exc:
            out[mod] = {"ok": False, "details": str(exc)}
    out["cuda-python"] = _cuda_python()
    try:
        major, minor = nvrtc_version()
        archs = ", ".join(f"sm_{a}" for a in supported_archs())
        out["nvrtc"] = {"ok": True, "details": f"NVRTC {major}.{minor}: {archs}"}
    except KernelError as exc:
        out["nvrtc"] = {"ok": False, "details": str(exc)}
    usable = probe.ok and out["tensorrt"]["ok"] and out["nvrtc"]["ok"]
    out["tensorrt backend"] = {
        "ok": usable,
        "details": "usable (build engines with edge-iapp build BUNDLE --profile NAME)"
        if usable
        else "not usable here: needs a GPU, TensorRT and NVRTC; CPU: onnxruntime, openvino",
    }
    return out


def _cuda_python() -> dict[str, Any]:
    """Whether ``cuda.bindings`` (cuda-python) is installed; imported, not initialised."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    try:
        import_module("cuda.bindings.runtime")
    except ImportError as exc:
        return {"ok": False, "details": f"{exc}; pip install 'edge-iapp[tensorrt]'"}
    try:
        found = f"cuda-bindings {version('cuda-bindings')}"
    except PackageNotFoundError:
        found = "cuda.bindings"
    return {"ok": True, "details": f"{found} (the CUDA runtime and NVRTC from Python)"}


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("build")(build_command)
    app.command("doctor")(doctor_command)
