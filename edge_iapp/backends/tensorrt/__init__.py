"""TensorRT layer: engine builds (TensorRT 10/11 or TensorRT-RTX), engine cache, GPU backend.

Modules (each imports tensorrt/cuda only inside functions):

- ``trtmod``: which TensorRT Python module (``tensorrt`` or ``tensorrt_rtx``) and what it can do.
- ``probe``: a GPU probe that cannot crash (no GPU: an error message, not a segfault).
- ``profiles``: target profiles from the top-level ``export/*.json``.
- ``cache``: engine cache key, ``engines.json`` records, checks before deserialising.
- ``builder``: ONNX -> serialized engine, one code path for every module.
- ``runner``: deserialised engine + one execution context per thread.
- ``gpu_backend``: the ``Backend`` with CUDA preprocessing kernels and three engines.
"""
