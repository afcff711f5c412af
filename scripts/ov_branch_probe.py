"""Time one bundle branch alone: OpenVINO with and without the f32 pin, ORT, PyTorch eager.

    python scripts/ov_branch_probe.py BUNDLE [--branch global] [--batch 46] [--threads 2]

Why: the pipeline pins OpenVINO's INFERENCE_PRECISION_HINT to f32 (no silent bf16);
OpenVINO's default on a CPU with AVX512_BF16 may be bf16. This prints, per config, the
precision OpenVINO actually chose, images/s for one branch (random input, same shape as
the pipeline's), and the max |logit| difference against the f32-pinned run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _time(fn, x: np.ndarray, repeats: int) -> float:
    fn(x)  # warm-up (first call allocates)
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--branch", default="global")
    ap.add_argument("--batch", type=int, default=46)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--precisions", default="fp32,int8")
    a = ap.parse_args(argv)

    import onnxruntime as ort
    import openvino as ov

    from edge_iapp.export.bundle import load_bundle

    bundle = load_bundle(Path(a.bundle))
    size = bundle.input_size
    core = ov.Core()
    chans = core.read_model(str(bundle.file(a.branch, "fp32"))).inputs[0].get_partial_shape()[1]
    shape = (a.batch, chans.get_length(), size, size)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for prec in a.precisions.split(","):
        path = str(bundle.file(a.branch, prec))
        ref = None
        for label, extra in (("f32 pin", {"INFERENCE_PRECISION_HINT": "f32"}), ("default", {})):
            cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": a.threads, **extra}
            compiled = core.compile_model(path, "CPU", cfg)
            req = compiled.create_infer_request()

            def run(inp, req=req):
                return req.infer({0: inp})[0]

            out = np.asarray(run(x))
            ref = out if ref is None else ref
            ips = _time(run, x, a.repeats)
            chosen = compiled.get_property("INFERENCE_PRECISION_HINT")
            print(
                f"openvino {prec} {a.branch} {label:8s} ran as {chosen}: {ips:7.1f} img/s, "
                f"max|dlogit| vs f32 pin {float(np.abs(out - ref).max()):.4f}"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        ips = _time(lambda inp, sess=sess: sess.run(None, {"input": inp}), x, a.repeats)
        print(f"onnxruntime {prec} {a.branch}: {ips:7.1f} img/s")
    _torch_branch(bundle, a, x)


def _torch_branch(bundle, a, x: np.ndarray) -> None:
    run = bundle.manifest.get("source", {}).get("run")
    if not run or not Path(run).is_dir():
        print(f"torch: source run {run!r} not here; skipped")
        return
    import torch

    from edge_iapp.train.run import load_model

    torch.set_num_threads(a.threads)
    module = getattr(load_model(run)[0], f"{a.branch}_branch")
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        ips = _time(module, xt, a.repeats)
    print(f"torch eager fp32 {a.branch}: {ips:7.1f} img/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
