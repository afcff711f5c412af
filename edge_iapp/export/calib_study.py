"""How many calibration images are enough: INT8 accuracy drop vs calibration size and method.

    python -m edge_iapp.export.calib_study RUN --data DIR --split SPLIT.json \\
        --sizes 24,48,96,192,384 --methods max,percentile --seeds 0,1 --json OUT.json

For every (method, size, seed) the three branches are quantized from the FP32 graphs
with a calibration set drawn by :func:`~edge_iapp.export.calibration.select_samples`
from the ``train`` part, and the whole pipeline (reference preprocessing, part zoom
from the INT8 object branch, fusion) is run with ONNX Runtime on the evaluation part
(``val`` by default: the choice of calibration size is a tuning decision, so it is not
made on ``test``). Reported: top-1 of FP32 and INT8, drop in points, agreement with FP32.
Imports torch (to export) and onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .bundle import BRANCHES


def _sessions(folder: Path, precision: str) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return {
        b: ort.InferenceSession(
            str(folder / f"{b}.{precision}.onnx"),
            sess_options=so,
            providers=["CPUExecutionProvider"],
        )
        for b in BRANCHES
    }


def _run(sess, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    outs = [sess.run(None, {"input": x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def pipeline_predict(sessions: dict, front, cfg, fusion: str = "lambda") -> np.ndarray:
    """Fused class per image for a :class:`~edge_iapp.backends.base.FrontBatch`."""
    from ..fusion import fuse
    from ..preprocess import network_input, part_zoom

    g = _run(sessions["global"], network_input(front.global_images))[0]
    o, maps = _run(sessions["object"], network_input(front.object_images))
    p = _run(sessions["part"], network_input(part_zoom(front.object_images, maps, cfg).images))[0]
    fused, _ = fuse(np.stack([g, o, p]), fusion)
    return fused.argmax(1)


def study(
    run_dir: str | Path,
    data: str | Path,
    split: str | Path,
    sizes=(24, 48, 96, 192, 384),
    methods=("max", "percentile"),
    seeds=(0,),
    subset: str = "val",
    limit: int | None = None,
    log=print,
) -> dict:
    """Run the study; returns ``{"fp32_accuracy", "images", "rows": [...]}``."""
    import torch

    from ..backends.base import whole_cell_front
    from ..data import apply_split, load_split, read_image, scan_for_split
    from ..train.run import load_model
    from .calibration import branch_inputs, select_samples, with_cells
    from .onnx_export import export_branch
    from .quantize import quantize_int8

    torch.set_num_threads(1)
    model, cfg = load_model(run_dir)
    pcfg = cfg.preprocess
    record = load_split(split)
    parts = apply_split(scan_for_split(data, record).samples, record, allow_missing=True)
    evals = sorted(parts[subset], key=lambda s: str(s.path))
    if limit and limit < len(evals):
        evals = sorted(
            select_samples(evals, limit, 0, require_all_classes=False), key=lambda s: str(s.path)
        )
    labels = np.array([s.label for s in evals])
    cache: dict[str, object] = {}

    def read(samples, part):
        """Images of ``samples`` and which to keep: in cell mode their cells come along."""
        files, cells, keep = with_cells([Path(s.path) for s in samples], part, pcfg)
        for f, cell in zip(files, cells, strict=True):
            if str(f) not in cache:
                cache[str(f)] = read_image(f, cell=cell)
        return [cache[str(f)] for f in files], keep

    front = whole_cell_front(*read(evals, parts[subset]), pcfg)

    rows = []
    with tempfile.TemporaryDirectory(prefix="calib-study-") as tmp:
        tmp = Path(tmp)
        for b in BRANCHES:
            export_branch(model, b, pcfg.input_size, tmp / f"{b}.fp32.onnx")
        fp32 = _sessions(tmp, "fp32")
        ref = pipeline_predict(fp32, front, pcfg, cfg.fusion)
        acc32 = float((ref == labels).mean())
        log(f"fp32 {subset} top-1 {acc32:.4f} on {len(labels)} images")

        def run_object(x):
            return tuple(_run(fp32["object"], x))

        for method in methods:
            for size in sizes:
                for seed in seeds:
                    t = time.perf_counter()
                    chosen = select_samples(parts["train"], int(size), int(seed))
                    images, keep = read(chosen, parts["train"])
                    inputs = branch_inputs(images, pcfg, run_object, keep=keep)
                    for b in BRANCHES:
                        quantize_int8(
                            tmp / f"{b}.fp32.onnx", tmp / f"{b}.int8.onnx", inputs[b], method=method
                        )
                    pred = pipeline_predict(_sessions(tmp, "int8"), front, pcfg, cfg.fusion)
                    acc8 = float((pred == labels).mean())
                    row = {
                        "method": method,
                        "size": int(size),
                        "seed": int(seed),
                        "int8_accuracy": acc8,
                        "drop_points": 100.0 * (acc32 - acc8),
                        "agreement": float((pred == ref).mean()),
                        "seconds": time.perf_counter() - t,
                    }
                    rows.append(row)
                    log(
                        f"{method:10s} n={size:4d} seed={seed} top-1 {acc8:.4f} "
                        f"drop {row['drop_points']:+.2f} pt agree {row['agreement']:.4f} "
                        f"({row['seconds']:.0f} s)"
                    )
    return {
        "run": str(Path(run_dir).resolve()),
        "data": str(Path(data).resolve()),
        "subset": subset,
        "images": int(len(labels)),
        "fp32_accuracy": acc32,
        "rows": rows,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--subset", default="val")
    ap.add_argument("--sizes", default="24,48,96,192,384")
    ap.add_argument("--methods", default="max,percentile")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--limit", type=int, help="evaluate on N images (stratified)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    report = study(
        a.run,
        a.data,
        a.split,
        sizes=[int(s) for s in a.sizes.split(",")],
        methods=a.methods.split(","),
        seeds=[int(s) for s in a.seeds.split(",")],
        subset=a.subset,
        limit=a.limit,
    )
    if a.json:
        from ..ioutil import atomic_write_text

        atomic_write_text(a.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":  # pragma: no cover
    main()
