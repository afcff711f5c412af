"""Helpers for the GPU backend's end-to-end test (tests/test_gpu.py): a torch-free bundle,
engine records read from ONNX, and an ONNX Runtime stand-in for the TensorRT engines.

TensorRT cannot be installed on any machine of this workplace (and TensorRT-RTX does not
support sm_90), so :class:`OrtEngineRunner` takes the engines' place: it reads the bound
device input buffers back to the host, runs the branch's ONNX graph with ONNX Runtime on
the CPU and writes the outputs into the bound device output buffers. Everything around
it (cudart, device and pinned buffers, streams, events, NVRTC kernels, batch split,
per-thread workspaces) is the backend's own.

The bundle is written here with ``onnx.helper`` rather than by ``export_bundle``: the
exporter needs torch's ONNX exporter and a simplifier, and the GPU machine had no onnxsim
and no known torch exporter setup when this was written (the exporter now falls back to
onnxscript's optimizer; this plumbing test does not need either). A two-layer CNN is
enough to test plumbing and runs in milliseconds.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 64
CANVAS = 96
GRID = 4
CHANNELS = 8
INPUT = "input"
_ONNX_DTYPES = {1: "FLOAT", 10: "HALF"}  # onnx.TensorProto.FLOAT / FLOAT16


def _branch_model(branch: str, classes: int, seed: int) -> Any:
    """``input (N, 1, S, S)`` -> conv/relu x2 -> ``logits (N, K)``; object: + ``part_maps``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float) -> Any:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    c, feat = CHANNELS, SIZE // 4
    inits = [
        init("w1", (c, 1, 3, 3), 0.6),
        init("b1", (c,), 0.1),
        init("w2", (c, c, 3, 3), 0.3),
        init("b2", (c,), 0.1),
        init("wf", (classes, c), 0.5),
        init("bf", (classes,), 0.1),
    ]
    conv = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", [INPUT, "w1", "b1"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["f"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["f"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])]
    if branch == "object":
        # part maps (N, 2, 4, 4): darkness of the input pooled to the grid, and a random
        # mix of pooled features; a blank image gives a constant first map, so its part
        # mask is empty (part fall-back)
        inits.append(init("wp", (1, c, 1, 1), 0.5))
        inits.append(numpy_helper.from_array(np.full((1, 1, 1, 1), -1, np.float32), "neg"))
        side, pool = SIZE // GRID, feat // GRID
        nodes += [
            helper.make_node(
                "AveragePool", [INPUT], ["dark_in"], kernel_shape=[side, side], strides=[side, side]
            ),
            helper.make_node("Conv", ["dark_in", "neg"], ["dark"]),
            helper.make_node(
                "AveragePool", ["f"], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]
            ),
            helper.make_node("Conv", ["pooled", "wp"], ["mix"]),
            helper.make_node("Concat", ["dark", "mix"], ["part_maps"], axis=1),
        ]
        outputs.append(
            helper.make_tensor_value_info("part_maps", TensorProto.FLOAT, ["batch", 2, GRID, GRID])
        )
    graph = helper.make_graph(
        nodes,
        f"tiny_{branch}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    return model


def make_tiny_bundle(folder: Path) -> Path:
    """A valid fp32 bundle (``load_bundle`` checks it) of three tiny random CNN branches."""
    import onnx

    from edge_iapp.classes import CLASS_NAMES
    from edge_iapp.export.bundle import FORMAT, FORMAT_VERSION, MANIFEST, branch_file_name
    from edge_iapp.ioutil import sha256_file
    from edge_iapp.preprocess import PreprocessConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    classes = list(CLASS_NAMES)
    files, branches = {}, {}
    for seed, branch in enumerate(("global", "object", "part")):
        model = _branch_model(branch, len(classes), seed)
        onnx.checker.check_model(model, full_check=True)
        path = folder / branch_file_name(branch, "fp32")
        onnx.save(model, str(path))
        files[branch] = {
            "fp32": {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        }
        outs = {"logits": {"shape": ["batch", len(classes)], "dtype": "float32"}}
        if branch == "object":
            outs["part_maps"] = {"shape": ["batch", 2, GRID, GRID], "dtype": "float32"}
        branches[branch] = {
            "input": {"name": INPUT, "shape": ["batch", 1, SIZE, SIZE], "dtype": "float32"},
            "outputs": outs,
        }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": classes,
        "backbone": "tiny-test-cnn",
        "preprocess": PreprocessConfig(canvas=CANVAS, input_size=SIZE).to_dict(),
        "fusion": "lambda",
        "precisions": ["fp32"],
        "files": files,
        "branches": branches,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


def engine_records(
    bundle: Any,
    batch: tuple[int, int, int],
    input_dtype: str = "FLOAT",
    maps_dtype: str = "FLOAT",
) -> dict[str, dict[str, Any]]:
    """What ``engines.json`` would hold for each branch, read from the ONNX graphs.

    ``input_dtype``/``maps_dtype`` ``"HALF"`` describe an engine with a float16 input /
    part-maps output (the mock converts at its boundary), so the backend's float16 paths
    run without a float16 graph.
    """
    import onnx

    records = {}
    for branch in ("global", "object", "part"):
        path = bundle.file(branch, "fp32")
        graph = onnx.load(str(path), load_external_data=False).graph
        skip = {t.name for t in graph.initializer}
        io = []
        for mode, values in (("input", graph.input), ("output", graph.output)):
            for v in values:
                if v.name in skip:
                    continue
                t = v.type.tensor_type
                dtype = _ONNX_DTYPES[t.elem_type]
                if mode == "input":
                    dtype = input_dtype
                elif v.name == "part_maps":
                    dtype = maps_dtype
                shape = [-1 if d.dim_param or not d.dim_value else d.dim_value for d in t.shape.dim]
                io.append({"name": v.name, "mode": mode, "dtype": dtype, "shape": shape})
        records[branch] = {
            "engine": f"ONNX Runtime mock of {path.name}",
            "key": {"branch": branch, "precision": "fp32", "batch": list(batch)},
            "io": io,
        }
    return records


class OrtEngineRunner:
    """Stands in for ``runner.EngineRunner``: TensorRT cannot run in this workplace.

    ``enqueue`` synchronises the stream it is given (the kernels and event waits that
    produce the inputs), copies each bound input buffer to the host, runs ONNX Runtime on
    the CPU, copies the outputs into the bound output buffers on the same stream and
    synchronises again (the host arrays must outlive the copies). So it is synchronous
    and cannot be captured into a CUDA graph. ``cudart`` is the backend's
    ``edge_iapp.backends.tensorrt.cudart`` on a GPU, or ``HostMemoryCudart`` emulated.
    """

    def __init__(self, record: dict[str, Any], onnx_path: Path, cudart: Any):
        import onnxruntime as ort

        from edge_iapp.backends.tensorrt.runner import io_specs

        self.record = record
        self.cudart = cudart
        self.specs = io_specs(record["io"])
        self.inputs = [s for s in self.specs if s.mode == "input"]
        self.outputs = [s for s in self.specs if s.mode == "output"]
        b = record["key"]["batch"]
        self.batch_range = (int(b[0]), int(b[2]))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        self.batches: list[int] = []
        self.streams: set[int] = set()
        self._lock = threading.Lock()

    def enqueue(self, batch: int, addresses: dict[str, int], stream: int) -> None:
        from edge_iapp.backends.tensorrt.runner import plan_bindings

        cu = self.cudart
        plan_bindings(self.specs, batch, self.batch_range)  # the real runner's profile check
        cu.synchronize(stream)
        feeds = {}
        for s in self.inputs:
            host = np.empty(s.shape_for(batch), dtype=s.dtype)
            cu.copy_async(host.ctypes.data, int(addresses[s.name]), host.nbytes, "d2h", stream)
            cu.synchronize(stream)
            feeds[s.name] = host.astype(np.float32)  # a HALF engine input: the graph is fp32
        values = self.session.run([s.name for s in self.outputs], feeds)
        keep = []
        for s, value in zip(self.outputs, values, strict=True):
            value = np.ascontiguousarray(value, dtype=s.dtype)
            assert value.shape == s.shape_for(batch), (s.name, value.shape)
            cu.copy_async(int(addresses[s.name]), value.ctypes.data, value.nbytes, "h2d", stream)
            keep.append(value)
        cu.synchronize(stream)
        with self._lock:
            self.batches.append(batch)
            self.streams.add(int(stream))


def reference_backend(bundle: Any, half: bool) -> Any:
    """The onnxruntime backend (reference preprocessing, CPU); with ``half``, the mock
    engines' float16 boundary: network inputs and part maps rounded to float16."""
    from edge_iapp.backends.onnxruntime_backend import OnnxRuntimeBackend

    class HalfIO(OnnxRuntimeBackend):
        def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
            x = np.asarray(x, np.float32).astype(np.float16).astype(np.float32)
            outs = list(super().run_branch(branch, x))
            if branch == "object":
                outs[1] = np.asarray(outs[1], np.float32).astype(np.float16).astype(np.float32)
            return tuple(outs)

    return (HalfIO if half else OnnxRuntimeBackend)(bundle, "fp32", device="cpu")


def assert_stages_match(got: Any, crops: list, bgs: list, maps: np.ndarray, cfg: Any) -> None:
    """A :class:`~...device_preprocess.StageResult` against the reference preprocessing."""
    from edge_iapp.preprocess import global_canvas, network_input, object_zoom, part_zoom
    from tests.test_kernels_host import assert_pixels_close

    g = global_canvas(crops, bgs, cfg)
    o = object_zoom(g.images, cfg)
    p = part_zoom(o.images, maps, cfg)
    assert_pixels_close(got.global_images, g.images)
    assert np.array_equal(got.object_masks, o.masks)
    assert np.array_equal(got.object_boxes, o.boxes)
    assert np.array_equal(got.object_fallback, o.fallback)
    assert_pixels_close(got.object_images, o.images)
    assert np.array_equal(got.part_masks, p.masks) and np.array_equal(got.part_boxes, p.boxes)
    assert np.array_equal(got.part_fallback, p.fallback)
    assert_pixels_close(got.part_images, p.images)
    want = network_input(g.images)
    np.testing.assert_array_equal(got.global_input, want.astype(got.global_input.dtype))
