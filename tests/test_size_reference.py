"""Cell-relative size (``PreprocessConfig.size_mode="cell"``): length, scales, fall-backs."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from export_helpers import crop

from edge_iapp.backends.base import cell_batches, reference_front
from edge_iapp.data.imread import from_array
from edge_iapp.preprocess import (
    PreprocessConfig,
    chromosome_length,
    global_canvas,
    rescale_to_reference,
)

ABS = PreprocessConfig(canvas=96, input_size=64)
CELL = dataclasses.replace(ABS, size_mode="cell", cell_length=32)


def rod(length: int = 60, width: int = 14, angle: float = 0.0) -> np.ndarray:
    """A dark banded rod on a 243 background, rotated by ``angle`` degrees."""
    side = length + 40
    img = np.full((side, side), 243, np.uint8)
    y0, x0 = (side - length) // 2, (side - width) // 2
    bands = np.where((np.arange(length) // 5) % 2 == 0, 60, 140).astype(np.uint8)
    img[y0 : y0 + length, x0 : x0 + width] = bands[:, None]
    rot = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, 1.0)
    return cv2.warpAffine(img, rot, (side, side), flags=cv2.INTER_LINEAR, borderValue=243)


def a_cell(n: int = 14, seed: int = 0) -> list[np.ndarray]:
    """Crops of one cell: classes spread over the karyotype (lengths differ)."""
    return [crop(int(c), seed + k) for k, c in enumerate(np.linspace(0, 23, n).astype(int))]


def test_length_is_rotation_invariant():
    lengths = [chromosome_length(rod(angle=a), 243, ABS) for a in (0, 20, 45, 90, 135, 160)]
    assert lengths[0] == pytest.approx(60, rel=0.05)  # a straight rod measures its length
    assert max(lengths) / min(lengths) < 1.04


def test_length_of_empty_and_tiny_crops():
    assert chromosome_length(np.full((20, 10), 243, np.uint8), 243, ABS) == 0.0
    assert chromosome_length(np.zeros((0, 5), np.uint8), 243, ABS) == 0.0
    one = np.full((5, 5), 243, np.uint8)
    one[2, 2] = 10
    assert chromosome_length(one, 243, ABS) == 1.0
    longer = chromosome_length(rod(80), 243, ABS)
    assert longer > chromosome_length(rod(40), 243, ABS) * 1.8


def test_absolute_mode_is_unchanged():
    crops = a_cell()
    size = rescale_to_reference(crops, [243] * len(crops), ["c"] * len(crops), ABS)
    assert all(a is b for a, b in zip(size.crops, crops, strict=True))
    assert np.all(size.scales == 1) and not size.fallback.any()
    images = [from_array(c, cell="c") for c in crops]
    front = reference_front(images, ABS)
    direct = global_canvas(
        [im.pixels for im in images], [im.polarity.background for im in images], ABS
    )
    assert np.array_equal(front.global_images, direct.images)
    assert not front.size_fallback.any()


def _canvases(crops: list[np.ndarray], cfg: PreprocessConfig, cell: str = "c") -> np.ndarray:
    size = rescale_to_reference(crops, [243] * len(crops), [cell] * len(crops), cfg)
    assert not size.fallback.any()
    return global_canvas(size.crops, [243] * len(crops), cfg).images.astype(np.float32)


def test_a_2x_scan_of_a_cell_gives_the_same_canvases_in_cell_mode():
    crops = a_cell()
    twice = [
        cv2.resize(c, (2 * c.shape[1], 2 * c.shape[0]), interpolation=cv2.INTER_LINEAR)
        for c in crops
    ]
    cell_gap = np.abs(_canvases(crops, CELL) - _canvases(twice, CELL)).mean()
    abs_gap = np.abs(_canvases(crops, ABS) - _canvases(twice, ABS)).mean()
    assert cell_gap < 3.0, cell_gap  # grey levels, out of 255
    assert abs_gap > 4 * cell_gap, (abs_gap, cell_gap)
    s1 = rescale_to_reference(crops, [243] * 14, ["c"] * 14, CELL).scales
    s2 = rescale_to_reference(twice, [243] * 14, ["c"] * 14, CELL).scales
    assert np.allclose(s1 / s2, 2.0, rtol=0.03)
    assert len(set(s1.tolist())) == 1  # one scale per cell


def test_fallbacks():
    crops = a_cell()
    n = len(crops)
    cfg = dataclasses.replace(CELL, reference_length=40.0)
    cells = ["big"] * (n - 2) + ["lonely", None]
    size = rescale_to_reference(crops, [243] * n, cells, cfg)
    assert not size.fallback[: n - 2].any() and size.fallback[n - 2 :].all()
    assert np.allclose(size.scales[n - 2 :], 32 / 40.0)
    # the whole crop list without cells, reference unknown: size kept, flagged
    unknown = rescale_to_reference(crops, [243] * n, None, CELL)
    assert unknown.fallback.all() and np.all(unknown.scales == 1.0)
    # a cell just under the minimum falls back; at the minimum it does not
    few = dataclasses.replace(cfg, min_cell_chromosomes=n)
    assert rescale_to_reference(crops, [243] * n, ["c"] * n, few).fallback.sum() == 0
    assert rescale_to_reference(crops[:-1], [243] * (n - 1), ["c"] * (n - 1), few).fallback.all()


def test_never_empty_or_nan():
    crops = [np.full((1, 1), 10, np.uint8), np.full((7, 3), 243, np.uint8), rod(150)]
    cfg = dataclasses.replace(CELL, reference_length=500.0, cell_length=8)
    size = rescale_to_reference(crops, [243] * 3, [None] * 3, cfg)
    assert all(c.ndim == 2 and min(c.shape) >= 1 and c.dtype == np.uint8 for c in size.crops)
    assert np.all(np.isfinite(size.scales)) and np.all(size.scales > 0)
    global_canvas(size.crops, [243] * 3, cfg)  # accepted as is


def test_config_defaults_old_dicts_and_validation():
    old = {
        "canvas": 176,
        "input_size": 128,
        "threshold": "foreground",
        "morph_kernel": 3,
        "object_margin": 2,
        "normalize_background": True,
    }
    cfg = PreprocessConfig.from_dict(old)
    assert (cfg.size_mode, cfg.cell_length, cfg.reference_length, cfg.min_cell_chromosomes) == (
        "absolute",
        72,
        0.0,
        10,
    )
    assert PreprocessConfig.from_dict(CELL.to_dict()) == CELL
    for bad, word in (
        ({"size_mode": "relative"}, "size_mode"),
        ({"size_mode": "cell", "cell_length": 500}, "cell_length"),
        ({"cell_length": 2}, "cell_length"),
        ({"reference_length": -1.0}, "reference_length"),
        ({"reference_length": float("nan")}, "reference_length"),
        ({"min_cell_chromosomes": 0}, "min_cell_chromosomes"),
    ):
        with pytest.raises(ValueError, match=word):
            PreprocessConfig(**bad)


def test_cell_batches_never_split_a_cell():
    images = [
        from_array(c, cell=cell)
        for c, cell in zip(
            a_cell(10), ["a", None, "b", "a", "b", "a", None, "b", "a", "a"], strict=True
        )
    ]
    decoded = list(enumerate(images))
    batches = cell_batches(decoded, batch_size=3)
    assert sorted(k for b in batches for k, _ in b) == list(range(10))
    for cell in ("a", "b"):
        holding = [i for i, b in enumerate(batches) if any(im.cell == cell for _, im in b)]
        assert len(holding) == 1
    plain = cell_batches(decoded, batch_size=3, group=False)
    assert [len(b) for b in plain] == [3, 3, 3, 1]


def test_prepare_cell_mode_keeps_order_and_matches_reference(tmp_path):
    from export_helpers import make_dataset

    from edge_iapp.data.dataset import scan_folder
    from edge_iapp.train.data import _cache_key, load_raw, median_chromosome_length, prepare

    root, _ = make_dataset(tmp_path / "set", groups=3)
    samples = sorted(scan_folder(root).samples, key=lambda s: str(s.path))  # cells interleaved
    ref = median_chromosome_length(load_raw(samples), CELL)
    assert 15 < ref < 60
    cfg = dataclasses.replace(CELL, reference_length=ref)
    out = prepare(samples, cfg)
    assert out.paths == [str(s.path) for s in samples]
    from edge_iapp.data.imread import read_image

    images = [read_image(s.path, cell=f"{s.group}/{s.cell}") for s in samples]
    front = reference_front(images, cfg)
    assert np.array_equal(out.global_images, front.global_images)
    assert not front.size_fallback.any()  # 24 chromosomes per cell
    keys = {_cache_key(samples, c) for c in (ABS, CELL, cfg)}
    assert len(keys) == 3


def test_classifier_flags_size_fallback(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from export_helpers import tiny_bundle

    from edge_iapp.backends import get_backend
    from edge_iapp.export.bundle import load_bundle
    from edge_iapp.runtime.classifier import Classifier

    bundle = load_bundle(tiny_bundle(tmp_path_factory, precisions=("fp32",)))
    backend = get_backend("onnxruntime", bundle, "fp32", threads=1)
    # the bundle is absolute-size; switch this backend to cell mode (as a cell bundle would)
    backend.cfg = dataclasses.replace(
        bundle.preprocess, size_mode="cell", cell_length=40, reference_length=30.0
    )
    crops = a_cell()
    images = [from_array(c, cell="cell-1") for c in crops]
    images += [from_array(crops[0], cell="alone"), from_array(crops[1])]
    with Classifier(bundle, backend=backend, warmup=False, batch_size=4) as clf:
        results = clf.predict(images)
    assert [r.size_fallback for r in results] == [False] * len(crops) + [True, True]
    assert all("size_fallback" in r.review_reasons and r.review for r in results[-2:])
    assert not any("size_fallback" in r.review_reasons for r in results[:-2])
    assert all(r.to_dict()["size_fallback"] in (True, False) for r in results)
