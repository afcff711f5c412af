"""FP32 ONNX -> FP16 typed graph with FP32 inputs and outputs (for strongly typed TensorRT).

TensorRT 11 has no FP16 builder flag: the precision is the graph's. onnxconverter-common
casts every weight and activation to float16 and inserts Cast nodes at the inputs and
outputs (``keep_io_types``), so callers keep feeding float32. The part-map nodes (double
SE, channel sums) stay FP32: the part mask thresholds those maps at their mean, and
they are sums over hundreds of channels. Imports onnx and onnxconverter-common.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write the FP16 version of an FP32 branch graph.

    Args:
        src: FP32 ``.onnx`` from :func:`~edge_iapp.export.onnx_export.export_branch`.
        dst: where to write the FP16 graph.

    Returns:
        ``dst``. Inputs and outputs stay float32; ``part_maps`` is computed in float32.

    Raises:
        RuntimeError: onnxconverter-common is not installed (``pip install onnxconverter-common``).
    """
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise RuntimeError(
            "FP16 export needs onnxconverter-common: pip install onnxconverter-common"
        ) from exc
    from .graph import ensure_node_names, part_map_nodes

    model_proto = onnx.load(str(src))
    ensure_node_names(model_proto.graph)
    blocked = sorted(part_map_nodes(model_proto.graph))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "number truncated to 1e-07": tiny weights, expected
        converted = float16.convert_float_to_float16(
            model_proto,
            keep_io_types=True,
            node_block_list=blocked,
            disable_shape_infer=False,
        )
    _float_outputs(converted.graph)
    ensure_node_names(converted.graph)
    onnx.checker.check_model(converted)
    dst = Path(dst)
    onnx.save(converted, str(dst))
    return dst


def _float_outputs(graph) -> None:
    """Make every graph output float32 (in place).

    onnxconverter-common casts the output of a blocked (FP32) node that is also a graph
    output to float16 and declares that output float16, despite ``keep_io_types``; the
    ``part_maps`` output hits this. The trailing Cast is dropped and the FP32 tensor
    renamed to the output.
    """
    from onnx import TensorProto

    from .graph import producers

    prod = producers(graph)
    for out in graph.output:
        t = out.type.tensor_type
        if t.elem_type != TensorProto.FLOAT16:
            continue
        cast = prod.get(out.name)
        if cast is None or cast.op_type != "Cast":
            raise RuntimeError(f"FP16 conversion left output {out.name!r} in float16")
        src = prod.get(cast.input[0])
        if src is None:
            raise RuntimeError(f"FP16 conversion left output {out.name!r} in float16")
        src_index = list(src.output).index(cast.input[0])
        src.output[src_index] = out.name
        graph.node.remove(cast)
        t.elem_type = TensorProto.FLOAT
