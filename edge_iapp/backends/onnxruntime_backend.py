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
    """Options: ``device`` = ``"auto"`` (default: CUDA when the provider is installed and
    takes the graphs, else CPU; ``describe()["device"]`` says which) | ``"cpu"`` |
    ``"cuda"`` (CUDA or BackendUnavailable), ``threads`` (intra-op threads)."""

    name = "onnxruntime"
    accepted_options = ("device", "threads")
    thread_safe = True  # InferenceSession.run is thread-safe

    def __init__(self, bundle, precision: str = "fp32", **options: Any) -> None:
        super().__init__(bundle, precision, **options)
        self.device = str(options.get("device", "auto"))
        self.requested_device = self.device
        if self.device not in ("cpu", "cuda", "auto"):
            raise BackendUnavailable(
                f"onnxruntime device must be cpu, cuda or auto, got {self.device!r}"
            )
        self._sessions: dict = {}
        self._outputs: dict[str, list[str]] = {}

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed (pip install onnxruntime)"
            ) from exc
        have = ort.get_available_providers()
        if self.device == "cuda" and PROVIDERS["cuda"] not in have:
            raise BackendUnavailable(
                f"onnxruntime CUDA provider not available here (providers: {', '.join(have)})"
            )
        so = ort.SessionOptions()
        threads = self.options.get("threads")
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        use_cuda = self.device == "cuda" or (self.device == "auto" and PROVIDERS["cuda"] in have)
        if use_cuda and not self._open(ort, so, [PROVIDERS["cuda"], PROVIDERS["cpu"]]):
            if self.device == "cuda":
                raise BackendUnavailable("onnxruntime could not place the graphs on CUDA")
            use_cuda = False  # auto: no usable GPU; describe() reports device "cpu"
        if not use_cuda:
            self._open(ort, so, [PROVIDERS["cpu"]])
        self.device = "cuda" if use_cuda else "cpu"

    def _open(self, ort, so, providers: list[str]) -> bool:
        """Open the three sessions; False when CUDA was asked for and a session lacks it."""
        self._sessions.clear()
        for branch in BRANCHES:
            path = self.bundle.file(branch, self.precision)
            try:
                sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
            except Exception as exc:  # noqa: BLE001 - report any load failure as unavailable
                raise BackendUnavailable(f"onnxruntime cannot load {path.name}: {exc}") from exc
            if providers[0] == PROVIDERS["cuda"] and PROVIDERS["cuda"] not in sess.get_providers():
                self._sessions.clear()
                return False
            self._sessions[branch] = sess
            self._outputs[branch] = [o.name for o in sess.get_outputs()]
        return True

    def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        sess = self._sessions[branch]
        outs = sess.run(
            self._outputs[branch],
            {self.bundle.input_name(branch): np.ascontiguousarray(x, np.float32)},
        )
        return tuple(outs)

    def describe(self) -> dict[str, Any]:
        info = {
            "backend": self.name,
            "precision": self.precision,
            "device": self.device,
            "requested_device": self.requested_device,
        }
        if self._sessions:
            info["providers"] = self._sessions["global"].get_providers()
            import onnxruntime as ort

            info["version"] = ort.__version__
        return info

    def close(self) -> None:
        self._sessions.clear()
        super().close()
