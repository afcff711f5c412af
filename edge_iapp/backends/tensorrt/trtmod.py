"""Which TensorRT Python module to use, and what its API offers.

``tensorrt`` (TensorRT 10 or 11, on the target GPU) and ``tensorrt_rtx`` (TensorRT-RTX,
which builds engines without a GPU for a chosen SM) share the builder, network and ONNX
parser API; the differences that matter here are looked up, never assumed by version:

- the ``STRONGLY_TYPED`` network flag (TensorRT 10 needs it; 11 and RTX are always
  strongly typed, and set it where the enum still has it);
- ``IProgressMonitor`` and the timing cache (no-ops in RTX);
- explicit target compute capability (RTX only).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

MODULES = ("tensorrt", "tensorrt_rtx")
ENV = "EDGE_IAPP_TRT_MODULE"


class TensorRTUnavailable(RuntimeError):
    """No usable TensorRT module; the message says what was tried and how to install it."""


@dataclass(frozen=True)
class TrtModule:
    """A loaded TensorRT Python module.

    Attributes:
        module: the imported module.
        name: ``"tensorrt"`` or ``"tensorrt_rtx"``.
        version: its ``__version__``.
    """

    module: Any
    name: str
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"

    def network_flags(self) -> int:
        """Creation flags for a strongly typed network (0 where typing is always strong)."""
        flag = getattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 0 if flag is None else 1 << int(flag)

    @property
    def has_progress_monitor(self) -> bool:
        return hasattr(self.module, "IProgressMonitor")

    @property
    def has_timing_cache(self) -> bool:
        """Timing cache that does something (RTX keeps the API but makes it a no-op)."""
        return not self.is_rtx and hasattr(self.module.IBuilderConfig, "create_timing_cache")

    @property
    def has_weak_typing(self) -> bool:
        """TensorRT <= 10 has BuilderFlag.FP16/INT8 (never used here: precision is the graph's)."""
        return hasattr(self.module.BuilderFlag, "FP16")


def import_trt(name: str | None = None) -> TrtModule:
    """Import a TensorRT module.

    Args:
        name: ``"tensorrt"``, ``"tensorrt_rtx"``, or None/``"auto"``: ``$EDGE_IAPP_TRT_MODULE``,
            else ``tensorrt`` only. TensorRT-RTX is never picked implicitly: its engines
            run on RTX-class GPUs only, not on Jetson or datacenter cards.

    Raises:
        TensorRTUnavailable: naming the module and how to get it.
    """
    choice = name if name not in (None, "auto") else os.environ.get(ENV, "tensorrt")
    if choice not in MODULES:
        raise TensorRTUnavailable(f"unknown TensorRT module {choice!r}; choose one of {MODULES}")
    try:
        module = importlib.import_module(choice)
    except ImportError as exc:
        hint = (
            "TensorRT comes with JetPack (python3-libnvinfer) on Jetson, or from NVIDIA's "
            "index on x86 (pip install tensorrt-cu12 / tensorrt-cu13 with pypi.nvidia.com "
            "reachable); PyPI here has only placeholders"
            if choice == "tensorrt"
            else "pip install tensorrt-rtx"
        )
        raise TensorRTUnavailable(
            f"Python module {choice!r} is not importable ({exc}). {hint}."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a broken install raises OSError & co.
        raise TensorRTUnavailable(f"Python module {choice!r} failed to load: {exc}") from exc
    return TrtModule(module=module, name=choice, version=str(module.__version__))
