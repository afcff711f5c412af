"""The one resampling rule (``preprocess.sampling``) against its written definition.

``naive_place`` is the module docstring's formula, one output pixel at a time in
float32; the fast separable implementation must give the same bytes, because the
CUDA kernel and the torch part zoom are checked against it.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_iapp.preprocess.config import PreprocessConfig
from edge_iapp.preprocess.object_aware import object_zoom
from edge_iapp.preprocess.sampling import place, place_batch, zoom_boxes

f32 = np.float32


def naive_place(src, out_size, scale, top, left, fill):
    h, w = src.shape
    src = src.astype(f32)
    out = np.zeros((out_size, out_size), dtype=np.uint8)

    def read(y, x):
        return src[y, x] if 0 <= y < h and 0 <= x < w else f32(fill)

    for i in range(out_size):
        v = (f32(i) + f32(0.5) - f32(top)) / f32(scale) - f32(0.5)
        y0 = np.floor(v)
        fy = v - y0
        for j in range(out_size):
            u = (f32(j) + f32(0.5) - f32(left)) / f32(scale) - f32(0.5)
            x0 = np.floor(u)
            fx = u - x0
            y, x = int(y0), int(x0)
            upper = read(y, x) * (f32(1) - fx) + read(y, x + 1) * fx
            lower = read(y + 1, x) * (f32(1) - fx) + read(y + 1, x + 1) * fx
            value = upper * (f32(1) - fy) + lower * fy
            out[i, j] = np.uint8(min(max(np.floor(value + f32(0.5)), 0), 255))
    return out


@pytest.mark.parametrize("seed", range(24))
def test_place_matches_the_per_pixel_definition(seed) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(1, 40, 2))
    src = (rng.random((h, w)) * 255).astype(f32)
    out_size = int(rng.integers(4, 24))
    scale = float(rng.uniform(0.2, 4.0))
    top, left = (float(x) for x in rng.uniform(-10, 12, 2))
    fill = float(rng.choice([255.0, 0.0, 40.5]))
    expected = naive_place(src, out_size, scale, top, left, fill)
    np.testing.assert_array_equal(place(src, out_size, scale, top, left, fill), expected)


@pytest.mark.parametrize("fill", [255.0, 0.0])
@pytest.mark.parametrize("where", [(12.0, 9.0), (-3.5, 20.25), (40.0, 40.0)])
def test_a_small_source_on_a_large_output_matches_the_definition(fill, where) -> None:
    """Only the lines that read the source are interpolated; the rest must still be fill."""
    src = np.random.default_rng(1).integers(0, 256, (7, 4)).astype(f32)
    top, left = where  # (40, 40): entirely outside the 32 x 32 output
    expected = naive_place(src, 32, 0.7, top, left, fill)
    np.testing.assert_array_equal(place(src, 32, 0.7, top, left, fill), expected)


def test_batch_is_the_single_placement_per_image() -> None:
    rng = np.random.default_rng(7)
    srcs = [
        rng.integers(0, 256, (int(a), int(b))).astype(f32) for a, b in rng.integers(1, 90, (9, 2))
    ]
    scales, tops, lefts = rng.uniform(0.3, 3, 9), rng.uniform(-5, 20, 9), rng.uniform(-5, 20, 9)
    batch = place_batch(srcs, 48, scales, tops, lefts, fill=255.0)
    assert batch.shape == (9, 48, 48) and batch.dtype == np.uint8
    for k, src in enumerate(srcs):
        np.testing.assert_array_equal(batch[k], place(src, 48, scales[k], tops[k], lefts[k]))


def test_zoom_fills_the_longer_side_and_keeps_the_crop_centred() -> None:
    image = np.full((20, 20), 255, np.uint8)
    image[5:15, 8:12] = 0  # a 10 x 4 dark bar
    (out,) = zoom_boxes([image], [(5, 8, 15, 12)], 30)
    dark_rows = np.flatnonzero((out < 128).any(axis=1))
    dark_cols = np.flatnonzero((out < 128).any(axis=0))
    assert dark_rows[0] == 0 and dark_rows[-1] == 29  # the long side fills the output
    assert abs((dark_cols[0] + dark_cols[-1]) / 2 - 14.5) <= 0.5  # centred across


def test_object_zoom_blanks_everything_outside_the_mask() -> None:
    cfg = PreprocessConfig(canvas=32, input_size=32)
    image = np.full((1, 32, 32), 255, np.uint8)
    image[0, 8:24, 12:20] = 40  # the chromosome
    image[0, 2, 2] = 250  # bright speck: above the image mean, outside the object mask
    obj = object_zoom(image, cfg)
    assert not obj.fallback[0]
    assert obj.masks[0, 2, 2] == 0 and obj.masks[0, 10, 14]
    # the zoom reads only masked pixels: the speck's 250 cannot appear, the bar's 40 does
    assert obj.images[0].min() == 40 and 250 not in obj.images[0]


def test_place_refuses_a_non_positive_scale():
    src = np.zeros((4, 4), np.uint8)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale must be positive"):
            place(src, 8, bad, 0.0, 0.0)
