"""Helpers for the export/runtime/bench tests: a tiny run folder, a tiny labelled data set.

Built once per test session (cached on the process) because exporting takes seconds.
The model is untrained (random weights, fixed seed): parity, Q/DQ rules, hashes and
backend agreement do not need a trained model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_iapp.classes import CLASS_NAMES

INPUT_SIZE = 64
_CACHE: dict[str, Path] = {}


def crop(cls: int, seed: int) -> np.ndarray:
    """A dark banded ellipse whose length grows with the class index, on a 243 background."""
    rng = np.random.default_rng(seed)
    h = 20 + 2 * (24 - cls) + int(rng.integers(0, 4))
    w = 12 + int(rng.integers(0, 4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - (h - 1) / 2) / (h * 0.42)) ** 2 + ((xx - (w - 1) / 2) / (w * 0.35)) ** 2 <= 1
    bands = 60 + 90 * (np.sin(yy * (0.3 + 0.02 * cls)) > 0)
    img = np.where(inside, bands, 243).astype(np.float32) + rng.normal(0, 3, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, groups: int = 5, per_group: int = 1) -> tuple[Path, Path]:
    """``root/<class>/clase<N>_<k>_G<g>.1.png`` for 24 classes x groups; returns (root, split)."""
    from edge_iapp.data import make_split, scan_folder, write_split

    for ci, name in enumerate(CLASS_NAMES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for g in range(groups):
            for k in range(per_group):
                cv2.imwrite(
                    str(folder / f"clase{ci + 1}_{k}_G{g:03d}.1.png"),
                    crop(ci, 1000 * ci + 10 * g + k),
                )
    split = make_split(scan_folder(root).samples, test=0.2, val=0.2, seed=0)
    split_path = root.parent / f"{root.name}_split.json"
    write_split(split, split_path)
    return root, split_path


def make_run(run_dir: Path, input_size: int = INPUT_SIZE, size_mode: str = "absolute") -> Path:
    """A run folder with config.json and last.pt of an untrained resnet18 IAPP-CNN."""
    import torch

    from edge_iapp.model import create_model
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.run import RunConfig

    torch.manual_seed(0)
    preprocess = PreprocessConfig(
        canvas=96, input_size=input_size, size_mode=size_mode, cell_length=48
    )
    cfg = RunConfig(backbone="resnet18", preprocess=preprocess)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir)
    model = create_model("resnet18")
    torch.save({"model": model.state_dict(), "epoch": 1}, run_dir / "last.pt")
    return run_dir


def shared(tmp_path_factory, key: str, build) -> Path:
    """Build ``key`` once per session: ``build(folder) -> Path``."""
    if key not in _CACHE:
        _CACHE[key] = build(tmp_path_factory.mktemp(key))
    return _CACHE[key]


def tiny_bundle(tmp_path_factory, precisions=("fp32", "fp16", "int8")) -> Path:
    """Session-shared bundle with all three precisions (max calibration, 24 images)."""
    import torch

    from edge_iapp.export.build import export_bundle

    torch.set_num_threads(1)
    data = shared(tmp_path_factory, "data", lambda d: make_dataset(d / "set")[0])
    split = data.parent / f"{data.name}_split.json"
    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))

    def build(folder: Path) -> Path:
        return Path(
            export_bundle(
                run,
                folder / "bundle",
                precisions,
                calib_data=data,
                calib_split=split,
                calib_size=24,
                calib_method="max",
                parity_size=24,
                log=lambda _m: None,
            ).path
        )

    return shared(tmp_path_factory, "bundle-" + "-".join(precisions), build)
