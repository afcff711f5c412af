"""The preprocessing kernels on device buffers: object stage and part stage for N images.

Used by the GPU backend (inputs go straight into the engines' input buffers) and by
``scripts/gpu-check`` (parity against the reference, throughput). Buffers are sized
for ``max_batch`` once; the packed crops buffer grows when a batch needs more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...kernels.launcher import BLOCK, KernelModule, pack_crops
from . import cudart

MODES = {"paper": 0, "foreground": 1}


@dataclass
class StageResult:
    """Host copies of one batch's device results (what :meth:`DevicePreprocessor.fetch` returns)."""

    global_images: np.ndarray
    object_images: np.ndarray
    object_masks: np.ndarray
    object_boxes: np.ndarray
    object_fallback: np.ndarray
    part_images: np.ndarray | None = None
    part_masks: np.ndarray | None = None
    part_boxes: np.ndarray | None = None
    part_fallback: np.ndarray | None = None
    global_input: np.ndarray | None = None


class DevicePreprocessor:
    """Device buffers plus kernel launches for batches of up to ``max_batch`` images.

    Args:
        kernels: the loaded :class:`~edge_iapp.kernels.launcher.KernelModule`.
        max_batch: largest batch.
        size: network input side S.
        input_half: write network inputs as float16 (engine input is HALF) else float32.
        grid: the part maps' ``(h, w)`` (None: allocated on the first part stage).
    """

    def __init__(
        self,
        kernels: KernelModule,
        max_batch: int,
        size: int,
        input_half: bool = False,
        grid: tuple[int, int] | None = None,
    ):
        self.k = kernels
        self.n_max = int(max_batch)
        self.s = int(size)
        self.input_half = bool(input_half)
        n, px = self.n_max, self.s * self.s
        item = 2 if input_half else 4
        self._owned: list[Any] = []
        alloc = self._alloc
        self.sums = alloc(8 * n)
        self.boxes_incl = alloc(16 * n)
        self.object_boxes = alloc(16 * n)
        self.object_fallback = alloc(n)
        self.part_boxes = alloc(16 * n)
        self.part_fallback = alloc(n)
        self.meta_bytes = 20 * n  # offsets int64, shapes 2 x int32, backgrounds int32
        self.meta = alloc(self.meta_bytes)
        self.global_u8, self.eroded, self.mask = alloc(n * px), alloc(n * px), alloc(n * px)
        self.object_u8, self.part_u8 = alloc(n * px), alloc(n * px)
        self.global_in, self.object_in, self.part_in = (alloc(n * px * item) for _ in range(3))
        self.part_masks = None
        self.grid = None
        if grid is not None:
            self._alloc_grid(grid)
        self.crops: cudart.DeviceBuffer | None = None
        self.crops_pinned: cudart.PinnedBuffer | None = None
        self.meta_pinned = cudart.PinnedBuffer(self.meta_bytes)
        self._owned.append(self.meta_pinned)

    def _alloc(self, nbytes: int) -> cudart.DeviceBuffer:
        buf = cudart.DeviceBuffer(nbytes)
        self._owned.append(buf)
        return buf

    def _alloc_grid(self, grid: tuple[int, int]) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        cells = self.n_max * self.grid[0] * self.grid[1]
        self.part_masks = self._alloc(cells)
        self.part_scratch = self._alloc(4 * cells)  # 2 shorts per cell: labels, flood-fill stack

    def _grid2d(self, n: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return ((self.s * self.s + BLOCK - 1) // BLOCK, n, 1), (BLOCK, 1, 1)

    # -- host -> device ------------------------------------------------------------------
    def upload(self, crops: list[np.ndarray], backgrounds: list[int], stream: Any) -> int:
        """Pack and copy crops + per-image metadata (async on ``stream``); returns N."""
        n = len(crops)
        if not 1 <= n <= self.n_max:
            raise ValueError(f"batch of {n} images; this preprocessor takes 1..{self.n_max}")
        buffer, offsets, shapes = pack_crops(crops)
        if self.crops is None or self.crops.nbytes < buffer.nbytes:
            # Grow to 2x so a stream of similar batches does not reallocate every time.
            for old in (self.crops, self.crops_pinned):
                if old is not None:
                    self._owned.remove(old)
                    old.free()
            cudart.synchronize(stream)
            self.crops = cudart.DeviceBuffer(2 * buffer.nbytes)
            self.crops_pinned = cudart.PinnedBuffer(2 * buffer.nbytes)
            self._owned += [self.crops, self.crops_pinned]
        self.crops_pinned.view(np.uint8, buffer.nbytes)[:] = buffer
        m = self.meta_pinned
        m.view(np.int64, n, 0)[:] = offsets
        m.view(np.int32, 2 * n, 8 * n)[:] = shapes.reshape(-1)
        m.view(np.int32, n, 16 * n)[:] = np.asarray(backgrounds, dtype=np.int32)
        cudart.copy_async(self.crops.ptr, self.crops_pinned.ptr, buffer.nbytes, "h2d", stream)
        cudart.copy_async(self.meta.ptr, m.ptr, 20 * n, "h2d", stream)
        return n

    # -- kernels ---------------------------------------------------------------------------
    def global_stage(self, n: int, cfg: Any, stream: Any) -> None:
        """Reset per-image reductions, then the global canvas (u8 + network input + sums)."""
        h = cudart.handle(stream)
        k = self.k
        k.launch(
            "iapp_reset",
            ((n + BLOCK - 1) // BLOCK, 1, 1),
            (BLOCK, 1, 1),
            (self.sums.ptr, self.boxes_incl.ptr, n),
            h,
        )
        grid, block = self._grid2d(n)
        offs, shapes, bgs = self.meta.ptr, self.meta.ptr + 8 * n, self.meta.ptr + 16 * n
        k.launch(
            "iapp_global_canvas",
            grid,
            block,
            (
                self.crops.ptr,
                offs,
                shapes,
                bgs,
                n,
                self.s,
                cfg.canvas,
                int(cfg.normalize_background),
                self.global_u8.ptr,
                self.global_in.ptr,
                int(self.input_half),
                self.sums.ptr,
            ),
            h,
        )

    def object_stage(self, n: int, cfg: Any, stream: Any) -> None:
        """Threshold + erosion, dilation + box, zoom (after :meth:`global_stage`)."""
        h = cudart.handle(stream)
        grid, block = self._grid2d(n)
        self.k.launch(
            "iapp_erode",
            grid,
            block,
            (
                self.global_u8.ptr,
                self.sums.ptr,
                n,
                self.s,
                MODES[cfg.threshold],
                cfg.morph_kernel,
                self.eroded.ptr,
            ),
            h,
        )
        self.k.launch(
            "iapp_dilate_box",
            grid,
            block,
            (self.eroded.ptr, n, self.s, cfg.morph_kernel, self.mask.ptr, self.boxes_incl.ptr),
            h,
        )
        self.k.launch(
            "iapp_object_zoom",
            grid,
            block,
            (
                self.global_u8.ptr,
                self.mask.ptr,
                self.boxes_incl.ptr,
                n,
                self.s,
                cfg.object_margin,
                self.object_u8.ptr,
                self.object_in.ptr,
                int(self.input_half),
                self.object_boxes.ptr,
                self.object_fallback.ptr,
            ),
            h,
        )

    def part_stage(
        self, n: int, maps_ptr: int, maps_half: bool, grid_hw: tuple[int, int], stream: Any
    ) -> None:
        """Part mask, largest region, box (one thread per image), then the part zoom."""
        from ...kernels.launcher import KernelError

        if self.grid != tuple(grid_hw):
            if self.grid is not None:
                raise KernelError(f"part grid changed from {self.grid} to {grid_hw}")
            if grid_hw[0] * grid_hw[1] > 1024:
                raise KernelError(f"part grid {grid_hw} exceeds the kernels' 1024 cells")
            self._alloc_grid(grid_hw)
        h = cudart.handle(stream)
        gh, gw = self.grid
        self.k.launch(
            "iapp_part_select",
            ((n + 63) // 64, 1, 1),
            (64, 1, 1),
            (
                maps_ptr,
                int(maps_half),
                n,
                gh,
                gw,
                self.s,
                self.part_masks.ptr,
                self.part_boxes.ptr,
                self.part_fallback.ptr,
                self.part_scratch.ptr,
            ),
            h,
        )
        grid, block = self._grid2d(n)
        self.k.launch(
            "iapp_part_zoom",
            grid,
            block,
            (
                self.object_u8.ptr,
                self.part_boxes.ptr,
                self.part_fallback.ptr,
                n,
                self.s,
                self.part_u8.ptr,
                self.part_in.ptr,
                int(self.input_half),
            ),
            h,
        )

    # -- device -> host (parity checks; the backend copies only what it needs) -----------
    def fetch(self, n: int, stream: Any, part: bool = False) -> StageResult:
        """Synchronous copies of every intermediate of the last batch."""
        cudart.synchronize(stream)
        s = self.s

        def get(buf: cudart.DeviceBuffer, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
            out = np.empty(shape, dtype=dtype)
            cudart.copy_sync(out.ctypes.data, buf.ptr, out.nbytes, "d2h")
            return out

        in_dtype = np.float16 if self.input_half else np.float32
        res = StageResult(
            global_images=get(self.global_u8, np.uint8, (n, s, s)),
            object_images=get(self.object_u8, np.uint8, (n, s, s)),
            object_masks=get(self.mask, np.uint8, (n, s, s)).astype(bool),
            object_boxes=get(self.object_boxes, np.int32, (n, 4)),
            object_fallback=get(self.object_fallback, np.uint8, (n,)).astype(bool),
            global_input=get(self.global_in, in_dtype, (n, 1, s, s)),
        )
        if part:
            gh, gw = self.grid
            res.part_images = get(self.part_u8, np.uint8, (n, s, s))
            res.part_masks = get(self.part_masks, np.uint8, (n, gh, gw)).astype(bool)
            res.part_boxes = get(self.part_boxes, np.int32, (n, 4))
            res.part_fallback = get(self.part_fallback, np.uint8, (n,)).astype(bool)
        return res

    def close(self) -> None:
        for buf in self._owned:
            buf.free()
        self._owned.clear()
