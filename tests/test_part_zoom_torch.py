"""The torch part zoom (training path) draws the same arrays as the reference preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_iapp.model.part_zoom import (  # noqa: E402
    largest_component_torch,
    part_inputs,
    part_zoom_torch,
)
from edge_iapp.preprocess import PreprocessConfig, part_zoom  # noqa: E402
from edge_iapp.preprocess.part_aware import largest_component, part_mask  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _random_case(rng: np.random.Generator, n: int, s: int, grid: int):
    images = rng.integers(0, 256, size=(n, s, s), dtype=np.uint8)
    maps = rng.standard_normal((n, 2, grid, grid)).astype(np.float32)
    # a few constant maps (empty masks -> fallback) and sparse ones (many small regions)
    maps[0] = 1.0
    maps[1, 0] = np.where(rng.random((grid, grid)) < 0.3, 5.0, 0.0)
    maps[1, 1] = np.where(rng.random((grid, grid)) < 0.5, 5.0, 0.0)
    return images, maps


@pytest.mark.parametrize(("s", "grid"), [(64, 2), (96, 3), (128, 4), (224, 7), (100, 5)])
def test_torch_part_zoom_equals_reference(s: int, grid: int) -> None:
    rng = np.random.default_rng(s * 10 + grid)
    images, maps = _random_case(rng, 24, s, grid)
    ref = part_zoom(images, maps, PreprocessConfig(input_size=max(s, 16)))
    got = part_zoom_torch(torch.from_numpy(images), torch.from_numpy(maps))
    np.testing.assert_array_equal(got.masks.numpy(), ref.masks)
    np.testing.assert_array_equal(got.boxes.numpy(), ref.boxes.astype(np.int64))
    np.testing.assert_array_equal(got.fallback.numpy(), ref.fallback)
    assert ref.fallback[0] and not ref.fallback.all()
    diff = np.abs(got.images.numpy().astype(int) - ref.images.astype(int))
    assert diff.max() <= 1


def test_largest_component_ties_and_diagonals() -> None:
    rng = np.random.default_rng(7)
    masks = rng.random((200, 7, 7)) < 0.45
    # hand-made tie: two 2-pixel regions; the first in raster order wins
    tie = np.zeros((7, 7), bool)
    tie[5, 0:2] = True
    tie[0, 5:7] = True
    masks[0] = tie
    # diagonal neighbours are connected (8-connectivity)
    diag = np.zeros((7, 7), bool)
    diag[[0, 1, 2, 3], [0, 1, 2, 3]] = True
    diag[6, 6] = True
    masks[1] = diag
    got = largest_component_torch(torch.from_numpy(masks)).numpy()
    ref = np.stack([largest_component(m) for m in masks])
    np.testing.assert_array_equal(got, ref)
    assert got[0, 0, 5] and not got[0, 5, 0]
    assert got[1].sum() == 4


def test_largest_component_along_a_long_snake() -> None:
    """A serpentine region needs many propagation rounds (checked only every few)."""
    snake = np.zeros((9, 9), bool)
    snake[0::2, :] = True  # rows 0, 2, 4, 6, 8 ...
    for k, row in enumerate(range(1, 9, 2)):  # ... joined at alternating ends
        snake[row, -1 if k % 2 == 0 else 0] = True
    blob = np.zeros((9, 9), bool)
    blob[2:5, 2:5] = True  # smaller than the snake
    masks = np.stack([snake, snake & ~np.eye(9, dtype=bool), blob])
    got = largest_component_torch(torch.from_numpy(masks)).numpy()
    ref = np.stack([largest_component(m) for m in masks])
    np.testing.assert_array_equal(got, ref)
    assert got[0].sum() == snake.sum()  # the whole snake is one region


def test_part_inputs_float_roundtrip() -> None:
    rng = np.random.default_rng(3)
    images, maps = _random_case(rng, 6, 64, 2)
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None].requires_grad_(True)
    m = torch.from_numpy(maps).requires_grad_(True)
    out = part_inputs(x, m)
    assert out.shape == (6, 1, 64, 64) and out.dtype == torch.float32
    assert not out.requires_grad
    ref = part_zoom(images, maps, PreprocessConfig(input_size=64)).images
    assert np.abs(np.floor(out[:, 0].numpy() * 255 + 0.5) - ref).max() <= 1


def test_part_mask_matches_reference_mask_step() -> None:
    from edge_iapp.model.part_zoom import part_mask_torch

    rng = np.random.default_rng(11)
    maps = (rng.standard_normal((50, 2, 4, 4)) * 1e3).astype(np.float32)
    np.testing.assert_array_equal(part_mask_torch(torch.from_numpy(maps)).numpy(), part_mask(maps))
    with pytest.raises(ValueError, match="part maps"):
        part_mask_torch(torch.zeros(2, 3, 4, 4))


def _snake(size: int) -> np.ndarray:
    """Rows 0, 2, 4, ... joined at alternating ends: one region, a long 1-pixel path."""
    snake = np.zeros((size, size), bool)
    snake[0::2, :] = True
    for k, row in enumerate(range(1, size, 2)):
        snake[row, -1 if k % 2 == 0 else 0] = True
    return snake


def _spiral(size: int) -> np.ndarray:
    """A square spiral from the top-left corner inwards, its turns one pixel apart.

    Walks clockwise; a step may only touch the last two pixels of the path, so the
    region is one 8-connected path without shortcuts between its turns.
    """
    spiral = np.zeros((size, size), bool)
    path = [(0, 0)]
    spiral[0, 0] = True
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    d = 0
    while True:
        for turn in (0, 1):
            dy, dx = moves[(d + turn) % 4]
            y, x = path[-1][0] + dy, path[-1][1] + dx
            if not (0 <= y < size and 0 <= x < size) or spiral[y, x]:
                continue
            touched = {
                (y + a, x + b)
                for a in (-1, 0, 1)
                for b in (-1, 0, 1)
                if 0 <= y + a < size and 0 <= x + b < size and spiral[y + a, x + b]
            }
            if touched <= set(path[-2:]):
                d = (d + turn) % 4
                spiral[y, x] = True
                path.append((y, x))
                break
        else:
            return spiral


def _rounds_needed(mask: np.ndarray) -> int:
    """Longest 8-connected geodesic distance from a region's first raster pixel (BFS)."""
    h, w = mask.shape
    dist = np.full((h, w), -1)
    worst = 0
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if dist[y0, x0] >= 0:
            continue
        dist[y0, x0], queue = 0, [(y0, x0)]
        for y, x in queue:
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and dist[yy, xx] < 0:
                        dist[yy, xx] = dist[y, x] + 1
                        worst = max(worst, dist[yy, xx])
                        queue.append((yy, xx))
    return worst


def test_largest_component_fixed_rounds_equal_checked_rounds(monkeypatch) -> None:
    """Without convergence checks (no device-to-host sync) the regions are the same."""
    import edge_iapp.model.part_zoom as pz

    rng = np.random.default_rng(23)
    shapes = [(2, 2), (4, 4), (7, 7), (8, 8), (3, 9)]
    cases = [rng.random((60, h, w)) < p for h, w in shapes for p in (0.3, 0.5, 0.7)]
    worst = np.stack([_snake(8), _spiral(8), _snake(8).T[::-1], _spiral(8)[:, ::-1]])
    assert _rounds_needed(_spiral(8)) >= 30 and _rounds_needed(_snake(8)) >= 28  # of 63
    cases.append(worst)
    cases.append(np.stack([_snake(9), _spiral(9), _spiral(11)[:9, :9]]))  # > 64 cells
    for masks in cases:
        t = torch.from_numpy(masks)
        ref = np.stack([largest_component(m) for m in masks])
        monkeypatch.setattr(pz, "SYNC_FREE_MAX_CELLS", 10**6)  # fixed h*w - 1 rounds
        fixed = largest_component_torch(t).numpy()
        monkeypatch.setattr(pz, "SYNC_FREE_MAX_CELLS", 0)  # check every few rounds
        checked = largest_component_torch(t).numpy()
        np.testing.assert_array_equal(fixed, checked)
        np.testing.assert_array_equal(fixed, ref)
    assert largest_component_torch(torch.from_numpy(worst)).numpy().sum(axis=(1, 2)).tolist() == [
        int(m.sum()) for m in worst
    ]


def test_small_grids_skip_the_convergence_check(monkeypatch) -> None:
    """Grids up to SYNC_FREE_MAX_CELLS never read the device (torch.equal waits for it)."""
    import edge_iapp.model.part_zoom as pz

    def no_read(*args, **kwargs):
        raise AssertionError("convergence check on a small grid")

    monkeypatch.setattr(torch, "equal", no_read)
    rng = np.random.default_rng(5)
    masks = np.concatenate([rng.random((20, 8, 8)) < 0.5, _spiral(8)[None]])
    got = largest_component_torch(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(got, np.stack([largest_component(m) for m in masks]))
    images, maps = _random_case(rng, 8, 224, 7)
    part_zoom_torch(torch.from_numpy(images), torch.from_numpy(maps))
    with pytest.raises(AssertionError, match="convergence check"):
        largest_component_torch(torch.from_numpy(rng.random((2, 9, 9)) < 0.5))
    assert pz.SYNC_FREE_MAX_CELLS >= 49  # the 7 x 7 grid at 224 px
