"""PyTorch branch -> FP32 ONNX graph (dynamic batch, opset 17, simplified).

Exporter choice: the TorchScript-based exporter (``dynamo=False``). After onnxsim its
graph is node-for-node the same as the dynamo exporter's (Conv, Relu, Add, Gemm,
ReduceMean/Sum, Sigmoid, MaxPool; BatchNorm folded into Conv), it keeps the module
scopes in node names (``/features/features.4/...``, ``/part_se/...``) that make Q/DQ
and TensorRT layer reports readable, it exports in under a second instead of four,
and it can target opset 17 (TensorRT 10.3 on JetPack 6) where dynamo emits opset 18
and fails to convert down. ``exporter="dynamo"`` is available and recorded in the
manifest.

Simplifier: onnxsim, as the design asks. Where it is not installed (the ``export`` extra
skips it off x86-64 and on Python >= 3.13, where it long had no wheels) ``"auto"`` falls
back to the ONNX project's maintained optimizer in onnxscript (constant folding, dead
nodes; on these graphs the same operators plus a few shape nodes, identical outputs);
``export_bundle`` says so and the manifest records which one ran. Imports torch, onnx
and the simplifier.
"""

from __future__ import annotations

import warnings
from pathlib import Path

BRANCHES: tuple[str, ...] = ("global", "object", "part")
INPUT_NAME = "input"
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "global": ("logits",),
    "object": ("logits", "part_maps"),
    "part": ("logits",),
}
DEFAULT_OPSET = 17
SIMPLIFIERS: tuple[str, ...] = ("auto", "onnxsim", "onnxscript")


class ExportError(RuntimeError):
    """A branch could not be exported, or the exported graph is wrong."""


def branch_module(model, branch: str):
    """The ``nn.Module`` of one branch of an :class:`~edge_iapp.model.IAPPCNN`."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
    return getattr(model, f"{branch}_branch")


def export_branch(
    model,
    branch: str,
    input_size: int,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    exporter: str = "legacy",
    simplify: bool = True,
    simplifier: str = "auto",
) -> Path:
    """Export one branch to ONNX.

    Args:
        model: the :class:`~edge_iapp.model.IAPPCNN` in eval mode.
        branch: ``"global"``, ``"object"`` or ``"part"``.
        input_size: S; the graph input is ``input (batch, 1, S, S)`` float32.
        path: the ``.onnx`` file to write (a single file, weights inside).
        opset: ONNX opset (>= 17).
        exporter: ``"legacy"`` (TorchScript, default) or ``"dynamo"``.
        simplify: simplify the graph (constant folding, BatchNorm into Conv, dead nodes).
        simplifier: ``"auto"``, ``"onnxsim"`` or ``"onnxscript"`` (see
            :func:`resolve_simplifier`).

    Returns:
        ``path``. Outputs: ``logits (batch, K)`` and, for the object branch,
        ``part_maps (batch, 2, h, w)``.

    Raises:
        ExportError: the exporter or the simplifier failed, or the graph fails onnx.checker.
    """
    import onnx
    import torch

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    module = branch_module(model, branch).eval()
    outputs = OUTPUT_NAMES[branch]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(2, 1, input_size, input_size)
    kwargs: dict = dict(input_names=[INPUT_NAME], output_names=list(outputs), opset_version=opset)
    if exporter == "legacy":
        kwargs["dynamo"] = False
        kwargs["dynamic_axes"] = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)}
    elif exporter == "dynamo":
        kwargs["dynamo"] = True
        kwargs["external_data"] = False
        kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    else:
        raise ValueError(f"unknown exporter {exporter!r}; expected 'legacy' or 'dynamo'")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(module, (dummy,), str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported the same way
        raise ExportError(f"exporting the {branch} branch failed: {exc}") from exc
    model_proto = onnx.load(str(path))
    if simplify:
        model_proto = simplify_graph(model_proto, branch, resolve_simplifier(simplifier))
    from .graph import ensure_node_names

    ensure_node_names(model_proto.graph)
    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the exported {branch} graph fails the ONNX checker: {exc}") from exc
    onnx.save(model_proto, str(path))
    return path


def resolve_simplifier(name: str = "auto") -> str:
    """The simplifier that will run: ``"auto"`` is onnxsim when importable, else onnxscript.

    Raises:
        ExportError: an unknown name, or the named simplifier is not installed.
    """
    if name not in SIMPLIFIERS:
        raise ExportError(f"unknown simplifier {name!r}; choose from {', '.join(SIMPLIFIERS)}")
    have = {s: _installed(s) for s in SIMPLIFIERS[1:]}
    if name == "auto":
        for candidate in SIMPLIFIERS[1:]:
            if have[candidate]:
                return candidate
        raise ExportError("no ONNX simplifier installed: pip install 'edge-iapp[export]'")
    if not have[name]:
        raise ExportError(f"--simplifier {name}: the {name} package is not installed")
    return name


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def simplify_graph(model_proto, branch: str = "?", simplifier: str = "onnxsim"):
    """Simplify with the batch left dynamic; :class:`ExportError` if it fails or cannot verify."""
    try:
        if simplifier == "onnxscript":
            import onnxscript.optimizer

            return onnxscript.optimizer.optimize(model_proto)
        import onnxsim

        simplified, ok = onnxsim.simplify(model_proto)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{simplifier} failed on the {branch} graph: {exc}") from exc
    if not ok:
        raise ExportError(f"onnxsim could not verify the simplified {branch} graph")
    return simplified


def graph_io(path: str | Path) -> dict:
    """Input/output names, shapes (``"batch"`` for the dynamic axis) and types of a graph."""
    import onnx

    model_proto = onnx.load(str(path), load_external_data=False)

    def describe(values) -> dict:
        out = {}
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            out[v.name] = {
                "shape": shape,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            }
        return out

    opset = max(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "inputs": describe(model_proto.graph.input),
        "outputs": describe(model_proto.graph.output),
        "opset": opset,
    }
