"""Export side: ONNX per branch, FP16, INT8 Q/DQ, calibration set, parity, the bundle.

Nothing is imported here; ``edge_iapp.export.bundle`` (the runtime's loader) needs only
``json`` and ``hashlib``; the other modules import torch/onnx/onnxruntime inside functions.
"""
