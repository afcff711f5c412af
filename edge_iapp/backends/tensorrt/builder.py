"""ONNX -> TensorRT engine, one code path for ``tensorrt`` (10/11) and ``tensorrt_rtx``.

The precision is the graph's (typed FP16, explicit Q/DQ INT8): the network is strongly
typed, so TensorRT cannot pick other precisions, and the parsed network is checked to
be what its name says (an "int8" graph without Q/DQ, or an "fp16" graph without half
tensors, is an error, never a quiet FP32 engine). Settings come from the target
profile: optimisation profile (min, opt, max batch), workspace limit, builder
optimisation level; the timing cache is loaded and saved where the module has one.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import EngineKey, engine_dir, find_record, sha256_bytes, write_record
from .profiles import TargetProfile
from .trtmod import TrtModule

BRANCHES = ("global", "object", "part")


class BuildError(RuntimeError):
    """The graph could not be parsed or built; the message carries the parser/builder errors."""


@dataclass
class Target:
    """What to build for: a real GPU (TensorRT) or an SM without a GPU (TensorRT-RTX)."""

    device: str
    sm: int

    @property
    def compute_capability(self) -> str:
        return f"{self.sm // 10}.{self.sm % 10}"


@dataclass
class BuildOutput:
    engine: bytes
    io: list[dict[str, Any]]
    log: list[str]
    seconds: float
    layers: dict[str, int] = field(default_factory=dict)


def make_logger(trt: TrtModule, lines: list[str], verbose: bool = False) -> Any:
    """A TensorRT logger that keeps warnings and errors (and info when verbose) in ``lines``."""
    mod = trt.module
    limit = mod.Logger.INFO if verbose else mod.Logger.WARNING

    class _Logger(mod.ILogger):
        def __init__(self) -> None:
            mod.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(limit):
                lines.append(f"[{str(severity).rsplit('.', 1)[-1]}] {msg}")

    return _Logger()


def make_progress_monitor(trt: TrtModule, progress: Any) -> Any:
    """An ``IProgressMonitor`` drawing TensorRT's build phases as rich progress bars."""
    mod = trt.module

    class _Monitor(mod.IProgressMonitor):
        def __init__(self) -> None:
            mod.IProgressMonitor.__init__(self)
            self.tasks: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            indent = "  " if parent_phase else ""
            self.tasks[phase_name] = progress.add_task(
                f"{indent}{phase_name}", total=max(num_steps, 1)
            )

        def step_complete(self, phase_name: str, step: int) -> bool:
            task = self.tasks.get(phase_name)
            if task is not None:
                progress.update(task, completed=step + 1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            task = self.tasks.pop(phase_name, None)
            if task is not None:
                progress.remove_task(task)

    return _Monitor()


def network_io(trt: TrtModule, network: Any) -> list[dict[str, Any]]:
    """Inputs and outputs of a parsed network: name, mode, dtype, shape (-1 = dynamic)."""
    io = []
    for mode, count, get in (
        ("input", network.num_inputs, network.get_input),
        ("output", network.num_outputs, network.get_output),
    ):
        for i in range(count):
            t = get(i)
            io.append(
                {
                    "name": t.name,
                    "mode": mode,
                    "dtype": str(t.dtype).rsplit(".", 1)[-1],
                    "shape": [int(d) for d in t.shape],
                }
            )
    return io


def layer_census(trt: TrtModule, network: Any) -> dict[str, int]:
    """Counts that prove the graph's precision: Q/DQ layers and half-precision tensors."""
    mod = trt.module
    counts = {"layers": network.num_layers, "quantize": 0, "dequantize": 0, "half_tensors": 0}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == mod.LayerType.QUANTIZE:
            counts["quantize"] += 1
        elif layer.type == mod.LayerType.DEQUANTIZE:
            counts["dequantize"] += 1
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == mod.DataType.HALF:
                counts["half_tensors"] += 1
    return counts


def check_precision(census: dict[str, int], precision: str, onnx_path: Path) -> None:
    """The graph must be what its precision says; never build a silent FP32 engine."""
    qdq = census["quantize"] + census["dequantize"]
    if precision == "int8" and qdq == 0:
        raise BuildError(
            f"{onnx_path.name} is meant to be INT8 but has no Q/DQ layers; "
            "re-export it with edge-iapp export --precision int8"
        )
    if precision == "fp16" and census["half_tensors"] == 0:
        raise BuildError(
            f"{onnx_path.name} is meant to be FP16 but has no half tensors; "
            "re-export it with edge-iapp export --precision fp16"
        )
    if precision == "fp32" and (qdq or census["half_tensors"]):
        raise BuildError(f"{onnx_path.name} is meant to be FP32 but holds Q/DQ or half tensors")


def rtx_capability(trt: TrtModule, sm: int) -> Any:
    """TensorRT-RTX's ``ComputeCapability`` for ``sm``, or BuildError listing those it has."""
    cap = getattr(trt.module.ComputeCapability, f"SM{sm}", None)
    if cap is None:
        have = sorted(int(n[2:]) for n in dir(trt.module.ComputeCapability) if n[2:].isdigit())
        raise BuildError(
            f"{trt.label} cannot build for sm_{sm}; it builds for "
            f"{', '.join(f'sm_{s}' for s in have)} (pass --sm one of them)"
        )
    return cap


def build_engine(
    trt: TrtModule,
    onnx_path: Path,
    precision: str,
    profile: TargetProfile,
    target: Target,
    *,
    timing_cache: Path | None = None,
    progress: Any = None,
    verbose: bool = False,
) -> BuildOutput:
    """Build one serialized engine.

    Args:
        trt: the TensorRT module.
        onnx_path: a typed ONNX graph with a dynamic batch dimension.
        precision: what the graph is (checked, see :func:`check_precision`).
        profile: batch profile, workspace, optimisation level.
        target: the GPU, or for TensorRT-RTX the SM to build for.
        timing_cache: file to load and update (ignored where the module has none).
        progress: a ``rich.progress.Progress`` to draw build phases in, or None.

    Raises:
        BuildError: parse errors, a graph that is not of its precision, a failed build.
    """
    mod = trt.module
    lines: list[str] = []
    logger = make_logger(trt, lines, verbose)
    builder = mod.Builder(logger)
    network = builder.create_network(trt.network_flags())
    parser = mod.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"{trt.label} cannot parse {onnx_path}:\n  " + "\n  ".join(errors or lines)
        )
    census = layer_census(trt, network)
    check_precision(census, precision, Path(onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(mod.MemoryPoolType.WORKSPACE, profile.workspace_mib << 20)
    config.builder_optimization_level = profile.builder_optimization_level
    if trt.is_rtx:
        config.num_compute_capabilities = 1
        config.set_compute_capability(rtx_capability(trt, target.sm), 0)
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = [int(d) for d in t.shape]
        if dims[0] != -1 or any(d < 0 for d in dims[1:]):
            raise BuildError(
                f"{onnx_path.name}: input {t.name} {dims} needs a dynamic batch "
                "dimension and static others"
            )
        opt.set_shape(t.name, *[(b, *dims[1:]) for b in profile.batch()])
    config.add_optimization_profile(opt)

    cache = None
    if timing_cache is not None and trt.has_timing_cache:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, False)
    if progress is not None and trt.has_progress_monitor:
        config.progress_monitor = make_progress_monitor(trt, progress)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise BuildError(f"{trt.label} failed to build {onnx_path.name}:\n  " + "\n  ".join(lines))
    if cache is not None and timing_cache is not None:
        from ...ioutil import atomic_write_bytes

        atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return BuildOutput(
        engine=bytes(memoryview(serialized)),
        io=network_io(trt, network),
        log=lines,
        seconds=seconds,
        layers=census,
    )


def engine_key(
    trt: TrtModule,
    branch: str,
    precision: str,
    onnx_sha256: str,
    profile: TargetProfile,
    target: Target,
) -> EngineKey:
    return EngineKey(
        branch=branch,
        precision=precision,
        onnx_sha256=onnx_sha256,
        trt_module=trt.name,
        trt_version=trt.version,
        device=target.device,
        compute_capability=target.compute_capability,
        profile=profile.name,
        batch=profile.batch(),
        workspace_mib=profile.workspace_mib,
        builder_optimization_level=profile.builder_optimization_level,
    )


def build_bundle_engines(
    bundle: Any,
    profile: TargetProfile,
    precisions: list[str],
    trt: TrtModule,
    target: Target,
    *,
    force: bool = False,
    progress: Any = None,
    branches: tuple[str, ...] = BRANCHES,
    on_engine: Any = None,
) -> list[dict[str, Any]]:
    """Build (or find in the cache) the engines of a bundle for one target.

    Args:
        bundle: a loaded :class:`~edge_iapp.export.bundle.Bundle`.
        on_engine: optional ``callback(record, cached: bool)`` after each engine.

    Returns:
        The engine records (see :mod:`.cache`), cached ones included.
    """
    from ...ioutil import atomic_write_bytes
    from .cache import sha256_file

    out_dir = engine_dir(bundle.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    timing = out_dir / f"timing-cache.{trt.name}-{trt.version}-sm{target.sm}.bin"
    records = []
    for precision in precisions:
        for branch in branches:
            onnx_path = bundle.file(branch, precision)
            key = engine_key(trt, branch, precision, sha256_file(onnx_path), profile, target)
            cached = None if force else find_record(out_dir, key)
            if cached is not None:
                records.append(cached)
                if on_engine:
                    on_engine(cached, True)
                continue
            built = build_engine(
                trt, onnx_path, precision, profile, target, timing_cache=timing, progress=progress
            )
            name = key.file_name()
            atomic_write_bytes(out_dir / name, built.engine)
            record = {
                "key": key.to_dict(),
                "digest": key.digest(),
                "engine": name,
                "sha256": sha256_bytes(built.engine),
                "bytes": len(built.engine),
                "io": built.io,
                "build": {
                    "seconds": round(built.seconds, 3),
                    "layers": built.layers,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "host": platform.node(),
                    "onnx": onnx_path.name,
                    "log": built.log[-200:],
                },
            }
            write_record(out_dir, record)
            records.append(record)
            if on_engine:
                on_engine(record, False)
    return records


def build_if_possible(
    bundle: Any, precisions: list[str], profile: str | None = None, progress: Any = None
) -> tuple[list[dict[str, Any]], str]:
    """For ``edge-iapp export``: build engines when TensorRT and a GPU are here, else say why.

    Args:
        bundle: a loaded bundle.
        precisions: precisions to build.
        profile: target profile name; default the first profile whose SM is this GPU's.

    Returns:
        ``(records, message)``: records empty and the message naming what is missing
        (and the command to build later on the target) when nothing could be built.
    """
    from .probe import probe_gpus
    from .profiles import list_profiles, load_profile
    from .trtmod import TensorRTUnavailable, import_trt

    name = profile or "<name>"
    later = f"build them on the target: edge-iapp build {bundle.path} --profile {name}"
    try:
        trt = import_trt("tensorrt")
    except TensorRTUnavailable as exc:
        return [], f"TensorRT engines not built: {exc} ({later})"
    probe = probe_gpus()
    if not probe.ok:
        return [], f"TensorRT engines not built: no usable GPU ({probe.error}); {later}"
    gpu = probe.gpus[0]
    if profile is None:
        matching = [n for n in list_profiles() if load_profile(n).sm == gpu.sm]
        if not matching:
            return [], f"TensorRT engines not built: no profile in export/ for sm_{gpu.sm}; {later}"
        profile = matching[0]
    prof = load_profile(profile)
    records = build_bundle_engines(
        bundle, prof, precisions, trt, Target(gpu.name, gpu.sm), progress=progress
    )
    return records, f"built {len(records)} engines for {gpu.name} ({prof.name}) with {trt.label}"
