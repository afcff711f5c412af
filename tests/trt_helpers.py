"""A tiny typed-ONNX bundle for the TensorRT tests, made without the export pipeline.

Three branches of an untrained resnet18 IAPP-CNN at 64 px: FP32 (torch.onnx.export),
FP16 (onnxconverter-common, float32 I/O) and INT8 (onnxruntime ``quantize_static``,
QDQ, symmetric signed int8, per-channel weights: TensorRT's rules). Written as a
format-1 bundle so ``load_bundle`` and ``edge-iapp build`` accept it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

SIZE = 64
OUTPUTS = {"global": ["logits"], "object": ["logits", "part_maps"], "part": ["logits"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _int8(src: Path, dst: Path, rng: np.random.Generator) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [{"input": rng.random((2, 1, SIZE, SIZE), dtype=np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )


def make_typed_bundle(folder: Path) -> Path:
    """Write ``folder`` as a bundle with fp32/fp16/int8 graphs of the three branches."""
    import onnx
    import torch
    from onnxconverter_common import float16

    from edge_iapp.classes import CLASS_NAMES
    from edge_iapp.model import create_model
    from edge_iapp.preprocess import PreprocessConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("resnet18").eval()
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    for branch, outputs in OUTPUTS.items():
        module = getattr(model, f"{branch}_branch")
        fp32 = folder / f"{branch}.fp32.onnx"
        axes = {name: {0: "batch"} for name in ["input", *outputs]}
        torch.onnx.export(
            module,
            torch.zeros(2, 1, SIZE, SIZE),
            str(fp32),
            input_names=["input"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
        fp16 = folder / f"{branch}.fp16.onnx"
        with warnings.catch_warnings():  # "float32 number ... will be truncated": expected
            warnings.simplefilter("ignore")
            half = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(half, str(fp16))
        int8 = folder / f"{branch}.int8.onnx"
        _int8(fp32, int8, rng)
        files[branch] = {
            p: {"path": f.name, "sha256": _sha(f), "bytes": f.stat().st_size}
            for p, f in (("fp32", fp32), ("fp16", fp16), ("int8", int8))
        }
    manifest = {
        "format": "edge-iapp-bundle",
        "format_version": 1,
        "classes": list(CLASS_NAMES),
        "backbone": "resnet18",
        "preprocess": PreprocessConfig(canvas=96, input_size=SIZE).to_dict(),
        "precisions": ["fp32", "fp16", "int8"],
        "files": files,
        "branches": {
            b: {"input": {"name": "input", "shape": [-1, 1, SIZE, SIZE]}, "outputs": o}
            for b, o in OUTPUTS.items()
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder
