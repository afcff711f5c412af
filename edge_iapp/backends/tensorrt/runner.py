"""A deserialised engine: IO metadata, batch planning, one execution context per thread.

The pure parts (:class:`TensorSpec`, :func:`plan_bindings`, :func:`split_batch`) need no
GPU and are tested with the IO records of TensorRT-RTX builds. :class:`EngineRunner`
needs a GPU; deserialise only after :func:`~.cache.check_record` and a GPU probe
(TensorRT's runtime crashes without a GPU).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


@dataclass(frozen=True)
class TensorSpec:
    """One engine input/output: shape with -1 for the dynamic batch."""

    name: str
    mode: str
    dtype: Any
    shape: tuple[int, ...]

    def shape_for(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == -1 else d for d in self.shape)

    def nbytes(self, batch: int) -> int:
        return int(np.prod(self.shape_for(batch))) * np.dtype(self.dtype).itemsize


def io_specs(io: list[dict[str, Any]]) -> list[TensorSpec]:
    """TensorSpecs from an engine record's ``io`` list (see builder.network_io)."""
    specs = []
    for t in io:
        if t["dtype"] not in DTYPES:
            raise ValueError(f"tensor {t['name']}: unsupported dtype {t['dtype']}")
        shape = tuple(int(d) for d in t["shape"])
        if shape[0] != -1 or any(d < 0 for d in shape[1:]):
            raise ValueError(f"tensor {t['name']}: expected a dynamic batch only, got {shape}")
        specs.append(TensorSpec(t["name"], t["mode"], DTYPES[t["dtype"]], shape))
    return specs


def plan_bindings(
    specs: list[TensorSpec], batch: int, batch_range: tuple[int, int]
) -> dict[str, int]:
    """Bytes each tensor needs for ``batch``; ValueError outside the engine's profile."""
    lo, hi = batch_range
    if not lo <= batch <= hi:
        raise ValueError(
            f"batch {batch} is outside the engine's profile {lo}..{hi}; "
            "split it (split_batch) or rebuild with a larger max batch"
        )
    return {s.name: s.nbytes(batch) for s in specs}


def split_batch(n: int, max_batch: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` chunks of at most ``max_batch``, as even as possible."""
    if n <= 0:
        return []
    chunks = -(-n // max_batch)
    base, extra = divmod(n, chunks)
    out, start = [], 0
    for i in range(chunks):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


class EngineRunner:
    """An engine plus per-thread execution contexts (contexts are not thread-safe; engines are).

    Args:
        trt: :class:`~.trtmod.TrtModule`.
        path: the engine file, already checked by :func:`~.cache.check_record`.
        record: its cache record (IO and batch profile).
    """

    def __init__(self, trt: Any, path: Path, record: dict[str, Any], logger: Any):
        mod = trt.module
        self.record = record
        self.runtime = mod.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"{trt.label} could not deserialise {path} (see the log above); "
                "rebuild it with edge-iapp build"
            )
        self.specs = io_specs(record["io"])
        got = [(self.engine.get_tensor_name(i)) for i in range(self.engine.num_io_tensors)]
        if sorted(got) != sorted(s.name for s in self.specs):
            raise RuntimeError(
                f"engine {path.name} has tensors {got}, its record says "
                f"{[s.name for s in self.specs]}; rebuild it"
            )
        for s in self.specs:
            actual = str(self.engine.get_tensor_dtype(s.name)).rsplit(".", 1)[-1]
            if DTYPES.get(actual) is not s.dtype:
                raise RuntimeError(
                    f"engine {path.name}: {s.name} is {actual}, record says {s.dtype}"
                )
        b = record["key"]["batch"]
        self.batch_range = (int(b[0]), int(b[2]))
        self.inputs = [s for s in self.specs if s.mode == "input"]
        self.outputs = [s for s in self.specs if s.mode == "output"]
        self._local = threading.local()

    def context(self) -> Any:
        ctx = getattr(self._local, "context", None)
        if ctx is None:
            ctx = self.engine.create_execution_context()
            if ctx is None:
                raise RuntimeError("TensorRT could not create an execution context (GPU memory?)")
            self._local.context = ctx
        return ctx

    def enqueue(self, batch: int, addresses: dict[str, int], stream: int) -> None:
        """Run on ``stream`` with the tensors at device ``addresses`` (all IO names)."""
        plan_bindings(self.specs, batch, self.batch_range)
        ctx = self.context()
        for s in self.inputs:
            ctx.set_input_shape(s.name, s.shape_for(batch))
        for s in self.specs:
            ctx.set_tensor_address(s.name, int(addresses[s.name]))
        if not ctx.execute_async_v3(stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.record['engine']}")
