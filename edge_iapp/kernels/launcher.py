"""Compile the preprocessing kernels with NVRTC, cache the result, load and launch them.

The source is ``iapp_common.cu`` (the ``__host__ __device__`` logic the CPU harness
also compiles) followed by ``kernels.cu`` (thin ``extern "C"`` wrappers). NVRTC needs
no GPU to compile: a cubin for the device's own ``sm_XY`` when NVRTC knows it, else PTX
for the newest architecture NVRTC knows (the driver JIT-compiles it), which is the
fall-back for cards newer than this NVRTC. Nothing here imports cuda at module import.

Kernel arguments are packed from the signatures parsed out of ``kernels.cu`` itself, so
the Python side cannot drift from the C side (``tests/test_nvrtc.py`` checks the parse).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_DIR = Path(__file__).resolve().parent
SOURCES = ("iapp_common.cu", "kernels.cu")
BLOCK = 256
"""Threads per block; kernels.cu's shared-memory reduction assumes exactly this (IAPP_BLOCK)."""

COMPILE_OPTIONS = ("-std=c++17", "--fmad=false")
"""--fmad=false is belt and braces: iapp_common.cu already uses explicitly rounded operations."""


class KernelError(RuntimeError):
    """NVRTC, the driver or a launch failed; the message names the step and what to do."""


def kernel_source() -> str:
    """The full translation unit NVRTC compiles, with ``#line`` marks for readable errors."""
    parts = []
    for name in SOURCES:
        text = (KERNEL_DIR / name).read_text(encoding="utf-8")
        parts.append(f'#line 1 "{name}"\n{text}')
    return "\n".join(parts)


def source_sha256() -> str:
    return hashlib.sha256(kernel_source().encode()).hexdigest()


# ---------------------------------------------------------------- signatures

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_SCALARS = {
    "int": np.int32,
    "unsigned int": np.uint32,
    "long long": np.int64,
    "unsigned long long": np.uint64,
    "float": np.float32,
    "double": np.float64,
}


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its C name and the NumPy type its value is packed as."""

    name: str
    ctype: str
    dtype: type

    @property
    def is_pointer(self) -> bool:
        return self.ctype.endswith("*")


def parse_signatures(source: str | None = None) -> dict[str, list[Param]]:
    """``{kernel name: [Param, ...]}`` for every ``extern "C" __global__`` function."""
    source = kernel_source() if source is None else source
    kernels: dict[str, list[Param]] = {}
    for name, arglist in _SIGNATURE.findall(source):
        params = []
        for raw in arglist.split(","):
            decl = " ".join(raw.replace("*", " * ").split())
            if not decl:
                continue
            ctype, pname = decl.rsplit(" ", 1)
            ctype = ctype.replace("const ", "").replace(" *", "*")
            if ctype.endswith("*"):
                dtype: type = np.uint64  # device pointers travel as 64-bit addresses
            elif ctype in _SCALARS:
                dtype = _SCALARS[ctype]
            else:
                raise KernelError(f"kernel {name}: unsupported parameter type {ctype!r} ({pname})")
            params.append(Param(pname, ctype, dtype))
        kernels[name] = params
    return kernels


def pack_args(params: list[Param], values: tuple[Any, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pack launch arguments for ``cuLaunchKernel``'s ``kernelParams``.

    Returns ``(pointer_array, storage)``: ``pointer_array`` (uint64, one address per
    parameter) points into ``storage``, which the caller keeps alive until the launch
    is enqueued.
    """
    if len(values) != len(params):
        names = ", ".join(p.name for p in params)
        raise KernelError(f"expected {len(params)} arguments ({names}), got {len(values)}")
    storage = []
    for p, v in zip(params, values, strict=True):
        if p.is_pointer:
            v = 0 if v is None else int(v)
            if v < 0:
                raise KernelError(f"parameter {p.name}: negative device address {v}")
        storage.append(np.array([v], dtype=p.dtype))
    pointers = np.array([a.ctypes.data for a in storage], dtype=np.uint64)
    return pointers, storage


def pack_crops(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack N ``(h_i, w_i)`` uint8 crops the way ``iapp_global_canvas`` reads them.

    Returns:
        ``(buffer uint8 (sum h*w,), offsets int64 (N,), shapes int32 (N, 2))``.
    """
    shapes = np.array([c.shape for c in crops], dtype=np.int32).reshape(-1, 2)
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1]
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)[: len(crops)]
    buffer = np.empty(int(sizes.sum()), dtype=np.uint8)
    for crop, off, size in zip(crops, offsets, sizes, strict=True):
        buffer[off : off + size] = np.ascontiguousarray(crop, dtype=np.uint8).reshape(-1)
    return buffer, offsets, shapes


# ---------------------------------------------------------------- NVRTC


def _nvrtc_check(result: tuple, step: str, prog: Any = None) -> tuple:
    from cuda.bindings import nvrtc

    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = _nvrtc_log(prog) if prog is not None else ""
        raise KernelError(f"NVRTC {step} failed: {err.name}\n{log}".rstrip())
    return result[1:]


def _nvrtc_log(prog: Any) -> str:
    from cuda.bindings import nvrtc

    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS or size <= 1:
        return ""
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\x00").decode(errors="replace")


def nvrtc_version() -> tuple[int, int]:
    """NVRTC's (major, minor); raises :class:`KernelError` when NVRTC cannot be loaded."""
    try:
        from cuda.bindings import nvrtc

        major, minor = _nvrtc_check(nvrtc.nvrtcVersion(), "version")
    except ImportError as exc:
        raise KernelError(
            f"cuda-bindings is not installed ({exc}); pip install 'edge-iapp[tensorrt]'"
        ) from exc
    except RuntimeError as exc:  # the NVRTC library itself is missing
        raise KernelError(f"NVRTC is not available ({exc}); pip install nvidia-cuda-nvrtc") from exc
    return int(major), int(minor)


def supported_archs() -> list[int]:
    """Architectures this NVRTC compiles for, e.g. ``[75, 80, ..., 121]``."""
    from cuda.bindings import nvrtc

    (archs,) = _nvrtc_check(nvrtc.nvrtcGetSupportedArchs(), "supported archs")
    return sorted(int(a) for a in archs)


@dataclass(frozen=True)
class Compiled:
    """A compiled module image: ``kind`` is ``"cubin"`` or ``"ptx"`` for ``arch`` (e.g. 90)."""

    image: bytes
    kind: str
    arch: int
    log: str


def compile_source(
    arch: int, kind: str = "cubin", source: str | None = None, extra: tuple[str, ...] = ()
) -> Compiled:
    """Compile the kernels for ``sm_<arch>`` (cubin) or ``compute_<arch>`` (PTX). No GPU needed."""
    from cuda.bindings import nvrtc

    if kind not in ("cubin", "ptx"):
        raise ValueError(f"kind must be 'cubin' or 'ptx', got {kind!r}")
    source = kernel_source() if source is None else source
    (prog,) = _nvrtc_check(
        nvrtc.nvrtcCreateProgram(source.encode(), b"edge_iapp_kernels.cu", 0, [], []), "create"
    )
    try:
        target = f"sm_{arch}" if kind == "cubin" else f"compute_{arch}"
        opts = [f"--gpu-architecture={target}".encode()] + [
            o.encode() for o in (*COMPILE_OPTIONS, *extra)
        ]
        _nvrtc_check(nvrtc.nvrtcCompileProgram(prog, len(opts), opts), f"compile ({target})", prog)
        log = _nvrtc_log(prog)
        if kind == "cubin":
            (size,) = _nvrtc_check(nvrtc.nvrtcGetCUBINSize(prog), "cubin size")
            buf = b" " * size
            _nvrtc_check(nvrtc.nvrtcGetCUBIN(prog, buf), "get cubin")
        else:
            (size,) = _nvrtc_check(nvrtc.nvrtcGetPTXSize(prog), "ptx size")
            buf = b" " * size
            _nvrtc_check(nvrtc.nvrtcGetPTX(prog, buf), "get ptx")
        return Compiled(image=bytes(buf), kind=kind, arch=arch, log=log)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def choose_target(cc: tuple[int, int], archs: list[int] | None = None) -> tuple[int, str]:
    """``(arch, kind)`` for a device of compute capability ``cc``.

    A cubin for the device's own arch when NVRTC supports it; otherwise PTX for the
    newest supported arch not above the device's (the driver JIT-compiles it).
    """
    archs = supported_archs() if archs is None else archs
    want = cc[0] * 10 + cc[1]
    if want in archs:
        return want, "cubin"
    older = [a for a in archs if a <= want]
    if not older:
        raise KernelError(
            f"this NVRTC compiles for sm_{archs[0]}..sm_{archs[-1]}; the GPU is sm_{want}. "
            "Use a cuda-bindings/nvidia-cuda-nvrtc matching the GPU's CUDA version."
        )
    return max(older), "ptx"


def cache_dir() -> Path:
    """``$EDGE_IAPP_CACHE/kernels`` or ``~/.cache/edge-iapp/kernels``."""
    root = os.environ.get("EDGE_IAPP_CACHE") or Path.home() / ".cache" / "edge-iapp"
    return Path(root) / "kernels"


def compile_cached(arch: int, kind: str, directory: Path | None = None) -> Compiled:
    """:func:`compile_source` through an on-disk cache keyed by source hash, arch, NVRTC."""
    from ..ioutil import atomic_write_bytes

    major, minor = nvrtc_version()
    key = f"{source_sha256()[:16]}-nvrtc{major}.{minor}-{kind}-{arch}"
    path = (directory or cache_dir()) / f"{key}.{kind}"
    if path.is_file():
        return Compiled(image=path.read_bytes(), kind=kind, arch=arch, log="(cached)")
    compiled = compile_source(arch, kind)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, compiled.image)
    except OSError:
        pass  # a read-only home is no reason to fail: the next start recompiles (20-40 ms)
    return compiled


def cubin_param_sizes(image: bytes) -> dict[str, list[int]]:
    """Parameter sizes in bytes per kernel, read from a cubin's ``.nv.info.<kernel>`` sections.

    The EIATTR_KPARAM_INFO records (attribute 0x17) carry each parameter's ordinal and
    size; comparing them with :func:`parse_signatures` proves, without a GPU, that
    :func:`pack_args` hands every kernel the right number of values of the right widths.
    """
    import struct

    if image[:4] != b"\x7fELF" or image[4] != 2:
        raise KernelError("not a 64-bit ELF cubin")
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", image, shoff + i * shentsize) for i in range(shnum)]
    strtab = sections[shstrndx][4]

    def name_of(offset: int) -> str:
        end = image.index(b"\0", strtab + offset)
        return image[strtab + offset : end].decode()

    kernels: dict[str, list[int]] = {}
    for name_off, _typ, _flags, _addr, off, size in sections:
        name = name_of(name_off)
        if not name.startswith(".nv.info."):
            continue
        sizes: dict[int, int] = {}
        p = off
        while p + 4 <= off + size:
            fmt, attr, value = image[p], image[p + 1], struct.unpack_from("<H", image, p + 2)[0]
            if fmt == 4:  # EIFMT_SVAL: value is the payload length
                if attr == 0x17:
                    _index, ordinal, _offset, flags = struct.unpack_from("<IHHI", image, p + 4)
                    sizes[ordinal] = (flags >> 18) & 0x3FFF
                p += 4 + value
            else:
                p += 4
        kernels[name[len(".nv.info.") :]] = [sizes[i] for i in sorted(sizes)]
    return kernels


# ---------------------------------------------------------------- loading and launching


def _cu_check(result: Any, step: str) -> tuple:
    from cuda.bindings import driver

    if not isinstance(result, tuple):
        result = (result,)
    err = result[0]
    if err != driver.CUresult.CUDA_SUCCESS:
        _, text = driver.cuGetErrorString(err)
        raise KernelError(f"CUDA driver: {step} failed: {err.name} ({text!r})")
    return result[1:]


class KernelModule:
    """The compiled kernels loaded into the current (primary) context.

    Args:
        compiled: what :func:`compile_cached` returned.
    """

    def __init__(self, compiled: Compiled):
        from cuda.bindings import driver

        self.compiled = compiled
        image = compiled.image if compiled.kind == "cubin" else compiled.image.rstrip(b"\0") + b"\0"
        (self._module,) = _cu_check(driver.cuModuleLoadData(image), f"load {compiled.kind}")
        self.signatures = parse_signatures()
        self._functions = {
            name: _cu_check(driver.cuModuleGetFunction(self._module, name.encode()), name)[0]
            for name in self.signatures
        }

    @classmethod
    def for_device(cls, cc: tuple[int, int]) -> KernelModule:
        arch, kind = choose_target(cc)
        return cls(compile_cached(arch, kind))

    def launch(
        self,
        name: str,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        args: tuple[Any, ...],
        stream: int = 0,
    ) -> None:
        """Enqueue kernel ``name`` on ``stream`` (a ``cudaStream_t`` as int, 0 = legacy)."""
        from cuda.bindings import driver

        pointers, storage = pack_args(self.signatures[name], args)
        _cu_check(
            driver.cuLaunchKernel(
                self._functions[name], *grid, *block, 0, stream, pointers.ctypes.data, 0
            ),
            f"launch {name}",
        )
        del storage  # the driver copied the parameter values during the launch call

    def close(self) -> None:
        from cuda.bindings import driver

        if self._module is not None:
            driver.cuModuleUnload(self._module)
            self._module = None
