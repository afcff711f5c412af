"""FP32 ONNX -> INT8 with explicit Q/DQ nodes placed by TensorRT's rules.

ONNX Runtime's ``quantize_static`` does the calibration and the arithmetic; the options
below make it write what TensorRT accepts (see ``shared/platform/FACTS.md``):

* ``QuantFormat.QDQ`` (never QOperator ops such as QLinearConv), signed int8 for
  weights and activations, ``ActivationSymmetric``/``WeightSymmetric`` (zero-point 0),
  ``per_channel`` weights (Conv axis 0), per-tensor activations, biases left FP32.
* Only ``Conv`` and the residual ``Add`` are quantized, on their inputs only
  (``OpTypesToExcludeOutputQuantization``), as ModelOpt places them: Q/DQ in front of
  every convolution, none after it, so Conv + bias + Add + ReLU fuse.
* Residual adds: ORT puts Q/DQ on both inputs of an Add; the input written straight by
  a Conv is then bypassed (:func:`fuse_residual_adds`), leaving Q/DQ only on the
  shortcut, so TensorRT fuses the Add into that convolution.
* Everything after the backbone is excluded (FP32): pooling, the part-map nodes
  (double SE and channel sums) and the classifier.

:func:`~edge_iapp.export.qdq_check.check_qdq_rules` then verifies the result; a
violation fails the export. Imports onnx and onnxruntime.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

CALIBRATION_METHODS: tuple[str, ...] = ("max", "entropy", "percentile")
QUANTIZED_OPS: tuple[str, ...] = ("Conv", "Add")
DEFAULT_PERCENTILE = 99.99


class QuantizationError(RuntimeError):
    """INT8 conversion failed or wrote a graph that breaks TensorRT's Q/DQ rules."""


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "max": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in table:
        raise ValueError(
            f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}"
        )
    return table[method]


def _has_calibration_cache() -> bool:
    """Whether this onnxruntime's ``quantize_static`` takes ranges computed elsewhere.

    ``calibration_cache_path`` came in 2026 (onnxruntime pull request #28221). Older
    releases, among them 1.23, the last with wheels for Python 3.10 (JetPack 6), run
    the calibration themselves with their own histogram sizes.
    """
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def check_method_available(method: str) -> None:
    """Raise :class:`QuantizationError` when this onnxruntime cannot calibrate ``method``
    as specified: entropy needs :func:`_has_calibration_cache` (see
    :func:`_builtin_calibration`). Called before an export starts its work."""
    if method != "entropy" or _has_calibration_cache():
        return
    import onnxruntime

    raise QuantizationError(
        f"--calib-method entropy needs an onnxruntime whose quantize_static accepts "
        f"calibration_cache_path (2026 releases; this one is {onnxruntime.__version__}, "
        "which would silently calibrate with 128 bins, as max does): use max or "
        "percentile, or export with a newer onnxruntime (Python 3.11 or later)"
    )


def _builtin_calibration(method: str, percentile: float) -> dict:
    """``quantize_static``'s own calibration options that give :func:`_calibrate`'s ranges.

    MinMax and percentile take the same settings there (symmetric; 2048 bins, the
    percentile); entropy cannot: its bins stay at 128, which makes it equal to max.
    """
    check_method_available(method)
    options = {"CalibTensorRangeSymmetric": True}
    if method == "percentile":
        options["CalibPercentile"] = float(percentile)
    return options


def _calibrate(model: Path, tmp: Path, reader, method: str, percentile: float, cache: Path) -> None:
    """Activation ranges with our own calibrator settings, saved where quantize_static reads them.

    ``quantize_static`` cannot set histogram sizes; its entropy default (128 bins, 128
    quantized bins) makes entropy equal to max. TensorRT's entropy calibrator uses
    2048 bins folded to 128; so do we.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    options: dict = {"symmetric": True}
    if method == "entropy":
        options.update(num_bins=2048, num_quantized_bins=128)
    elif method == "percentile":
        options.update(num_bins=2048, percentile=float(percentile))
    calibrator = create_calibrator(
        model,
        list(QUANTIZED_OPS),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=_ort_method(method),
        providers=["CPUExecutionProvider"],
        extra_options=options,
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calibration_inputs: np.ndarray,
    method: str = "max",
    batch_size: int = 16,
    percentile: float = DEFAULT_PERCENTILE,
) -> dict:
    """Quantize one branch graph.

    Args:
        src: FP32 ``.onnx`` (simplified; BatchNorm folded).
        dst: where to write the Q/DQ graph.
        calibration_inputs: ``(M, 1, S, S)`` float32 in [0, 1]: this branch's inputs as
            the runtime makes them (global images, object zooms, or part zooms).
        method: ``"max"`` (MinMax), ``"entropy"`` or ``"percentile"``.
        batch_size: calibration batch.
        percentile: for ``"percentile"``.

    Returns:
        A record for the manifest: method, images, excluded nodes, counts of Q/DQ nodes.

    Raises:
        QuantizationError: calibration set empty, ORT failed, or the graph breaks a rule.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from .graph import ensure_node_names, head_nodes
    from .qdq_check import check_qdq_rules

    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}"
        )
    x = np.asarray(calibration_inputs, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] == 0:
        raise QuantizationError(
            f"calibration inputs must be (M, 1, S, S) with M > 0, got {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise QuantizationError("calibration inputs contain NaN or infinite values")

    # Equal batches: ORT's histogram collectors (entropy, percentile) stack the
    # per-batch arrays and fail on a shorter last batch.
    step = max(d for d in range(1, min(batch_size, len(x)) + 1) if len(x) % d == 0)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([x[i : i + step] for i in range(0, len(x), step)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"input": batch}

    src, dst = Path(src), Path(dst)
    model_proto = onnx.load(str(src))
    ensure_node_names(model_proto.graph)
    excluded = sorted(head_nodes(model_proto.graph))
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
    }
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice; the graph is simplified
    try:
        with tempfile.TemporaryDirectory(prefix="edge-iapp-quant-") as tmp:
            named_src = Path(tmp) / "named.onnx"
            onnx.save(model_proto, str(named_src))
            if _has_calibration_cache():
                cache = Path(tmp) / "ranges.json"
                _calibrate(named_src, Path(tmp), _Reader(), method, percentile, cache)
                reader, ranges = None, {"calibration_cache_path": cache}
            else:  # the same ranges from quantize_static's own calibrator (entropy: refused)
                reader, ranges = _Reader(), {}
                extra.update(_builtin_calibration(method, percentile))
            quantize_static(
                str(named_src),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=excluded,
                calibrate_method=_ort_method(method),
                extra_options=extra,
                **ranges,
            )
    except QuantizationError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises many kinds; report one
        raise QuantizationError(f"quantize_static failed on {src.name}: {exc}") from exc
    finally:
        root.setLevel(level)

    quantized = onnx.load(str(dst))
    bypassed = fuse_residual_adds(quantized)
    ensure_node_names(quantized.graph)
    onnx.checker.check_model(quantized)
    onnx.save(quantized, str(dst))
    violations = check_qdq_rules(dst)
    if violations:
        raise QuantizationError(
            f"{dst.name} breaks TensorRT's Q/DQ rules:\n  " + "\n  ".join(violations)
        )
    counts = {
        op: sum(n.op_type == op for n in quantized.graph.node)
        for op in ("QuantizeLinear", "DequantizeLinear")
    }
    return {
        "method": method,
        "percentile": float(percentile) if method == "percentile" else None,
        "images": int(len(x)),
        "excluded_nodes": excluded,
        "residual_adds_fused": bypassed,
        "qdq_nodes": counts,
    }


def fuse_residual_adds(model_proto) -> int:
    """Bypass Q/DQ between a Conv and the residual Add it feeds (in place).

    For each Add with Q/DQ on an input whose quantized tensor is written by a Conv,
    the Add reads the Conv output directly; the shortcut input keeps its Q/DQ. When
    both inputs come from Convs (a downsampling block), only the first is bypassed.
    Q/DQ nodes left without readers are removed.

    Returns:
        The number of Adds changed.
    """
    from .graph import producers

    graph = model_proto.graph
    prod = producers(graph)
    changed = 0
    for node in graph.node:
        if node.op_type != "Add":
            continue
        for k, name in enumerate(node.input):
            dq = prod.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = prod.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            source = prod.get(q.input[0])
            if source is not None and source.op_type == "Conv":
                node.input[k] = q.input[0]
                changed += 1
                break
    _drop_unread_qdq(graph)
    return changed


def _drop_unread_qdq(graph) -> None:
    from .graph import consumers

    outputs = {o.name for o in graph.output}
    while True:
        readers = consumers(graph)
        dead = [
            n
            for n in graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(readers.get(o) for o in n.output)
            and not any(o in outputs for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {t for n in graph.node for t in n.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
