"""Small wrappers over cuda-python's runtime API: checked calls, device/pinned buffers, streams.

Everything runs on the device's primary context (the runtime API's), which TensorRT
and PyTorch use too, so they can share buffers. Imported only where a GPU is used.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and the error."""


def check(result: Any, what: str) -> Any:
    """Unwrap ``(err, value...)`` from a cuda-python runtime call, raising CudaError on failure."""
    from cuda.bindings import runtime

    if not isinstance(result, tuple):
        result = (result,)
    err = result[0]
    if err != runtime.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {err.name} ({int(err)})")
    rest = result[1:]
    return rest[0] if len(rest) == 1 else (rest or None)


def set_device(index: int) -> None:
    """Make the primary context of GPU ``index`` current on this thread (driver API too)."""
    from cuda.bindings import runtime

    check(runtime.cudaSetDevice(index), f"cudaSetDevice({index})")
    check(runtime.cudaFree(0), "cudaFree(0) (context initialisation)")


class DeviceBuffer:
    """``nbytes`` of device memory (``ptr`` is an int address)."""

    def __init__(self, nbytes: int):
        from cuda.bindings import runtime

        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(runtime.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        from cuda.bindings import runtime

        if self.ptr:
            runtime.cudaFree(self.ptr)
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory with a NumPy byte view (``array``) for async copies."""

    def __init__(self, nbytes: int):
        from cuda.bindings import runtime

        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(runtime.cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})"))
        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.ptr))

    def view(self, dtype: Any, count: int, offset: int = 0) -> np.ndarray:
        """``count`` items of ``dtype`` starting ``offset`` bytes in."""
        size = np.dtype(dtype).itemsize * int(count)
        if offset + size > self.nbytes:
            raise ValueError(
                f"pinned buffer of {self.nbytes} bytes is too small for {offset + size}"
            )
        return self.array[offset : offset + size].view(dtype)

    def free(self) -> None:
        from cuda.bindings import runtime

        if self.ptr:
            self.array = None
            runtime.cudaFreeHost(self.ptr)
            self.ptr = 0


def new_stream() -> Any:
    from cuda.bindings import runtime

    return check(
        runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking), "cudaStreamCreate"
    )


def new_event(timing: bool = False) -> Any:
    from cuda.bindings import runtime

    flags = runtime.cudaEventDefault if timing else runtime.cudaEventDisableTiming
    return check(runtime.cudaEventCreateWithFlags(flags), "cudaEventCreate")


def copy_async(dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
    """``kind`` is ``"h2d"``, ``"d2h"`` or ``"d2d"``."""
    from cuda.bindings import runtime

    kinds = {
        "h2d": runtime.cudaMemcpyKind.cudaMemcpyHostToDevice,
        "d2h": runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        "d2d": runtime.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
    }
    if nbytes:
        check(
            runtime.cudaMemcpyAsync(dst, src, int(nbytes), kinds[kind], stream),
            f"cudaMemcpyAsync {kind}",
        )


def copy_sync(dst: int, src: int, nbytes: int, kind: str) -> None:
    from cuda.bindings import runtime

    kinds = {
        "h2d": runtime.cudaMemcpyKind.cudaMemcpyHostToDevice,
        "d2h": runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost,
    }
    if nbytes:
        check(runtime.cudaMemcpy(dst, src, int(nbytes), kinds[kind]), f"cudaMemcpy {kind}")


def record(event: Any, stream: Any) -> None:
    from cuda.bindings import runtime

    check(runtime.cudaEventRecord(event, stream), "cudaEventRecord")


def wait(stream: Any, event: Any) -> None:
    from cuda.bindings import runtime

    check(runtime.cudaStreamWaitEvent(stream, event, 0), "cudaStreamWaitEvent")


def synchronize(stream: Any) -> None:
    from cuda.bindings import runtime

    check(runtime.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def elapsed_ms(start: Any, end: Any) -> float:
    from cuda.bindings import runtime

    return float(check(runtime.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))


def handle(stream: Any) -> int:
    """The raw ``cudaStream_t`` as an int (what TensorRT and cuLaunchKernel take)."""
    return int(stream)


def capture(stream: Any, enqueue: Any) -> Any:
    """Capture what ``enqueue()`` puts on ``stream`` (and streams it forks) into a graph.

    Returns:
        ``(graph, graph_exec)``, to pass to :func:`graph_launch` and :func:`graph_destroy`.
    """
    from cuda.bindings import runtime

    mode = runtime.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    check(runtime.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
    try:
        enqueue()
    finally:
        graph = check(runtime.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
    exec_ = check(runtime.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
    return graph, exec_


def graph_launch(graph: Any, stream: Any) -> None:
    from cuda.bindings import runtime

    check(runtime.cudaGraphLaunch(graph[1], stream), "cudaGraphLaunch")


def graph_destroy(graph: Any) -> None:
    from cuda.bindings import runtime

    runtime.cudaGraphExecDestroy(graph[1])
    runtime.cudaGraphDestroy(graph[0])
