"""The TensorRT backend: CUDA preprocessing kernels and three engines on the GPU.

Per batch, on this thread's two streams (stream A, stream B)::

    A: H2D crops -> global canvas -+-> object stage, object engine, part stage, part engine -+-> D2H
    B:                             +-> global engine ----------------------------------------+

All memory lives on the device's primary context; inputs go straight from the kernels
into the engines' input buffers (float32, or float16 when the engine's input is HALF).
Each thread gets its own execution contexts, streams and buffers (thread-local), so
``predict`` may be called from several threads. Nothing falls back: without a GPU,
TensorRT, or a matching engine, ``load`` raises :class:`BackendUnavailable` saying
what was checked and how to fix it. Options: ``device`` (GPU index, default 0),
``trt_module`` (``tensorrt``; ``tensorrt_rtx`` on RTX cards), ``profile`` (choose
among engines built for several profiles), ``cuda_graph`` (capture kernels and engines
once per batch size and replay them: fewer launches; timings then count as branches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..base import Backend, BackendUnavailable, PipelineOutput, sized_crops

BRANCHES = ("global", "object", "part")


class _Workspace:
    """One thread's streams, events, kernel buffers and engine output buffers."""

    def __init__(self, be: TensorRTBackend):
        from . import cudart
        from .device_preprocess import DevicePreprocessor

        cudart.set_device(be.gpu.index)
        self.a, self.b = cudart.new_stream(), cudart.new_stream()
        self.global_ready, self.b_done = cudart.new_event(), cudart.new_event()
        self.marks = [cudart.new_event(timing=True) for _ in range(5)]
        self.graphs: dict[tuple, Any] = {}  # (batch, crops buffer, cfg) -> instantiated graph
        n = be.max_batch
        self.pre = DevicePreprocessor(be.kernels, n, be.size, be.input_half, be.grid)
        self.out: dict[tuple[str, str], Any] = {}
        for branch, runner in be.runners.items():
            for spec in runner.outputs:
                self.out[(branch, spec.name)] = cudart.DeviceBuffer(spec.nbytes(n))
        in_spec = be.runners["global"].inputs[0]
        self.x = cudart.DeviceBuffer(in_spec.nbytes(n))
        host_bytes = sum(b.nbytes for b in self.out.values()) + self.x.nbytes + 2 * n
        self.host = cudart.PinnedBuffer(host_bytes)

    def close(self) -> None:
        from . import cudart

        for graph in self.graphs.values():
            cudart.graph_destroy(graph)
        self.graphs.clear()
        self.pre.close()
        for buf in [*self.out.values(), self.x, self.host]:
            buf.free()


class TensorRTBackend(Backend):
    name = "tensorrt"
    accepted_options = ("device", "trt_module", "profile", "cuda_graph")
    thread_safe = True  # everything mutable is per thread (_Workspace, execution contexts)

    def __init__(self, bundle: Any, precision: str = "fp32", **options: Any) -> None:
        super().__init__(bundle, precision, **options)
        self.runners: dict[str, Any] = {}
        self._local = threading.local()
        self._workspaces: list[_Workspace] = []
        self._ws_lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        from .cache import EngineMismatch, engine_dir, select_record
        from .probe import require_gpu
        from .trtmod import TensorRTUnavailable, import_trt

        try:
            self.gpu = require_gpu(int(self.options.get("device", 0)))
            self.trt = import_trt(self.options.get("trt_module"))
        except (RuntimeError, TensorRTUnavailable) as exc:
            raise BackendUnavailable(f"tensorrt backend: {exc}") from exc
        from . import cudart
        from .builder import make_logger
        from .runner import EngineRunner

        cudart.set_device(self.gpu.index)
        self.log_lines: list[str] = []
        logger = make_logger(self.trt, self.log_lines)
        cc = f"{self.gpu.cc[0]}.{self.gpu.cc[1]}"
        folder = engine_dir(self.bundle.path)
        for branch in BRANCHES:
            onnx_sha = self.bundle.manifest["files"][branch][self.precision]["sha256"]
            try:
                record, path = select_record(
                    folder,
                    branch,
                    self.precision,
                    trt_module=self.trt.name,
                    trt_version=self.trt.version,
                    compute_capability=cc,
                    onnx_sha256=onnx_sha,
                    bundle_path=self.bundle.path,
                    profile=self.options.get("profile"),
                )
            except EngineMismatch as exc:
                raise BackendUnavailable(f"tensorrt backend on {self.gpu.name}: {exc}") from exc
            self.runners[branch] = EngineRunner(self.trt, path, record, logger)
        self._plan()
        from ...kernels.launcher import KernelModule

        self.kernels = KernelModule.for_device(self.gpu.cc)
        self._warm()  # inside load: ensure_loaded would wait on its own lock

    def _plan(self) -> None:
        """Batch range, input dtype and part grid from the engines' IO (no GPU calls)."""
        ranges = [r.batch_range for r in self.runners.values()]
        self.min_batch = max(lo for lo, _ in ranges)
        self.max_batch = min(hi for _, hi in ranges)
        inputs = {b: r.inputs for b, r in self.runners.items()}
        if any(len(v) != 1 for v in inputs.values()):
            raise BackendUnavailable("each branch engine must have exactly one input")
        dtypes = {np.dtype(v[0].dtype) for v in inputs.values()}
        if len(dtypes) != 1 or dtypes.pop() not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise BackendUnavailable(f"engine inputs must all be float32 or all float16: {inputs}")
        spec = inputs["global"][0]
        self.input_half = np.dtype(spec.dtype) == np.float16
        self.size = int(spec.shape[-1])
        if self.size != self.bundle.input_size:
            raise BackendUnavailable(
                f"engines take {self.size} px, the bundle {self.bundle.input_size}"
            )
        maps = [s for s in self.runners["object"].outputs if s.name == "part_maps"]
        if not maps or len(maps[0].shape) != 4:
            raise BackendUnavailable("the object engine has no (N, 2, h, w) part_maps output")
        self.maps_half = np.dtype(maps[0].dtype) == np.float16
        self.grid = (int(maps[0].shape[2]), int(maps[0].shape[3]))
        if self.grid[0] * self.grid[1] > 1024:
            raise BackendUnavailable(f"part grid {self.grid} exceeds the kernels' 1024 cells")

    def _workspace(self) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = _Workspace(self)
            self._local.ws = ws
            with self._ws_lock:
                self._workspaces.append(ws)
        return ws

    def describe(self) -> dict[str, Any]:
        d = {"backend": self.name, "precision": self.precision, "device": "cuda"}
        if self.runners:
            d.update(
                {
                    "device": f"{self.gpu.name} (sm_{self.gpu.sm})",
                    "tensorrt": self.trt.label,
                    "engines": {b: r.record["engine"] for b, r in self.runners.items()},
                    "preprocessing": f"CUDA kernels ({self.kernels.compiled.kind} "
                    f"sm_{self.kernels.compiled.arch}, NVRTC)",
                    "batch": [self.min_batch, self.max_batch],
                    "input_dtype": "float16" if self.input_half else "float32",
                    "cuda_graph": bool(self.options.get("cuda_graph")),
                }
            )
        return d

    def close(self) -> None:
        for ws in self._workspaces:
            ws.close()
        self._workspaces.clear()
        self._local = threading.local()
        if getattr(self, "kernels", None) is not None:
            self.kernels.close()
        self.runners.clear()
        super().close()

    # -- running ---------------------------------------------------------------------------
    def _addresses(self, ws: _Workspace, branch: str, x_ptr: int) -> dict[str, int]:
        runner = self.runners[branch]
        addr = {runner.inputs[0].name: x_ptr}
        addr.update({s.name: ws.out[(branch, s.name)].ptr for s in runner.outputs})
        return addr

    def _fetch(
        self, ws: _Workspace, items: list[tuple[int, Any, tuple[int, ...]]]
    ) -> list[np.ndarray]:
        """D2H copies into pinned memory on stream A, then one synchronise; copies out."""
        from . import cudart

        views, offset = [], 0
        for ptr, dtype, shape in items:
            count = int(np.prod(shape))
            view = ws.host.view(dtype, count, offset)
            cudart.copy_async(ws.host.ptr + offset, ptr, view.nbytes, "d2h", ws.a)
            views.append((view, shape))
            offset += -(-view.nbytes // 16) * 16
        cudart.synchronize(ws.a)
        return [v.reshape(shape).copy() for v, shape in views]

    def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        from . import cudart
        from .runner import split_batch

        ws = self._workspace()
        runner = self.runners[branch]
        x = np.ascontiguousarray(x, dtype=np.float16 if self.input_half else np.float32)
        chunks = []
        for a, b in split_batch(len(x), self.max_batch):
            part = x[a:b]
            staging = ws.host.view(part.dtype, part.size)
            staging[:] = part.reshape(-1)
            cudart.copy_async(ws.x.ptr, ws.host.ptr, part.nbytes, "h2d", ws.a)
            runner.enqueue(b - a, self._addresses(ws, branch, ws.x.ptr), cudart.handle(ws.a))
            outs = self._fetch(
                ws,
                [
                    (ws.out[(branch, s.name)].ptr, s.dtype, s.shape_for(b - a))
                    for s in runner.outputs
                ],
            )
            chunks.append(outs)
        return tuple(
            np.concatenate([c[i] for c in chunks]).astype(np.float32)
            for i in range(len(runner.outputs))
        )

    def warmup(self, batch: int | None = None) -> None:
        """One pass of the kernels and all three engines at batch 46 (load does this too)."""
        self.ensure_loaded()
        self._warm(batch)

    def _warm(self, batch: int | None = None) -> None:
        from . import cudart

        ws = self._workspace()
        n = min(self.max_batch, batch or 46)
        crops = [np.full((32, 16), 255, np.uint8) for _ in range(n)]
        crops[0][8:24, 4:12] = 40
        self._enqueue(ws, crops, [255] * n, self.cfg)
        cudart.synchronize(ws.a)

    def _enqueue(
        self, ws: _Workspace, crops: list[np.ndarray], backgrounds: list[int], cfg: Any
    ) -> int:
        """Upload, then the kernels and engines: eagerly, or as a CUDA graph when enabled."""
        from . import cudart

        cudart.record(ws.marks[0], ws.a)
        n = ws.pre.upload(crops, backgrounds, ws.a)
        if not self.options.get("cuda_graph"):
            self._stages(ws, n, cfg, marks=True)
            return n
        key = (n, ws.pre.crops.ptr, tuple(sorted(cfg.to_dict().items())))
        graph = ws.graphs.get(key)
        if graph is None:
            # TensorRT must have run a shape once before it can be captured: run eagerly,
            # then capture (capturing does not execute anything).
            self._stages(ws, n, cfg, marks=True)
            graph = ws.graphs[key] = cudart.capture(ws.a, lambda: self._stages(ws, n, cfg, False))
            return n
        cudart.graph_launch(graph, ws.a)
        for i in (1, 2, 3, 4):  # no per-stage split inside a graph: all time is "branches"
            cudart.record(ws.marks[i], ws.a)
        return n

    def _stages(self, ws: _Workspace, n: int, cfg: Any, marks: bool) -> None:
        from . import cudart

        a, hb, ha = ws.a, cudart.handle(ws.b), cudart.handle(ws.a)
        pre = ws.pre

        def mark(i: int) -> None:
            if marks:
                cudart.record(ws.marks[i], a)

        pre.global_stage(n, cfg, a)
        cudart.record(ws.global_ready, a)
        cudart.wait(ws.b, ws.global_ready)
        self.runners["global"].enqueue(n, self._addresses(ws, "global", pre.global_in.ptr), hb)
        cudart.record(ws.b_done, ws.b)
        pre.object_stage(n, cfg, a)
        mark(1)
        self.runners["object"].enqueue(n, self._addresses(ws, "object", pre.object_in.ptr), ha)
        mark(2)
        pre.part_stage(n, ws.out[("object", "part_maps")].ptr, self.maps_half, self.grid, a)
        mark(3)
        self.runners["part"].enqueue(n, self._addresses(ws, "part", pre.part_in.ptr), ha)
        cudart.wait(a, ws.b_done)
        mark(4)

    def run_pipeline(self, images: Sequence, cfg: Any = None) -> PipelineOutput:
        """Device preprocessing + engines; same :class:`PipelineOutput` as the reference path."""
        from . import cudart
        from .runner import split_batch

        self.ensure_loaded()
        cfg = cfg or self.cfg
        if cfg.input_size != self.size:
            raise ValueError(f"input_size {cfg.input_size} but the engines take {self.size}")
        ws = self._workspace()
        t_start = time.perf_counter()
        # cell-relative size is applied on the host, over the whole call, as by every backend
        all_crops, all_backgrounds, size = sized_crops(images, cfg)
        t_size = time.perf_counter() - t_start
        pieces, pre_s, branch_s = [], t_size, 0.0
        k = len(self.bundle.classes)
        for lo, hi in split_batch(len(images), self.max_batch):
            chunk = images[lo:hi]
            n = self._enqueue(ws, all_crops[lo:hi], all_backgrounds[lo:hi], cfg)
            pm = ws.out[("object", "part_maps")]
            maps_dtype = np.float16 if self.maps_half else np.float32
            got = self._fetch(
                ws,
                [
                    (ws.out[("global", "logits")].ptr, self._logit_dtype("global"), (n, k)),
                    (ws.out[("object", "logits")].ptr, self._logit_dtype("object"), (n, k)),
                    (ws.out[("part", "logits")].ptr, self._logit_dtype("part"), (n, k)),
                    (pm.ptr, maps_dtype, (n, 2, *self.grid)),
                    (ws.pre.object_fallback.ptr, np.uint8, (n,)),
                    (ws.pre.part_fallback.ptr, np.uint8, (n,)),
                ],
            )
            m = [cudart.elapsed_ms(ws.marks[i], ws.marks[i + 1]) / 1e3 for i in range(4)]
            pre_s += m[0] + m[2]
            branch_s += m[1] + m[3]
            pieces.append((got, chunk))
        if not pieces:
            raise ValueError("no images to classify")
        cat = [np.concatenate([p[0][i] for p in pieces]) for i in range(6)]
        every = [im for _, chunk in pieces for im in chunk]
        return PipelineOutput(
            logits={
                "global": cat[0].astype(np.float32),
                "object": cat[1].astype(np.float32),
                "part": cat[2].astype(np.float32),
            },
            part_maps=cat[3].astype(np.float32),
            flags={
                "shrunk": np.array([max(c.shape) > cfg.canvas for c in all_crops]),
                "inverted": np.array([bool(im.polarity.inverted) for im in every]),
                "object_fallback": cat[4].astype(bool),
                "part_fallback": cat[5].astype(bool),
                "size_fallback": size.fallback,
            },
            timings={
                "preprocess": pre_s,
                "branches": branch_s,
                "wall": time.perf_counter() - t_start,
            },
        )

    def _logit_dtype(self, branch: str) -> Any:
        spec = [s for s in self.runners[branch].outputs if s.name == "logits"][0]
        return spec.dtype
