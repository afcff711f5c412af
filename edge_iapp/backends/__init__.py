"""Backends behind one interface (:class:`~edge_iapp.backends.base.Backend`), loaded lazily.

``get_backend("onnxruntime", bundle, "int8")`` imports only the module it needs.
Another module can add a backend with :func:`register_backend` (the TensorRT backend
registers ``"tensorrt"`` this way).
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, BackendUnavailable, PipelineOutput

_REGISTRY: dict[str, str] = {
    "torch": "edge_iapp.backends.torch_backend:TorchBackend",
    "onnxruntime": "edge_iapp.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "edge_iapp.backends.openvino_backend:OpenVINOBackend",
    "tensorrt": "edge_iapp.backends.tensorrt.gpu_backend:TensorRTBackend",
}
ALIASES = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt", "pytorch": "torch"}

__all__ = [
    "Backend",
    "BackendUnavailable",
    "PipelineOutput",
    "available_backends",
    "backend_class",
    "backend_name",
    "get_backend",
    "register_backend",
]


def register_backend(name: str, target: str) -> None:
    """Add or replace a backend: ``target`` is ``"package.module:ClassName"``."""
    _REGISTRY[name] = target


def available_backends() -> list[str]:
    """Registered backend names (registered, not necessarily installed here)."""
    return list(_REGISTRY)


def backend_name(name: str) -> str:
    """The registered name of a backend (aliases resolved), without importing it.

    Raises:
        BackendUnavailable: unknown name.
    """
    key = ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}")
    return key


def backend_class(name: str) -> type[Backend]:
    """Import and return the class of a backend.

    Raises:
        BackendUnavailable: unknown name, or its module cannot be imported.
    """
    key = backend_name(name)
    module_name, cls_name = _REGISTRY[key].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {key!r} is not available here: {exc}") from exc
    return getattr(module, cls_name)


def get_backend(name: str, bundle, precision: str = "fp32", **options: Any) -> Backend:
    """Create (not yet load) a backend for ``bundle`` at ``precision``."""
    return backend_class(name)(bundle, precision, **options)
