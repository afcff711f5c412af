"""Check an INT8 ONNX graph against TensorRT's explicit-quantization rules.

Rules (onnx-tensorrt operators.md, TensorRT's explicit-quantization guide, and ours):

1. opset >= 13; no QOperator ops (QLinearConv, ConvInteger, DynamicQuantizeLinear...).
2. Every QuantizeLinear/DequantizeLinear has an explicit int8 zero-point that is all 0
   (signed, symmetric) and positive finite scales; no int32 (quantized bias) inputs.
3. Weights: the DequantizeLinear that feeds a Conv weight is per-channel on axis 0,
   one scale per output channel.
4. Activations: QuantizeLinear of a computed tensor is per-tensor (one scale), and the
   DequantizeLinear reading it uses the same scale and zero-point.
5. Every Conv reads its input and its weight through DequantizeLinear.
6. Residual adds fuse: an Add fed by a Conv has at least one input written straight by
   a Conv (no Q/DQ between them).
7. No Q/DQ among the part-map nodes (double SE and channel sums stay FP32).

Imports onnx and numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QOPERATOR_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearSigmoid",
        "QLinearGlobalAveragePool",
        "QLinearLeakyRelu",
        "QLinearSoftmax",
        "QLinearReduceMean",
        "QLinearWhere",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
    }
)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def check_qdq_rules(onnx_path: str | Path, require_all_convs: bool = True) -> list[str]:
    """Return the rule violations of a Q/DQ graph (empty list: the graph is fine).

    Args:
        onnx_path: the INT8 ``.onnx`` file.
        require_all_convs: rule 5 (every Conv quantized).

    Returns:
        One human-readable line per violation, naming the node.
    """
    import onnx
    from onnx import numpy_helper

    from .graph import is_residual_add, part_map_nodes, producers

    model_proto = onnx.load(str(onnx_path))
    graph = model_proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    prod = producers(graph)
    out: list[str] = []

    opset = max(
        (o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), default=0
    )
    if opset < 13:
        out.append(f"opset {opset} < 13: TensorRT needs opset >= 13 for Q/DQ")
    qdq = [n for n in graph.node if n.op_type in QDQ_OPS]
    if not qdq:
        out.append("no QuantizeLinear/DequantizeLinear nodes: this is not a Q/DQ graph")

    for node in graph.node:
        if node.op_type in QOPERATOR_OPS or node.op_type.startswith("QLinear"):
            out.append(f"{node.name}: {node.op_type} is a QOperator op; TensorRT needs Q/DQ format")

    for node in qdq:
        out.extend(_check_scale_zero_point(node, consts))

    for node in graph.node:
        if node.op_type == "Conv":
            out.extend(_check_conv(node, prod, consts, require_all_convs))
        if node.op_type == "QuantizeLinear" and node.input[0] not in consts:
            scale = consts.get(node.input[1])
            if scale is not None and scale.size != 1:
                out.append(
                    f"{node.name}: activation scale has {scale.size} values; must be per-tensor"
                )
        if node.op_type == "DequantizeLinear":
            q = prod.get(node.input[0])
            if (
                q is not None
                and q.op_type == "QuantizeLinear"
                and not _same_params(q, node, consts)
            ):
                out.append(f"{node.name}: scale/zero-point differ from its QuantizeLinear {q.name}")
        residual = is_residual_add(node, prod) or _add_fed_by_quantized_conv(node, prod)
        conv_fed = any(getattr(prod.get(t), "op_type", None) == "Conv" for t in node.input)
        if residual and not conv_fed:
            out.append(
                f"{node.name}: residual Add has Q/DQ on every input; leave the Conv "
                f"input unquantized so the Add fuses into the convolution"
            )

    by_name = {n.name: n for n in graph.node}
    for name in sorted(part_map_nodes(graph)):
        if by_name[name].op_type in QDQ_OPS:
            out.append(f"{name}: Q/DQ among the part-map nodes; the part maps must stay FP32")
    return out


def _check_scale_zero_point(node, consts: dict) -> list[str]:
    out = []
    if len(node.input) < 3 or not node.input[2]:
        return [
            f"{node.name}: no zero-point input (defaults to uint8); use an int8 zero-point of 0"
        ]
    scale, zp = consts.get(node.input[1]), consts.get(node.input[2])
    if scale is None or zp is None:
        return [f"{node.name}: scale and zero-point must be constants"]
    if zp.dtype != np.int8:
        out.append(f"{node.name}: zero-point is {zp.dtype}; TensorRT needs signed int8")
    if np.any(zp != 0):
        out.append(f"{node.name}: zero-point is not 0 (asymmetric); TensorRT needs symmetric")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        out.append(f"{node.name}: scale must be positive and finite")
    if node.op_type == "DequantizeLinear" and node.input[0] in consts:
        data = consts[node.input[0]]
        if data.dtype == np.int32:
            out.append(f"{node.name}: quantized (int32) bias; keep biases in float")
        elif data.dtype != np.int8:
            out.append(f"{node.name}: quantized weight is {data.dtype}; TensorRT needs int8")
    return out


def _check_conv(node, prod: dict, consts: dict, require_all: bool) -> list[str]:
    out = []
    x_dq = prod.get(node.input[0])
    w_dq = prod.get(node.input[1])
    x_q = x_dq is not None and x_dq.op_type == "DequantizeLinear"
    w_q = w_dq is not None and w_dq.op_type == "DequantizeLinear"
    if require_all and not (x_q and w_q):
        out.append(f"{node.name}: Conv is not quantized (input and weight need DequantizeLinear)")
    if w_q:
        weight = consts.get(w_dq.input[0])
        scale = consts.get(w_dq.input[1])
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        if weight is None or scale is None:
            out.append(f"{w_dq.name}: weight and scale must be initializers")
        elif scale.size == 1 and weight.shape[0] > 1:
            out.append(f"{w_dq.name}: per-tensor weight scale; TensorRT needs per-channel (axis 0)")
        elif axis != 0 or scale.size != weight.shape[0]:
            out.append(
                f"{w_dq.name}: weight scales must be per output channel on axis 0 "
                f"(axis={axis}, {scale.size} scales for {weight.shape[0]} channels)"
            )
    return out


def _same_params(q, dq, consts: dict) -> bool:
    if q.input[1:3] == dq.input[1:3]:
        return True
    a = [consts.get(t) for t in q.input[1:3]]
    b = [consts.get(t) for t in dq.input[1:3]]
    if any(v is None for v in a + b):
        return False
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _add_fed_by_quantized_conv(node, prod: dict) -> bool:
    """An Add one of whose inputs is DQ(Q(Conv output)): a residual add with Q/DQ in the way."""
    if node.op_type != "Add":
        return False
    for t in node.input:
        dq = prod.get(t)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = prod.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            src = prod.get(q.input[0])
            if src is not None and src.op_type == "Conv":
                return True
    return False
