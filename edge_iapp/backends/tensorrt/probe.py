"""A GPU probe that cannot crash.

TensorRT's runtime segfaults on ``deserialize_cuda_engine`` when there is no usable GPU;
``cudaGetDeviceCount`` through cuda-python returns an error code instead (35,
``cudaErrorInsufficientDriver``, on a machine without a driver). Everything that
touches a GPU asks :func:`probe_gpus` first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Peak memory bandwidth, GB/s, by (a substring of) the device name: CUDA 13 dropped the
# clock/bus-width fields this used to be computed from. Vendor spec sheets.
KNOWN_BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # SXM5
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L4", 300.0),
    ("L40S", 864.0),
    ("Thor", 273.0),
    ("Orin Nano", 102.0),  # Super mode; 68 in the original modes
    ("Orin NX", 102.4),
    ("Orin", 204.8),  # AGX Orin 64GB
)


@dataclass
class GpuInfo:
    """One CUDA device.

    Attributes:
        index: CUDA device ordinal.
        name: device name as CUDA reports it.
        cc: compute capability ``(major, minor)``.
        total_memory: bytes.
        bandwidth_gbs: peak memory bandwidth (GB/s) and where it came from.
    """

    index: int
    name: str
    cc: tuple[int, int]
    total_memory: int
    bandwidth_gbs: float | None = None
    bandwidth_source: str = "unknown"

    @property
    def sm(self) -> int:
        return self.cc[0] * 10 + self.cc[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cc"] = f"{self.cc[0]}.{self.cc[1]}"
        return d


@dataclass
class Probe:
    """What the probe found: GPUs, driver/runtime versions, or why there are none."""

    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: int | None = None
    runtime_version: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.gpus)


def _bandwidth(name: str) -> tuple[float | None, str]:
    for key, gbs in KNOWN_BANDWIDTH_GBS:
        if key.lower() in name.lower():
            return gbs, f"spec sheet ({key})"
    return None, "unknown"


def probe_gpus() -> Probe:
    """List CUDA devices without risking a crash; never raises."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        return Probe(
            error=f"cuda-bindings is not installed ({exc}); pip install 'edge-iapp[tensorrt]'"
        )
    except Exception as exc:  # noqa: BLE001 - e.g. the CUDA runtime library itself is missing
        return Probe(error=f"cuda-bindings failed to load: {exc}")
    probe = Probe()
    try:
        err, version = runtime.cudaRuntimeGetVersion()
        probe.runtime_version = int(version) if err == runtime.cudaError_t.cudaSuccess else None
        err, version = runtime.cudaDriverGetVersion()
        probe.driver_version = (
            int(version) if err == runtime.cudaError_t.cudaSuccess and version else None
        )
        err, count = runtime.cudaGetDeviceCount()
        if err != runtime.cudaError_t.cudaSuccess:
            probe.error = f"cudaGetDeviceCount failed: {err.name} ({int(err)}); " + (
                "no NVIDIA driver, or one older than this CUDA runtime"
                if int(err) in (35, 100)
                else "see the CUDA error code"
            )
            return probe
        for i in range(count):
            err, prop = runtime.cudaGetDeviceProperties(i)
            if err != runtime.cudaError_t.cudaSuccess:
                probe.error = f"cudaGetDeviceProperties({i}) failed: {err.name}"
                continue
            name = (
                prop.name.decode(errors="replace").rstrip("\0")
                if isinstance(prop.name, bytes)
                else str(prop.name)
            )
            gbs, source = _bandwidth(name)
            probe.gpus.append(
                GpuInfo(
                    i,
                    name,
                    (int(prop.major), int(prop.minor)),
                    int(prop.totalGlobalMem),
                    gbs,
                    source,
                )
            )
        if not probe.gpus and probe.error is None:
            probe.error = "the CUDA driver reports no GPU"
    except Exception as exc:  # noqa: BLE001 - the probe must never take the process down
        probe.error = f"GPU probe failed: {exc}"
    return probe


def require_gpu(index: int = 0) -> GpuInfo:
    """The GPU ``index`` or a RuntimeError that says what was checked and how to fix it."""
    probe = probe_gpus()
    if not probe.ok:
        raise RuntimeError(
            f"no usable NVIDIA GPU: {probe.error}. Checked cuda-python's cudaGetDeviceCount. "
            "Run on a machine with an NVIDIA GPU and driver (nvidia-smi must work), or use "
            "the CPU backends (--backend onnxruntime / openvino)."
        )
    if index >= len(probe.gpus):
        raise RuntimeError(f"GPU {index} requested but only {len(probe.gpus)} found")
    return probe.gpus[index]
