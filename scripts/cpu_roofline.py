"""How far a bundle branch is from this CPU's peak: FP32 and INT8 GEMM peaks against
the branch's achieved rate in PyTorch eager, OpenVINO f32 and OpenVINO INT8.

    python scripts/cpu_roofline.py BUNDLE [--branch global] [--threads 2] [--json OUT]

Why: issue #4 asks the best CPU backend for 3x (FP32) and 5x (INT8) PyTorch eager's
images/s. A backend cannot beat the CPU's own peak, so if PyTorch eager already runs
the branch at a fraction f of the FP32 GEMM peak, no FP32 engine can be faster than
1/f of it, and no INT8 engine faster than (INT8 peak / FP32 peak) / f. This script
measures all of it in one run, on one machine:

- peaks: the best rate seen on dense work with the same thread count, best of
  ``--repeats``: a square GEMM (side ``--gemm``) in PyTorch, and large 3x3 convolutions
  (resnet18's last stages, batch ``--batch``) in OpenVINO f32 and INT8 (Q/DQ, the same
  int8 kernels the INT8 graph runs on). Measured rates are lower bounds of the true
  peak; the ISA bound (int8 at most 4x fp32 per cycle with AVX-512 VNNI) is given too;
- the branch's work: multiply-adds of every Conv/MatMul/Gemm of its FP32 ONNX graph for
  one image (shapes from ONNX shape inference);
- the branch's rate: images/s at ``--batch`` (PyTorch eager needs the bundle's training
  run on this machine; otherwise that row is skipped and said so).

FLOP = 2 x multiply-adds. Nothing is written except ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def branch_macs(onnx_path: str | Path) -> int:
    """Multiply-adds of the Conv, MatMul and Gemm nodes of a graph for ONE image.

    The batch dimension is set to 1 and shapes come from ONNX shape inference.
    Conv: ``out_elems * (C_in / group) * kh * kw``; MatMul/Gemm: ``out_elems * K``.
    Other nodes (pooling, activations, adds) are left out: they are memory-bound and
    small next to the convolutions.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path), load_external_data=False)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        used = [shapes.get(name, []) for name in (*node.input[:2], node.output[0])]
        if any(not dims or min(dims) <= 0 for dims in used):  # would silently count as 0
            raise ValueError(f"shape inference left {node.op_type} {node.name!r} unresolved")
        if node.op_type == "Conv":
            w, out = shapes[node.input[1]], shapes[node.output[0]]
            # The weight is (C_out, C_in / group, kh, kw): grouped convs need no special case.
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            # Output elements x the contracted length covers broadcast batches too.
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            k = a[-2] if trans_a and node.op_type == "Gemm" else a[-1]
            macs += int(np.prod(out)) * k
    return macs


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def conv_model(channels: int, side: int, batch: int, int8: bool):
    """An ONNX 3x3 convolution ``channels -> channels`` on ``side x side``, padding 1.

    With ``int8`` the input goes through a per-tensor Q/DQ pair and the weights through
    a per-channel DQ: the TensorRT-style pattern of the bundle's INT8 graphs, which
    OpenVINO runs on its int8 kernels.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
    conv_in = "x"
    inits, nodes = [], []
    if int8:
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
            numpy_helper.from_array(np.full(channels, 0.002, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(channels, np.int8), "wz"),
            numpy_helper.from_array(np.clip(np.round(w / 0.002), -127, 127).astype(np.int8), "wq"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
        ]
        conv_in = "xd"
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes.append(helper.make_node("Conv", [conv_in, "w"], ["y"], pads=[1, 1, 1, 1]))
    shape = [batch, channels, side, side]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    # IR 8 is opset 17's own: onnx's newest IR is more than older ONNX Runtimes read (1.23,
    # the last for Python 3.10, reads up to 11)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


PEAK_CONVS = ((512, 8), (256, 16))
"""(channels, side) of the dense convolutions timed for the peaks: resnet18's last stages."""


def dense_peaks(threads: int, batch: int, gemm: int, repeats: int) -> dict[str, float]:
    """Best GFLOP/s seen on dense work: a square GEMM in torch (fp32) and large 3x3
    convolutions in OpenVINO (f32 and int8). A lower bound of the true peak."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(gemm, gemm), torch.randn(gemm, gemm)
    seconds = _best_seconds(lambda: torch.mm(a, b), repeats)
    peaks = {"torch_gemm_fp32": 2.0 * gemm**3 / seconds / 1e9}
    try:
        import openvino as ov
    except ImportError:
        return peaks
    core = ov.Core()
    cfg = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    for label, int8 in (("openvino_conv_f32", False), ("openvino_conv_int8", True)):
        best = 0.0
        for channels, side in PEAK_CONVS:
            model = conv_model(channels, side, batch, int8).SerializeToString()
            req = core.compile_model(core.read_model(model, b""), "CPU", cfg).create_infer_request()
            x = np.random.default_rng(1).random((batch, channels, side, side), dtype=np.float32)
            flop = 2.0 * batch * channels * channels * 9 * side * side
            seconds = _best_seconds(lambda r=req, x=x: r.infer({0: x}), repeats)
            best = max(best, flop / seconds / 1e9)
        peaks[label] = best
    return peaks


def branch_rates(bundle, branch: str, batch: int, threads: int, repeats: int) -> dict:
    """Images/s of one branch: OpenVINO f32 / int8 and, when the run is here, torch eager."""
    rates: dict[str, float | str] = {}
    size = bundle.input_size
    x = np.random.default_rng(0).random((batch, 1, size, size), dtype=np.float32)
    try:
        import openvino as ov

        core = ov.Core()
        cfg = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
        }
        for prec in ("fp32", "int8"):
            if prec not in bundle.precisions:
                continue
            req = core.compile_model(
                str(bundle.file(branch, prec)), "CPU", cfg
            ).create_infer_request()
            rates[f"openvino_{prec}"] = batch / _best_seconds(
                lambda r=req: r.infer({0: x}), repeats
            )
    except ImportError:
        rates["openvino"] = "not installed"
    run = bundle.manifest.get("source", {}).get("run")
    if not run or not Path(run).is_dir():
        rates["torch_eager_fp32"] = f"source run {run!r} not on this machine"
        return rates
    import torch

    from edge_iapp.train.run import load_model

    torch.set_num_threads(threads)
    module = getattr(load_model(run)[0], f"{branch}_branch").eval()
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        rates["torch_eager_fp32"] = batch / _best_seconds(lambda: module(xt), repeats)
    return rates


def cpu_description() -> str:
    """Model name and the SIMD features that set the peaks (Linux ``/proc/cpuinfo``)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    name = " ".join(fields.get("model name\t", platform.machine()).split())
    flags = set(fields.get("flags\t\t", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{name} ({', '.join(simd) or 'no AVX2'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--branch", default="global")
    ap.add_argument("--batch", type=int, default=46)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm", type=int, default=2048, help="GEMM side for the peaks")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    from edge_iapp.export.bundle import load_bundle

    bundle = load_bundle(a.bundle)
    macs = branch_macs(bundle.file(a.branch, "fp32"))
    gflop_per_image = 2 * macs / 1e9
    peaks = dense_peaks(a.threads, a.batch, a.gemm, a.repeats)
    rates = branch_rates(bundle, a.branch, a.batch, a.threads, a.repeats)
    fp32_peak = max(v for k, v in peaks.items() if "int8" not in k)
    int8_peak = peaks.get("openvino_conv_int8")
    report = {
        "command": "python scripts/cpu_roofline.py " + " ".join(argv or __import__("sys").argv[1:]),
        "cpu": cpu_description(),
        "threads": a.threads,
        "branch": a.branch,
        "input_size": bundle.input_size,
        "batch": a.batch,
        "gflop_per_image": round(gflop_per_image, 4),
        "dense_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "rates": {},
    }
    print(f"{a.branch} branch at {bundle.input_size} px: {gflop_per_image:.3f} GFLOP per image")
    print(
        f"dense peaks (GFLOP/s, {a.threads} threads): "
        + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
    )
    eager = rates.get("torch_eager_fp32")
    for name, ips in rates.items():
        if isinstance(ips, str):
            print(f"{name:18s} {ips}")
            report["rates"][name] = ips
            continue
        achieved = ips * gflop_per_image
        row = {
            "images_per_s": round(ips, 1),
            "gflops": round(achieved, 1),
            "share_of_fp32_peak": round(achieved / fp32_peak, 3),
        }
        if int8_peak and "int8" in name:
            row["share_of_int8_peak"] = round(achieved / int8_peak, 3)
        if isinstance(eager, float):
            row["x_torch_eager"] = round(ips / eager, 2)
        report["rates"][name] = row
        print(
            f"{name:18s} {ips:7.1f} img/s  {achieved:6.1f} GFLOP/s  "
            + "  ".join(f"{k} {v}" for k, v in row.items() if k.startswith(("share", "x_")))
        )
    if isinstance(eager, float):
        share = eager * gflop_per_image / fp32_peak
        bound = {"fp32_max_x_torch_eager": round(1 / share, 2)}
        if "amx_int8" not in report["cpu"]:
            # AVX-512 VNNI: one VPDPBUSD does 64 int8 multiply-adds where one FMA does 16
            # fp32 ones; at equal issue rates int8 is at most 4x fp32. (AMX changes that.)
            bound["int8_max_x_torch_eager_isa"] = round(4 / share, 2)
        if int8_peak:
            bound["int8_max_x_torch_eager"] = round(int8_peak / fp32_peak / share, 2)
        report["upper_bounds"] = bound
        report["torch_eager_share_of_fp32_peak"] = round(share, 3)
        print(
            "bounds (every layer at the best dense rate measured, itself a lower bound of the "
            "peak; _isa: int8 at 4x the fp32 rate): "
            + ", ".join(f"{k} {v}" for k, v in bound.items())
        )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
