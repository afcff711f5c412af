"""Small ONNX graph queries shared by the FP16 converter, the quantizer and the Q/DQ checker.

Imports onnx (export side only).
"""

from __future__ import annotations

from collections.abc import Iterable

PART_MAPS = "part_maps"
"""Name of the object branch's second output (channel sums of U1 and U2, eq. 9)."""


def producers(graph) -> dict[str, object]:
    """``{tensor name: node that writes it}``."""
    return {out: node for node in graph.node for out in node.output}


def consumers(graph) -> dict[str, list]:
    """``{tensor name: [nodes that read it]}``."""
    table: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                table.setdefault(name, []).append(node)
    return table


def ancestors(graph, tensors: Iterable[str]) -> set[str]:
    """Names of every node that some tensor in ``tensors`` depends on."""
    prod = producers(graph)
    seen: set[str] = set()
    stack = [prod[t] for t in tensors if t in prod]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(prod[t] for t in node.input if t in prod)
    return seen


def ensure_node_names(graph) -> None:
    """Give unnamed nodes a unique name (exclusion lists and reports refer to names)."""
    used = {n.name for n in graph.node if n.name}
    for k, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{k}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def is_residual_add(node, prod: dict[str, object]) -> bool:
    """An ``Add`` with at least one input written straight by a ``Conv`` (a ResNet shortcut)."""
    if node.op_type != "Add":
        return False
    return any(getattr(prod.get(t), "op_type", None) == "Conv" for t in node.input)


def part_map_nodes(graph) -> set[str]:
    """Nodes that compute ``part_maps`` after the backbone: they stay in FP32.

    That is every ancestor of the ``part_maps`` output that is not itself a ``Conv``
    or upstream of one (the double SE: squeeze, excitation, re-weighting, channel
    sums), except the backbone's last residual ``Add``, which is quantized like the
    others so that it fuses into its convolution. Empty when the graph has no
    ``part_maps`` output (global and part branches).
    """
    outputs = {o.name for o in graph.output}
    if PART_MAPS not in outputs:
        return set()
    prod = producers(graph)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    backbone = ancestors(graph, [t for c in convs for t in c.input]) | {c.name for c in convs}
    tail = ancestors(graph, [PART_MAPS]) - backbone
    by_name = {n.name: n for n in graph.node}
    return {name for name in tail if not is_residual_add(by_name[name], prod)}


def head_nodes(graph) -> set[str]:
    """Nodes after the backbone: pooling, the double SE, channel sums, the classifier.

    Every node that is neither a ``Conv`` nor upstream of one, except residual ``Add``s.
    The quantizer leaves these in FP32 (they include :func:`part_map_nodes`, and the
    classifier is a few thousand multiply-adds).
    """
    prod = producers(graph)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    backbone = ancestors(graph, [t for c in convs for t in c.input]) | {c.name for c in convs}
    return {n.name for n in graph.node if n.name not in backbone and not is_residual_add(n, prod)}
