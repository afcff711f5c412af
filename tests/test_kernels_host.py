"""The CUDA kernels' per-pixel and per-image logic, compiled for the CPU, against the reference.

``edge_iapp/kernels/iapp_common.cu`` is compiled by g++ (``kernels/host/harness.cpp``)
and driven through ctypes in the same array layouts as the kernels. Masks, boxes and
fallback flags must be bit-exact; pixels within 1/255 (they come out equal: the same
float32 operations in the same order).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge_iapp.preprocess import (
    PreprocessConfig,
    global_canvas,
    network_input,
    object_zoom,
    part_zoom,
)
from edge_iapp.preprocess.polarity import border_median
from tests.conftest import chromosome_crop

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


@pytest.fixture(scope="module")
def hk(tmp_path_factory):
    from edge_iapp.kernels.host import HostKernels, build_host_library

    return HostKernels(build_host_library(tmp_path_factory.mktemp("iapp_host")))


def random_crops(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[int]]:
    """Chromosome-like crops of random sizes (tiny, normal, larger than the canvas) plus noise."""
    crops, bgs = [], []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        kind = k % 4
        if kind == 0:
            crop = rng.integers(0, 256, (h, w), dtype=np.uint8)  # pure noise
        elif kind == 1:
            crop = chromosome_crop(max(h, 3), max(w, 3), seed=k)
        elif kind == 2:
            crop = np.full((h, w), int(rng.integers(0, 256)), dtype=np.uint8)  # flat: empty mask
        else:
            crop = chromosome_crop(max(h, 3), max(w, 3), seed=k)
            crop = np.clip(crop.astype(int) - int(rng.integers(0, 40)), 0, 255).astype(np.uint8)
        crops.append(crop)
        bgs.append(border_median(crop))
    return crops, bgs


def assert_pixels_close(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max(initial=0) <= 1, f"max pixel difference {diff.max()} > 1/255"


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("size,canvas", [(128, 176), (64, 48), (96, 96)])
def test_global_canvas_matches_reference(hk, normalize, size, canvas):
    rng = np.random.default_rng(size + canvas + normalize)
    crops, bgs = random_crops(rng, 16)
    cfg = PreprocessConfig(canvas=canvas, input_size=size, normalize_background=normalize)
    want = global_canvas(crops, bgs, cfg).images
    got, sums = hk.global_canvas(crops, bgs, size, canvas, normalize)
    assert_pixels_close(got, want)
    assert np.array_equal(got, want)  # in practice bit-identical; the contract is 1/255
    assert np.array_equal(sums, want.reshape(len(crops), -1).sum(axis=1))


@pytest.mark.parametrize("mode", ["paper", "foreground"])
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("margin", [0, 2, 7])
def test_object_stage_matches_reference(hk, mode, kernel, margin):
    rng = np.random.default_rng(kernel * 10 + margin + (mode == "paper"))
    crops, bgs = random_crops(rng, 12)
    cfg = PreprocessConfig(threshold=mode, morph_kernel=kernel, object_margin=margin)
    g = global_canvas(crops, bgs, cfg).images
    want = object_zoom(g, cfg)
    got = hk.object_stage(g, mode, kernel, margin)
    assert np.array_equal(got.masks, want.masks)
    assert np.array_equal(got.boxes, want.boxes)
    assert np.array_equal(got.fallback, want.fallback)
    assert_pixels_close(got.images, want.images)


def test_object_stage_covers_fallback_and_boxes(hk):
    """The random set must exercise both branches, else the parity above proves little."""
    rng = np.random.default_rng(3)
    crops, bgs = random_crops(rng, 12)
    cfg = PreprocessConfig()
    want = object_zoom(global_canvas(crops, bgs, cfg).images, cfg)
    assert want.fallback.any() and not want.fallback.all()


def test_threshold_edge_values(hk):
    """Pixels exactly at the mean and at 253/254: both readings, bit-exact."""
    s = 32
    g = np.full((4, s, s), 255, dtype=np.uint8)
    g[0, 8:24, 8:24] = 100  # mean lands between 100 and 255
    g[1] = 253  # all below 254 and equal to the mean: foreground keeps all, paper none
    g[2, :, :16] = 254
    g[2, :, 16:] = 10
    g[3, ::2] = 200
    g[3, 1::2] = 100  # mean exactly 150
    for mode in ("paper", "foreground"):
        cfg = PreprocessConfig(threshold=mode, input_size=s, canvas=s)
        want = object_zoom(g, cfg)
        got = hk.object_stage(g, mode, 3, 2)
        assert np.array_equal(got.masks, want.masks), mode
        assert np.array_equal(got.boxes, want.boxes), mode
        assert_pixels_close(got.images, want.images)


def part_maps_cases(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    maps = rng.normal(size=(n, 2, h, w)).astype(np.float32)
    maps[0] = 0.0  # all equal to the mean: empty mask, fallback
    if n > 1:  # two equal regions: the tie goes to the first in raster order
        maps[1] = -1.0
        maps[1, :, 0, 0] = 5.0
        maps[1, :, h - 1, w - 1] = 5.0
    if n > 2:  # wide dynamic range: the float64 sum is inexact, pairwise order matters
        maps[2] = (rng.normal(size=(2, h, w)) * 10.0 ** rng.integers(-30, 30, (2, h, w))).astype(
            np.float32
        )
    if n > 3:  # a ReLU-like map with many exact zeros
        maps[3] = np.maximum(maps[3], 0)
    return maps


@pytest.mark.parametrize("grid", [(4, 4), (7, 7), (2, 5), (16, 16), (31, 33)])
def test_part_stage_matches_reference(hk, grid):
    h, w = grid
    rng = np.random.default_rng(h * 100 + w)
    cfg = PreprocessConfig()
    crops, bgs = random_crops(rng, 10)
    obj = object_zoom(global_canvas(crops, bgs, cfg).images, cfg).images
    maps = part_maps_cases(rng, len(crops), h, w)
    want = part_zoom(obj, maps, cfg)
    got = hk.part_stage(obj, maps)
    assert np.array_equal(got.masks, want.masks)
    assert np.array_equal(got.boxes, want.boxes)
    assert np.array_equal(got.fallback, want.fallback)
    assert want.fallback[0] and not want.fallback.all()
    assert_pixels_close(got.images, want.images)


def test_part_stage_half_maps(hk):
    """An fp16 object engine's part maps: the reference reads them as float32 values."""
    rng = np.random.default_rng(5)
    cfg = PreprocessConfig()
    obj = rng.integers(0, 256, (6, 128, 128), dtype=np.uint8)
    maps = rng.normal(size=(6, 2, 4, 4)).astype(np.float16)
    want = part_zoom(obj, maps.astype(np.float32), cfg)
    got = hk.part_stage(obj, maps)
    assert np.array_equal(got.masks, want.masks)
    assert np.array_equal(got.boxes, want.boxes)
    assert_pixels_close(got.images, want.images)


def test_part_grid_limit_is_an_error(hk):
    obj = np.zeros((1, 128, 128), dtype=np.uint8)
    maps = np.zeros((1, 2, 40, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="exceeds"):
        hk.part_stage(obj, maps)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 127, 128, 129, 300, 969, 1024])
def test_pairwise_sum_is_numpys(hk, n):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n) * 10.0 ** rng.integers(-20, 20, n)
    assert hk.pairwise_sum(values) == float(np.add.reduce(values))


def test_network_input_float32_and_half(hk):
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    f32, f16 = hk.network_input(images)
    assert np.array_equal(f32, network_input(images))
    assert np.array_equal(f16, network_input(images).astype(np.float16))


def test_float_to_half_rounding(hk):
    """Round to nearest even, subnormals, overflow: as NumPy's float16 cast."""
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.normal(size=20000).astype(np.float32)
            * np.float32(2.0) ** rng.integers(-30, 18, 20000),
            np.array(
                [
                    0.0,
                    -0.0,
                    65504.0,
                    65520.0,
                    65519.0,
                    1e-8,
                    2.0**-25,
                    2.0**-24,
                    3 * 2.0**-26,
                    np.inf,
                    -np.inf,
                ],
                dtype=np.float32,
            ),
        ]
    ).astype(np.float32)
    got = hk.float_to_half(values)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("half", [False, True])
def test_device_preprocessor_glue_emulated(hk, monkeypatch, half):
    """DevicePreprocessor's launches (argument order, buffer layout, grid) on emulated kernels.

    The kernels run as the harness's emu_* functions (kernels.cu's signatures) on host
    memory: what a GPU would run except the block-level parallelism itself.
    """
    from edge_iapp.backends.tensorrt import device_preprocess
    from edge_iapp.kernels.host import EmulatedKernelModule, HostMemoryCudart

    monkeypatch.setattr(device_preprocess, "cudart", HostMemoryCudart)
    rng = np.random.default_rng(11)
    cfg = PreprocessConfig(input_size=64, canvas=96)
    crops, bgs = random_crops(rng, 9)
    emu = EmulatedKernelModule(hk)
    pre = device_preprocess.DevicePreprocessor(emu, max_batch=12, size=64, input_half=half)
    for batch in (crops[:5], crops):  # the second batch grows the crops buffer
        n = pre.upload(batch, bgs[: len(batch)], stream=None)
        pre.global_stage(n, cfg, None)
        pre.object_stage(n, cfg, None)
        maps = part_maps_cases(rng, n, 2, 2)
        maps_buf = HostMemoryCudart.DeviceBuffer(maps.nbytes)
        HostMemoryCudart.copy_sync(maps_buf.ptr, maps.ctypes.data, maps.nbytes, "h2d")
        pre.part_stage(n, maps_buf.ptr, False, (2, 2), None)
        got = pre.fetch(n, None, part=True)
        g = global_canvas(batch, bgs[: len(batch)], cfg)
        o = object_zoom(g.images, cfg)
        p = part_zoom(o.images, maps, cfg)
        assert np.array_equal(got.global_images, g.images)
        assert np.array_equal(got.object_masks, o.masks) and np.array_equal(
            got.object_boxes, o.boxes
        )
        assert np.array_equal(got.object_fallback, o.fallback)
        assert_pixels_close(got.object_images, o.images)
        assert np.array_equal(got.part_masks, p.masks) and np.array_equal(got.part_boxes, p.boxes)
        assert np.array_equal(got.part_fallback, p.fallback)
        assert_pixels_close(got.part_images, p.images)
        want_in = network_input(g.images)
        assert np.array_equal(got.global_input, want_in.astype(np.float16) if half else want_in)
    names = [name for name, _, _ in emu.launches]
    assert names[:7] == [
        "iapp_reset",
        "iapp_global_canvas",
        "iapp_erode",
        "iapp_dilate_box",
        "iapp_object_zoom",
        "iapp_part_select",
        "iapp_part_zoom",
    ]
    pre.close()
