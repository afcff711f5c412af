"""PyTorch backend: the reference. Runs the training run's model in FP32 (imports torch).

The bundle records its source run and the checkpoint's sha256; the torch backend
loads that checkpoint (or ``run=...``) and refuses one whose hash differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..export.bundle import sha256_file
from .base import Backend, BackendUnavailable


class TorchBackend(Backend):
    """Options: ``run`` (run folder; default the bundle's source run), ``threads``."""

    name = "torch"
    accepted_options = ("run", "threads")
    thread_safe = True  # eval mode under no_grad has no shared mutable state

    def __init__(self, bundle, precision: str = "fp32", **options: Any) -> None:
        if precision != "fp32":
            raise BackendUnavailable(
                f"the torch backend is the FP32 reference; {precision} is not offered"
            )
        super().__init__(bundle, precision, **options)
        self._model = None

    def load(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(
                "torch is not installed (pip install 'edge-iapp[train]')"
            ) from exc
        from ..train.run import load_model

        source = self.bundle.manifest.get("source", {})
        run = self.options.get("run") or source.get("run")
        if not run or not Path(run).is_dir():
            raise BackendUnavailable(
                f"the source training run {run!r} is not on this machine; pass run="
            )
        ckpt = Path(run) / source.get("checkpoint", "last.pt")
        expected = source.get("checkpoint_sha256")
        if expected and ckpt.is_file() and sha256_file(ckpt) != expected:
            raise BackendUnavailable(
                f"{ckpt} differs from the checkpoint this bundle was exported from"
            )
        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        self._model, _ = load_model(run, ckpt)
        self._torch = torch

    def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self._torch
        module = getattr(self._model, f"{branch}_branch")
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        if isinstance(out, tuple):
            return tuple(o.numpy() for o in out)
        return (out.numpy(),)

    def describe(self) -> dict[str, Any]:
        info = {"backend": self.name, "precision": self.precision, "device": "cpu"}
        if self._model is not None:
            info["version"] = self._torch.__version__
            info["threads"] = self._torch.get_num_threads()
        return info

    def close(self) -> None:
        self._model = None
        super().close()
