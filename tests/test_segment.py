"""Segmentation of a synthetic metaphase spread composed in the test."""

from __future__ import annotations

import numpy as np
import pytest

from edge_iapp.scoring.segment import SegmentConfig, segment


def compose_spread(make_crop, n: int = 46, seed: int = 0, cross: bool = True) -> np.ndarray:
    """``n`` separate crops on a white canvas in a jittered grid, plus one crossing pair.

    Returns:
        ``(H, W)`` uint8 dark-on-white image.
    """
    rng = np.random.default_rng(seed)
    canvas = np.full((1000, 1400), 243, dtype=np.uint8)
    cols = 10
    for i in range(n):
        h = int(rng.integers(30, 110))
        crop = make_crop(h, 22, seed + i)
        if i % 5 == 0:
            crop = np.ascontiguousarray(crop.T)  # some lie sideways
        r, c = divmod(i, cols)
        y = 20 + r * 150 + int(rng.integers(0, 20))
        x = 20 + c * 135 + int(rng.integers(0, 20))
        region = canvas[y : y + crop.shape[0], x : x + crop.shape[1]]
        np.minimum(region, crop, out=region)
    if cross:
        a = make_crop(100, 22, 999)
        b = np.ascontiguousarray(a.T)
        y, x = 820, 900
        region = canvas[y : y + 100, x + 39 : x + 61]
        np.minimum(region, a, out=region)
        region = canvas[y + 39 : y + 61, x : x + 100]
        np.minimum(region, b, out=region)
    return canvas


def test_spread_count_and_crossing_pair_is_a_cluster(make_crop):
    image = compose_spread(make_crop)
    seg = segment(image)
    singles = [o for o in seg.objects if not o.cluster]
    assert len(singles) == 46
    assert len(seg.clusters) == 1
    cluster = seg.clusters[0]
    x, y, w, h = cluster.bbox
    assert x < 950 < x + w and y < 870 < y + h and w >= 80 and h >= 80  # the cross centre
    assert "branched" in cluster.cluster_reasons and cluster.concavities >= 4
    assert not seg.inverted
    # Crops are dark-on-white, tight around one object, ids in raster order.
    for o in singles:
        assert o.crop.dtype == np.uint8 and o.crop.min() < 120 and o.crop[0, 0] == 255
    ids = [o.object_id for o in seg.objects]
    assert ids == [f"obj_{i:03d}" for i in range(1, 48)]


def test_two_large_chromosomes_side_by_side_are_a_cluster(make_crop):
    image = compose_spread(make_crop, cross=False)
    a = make_crop(110, 22, 500)
    pair = np.full((110, 40), 243, np.uint8)
    np.minimum(pair[:, :22], a, out=pair[:, :22])
    np.minimum(pair[:, 18:], a, out=pair[:, 18:])  # overlapping by 4 px: one component
    image[820:930, 900:940] = np.minimum(image[820:930, 900:940], pair)
    seg = segment(image)
    assert len(seg.clusters) == 1 and "large_area" in seg.clusters[0].cluster_reasons
    assert sum(not o.cluster for o in seg.objects) == 46


def test_bright_on_dark_spread_gives_the_same_objects(make_crop):
    image = compose_spread(make_crop, seed=3)
    seg = segment(image)
    inv = segment(255 - image)
    assert inv.inverted
    assert [o.bbox for o in inv.objects] == [o.bbox for o in seg.objects]


def test_noise_is_dropped_and_blank_images_give_no_objects(make_crop):
    image = compose_spread(make_crop, n=10, cross=False)
    image[950, 10] = 0  # a speck, removed by the opening
    image[950:953, 40:43] = 0  # 9 px of dust: below min_area
    seg = segment(image, SegmentConfig(open_kernel=0))
    assert len(seg.objects) == 10
    assert seg.dropped >= 2
    blank = segment(np.full((200, 200), 250, np.uint8))
    assert blank.objects == [] and "no_objects" in blank.warnings


@pytest.mark.parametrize("threshold", [None, 200])
def test_fixed_or_otsu_threshold(make_crop, threshold):
    seg = segment(compose_spread(make_crop, n=12, cross=False), SegmentConfig(threshold=threshold))
    assert len(seg.objects) == 12
    assert seg.threshold == (200 if threshold else seg.threshold)


def test_whole_image_cell_with_too_many_objects_is_not_classified(tmp_path):
    import cv2

    from edge_iapp.scoring.cell import CellOptions, load_objects
    from edge_iapp.scoring.layout import CellJob

    image = np.full((700, 700), 250, np.uint8)
    for i in range(450):  # 450 separate dark dots: a noise image, not a spread
        r, c = divmod(i, 21)
        image[10 + r * 30 : 18 + r * 30, 10 + c * 30 : 18 + c * 30] = 20
    cell = tmp_path / "slide" / "cell"
    cell.mkdir(parents=True)
    cv2.imwrite(str(cell / "noise.png"), image)
    job = CellJob("slide", "cell", cell, tmp_path / "out" / "cell")
    objects, kind, info, errors = load_objects(job, CellOptions())
    assert kind == "whole_image" and info["objects"] == 450
    assert [o.kind for o in objects] == ["unreadable"]
    assert "not a metaphase image" in errors[0]["error"]
