"""The bundle the TensorRT tests build: made by the real export pipeline.

Three branches of an untrained resnet18 IAPP-CNN at 64 px, exported by
``edge_iapp.export.build.export_bundle`` at FP32, FP16 (typed graph, float32 I/O)
and INT8 (explicit Q/DQ, calibrated on a tiny labelled set), so that CI's
TensorRT-RTX builds check exactly the files ``edge-iapp export`` writes.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 64
OUTPUTS = {"global": ["logits"], "object": ["logits", "part_maps"], "part": ["logits"]}


def make_typed_bundle(folder: Path) -> Path:
    """Export a tiny run into ``folder`` (a new bundle) with fp32, fp16 and int8 graphs."""
    import torch

    from edge_iapp.export.build import export_bundle
    from tests.export_helpers import INPUT_SIZE, make_dataset, make_run

    assert INPUT_SIZE == SIZE
    torch.set_num_threads(1)
    work = folder.parent / f"{folder.name}-work"
    data, split = make_dataset(work / "set")
    run = make_run(work / "run")
    bundle = export_bundle(
        run,
        folder,
        ("fp32", "fp16", "int8"),
        calib_data=data,
        calib_split=split,
        calib_size=24,
        calib_method="max",
        parity_size=24,
        log=lambda _m: None,
    )
    return Path(bundle.path)
