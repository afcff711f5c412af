"""ONNX Runtime backend: CPU, or the CUDA execution provider when asked for and present.

ORT can place single nodes on the CPU under the CUDA provider; ``describe()`` reports
the providers every session actually runs with, so nothing falls back silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..export.bundle import BRANCHES
from .base import Backend, BackendUnavailable

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxRuntimeBackend(Backend):
    """Options: ``device`` = ``"cpu"`` (default) | ``"cuda"`` | ``"auto"`` (CUDA when present),
    ``threads`` (intra-op threads, default ORT's choice)."""

    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run is thread-safe

    def __init__(self, bundle, precision: str = "fp32", **options: Any) -> None:
        super().__init__(bundle, precision, **options)
        self.device = str(options.get("device", "cpu"))
        if self.device not in ("cpu", "cuda", "auto"):
            raise BackendUnavailable(f"onnxruntime device must be cpu, cuda or auto, got {self.device!r}")
        self._sessions: dict = {}
        self._outputs: dict[str, list[str]] = {}

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)") from exc
        have = ort.get_available_providers()
        if self.device == "cuda" and PROVIDERS["cuda"] not in have:
            raise BackendUnavailable(
                f"onnxruntime CUDA provider not available here (providers: {', '.join(have)})"
            )
        use_cuda = self.device == "cuda" or (self.device == "auto" and PROVIDERS["cuda"] in have)
        providers = [PROVIDERS["cuda"], PROVIDERS["cpu"]] if use_cuda else [PROVIDERS["cpu"]]
        so = ort.SessionOptions()
        threads = self.options.get("threads")
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        for branch in BRANCHES:
            path = self.bundle.file(branch, self.precision)
            try:
                sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
            except Exception as exc:  # noqa: BLE001 - report any load failure as unavailable
                raise BackendUnavailable(f"onnxruntime cannot load {path.name}: {exc}") from exc
            if use_cuda and PROVIDERS["cuda"] not in sess.get_providers():
                raise BackendUnavailable(f"onnxruntime did not put {path.name} on CUDA")
            self._sessions[branch] = sess
            self._outputs[branch] = [o.name for o in sess.get_outputs()]
        self.device = "cuda" if use_cuda else "cpu"

    def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        sess = self._sessions[branch]
        outs = sess.run(self._outputs[branch], {self.bundle.input_name(branch): np.ascontiguousarray(x, np.float32)})
        return tuple(outs)

    def describe(self) -> dict[str, Any]:
        info = {"backend": self.name, "precision": self.precision, "device": self.device}
        if self._sessions:
            info["providers"] = self._sessions["global"].get_providers()
            import onnxruntime as ort

            info["version"] = ort.__version__
        return info

    def close(self) -> None:
        self._sessions.clear()
        super().close()
