"""The kernels' ``__host__ __device__`` logic compiled for the CPU, for parity tests.

``harness.cpp`` includes ``../iapp_common.cu`` with the CUDA qualifiers defined away; g++
builds it into a shared library that :class:`HostKernels` drives through ctypes with
the same array layouts as the GPU kernels. Test and development use only (needs g++).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..launcher import Compiled, pack_args, pack_crops, parse_signatures

HOST_DIR = Path(__file__).resolve().parent
HARNESS = HOST_DIR / "harness.cpp"
COMMON = HOST_DIR.parent / "iapp_common.cu"
CXXFLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-Wall", "-Wextra")

__all__ = [
    "EmulatedKernelModule",
    "HostKernels",
    "HostMemoryCudart",
    "build_host_library",
    "pack_crops",
]

MODES = {"paper": 0, "foreground": 1}
"""Threshold readings as the kernels number them."""


def build_host_library(out_dir: Path, compiler: str = "g++") -> Path:
    """Compile the harness into ``out_dir`` (reused when the sources are unchanged)."""
    if shutil.which(compiler) is None:
        raise RuntimeError(f"{compiler} not found; the host harness needs a C++17 compiler")
    digest = hashlib.sha256(HARNESS.read_bytes() + COMMON.read_bytes()).hexdigest()[:16]
    lib = Path(out_dir) / f"libiapp_host_{digest}.so"
    if not lib.is_file():
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(".tmp.so")
        cmd = [compiler, *CXXFLAGS, str(HARNESS), "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
        tmp.replace(lib)
    return lib


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    if not a.flags.c_contiguous:
        raise ValueError("arrays passed to the harness must be C-contiguous")
    return ctypes.c_void_p(a.ctypes.data)


@dataclass
class HostObject:
    """What the object-stage kernels produce, shapes as in ``ObjectBatch`` (plus ``eroded``)."""

    images: np.ndarray
    masks: np.ndarray
    eroded: np.ndarray
    boxes: np.ndarray
    fallback: np.ndarray


@dataclass
class HostPart:
    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    fallback: np.ndarray


class HostKernels:
    """ctypes front of the harness library."""

    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))
        self.lib.host_pairwise_sum.restype = ctypes.c_double
        self.lib.host_part_stage.restype = ctypes.c_int
        self.max_grid = int(self.lib.host_max_grid())

    def global_canvas(
        self, crops: list[np.ndarray], backgrounds: list[int], s: int, canvas: int, normalize: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(images (N, S, S) uint8, sums (N,) uint64)``."""
        buffer, offsets, shapes = pack_crops(crops)
        n = len(crops)
        bg = np.asarray(backgrounds, dtype=np.int32)
        out = np.zeros((n, s, s), dtype=np.uint8)
        sums = np.zeros(n, dtype=np.uint64)
        self.lib.host_global_canvas(
            _ptr(buffer),
            _ptr(offsets),
            _ptr(shapes),
            _ptr(bg),
            n,
            s,
            canvas,
            int(normalize),
            _ptr(out),
            _ptr(sums),
        )
        return out, sums

    def object_stage(
        self, global_u8: np.ndarray, mode: str, k: int, margin: int, sums: np.ndarray | None = None
    ) -> HostObject:
        g = np.ascontiguousarray(global_u8, dtype=np.uint8)
        n, s, _ = g.shape
        if sums is None:
            sums = g.reshape(n, -1).sum(axis=1, dtype=np.uint64)
        sums = np.ascontiguousarray(sums, dtype=np.uint64)
        eroded = np.zeros_like(g)
        mask = np.zeros_like(g)
        images = np.zeros_like(g)
        boxes = np.zeros((n, 4), dtype=np.int32)
        fallback = np.zeros(n, dtype=np.uint8)
        self.lib.host_object_stage(
            _ptr(g),
            _ptr(sums),
            n,
            s,
            MODES[mode],
            k,
            margin,
            _ptr(eroded),
            _ptr(mask),
            _ptr(images),
            _ptr(boxes),
            _ptr(fallback),
        )
        return HostObject(
            images, mask.astype(bool), eroded.astype(bool), boxes, fallback.astype(bool)
        )

    def part_stage(self, object_u8: np.ndarray, part_maps: np.ndarray) -> HostPart:
        o = np.ascontiguousarray(object_u8, dtype=np.uint8)
        n, s, _ = o.shape
        if part_maps.dtype not in (np.float32, np.float16):
            raise ValueError(f"part maps must be float32 or float16, got {part_maps.dtype}")
        maps = np.ascontiguousarray(part_maps)
        _, _, h, w = maps.shape
        masks = np.zeros((n, h, w), dtype=np.uint8)
        boxes = np.zeros((n, 4), dtype=np.int32)
        fallback = np.zeros(n, dtype=np.uint8)
        images = np.zeros_like(o)
        rc = self.lib.host_part_stage(
            _ptr(maps),
            int(maps.dtype == np.float16),
            n,
            h,
            w,
            s,
            _ptr(o),
            _ptr(masks),
            _ptr(boxes),
            _ptr(fallback),
            _ptr(images),
        )
        if rc != 0:
            raise ValueError(
                f"part grid {h}x{w} exceeds the kernels' limit of {self.max_grid} cells"
            )
        return HostPart(images, masks.astype(bool), boxes, fallback.astype(bool))

    def network_input(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S, S)`` uint8 -> ``((N, 1, S, S) float32, (N, 1, S, S) float16)``."""
        im = np.ascontiguousarray(images, dtype=np.uint8)
        f32 = np.zeros(im.shape, dtype=np.float32)
        f16 = np.zeros(im.shape, dtype=np.uint16)
        self.lib.host_network_input(_ptr(im), ctypes.c_longlong(im.size), _ptr(f32), _ptr(f16))
        return f32[:, None], f16.view(np.float16)[:, None]

    def float_to_half(self, values: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(values, dtype=np.float32)
        out = np.zeros(v.shape, dtype=np.uint16)
        self.lib.host_float_to_half(_ptr(v), ctypes.c_longlong(v.size), _ptr(out))
        return out.view(np.float16)

    def pairwise_sum(self, values: np.ndarray) -> float:
        v = np.ascontiguousarray(values, dtype=np.float64)
        return float(self.lib.host_pairwise_sum(_ptr(v), int(v.size)))


PIXEL_KERNELS = {
    "iapp_global_canvas",
    "iapp_erode",
    "iapp_dilate_box",
    "iapp_object_zoom",
    "iapp_part_zoom",
}
BLOCK_REDUCTION = {"iapp_global_canvas", "iapp_dilate_box"}


class EmulatedKernelModule:
    """Stands in for :class:`~edge_iapp.kernels.launcher.KernelModule` without a GPU.

    ``launch`` packs the arguments with the real :func:`pack_args` (same signatures),
    checks that the grid covers the work the way kernels.cu indexes it, and runs the
    harness's ``emu_<kernel>`` (same C signature) on host memory.
    """

    def __init__(self, host: HostKernels):
        self.lib = host.lib
        self.signatures = parse_signatures()
        self.compiled = Compiled(image=b"", kind="emulated", arch=0, log="")
        self.launches: list[tuple[str, tuple, tuple]] = []

    def launch(
        self,
        name: str,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        args: tuple,
        stream: int = 0,
    ) -> None:
        from ..launcher import BLOCK

        params = self.signatures[name]
        pack_args(params, args)
        values = dict(zip([p.name for p in params], args, strict=True))
        n = int(values["n"])
        if name in PIXEL_KERNELS:
            s = int(values["s"])
            assert grid[1] == n and grid[0] * block[0] >= s * s, (name, grid, block, n, s)
        else:
            assert grid[0] * block[0] >= n, (name, grid, block, n)
        if name in BLOCK_REDUCTION:
            assert block == (BLOCK, 1, 1), (name, block)
        c_args = [
            ctypes.c_void_p(int(v)) if p.is_pointer else np.ctypeslib.as_ctypes_type(p.dtype)(v)
            for p, v in zip(params, args, strict=True)
        ]
        getattr(self.lib, f"emu_{name}")(*c_args)
        self.launches.append((name, grid, block))

    def close(self) -> None:
        pass


class HostMemoryCudart:
    """The subset of ``backends/tensorrt/cudart`` the preprocessor uses, on host memory.

    "Device" buffers are plain host allocations, copies are memmoves, streams and
    events do nothing (the emulated kernels run synchronously).
    """

    class DeviceBuffer:
        def __init__(self, nbytes: int):
            self.nbytes = max(int(nbytes), 1)
            self._mem = np.zeros(self.nbytes, dtype=np.uint8)
            self.ptr = self._mem.ctypes.data

        def free(self) -> None:
            self.ptr = 0

    class PinnedBuffer(DeviceBuffer):
        def __init__(self, nbytes: int):
            super().__init__(nbytes)
            self.array = self._mem

        def view(self, dtype, count: int, offset: int = 0) -> np.ndarray:
            size = np.dtype(dtype).itemsize * int(count)
            if offset + size > self.nbytes:
                raise ValueError(f"pinned buffer of {self.nbytes} bytes is too small")
            return self.array[offset : offset + size].view(dtype)

    @staticmethod
    def copy_async(dst: int, src: int, nbytes: int, kind: str, stream) -> None:
        ctypes.memmove(dst, src, int(nbytes))

    @staticmethod
    def copy_sync(dst: int, src: int, nbytes: int, kind: str) -> None:
        ctypes.memmove(dst, src, int(nbytes))

    @staticmethod
    def synchronize(stream) -> None:
        pass

    @staticmethod
    def handle(stream) -> int:
        return 0

    # streams, events, devices: nothing to do when everything runs synchronously on the host
    @staticmethod
    def set_device(index: int) -> None:
        pass

    @staticmethod
    def new_stream() -> object:
        return object()

    @staticmethod
    def new_event(timing: bool = False) -> object:
        return object()

    @staticmethod
    def record(event, stream) -> None:
        pass

    @staticmethod
    def wait(stream, event) -> None:
        pass

    @staticmethod
    def elapsed_ms(start, end) -> float:
        return 0.0

    # CUDA graphs: "capturing" keeps the enqueue function, "launching" runs it again
    @staticmethod
    def capture(stream, enqueue):
        return enqueue

    @staticmethod
    def graph_launch(graph, stream) -> None:
        graph()

    @staticmethod
    def graph_destroy(graph) -> None:
        pass
