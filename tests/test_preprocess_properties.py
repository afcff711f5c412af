"""Property tests of the reference preprocessing (edge_iapp.preprocess) with hypothesis.

Over sizes (1 x 1 to ~300 px, and longer than the canvas), pixel types (uint8, uint16,
float, RGB, RGBA, via to_grey_u8), polarities and parameters: documented shapes and
dtypes, no NaN, binary masks, boxes inside the image, empty-mask fall-backs taken.
"""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_iapp.data.imread import from_array
from edge_iapp.preprocess import (
    BACKGROUND,
    PreprocessConfig,
    global_canvas,
    network_input,
    normalize_polarity,
    object_zoom,
    part_zoom,
    to_grey_u8,
)
from edge_iapp.preprocess.object_aware import mask_box, threshold_mask
from edge_iapp.preprocess.polarity import border_median, border_pixels

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A dark banded ellipse on a light background, ``(h, w)`` uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - (h - 1) / 2) / max(h * 0.4, 0.5)) ** 2 + (
        (xx - (w - 1) / 2) / max(w * 0.3, 0.5)
    ) ** 2 <= 1
    background = rng.integers(225, 256)
    bands = rng.integers(20, 120) + 80 * (np.sin(yy * rng.uniform(0.2, 1.0)) > 0)
    image = np.where(inside, bands, background) + rng.normal(0, 2, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8)


@st.composite
def grey_images(draw, max_side: int = 300) -> np.ndarray:
    """``(h, w)`` uint8: blob, noise or uniform; either polarity."""
    big = draw(st.booleans()) and max_side > 300
    lo = 177 if big else 1
    h = draw(st.integers(lo, max_side if big else min(max_side, 300)))
    w = draw(st.integers(1, 300))
    if draw(st.booleans()):
        h, w = w, h
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["blob", "blob", "noise", "uniform"]))
    if kind == "blob":
        image = blob(h, w, rng)
    elif kind == "noise":
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
    else:
        image = np.full((h, w), draw(st.integers(0, 255)), np.uint8)
    return 255 - image if draw(st.booleans()) else image


def as_dtype(grey: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The same picture as another pixel type that to_grey_u8 accepts."""
    if kind == "uint8":
        return grey
    if kind == "uint16":
        return grey.astype(np.uint16) * 257
    if kind == "uint12":
        return (grey.astype(np.uint32) * 4095 // 255).astype(np.uint16)  # 12-bit camera
    if kind == "float32":
        return grey.astype(np.float32) / 255
    if kind == "float64_255":
        return grey.astype(np.float64) + 0.25  # max > 1: read as 0..255
    if kind == "rgb":
        return np.repeat(grey[:, :, None], 3, axis=2)
    if kind == "rgba":
        alpha = rng.integers(0, 256, grey.shape, dtype=np.uint8)
        return np.dstack([np.repeat(grey[:, :, None], 3, axis=2), alpha])
    raise AssertionError(kind)


DTYPES = ["uint8", "uint16", "uint12", "float32", "float64_255", "rgb", "rgba"]

configs = st.builds(
    PreprocessConfig,
    canvas=st.sampled_from([16, 48, 176, 224]),
    input_size=st.sampled_from([16, 32, 128]),
    threshold=st.sampled_from(["paper", "foreground"]),
    morph_kernel=st.sampled_from([1, 3, 5]),
    object_margin=st.integers(0, 4),
    normalize_background=st.booleans(),
)


@SETTINGS
@given(grey=grey_images(), kind=st.sampled_from(DTYPES), seed=st.integers(0, 1000))
def test_to_grey_and_polarity(grey, kind, seed):
    array = as_dtype(grey, kind, np.random.default_rng(seed))
    out = to_grey_u8(array)
    assert out.dtype == np.uint8 and out.shape == grey.shape
    # (a 16-bit image with no value above 4095 is read as 12-bit, as documented)
    if kind in ("uint8", "uint12", "float32", "rgb") or (kind == "uint16" and grey.max() > 15):
        assert np.abs(out.astype(int) - grey).max() <= 1  # same picture
    fixed, polarity = normalize_polarity(out)
    assert fixed.shape == out.shape and fixed.dtype == np.uint8
    assert polarity.inverted == (border_median(out) < 128)
    assert polarity.background == border_median(fixed)
    # Light background afterwards, except when the border is split half dark / half light
    # (the lower median is < 128 but the upper one is not): inverting keeps it "dark".
    values = np.sort(border_pixels(out))
    ambiguous = values[(values.size - 1) // 2] < 128 <= values[values.size // 2]
    assert border_median(fixed) >= 128 or ambiguous
    image = from_array(array)  # the reader does the same, and flags the blank ones
    np.testing.assert_array_equal(image.pixels, fixed)
    assert ("blank" in image.flags) == (int(fixed.max()) - int(fixed.min()) <= 8)


def run_pipeline(crops: list[np.ndarray], cfg: PreprocessConfig, part_maps: np.ndarray):
    fixed = [normalize_polarity(c) for c in crops]
    g = global_canvas([f for f, _ in fixed], [p.background for _, p in fixed], cfg)
    o = object_zoom(g.images, cfg)
    p = part_zoom(o.images, part_maps, cfg)
    return g, o, p


def check_box(box: np.ndarray, size: int) -> None:
    y0, x0, y1, x1 = (int(v) for v in box)
    assert 0 <= y0 < y1 <= size and 0 <= x0 < x1 <= size, box


@SETTINGS
@given(
    crops=st.lists(grey_images(max_side=600), min_size=1, max_size=4),
    cfg=configs,
    grid=st.integers(1, 9),
    maps_kind=st.sampled_from(["random", "zero", "constant", "nan", "centre"]),
    seed=st.integers(0, 1000),
)
def test_pipeline_shapes_masks_boxes(crops, cfg, grid, maps_kind, seed):
    n, s = len(crops), cfg.input_size
    rng = np.random.default_rng(seed)
    if maps_kind == "random":
        maps = rng.normal(size=(n, 2, grid, grid)).astype(np.float32)
    elif maps_kind == "zero":
        maps = np.zeros((n, 2, grid, grid), np.float32)
    elif maps_kind == "constant":
        maps = np.full((n, 2, grid, grid), 3.5, np.float32)
    elif maps_kind == "nan":
        maps = np.full((n, 2, grid, grid), np.nan, np.float32)
    else:
        maps = np.zeros((n, 2, grid, grid), np.float32)
        maps[:, :, grid // 2, grid // 2] = 1.0
    g, o, p = run_pipeline(crops, cfg, maps)

    # global: documented shapes and dtypes, shrink only when longer than the canvas
    assert g.images.shape == (n, s, s) and g.images.dtype == np.uint8
    assert g.shrunk.dtype == np.bool_ and g.scale.dtype == np.float32
    assert np.all(np.isfinite(g.scale)) and np.all(g.scale > 0)
    for k, c in enumerate(crops):
        assert g.shrunk[k] == (max(c.shape) > cfg.canvas)
        if not g.shrunk[k]:
            assert np.isclose(g.scale[k], s / cfg.canvas)
        else:
            assert np.isclose(g.scale[k] * max(c.shape), s, rtol=1e-5)
        if min(g.images.shape[1:]) >= 2 and max(c.shape) * g.scale[k] < s - 2:
            assert g.images[k, 0, 0] == BACKGROUND  # the canvas around a small crop

    # object: binary masks, boxes inside the image and around the mask, fall-back iff empty
    assert o.images.shape == (n, s, s) and o.images.dtype == np.uint8
    assert o.masks.shape == (n, s, s) and o.masks.dtype == np.bool_
    assert o.boxes.shape == (n, 4) and o.boxes.dtype == np.int32
    raw = threshold_mask(g.images, cfg.threshold)
    for k in range(n):
        check_box(o.boxes[k], s)
        assert not np.any(o.masks[k] & ~raw[k])  # the opening only removes pixels
        assert o.fallback[k] == (not o.masks[k].any())
        if o.fallback[k]:
            np.testing.assert_array_equal(o.images[k], g.images[k])
            assert tuple(o.boxes[k]) == (0, 0, s, s)
        else:
            y0, x0, y1, x1 = mask_box(o.masks[k])
            b = o.boxes[k]
            assert b[0] <= y0 and b[1] <= x0 and b[2] >= y1 and b[3] >= x1

    # part: one 8-connected region or the fall-back
    assert p.images.shape == (n, s, s) and p.images.dtype == np.uint8
    assert p.masks.shape == (n, grid, grid) and p.masks.dtype == np.bool_
    for k in range(n):
        check_box(p.boxes[k], s)
        assert p.fallback[k] == (not p.masks[k].any())
        if p.fallback[k]:
            np.testing.assert_array_equal(p.images[k], o.images[k])
        else:
            count, _ = cv2.connectedComponents(p.masks[k].astype(np.uint8), connectivity=8)
            assert count == 2  # background + one region
    if maps_kind in ("zero", "constant", "nan"):
        assert p.fallback.all()  # nothing above its own mean: the whole object image
    if maps_kind == "centre" and grid >= 2:
        assert not p.fallback.any()

    for images in (g.images, o.images, p.images):
        x = network_input(images)
        assert x.shape == (n, 1, s, s) and x.dtype == np.float32
        assert np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1


@SETTINGS
@given(
    h=st.integers(1, 400),
    w=st.integers(1, 400),
    value=st.sampled_from([0, 255]),
    kind=st.sampled_from(DTYPES),
    threshold=st.sampled_from(["paper", "foreground"]),
    normalize=st.booleans(),
)
def test_blank_images_take_the_object_fallback(h, w, value, kind, threshold, normalize):
    """All-white and all-black (inverted to white) images: empty mask, global image kept."""
    # random alpha would draw a picture; "float64_255" of all-zero is read as 0..1 floats
    assume(kind not in ("rgba", "float64_255"))
    grey = to_grey_u8(as_dtype(np.full((h, w), value, np.uint8), kind, np.random.default_rng(0)))
    cfg = PreprocessConfig(threshold=threshold, normalize_background=normalize)
    g, o, p = run_pipeline([grey], cfg, np.zeros((1, 2, 7, 7), np.float32))
    assert np.all(g.images == BACKGROUND)
    assert o.fallback[0] and p.fallback[0]
    np.testing.assert_array_equal(o.images[0], g.images[0])


def test_chromosome_object_zoom_is_not_a_fallback():
    """The fall-back is not taken for a plain chromosome (the test above can fail)."""
    crop = blob(60, 22, np.random.default_rng(1))
    g, o, _ = run_pipeline([crop], PreprocessConfig(), np.zeros((1, 2, 7, 7), np.float32))
    assert not o.fallback[0]
    y0, x0, y1, x1 = o.boxes[0]
    assert (y1 - y0) < 0.6 * g.images.shape[1]  # a real zoom, not the whole canvas
