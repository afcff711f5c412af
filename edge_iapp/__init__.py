"""edge-iapp: IAPP-CNN chromosome classification on NVIDIA edge and datacenter GPUs.

Importing the package has no side effects: no CUDA, no torch, no TensorRT.
``edge_iapp.Classifier`` is resolved on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    if name == "Classifier":
        from .runtime.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'edge_iapp' has no attribute {name!r}")
