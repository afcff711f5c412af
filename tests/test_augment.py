"""Training augmentations: each changes the crop the intended way, and only that way;
the online dataset matches the prepared path when nothing is augmented; a tiny run trains."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_iapp.train.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    augment_crop,
    bend_crop,
    blur_crop,
    contrast_crop,
    noise_crop,
    parse_augment,
    rotate_crop,
    scale_crop,
    sharpness_crop,
)

BG = 240


def banded(h: int = 70, w: int = 30, length: int = 56, width: int = 12) -> np.ndarray:
    """A clean vertical banded rod (dark bands 60, pale bands 150) on ``BG``: ``(h, w)``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (np.abs(yy - (h - 1) / 2) < length / 2) & (np.abs(xx - (w - 1) / 2) < width / 2)
    bands = np.where(np.sin(yy * 0.7) > 0, 60, 150)
    return np.where(inside, bands, BG).astype(np.uint8)


def dark_mask(crop: np.ndarray) -> np.ndarray:
    return crop < (BG + 150) // 2  # below halfway between the pale bands and the background


def darkness(crop: np.ndarray) -> float:
    """Total darkness below the background (what a chromosome 'weighs')."""
    return float(np.clip(BG - crop.astype(np.float64), 0, None).sum())


def hf_energy(crop: np.ndarray) -> float:
    """High-frequency energy: mean squared Laplacian."""
    return float((cv2.Laplacian(crop.astype(np.float64), cv2.CV_64F) ** 2).mean())


def major_axis_deg(mask: np.ndarray) -> float:
    """Angle of the mask's major axis from the vertical, degrees (image coordinates)."""
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    vals, vecs = np.linalg.eigh(cov)
    vx, vy = vecs[:, -1]
    if vy < 0:
        vx, vy = -vx, -vy
    return float(np.degrees(np.arctan2(vx, vy)))


# ---- each augmentation --------------------------------------------------------------


def test_contrast_is_a_monotone_tone_map_that_keeps_the_geometry() -> None:
    crop = banded()
    for gamma, stretch in ((0.7, 1.0), (1.4, 1.0), (1.0, 0.75), (1.0, 1.3), (0.8, 1.2)):
        out = contrast_crop(crop, BG, gamma, stretch)
        assert out.shape == crop.shape and out.dtype == np.uint8
        assert np.array_equal(out[crop == BG], crop[crop == BG])  # background kept
        order = np.argsort(crop, axis=None, kind="stable")
        assert np.all(np.diff(out.reshape(-1)[order].astype(int)) >= 0)  # monotone
        assert not np.array_equal(out, crop)
    # gamma < 1 lightens the bands, gamma > 1 darkens them; stretch scales darkness
    assert darkness(contrast_crop(crop, BG, 0.7, 1.0)) < darkness(crop)
    assert darkness(contrast_crop(crop, BG, 1.4, 1.0)) > darkness(crop)
    ratio = darkness(contrast_crop(crop, BG, 1.0, 0.75)) / darkness(crop)
    assert ratio == pytest.approx(0.75, abs=0.01)


@pytest.mark.parametrize("sigma", [2.0, 6.0])
def test_noise_has_the_requested_sigma(sigma: float) -> None:
    flat = np.full((200, 200), 128, np.uint8)
    out = noise_crop(flat, sigma, np.random.default_rng(0))
    diff = out.astype(np.float64) - 128
    assert diff.std() == pytest.approx(sigma, rel=0.05)
    assert abs(diff.mean()) < 0.1
    assert np.array_equal(noise_crop(flat, 0.0, np.random.default_rng(0)), flat)


def test_blur_lowers_and_sharpening_raises_high_frequency_energy() -> None:
    crop = banded()
    base = hf_energy(crop)
    blurred = blur_crop(crop, BG, 1.2)
    assert hf_energy(blurred) < 0.5 * base
    assert hf_energy(sharpness_crop(crop, BG, 1.0)) > 1.2 * base
    softer = sharpness_crop(crop, BG, -0.5)
    assert hf_energy(softer) < 0.8 * base
    for out in (blurred, softer):  # geometry and overall darkness kept
        assert out.shape == crop.shape
        assert darkness(out) == pytest.approx(darkness(crop), rel=0.03)
    assert np.array_equal(blur_crop(crop, BG, 0.0), crop)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_scale_changes_the_length_by_the_factor(factor: float) -> None:
    crop = banded(h=80, w=30, length=60)
    out = scale_crop(crop, factor)
    assert out.shape == (round(80 * factor), round(30 * factor))
    rows = np.flatnonzero(dark_mask(out).any(axis=1))
    length = rows[-1] - rows[0] + 1
    assert length == pytest.approx(60 * factor, abs=2)
    # intensities are not changed: the darkest band stays as dark
    assert abs(int(out.min()) - int(crop.min())) <= 2


@pytest.mark.parametrize("degrees", [-15.0, 10.0])
def test_rotation_turns_the_axis_and_cuts_nothing(degrees: float) -> None:
    crop = banded()
    out = rotate_crop(crop, BG, degrees)
    assert out.shape[0] >= crop.shape[0] and out.shape[1] > crop.shape[1]
    assert darkness(out) == pytest.approx(darkness(crop), rel=0.03)
    # OpenCV's positive angle turns counter-clockwise on screen: the bottom goes right
    assert major_axis_deg(dark_mask(out)) == pytest.approx(degrees, abs=2.0)
    assert np.all(out[0] == BG) and np.all(out[-1] == BG)  # the new corners are background


@pytest.mark.parametrize("shape", ["arc", "s"])
def test_bend_displaces_across_the_long_axis_and_keeps_the_area(shape: str) -> None:
    crop = banded(h=80, w=30, length=70)
    out = bend_crop(crop, BG, 0.1, shape)
    assert out.shape[0] == crop.shape[0] and out.shape[1] > crop.shape[1]
    assert dark_mask(out).sum() == pytest.approx(dark_mask(crop).sum(), rel=0.05)
    assert darkness(out) == pytest.approx(darkness(crop), rel=0.03)
    cx = [np.flatnonzero(dark_mask(out)[y]).mean() for y in (8, 20, 40, 60, 72)]
    middle_shift = cx[2] - cx[0] if shape == "arc" else cx[1] - cx[2]
    assert abs(middle_shift) > 0.05 * 80  # bent by several pixels
    if shape == "arc":
        assert abs(cx[0] - cx[4]) < 1.5  # both ends stay in line
    # a wide crop is bent across its long (horizontal) axis too
    wide = bend_crop(crop.T.copy(), BG, 0.1, shape)
    assert wide.shape[1] == crop.shape[0] and wide.shape[0] > crop.shape[1]


def test_augment_crop_is_deterministic_safe_and_off_when_nothing_is_enabled() -> None:
    crop = banded()
    cfg = AugmentConfig(enabled=frozenset(AUGMENTATIONS), p=1.0)
    a = augment_crop(crop, BG, np.random.default_rng(5), cfg)
    b = augment_crop(crop, BG, np.random.default_rng(5), cfg)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.ndim == 2
    assert not np.array_equal(augment_crop(crop, BG, np.random.default_rng(6), cfg), a)
    assert augment_crop(crop, BG, np.random.default_rng(0), AugmentConfig()) is crop
    for tiny in (np.zeros((1, 1), np.uint8), np.full((1, 7), 200, np.uint8), banded(3, 2, 2, 1)):
        for seed in range(20):
            out = augment_crop(tiny, BG, np.random.default_rng(seed), cfg)
            assert out.dtype == np.uint8 and out.ndim == 2 and min(out.shape) >= 1
    with pytest.raises(ValueError, match="uint8"):
        augment_crop(crop.astype(np.float32), BG, np.random.default_rng(0), cfg)


def test_parse_augment() -> None:
    assert parse_augment("none").enabled == frozenset()
    assert parse_augment("").enabled == frozenset()
    assert parse_augment([]).enabled == frozenset()
    assert parse_augment("all").names == list(AUGMENTATIONS)
    assert parse_augment(" Blur, scale ").names == ["scale", "blur"]
    assert parse_augment(["noise", "bend"]).names == ["noise", "bend"]
    with pytest.raises(ValueError) as err:
        parse_augment("scale,jitter")
    assert "jitter" in str(err.value)
    assert all(name in str(err.value) for name in AUGMENTATIONS)
    with pytest.raises(ValueError, match="range"):
        AugmentConfig(scale=(1.2, 0.8))


# ---- the online dataset -------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


CLASSES = ["1", "6", "13", "21"]


def write_synthetic(root: Path, cells: int, seed: int = 0) -> Path:
    """``root/<class>/clase<N>_<k>_S<cell>.1.png``, 2 homologues of each of ``CLASSES``."""
    from edge_iapp.data.synth import synth_cell

    for i in range(cells):
        cell = synth_cell(np.random.default_rng([seed, i]), classes=[c for c in CLASSES * 2])
        seen: dict[str, int] = {}
        for name, image in cell:
            k = seen.get(name, 0)
            seen[name] = k + 1
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"clase{name}_{k}_S{i:04d}.1.png"), image)
    return root


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    """6 cells x 8 images; cells 0-3 train, 4 val, 5 test."""
    root = tmp_path_factory.mktemp("augsynth")
    data = write_synthetic(root / "data", 6)
    ids = [f"S{i:04d}" for i in range(6)]
    split = {"version": 1, "groups": {"train": ids[:4], "val": ids[4:5], "test": ids[5:]}}
    (root / "split.json").write_text(json.dumps(split))
    return data, root / "split.json"


def _train_samples(data: Path, split: Path):
    from edge_iapp.train.loading import load_parts

    return load_parts(data, split).parts["train"]


def test_online_dataset_matches_the_prepared_path(synth, tmp_path) -> None:
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.data import ChromosomeDataset, load_raw, prepare, prepare_raw
    from edge_iapp.train.online import OnlineDataset

    data, split = synth
    samples = _train_samples(data, split)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    samples = [*samples, type(samples[0])(bad, 0, "1", "S9999", "S9999")]
    cfg = PreprocessConfig(input_size=48, canvas=128)
    prepared = prepare(samples, cfg)
    raw = load_raw(samples)
    assert len(raw) == len(prepared) == len(samples) - 1
    assert [p for p, _ in raw.skipped] == [str(bad)]
    again = prepare_raw(raw, cfg)
    assert np.array_equal(again.global_images, prepared.global_images)
    assert np.array_equal(again.object_images, prepared.object_images)

    ref = ChromosomeDataset(prepared, hflip=0.5, seed=7)
    same = OnlineDataset(raw, cfg, parse_augment("none"), hflip=0.5, seed=7)
    augmented = OnlineDataset(raw, cfg, parse_augment("all"), hflip=0.5, seed=7)
    order = np.random.default_rng(0).permutation(len(raw))
    for start in range(0, len(raw), 10):
        idx = order[start : start + 10]
        a, b, c = ref.__getitems__(idx), same.__getitems__(idx), augmented.__getitems__(idx)
        assert set(a) == set(b) == set(c) == {"global", "object", "label", "index"}
        for key in a:
            assert a[key].dtype == b[key].dtype == c[key].dtype
            assert a[key].shape == b[key].shape == c[key].shape
            assert torch.equal(a[key], b[key])  # augmentation none: the prepared path exactly
        assert torch.equal(a["label"], c["label"])
        assert not torch.equal(a["global"], c["global"])
    # deterministic given the seed, and another seed draws other augmentations
    first = OnlineDataset(raw, cfg, parse_augment("all"), hflip=0.5, seed=3).__getitems__([0, 1])
    second = OnlineDataset(raw, cfg, parse_augment("all"), hflip=0.5, seed=3).__getitems__([0, 1])
    other = OnlineDataset(raw, cfg, parse_augment("all"), hflip=0.5, seed=4).__getitems__([0, 1])
    assert torch.equal(first["global"], second["global"])
    assert not torch.equal(first["global"], other["global"])


def test_threaded_batches_equal_the_plain_loop(synth) -> None:
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.data import batches, load_raw
    from edge_iapp.train.online import OnlineDataset, online_batches

    data, split = synth
    raw = load_raw(_train_samples(data, split))
    cfg = PreprocessConfig(input_size=40, canvas=128)

    def epoch(kind: str) -> list[dict]:
        ds = OnlineDataset(raw, cfg, parse_augment("all"), hflip=0.5, seed=11)
        rng = np.random.default_rng([0, 3])
        if kind == "plain":
            return list(batches(ds, 7, shuffle=True, rng=rng))
        return list(online_batches(ds, 7, rng, workers=0 if kind == "inline" else 3))

    plain, inline, threaded = epoch("plain"), epoch("inline"), epoch("threads")
    assert len(plain) == len(inline) == len(threaded) == -(-len(raw) // 7)
    for a, b, c in zip(plain, inline, threaded, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])


def test_scale_is_drawn_once_per_cell_and_cell_mode_sizes_whole_cells(synth) -> None:
    from edge_iapp.preprocess import PreprocessConfig, rescale_to_reference
    from edge_iapp.train.data import load_raw, prepare, prepare_raw
    from edge_iapp.train.online import OnlineDataset

    data, split = synth
    raw = load_raw(_train_samples(data, split))
    scale_only = AugmentConfig(enabled=frozenset({"scale"}), p=1.0)
    cfg = PreprocessConfig(input_size=48, canvas=128)
    ds = OnlineDataset(raw, cfg, scale_only, seed=1)
    assert set(ds.cell_scale) == set(raw.cells)
    for k in range(len(raw)):
        factor = ds.cell_scale[raw.cells[k]]
        assert ds.augmented(k).shape == tuple(max(1, round(n * factor)) for n in raw.crops[k].shape)
    # cell mode: the same arrays as prepare() without augmentation
    cell_cfg = PreprocessConfig(
        input_size=48, canvas=128, size_mode="cell", min_cell_chromosomes=4, reference_length=30
    )
    prepared = prepare(_train_samples(data, split), cell_cfg)
    assert np.array_equal(prepare_raw(raw, cell_cfg).global_images, prepared.global_images)
    none = OnlineDataset(raw, cell_cfg, parse_augment("none"), seed=1)
    assert np.array_equal(none.images(np.arange(len(raw)))[0], prepared.global_images)
    # and a cell's common scale factor is undone by the cell-relative size
    plain = rescale_to_reference(raw.crops, list(raw.backgrounds), raw.cells, cell_cfg)
    cell_ds = OnlineDataset(raw, cell_cfg, scale_only, seed=1)
    assert cell_ds.sized is not None
    for k in range(len(raw)):
        assert abs(cell_ds.sized[k].shape[0] - plain.crops[k].shape[0]) <= 3
    batch = cell_ds.__getitems__([0, 1, 2])
    assert batch["global"].shape == (3, 1, 48, 48)


def test_tiny_training_run_with_all_augmentations(synth, tmp_path) -> None:
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    data, split = synth
    run = tmp_path / "run"
    base = ["train", str(data), "--split", str(split), "--out", str(run)]
    opts = ["--input-size", "32", "--canvas", "128", "--epochs", "1", "--batch-size", "8"]
    opts += ["--threads", "1", "--device", "cpu", "--backbone", "resnet18"]
    runner = CliRunner()
    result = runner.invoke(app, [*base, *opts, "--augment", "all"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["epochs"]) == 1
    assert np.isfinite(metrics["epochs"][0]["train_loss"])
    config = json.loads((run / "config.json").read_text())
    assert config["extra"]["augment"] == list(AUGMENTATIONS)
    bad = runner.invoke(app, [*base[:-1], str(tmp_path / "run2"), *opts, "--augment", "warp"])
    assert bad.exit_code != 0
    assert "warp" in bad.output and "sharpness" in bad.output
    assert not (tmp_path / "run2" / "config.json").exists()
