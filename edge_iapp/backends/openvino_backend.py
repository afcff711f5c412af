"""OpenVINO backend (x86 CPUs; optional extra ``edge-iapp[openvino]``).

Reads the same ONNX files. The INT8 graph's Q/DQ nodes run on OpenVINO's int8
kernels. The inference precision hint is pinned to f32 so that non-quantized layers
are not silently run in bf16 on CPUs that have it; ``describe()`` reports the
compiled model's actual hint and execution devices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..export.bundle import BRANCHES
from .base import Backend, BackendUnavailable


class OpenVINOBackend(Backend):
    """Options: ``device`` (default ``"CPU"``), ``threads``, ``hint`` (``"LATENCY"``)."""

    name = "openvino"
    accepted_options = ("device", "hint", "threads")
    thread_safe = True  # one infer request per call

    def __init__(self, bundle, precision: str = "fp32", **options: Any) -> None:
        super().__init__(bundle, precision, **options)
        self.device = str(options.get("device", "CPU"))
        self._compiled: dict = {}

    def load(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(
                "openvino is not installed (pip install 'edge-iapp[openvino]')"
            ) from exc
        core = ov.Core()
        if self.device not in core.available_devices:
            raise BackendUnavailable(
                f"OpenVINO device {self.device} not present "
                f"(have {', '.join(core.available_devices)})"
            )
        config = {
            "PERFORMANCE_HINT": str(self.options.get("hint", "LATENCY")),
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        for branch in BRANCHES:
            path = self.bundle.file(branch, self.precision)
            try:
                self._compiled[branch] = core.compile_model(str(path), self.device, config)
            except Exception as exc:  # noqa: BLE001
                raise BackendUnavailable(f"OpenVINO cannot compile {path.name}: {exc}") from exc
        self._version = ov.get_version()

    def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        compiled = self._compiled[branch]
        request = compiled.create_infer_request()
        result = request.infer({0: np.ascontiguousarray(x, np.float32)})
        return tuple(np.asarray(result[out], dtype=np.float32) for out in compiled.outputs)

    def describe(self) -> dict[str, Any]:
        info = {"backend": self.name, "precision": self.precision, "device": self.device}
        if self._compiled:
            c = self._compiled["global"]
            # f32 is asked for (a CPU with bf16 would otherwise compute in bf16 unasked),
            # so an fp16 bundle runs its fp16 weights in f32 arithmetic: say so
            hint = c.get_property("INFERENCE_PRECISION_HINT")
            info["inference_precision"] = getattr(hint, "to_string", lambda: str(hint))()
            if self.precision == "fp16" and info["inference_precision"] != "f16":
                info["compute"] = info["inference_precision"]
            info["execution_devices"] = [str(d) for d in c.get_property("EXECUTION_DEVICES")]
            info["version"] = self._version
        return info

    def close(self) -> None:
        self._compiled.clear()
        super().close()
