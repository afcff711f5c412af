"""Training on synthetic chromosomes: learns, resumes, and refuses bad input clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from edge_iapp.cli.main import app  # noqa: E402
from edge_iapp.preprocess import PreprocessConfig  # noqa: E402
from edge_iapp.train.data import ChromosomeDataset, prepare  # noqa: E402
from edge_iapp.train.run import RunConfig, load_model  # noqa: E402
from edge_iapp.train.trainer import RunConflict, TrainingDiverged, train  # noqa: E402

CLASSES = ["1", "6", "13", "21"]
"""Four classes of clearly different length and banding: chance is 1/4."""


def flat(text: str) -> str:
    """CLI output without any whitespace (rich wraps long lines, even inside paths)."""
    return "".join(text.split())


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def write_synthetic(root: Path, cells: int, classes: list[str], seed: int = 0) -> Path:
    """``root/<class>/clase<N>_<k>_S<cell>.1.png`` from :mod:`edge_iapp.data.synth`."""
    import cv2

    from edge_iapp.data.synth import synth_cell

    for i in range(cells):
        cell = synth_cell(np.random.default_rng([seed, i]), classes=classes)
        seen: dict[str, int] = {}
        for name, image in cell:
            k = seen.get(name, 0)
            seen[name] = k + 1
            number = {"X": 23, "Y": 24}.get(name, name)
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"clase{number}_{k}_S{i:04d}.1.png"), image)
    return root


def write_split(path: Path, train: list[int], val: list[int], test: list[int]) -> Path:
    def ids(cells):
        return [f"S{i:04d}" for i in cells]

    split = {"version": 1, "groups": {"train": ids(train), "val": ids(val), "test": ids(test)}}
    path.write_text(json.dumps(split))
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    """13 cells x 4 classes x 2 homologues = 104 images; cells 0-7 train, 8 val, 9-12 test."""
    root = tmp_path_factory.mktemp("synth")
    data = write_synthetic(root / "data", 13, [c for c in CLASSES for _ in range(2)])
    split = write_split(root / "split.json", list(range(8)), [8], [9, 10, 11, 12])
    return data, split


def _samples(data: Path, split: Path, part: str):
    from edge_iapp.train.loading import load_parts

    return load_parts(data, split).parts[part]


def test_tiny_model_beats_chance(synth, tmp_path) -> None:
    data, split = synth
    run, out = tmp_path / "run", tmp_path / "eval"
    runner = CliRunner()
    args = [
        "train",
        str(data),
        "--split",
        str(split),
        "--out",
        str(run),
        "--input-size",
        "40",
        "--canvas",
        "128",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["epochs"]) == 4
    assert (run / "last.pt").is_file() and (run / "split.json").is_file()
    assert len(list((run / "checkpoints").glob("epoch_*.pt"))) == 2  # --keep 2
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--data",
            str(data),
            "--split",
            str(split),
            "--out",
            str(out),
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["images"] == 32
    # chance is 1/4 on four balanced classes; at 40 px the part zoom is live (2x2 grid)
    assert record["review"]["part_fallback_fraction"] < 1.0
    assert record["main"]["accuracy"] >= 0.5, record["ablation"]
    assert (out / "report.md").is_file() and (out / "confusion.png").is_file()
    # the consistency step, per synthetic cell (4 test cells of 4 classes x 2)
    c = record["consistency"]
    assert c["cells"] == 4 and c["images_without_cell"] == 0
    assert c["accuracy_plain"] == record["main"]["accuracy"]
    assert c["accuracy"] - c["accuracy_plain"] == pytest.approx((c["fixed"] - c["broken"]) / 32)
    assert "karyotypeconsistencystep(4cells)" in result.output.replace(" ", "").replace("\n", "")
    assert "With the karyotype-level consistency step" in (out / "report.md").read_text()


def test_consistency_analysis_counts_fixed_broken_and_whole_cells() -> None:
    from edge_iapp.train.evaluate import consistency_analysis

    def row(first: int, second: int, p: float) -> np.ndarray:
        q = 0.3 if p < 0.9 else 0.03  # a doubtful call's runner-up is close
        r = np.full(24, (1 - p - q) / 22)
        r[first], r[second] = p, q
        return r

    # cell a: two confident 0s, a doubtful 0 that is really a 1 (fixed), a confident 1
    # cell b: labels say 0, 0, 0 (a trisomy); the doubtful third is moved to 1 (broken)
    probs = np.stack(
        [row(0, 1, 0.95), row(0, 1, 0.95), row(0, 1, 0.6), row(1, 0, 0.95)]
        + [row(0, 1, 0.95), row(0, 1, 0.95), row(0, 1, 0.6)]
        + [row(2, 1, 0.95)]
    )
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 2])
    c = consistency_analysis(labels, probs, ["a"] * 4 + ["b"] * 3 + [None])
    assert (c["fixed"], c["broken"], c["changed"]) == (1, 1, 2)
    assert c["accuracy_plain"] == c["accuracy"] == 7 / 8
    assert (c["cells"], c["images_without_cell"]) == (2, 1)
    assert (c["cells_all_right_plain"], c["cells_all_right"]) == (1, 1)


def test_resume_continues_from_checkpoint(synth, tmp_path) -> None:
    data, split = synth
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=32, canvas=128),
        epochs=2,
        batch_size=8,
        lr=0.01,
        seed=3,
        branches=("global", "object"),  # the three-branch path is trained in the test above
    )
    samples = _samples(data, split, "train")[::4]  # 16 images, all four classes
    prepared = prepare(samples, cfg.preprocess)
    straight = tmp_path / "straight"
    train(cfg, prepared, straight)
    # the same run, interrupted after epoch 1, then resumed to epoch 2
    resumed = tmp_path / "resumed"
    first = RunConfig.from_dict({**cfg.to_dict(), "epochs": 2})
    with pytest.raises(_Interrupt):
        train(first, prepared, resumed, on_epoch=lambda e, m: _stop_after(e, 1))
    state = torch.load(resumed / "last.pt", weights_only=False)
    assert state["epoch"] == 1
    with pytest.raises(RunConflict, match="--resume"):
        train(cfg, prepared, resumed)
    outcome = train(cfg, prepared, resumed, resume=True)
    assert outcome.epochs_done == 1 and outcome.last_epoch == 2
    a, _ = load_model(straight)
    b, _ = load_model(resumed)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=f"{name} differs after resume")
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]


class _Interrupt(Exception):
    pass


def _stop_after(entry: dict, epoch: int) -> None:
    if entry["epoch"] == epoch:
        raise _Interrupt  # a killed run: epoch 1's checkpoint is on disk, epoch 2 never ran


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synth, tmp_path) -> None:
    data, split = synth
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=32, canvas=128),
        epochs=3,
        batch_size=16,
        branches=("global",),
    )
    prepared = prepare(_samples(data, split, "train")[::4], cfg.preprocess)

    def poison(entry: dict, model) -> None:
        # a numeric blow-up after epoch 1 (its checkpoint is saved): the next loss is NaN
        with torch.no_grad():
            model.global_branch.head.weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(cfg, prepared, tmp_path / "run", on_epoch=poison)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["epoch"] == 1
    assert torch.isfinite(state["model"]["global_branch.head.weight"]).all()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "nan" in metrics["message"].lower()
    assert not (tmp_path / "run" / "checkpoints" / "epoch_002.pt").exists()


def test_cli_reports_divergence(synth, tmp_path) -> None:
    data, split = synth
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(data),
            "--split",
            str(split),
            "--out",
            str(tmp_path / "run"),
            "--input-size",
            "32",
            "--canvas",
            "128",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--branches",
            "global",
            "--lr",
            "1e30",
            "--max-per-class",
            "4",
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 3, result.output
    assert "diverged" in result.output and "Traceback" not in result.output
    assert "noepochhadfinished" in flat(result.output) or "lastgood" in flat(result.output)


def test_unreadable_files_are_skipped_and_reported(synth, tmp_path) -> None:
    data, split = synth
    bad = tmp_path / "data"
    bad.mkdir()
    for cls in ("1", "21"):  # 2 classes x 4 cells x 2 homologues, two of them broken
        (bad / cls).mkdir()
        for src in sorted((data / cls).glob("*S000[0-3]*.png")):
            (bad / cls / src.name).write_bytes(src.read_bytes())
    # header fine, pixel data destroyed: found when the image is read
    damaged = bytearray((bad / "1" / "clase1_0_S0002.1.png").read_bytes())
    damaged[60:-12] = bytes(len(damaged) - 72)
    (bad / "1" / "clase1_0_S0002.1.png").write_bytes(bytes(damaged))
    # empty file: found by the folder scan
    (bad / "21" / "clase21_5_S0001.1.png").write_bytes(b"")
    prepared = prepare(
        _samples(bad, write_split(tmp_path / "s.json", [0, 1, 2], [], [3]), "train"),
        PreprocessConfig(input_size=32, canvas=128),
    )
    assert len(prepared) == 11 and prepared.global_images.shape == (11, 32, 32)
    assert [Path(p).name for p, _ in prepared.skipped] == ["clase1_0_S0002.1.png"]
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(bad),
            "--split",
            str(tmp_path / "s.json"),
            "--out",
            str(tmp_path / "run"),
            "--input-size",
            "32",
            "--canvas",
            "128",
            "--epochs",
            "1",
            "--branches",
            "global",
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    output = flat(result.output)
    assert "clase21_5_S0001.1.png" in output and "clase1_0_S0002.1.png" in output
    assert "1unreadableskipped" in output


def test_single_class_and_unknown_groups_are_refused(synth, tmp_path) -> None:
    data, split = synth
    one = tmp_path / "one"
    (one / "4").mkdir(parents=True)
    for src in sorted((data / "6").glob("*.png"))[:6]:
        (one / "4" / src.name).write_bytes(src.read_bytes())
    runner = CliRunner()
    base = ["--input-size", "32", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r")]
    result = runner.invoke(
        app,
        [
            "train",
            str(one),
            "--split",
            str(write_split(tmp_path / "s1.json", [0, 1], [], [])),
            *base,
        ],
    )
    assert result.exit_code == 2 and "singleclass" in flat(result.output), result.output
    result = runner.invoke(
        app,
        [
            "train",
            str(data),
            "--split",
            str(write_split(tmp_path / "s2.json", [0, 1, 99], [], [])),
            *base,
        ],
    )
    assert result.exit_code == 2 and "S0099" in result.output, result.output
    result = runner.invoke(app, ["train", str(tmp_path / "nope"), "--split", str(split), *base])
    assert result.exit_code == 2 and "doesnotexist" in flat(result.output), result.output
    assert not (tmp_path / "r" / "last.pt").exists()


def test_dataset_flips_global_and_object_together(synth) -> None:
    data, split = synth
    cfg = PreprocessConfig(input_size=32, canvas=128)
    prepared = prepare(_samples(data, split, "val")[:8], cfg)
    ds = ChromosomeDataset(prepared, hflip=1.0)
    batch = ds.__getitems__(list(range(8)))
    g = (prepared.global_images[:, :, ::-1] / 255.0).astype(np.float32)
    o = (prepared.object_images[:, :, ::-1] / 255.0).astype(np.float32)
    np.testing.assert_allclose(batch["global"][:, 0].numpy(), g, atol=1e-7)
    np.testing.assert_allclose(batch["object"][:, 0].numpy(), o, atol=1e-7)
    # usable by a torch DataLoader: __getitems__ hands over whole batches
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=lambda b: b)
    assert next(iter(loader))["global"].shape == (4, 1, 32, 32)
    plain = ChromosomeDataset(prepared, hflip=0.0)[3]
    assert plain["global"].shape == (1, 32, 32) and int(plain["label"]) == int(prepared.labels[3])
    half = ChromosomeDataset(prepared, hflip=0.5, seed=1).__getitems__(list(range(8)) * 20)
    flipped = [
        bool(torch.equal(half["global"][i, 0], batch["global"][i % 8, 0])) for i in range(160)
    ]
    same_o = [
        bool(torch.equal(half["object"][i, 0], batch["object"][i % 8, 0])) for i in range(160)
    ]
    assert flipped == same_o  # one draw per sample for both images
    assert 40 < sum(flipped) < 120


def test_time_budget_fits_the_schedule_to_the_epochs_that_fit(synth, tmp_path) -> None:
    data, split = synth
    # a budget far below one epoch: one epoch runs, the schedule is cut to it and recorded
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=32, canvas=128),
        epochs=5,
        batch_size=8,
        branches=("global",),
        extra={"time_budget_min": 1e-4},
    )
    prepared = prepare(_samples(data, split, "train")[::4], cfg.preprocess)
    outcome = train(cfg, prepared, tmp_path / "run")
    assert outcome.last_epoch == 1
    saved = RunConfig.load(tmp_path / "run")
    assert saved.epochs == 1 and saved.extra["planned_epochs"] == 5
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_fit_in_budget"] == 1
    # a generous budget changes nothing
    cfg2 = RunConfig.from_dict({**cfg.to_dict(), "epochs": 2, "extra": {"time_budget_min": 60}})
    assert train(cfg2, prepared, tmp_path / "run2").last_epoch == 2
    assert "planned_epochs" not in RunConfig.load(tmp_path / "run2").extra


@pytest.mark.parametrize(
    ("seconds", "budget", "planned", "expected"),
    [
        ([20.0], 330.0, 50, None),  # warm-up epoch: wait for a steady one
        ([25.0, 6.5], 330.0, 50, 47),  # the H100 case: 47 fit, not 330 // 25 = 13
        ([40.0, 30.0], 330.0, 50, 10),  # 2 done + 260 s // 30 s
        ([40.0], 60.0, 5, 1),  # a second epoch as slow as the first would not fit
        ([100.0], 60.0, 5, 1),  # the budget is spent: the one epoch that ran
        ([10.0, 30.0], 25.0, 5, 2),  # over budget after epoch 2: stop there
        ([5.0], 60.0, 1, 1),  # one epoch planned: nothing to wait for
    ],
)
def test_time_budget_judges_by_the_first_steady_epoch(seconds, budget, planned, expected) -> None:
    from rich.console import Console

    from edge_iapp.train.trainer import _epochs_in_budget

    cfg = RunConfig(epochs=planned)
    quiet = Console(quiet=True)
    assert _epochs_in_budget(cfg, budget, seconds, quiet) == expected


def test_time_budget_holds_for_a_run_resumed_before_it_was_judged(
    synth, tmp_path, monkeypatch
) -> None:
    """Killed after epoch 1 (before the budget is judged at epoch 2) and resumed: still cut."""
    import itertools

    from edge_iapp.train import trainer

    clock = itertools.count(0.0, 5.0)  # every reading of the clock is 5 s later
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(clock))
    data, split = synth
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=32, canvas=128),
        epochs=12,
        batch_size=8,
        branches=("global",),
        extra={"time_budget_min": 1.0},
    )
    prepared = prepare(_samples(data, split, "train")[::4], cfg.preprocess)
    whole = train(RunConfig.from_dict(cfg.to_dict()), prepared, tmp_path / "whole")
    assert 2 <= whole.last_epoch < 12

    with pytest.raises(_Interrupt):
        cut = RunConfig.from_dict(cfg.to_dict())
        train(cut, prepared, tmp_path / "cut", on_epoch=lambda e, m: _stop_after(e, 1))
    assert "epochs_fit_in_budget" not in json.loads((tmp_path / "cut" / "metrics.json").read_text())
    resumed = train(RunConfig.load(tmp_path / "cut"), prepared, tmp_path / "cut", resume=True)
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert metrics["epochs_fit_in_budget"] == resumed.last_epoch < 12
    assert RunConfig.load(tmp_path / "cut").extra["planned_epochs"] == 12


def test_amp_needs_cuda(synth, tmp_path) -> None:
    data, split = synth
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(data),
            "--split",
            str(split),
            "--out",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "--amp",
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code != 0
    assert "--amp" in flat(result.output) and "CUDA" in result.output


def test_an_existing_run_is_refused_before_any_preprocessing(synth, tmp_path) -> None:
    data, split = synth
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"a finished run's weights")
    args = ["train", str(data), "--split", str(split), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--epochs", "1"])
    assert result.exit_code == 2 and "alreadyholdsarun" in flat(result.output)
    assert "preprocessed" not in result.output  # no minutes spent before saying so
    assert (tmp_path / "r" / "last.pt").read_bytes() == b"a finished run's weights"


def test_last_checkpoint_follows_the_newest_epoch_without_touching_older_ones(tmp_path) -> None:
    import torch

    from edge_iapp.train.checkpoint import epoch_checkpoint, load_checkpoint, save_checkpoint

    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, {"epoch": epoch, "w": torch.full((4,), float(epoch))}, keep=2)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 3 and torch.equal(last["w"], torch.full((4,), 3.0))
    # replacing last.pt must not rewrite the file it used to share bytes with
    assert load_checkpoint(epoch_checkpoint(tmp_path, 2))["epoch"] == 2
    assert not epoch_checkpoint(tmp_path, 1).exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_002.pt",
        "epoch_003.pt",
    ]


def test_device_batches_are_the_dataset_batches(synth) -> None:
    from edge_iapp.train.data import batches
    from edge_iapp.train.device_data import DeviceImages, device_batches

    data, split = synth
    prepared = prepare(_samples(data, split, "train")[:40], PreprocessConfig(input_size=32))
    for hflip in (0.0, 0.5):
        # what the trainer draws per epoch: the dataset's seed first, then the order
        old_rng, new_rng = np.random.default_rng(3), np.random.default_rng(3)
        ds = ChromosomeDataset(prepared, hflip=hflip, seed=int(old_rng.integers(2**31)))
        flip_rng = np.random.default_rng(int(new_rng.integers(2**31)))
        expected = list(batches(ds, 16, shuffle=True, rng=old_rng))
        got = list(
            device_batches(DeviceImages.put(prepared, "cpu"), 16, new_rng, flip_rng, hflip, "cpu")
        )
        assert [len(b["label"]) for b in got] == [16, 16, 8]
        for a, b in zip(expected, got, strict=True):
            for key in ("global", "object", "label", "index"):
                assert torch.equal(a[key], b[key]), key
            # the uint8 object image the part zoom reads is the float input before /255
            assert torch.equal(b["object_u8"], (b["object"][:, 0] * 255).round().to(torch.uint8))
            assert b["index"].device.type == "cpu" and b["index"].dtype == torch.int64


@pytest.mark.parametrize("n", [1, 25, 40, 1000])
@pytest.mark.parametrize("batch", [1, 7, 16, 26])
def test_one_flip_draw_per_epoch_is_the_per_batch_draws(n, batch) -> None:
    """device_batches draws an epoch's flips in one ``random(n)``; ChromosomeDataset draws
    them batch by batch. numpy's Generator gives the same doubles either way and ends in
    the same state (what is drawn next is the same too)."""
    whole, per_batch = np.random.default_rng(1234), np.random.default_rng(1234)
    at_once = whole.random(n)
    in_batches = np.concatenate([per_batch.random(min(batch, n - s)) for s in range(0, n, batch)])
    np.testing.assert_array_equal(at_once, in_batches)
    assert whole.bit_generator.state == per_batch.bit_generator.state
    assert whole.random() == per_batch.random()


def test_divergence_is_found_between_device_reads(synth, tmp_path, monkeypatch) -> None:
    """The loss is read every SYNC_EVERY steps; a NaN in between still stops the epoch,
    is reported with its own step, and nothing after it is saved."""
    import edge_iapp.train.trainer as trainer

    monkeypatch.setattr(trainer, "SYNC_EVERY", 3)
    data, split = synth
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=32, canvas=128),
        epochs=2,
        batch_size=4,
        branches=("global",),
    )
    prepared = prepare(_samples(data, split, "train")[:32], cfg.preprocess)
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def step_then_poison(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8 + 4:  # epoch 2 (8 steps each), after its 4th step
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_poison)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 5"):
        train(cfg, prepared, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["epoch"] == 1


@pytest.mark.parametrize(
    "option, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "0"], "--lr must be positive"),
        (["--backbone", "foonet"], "unknown backbone 'foonet'"),
        (["--r1", "0"], "--r1 (an SE reduction ratio) must be at least 1"),
        (["--hflip", "2"], "--hflip is a probability"),
        (["--threads", "-1"], "--threads must be at least 1"),
        (["--max-per-class", "0"], "--max-per-class must be at least 1, got 0"),
        (["--keep", "-1"], "--keep must be at least 0"),
    ],
)
def test_bad_recipe_options_are_refused_before_any_preprocessing(
    synth, tmp_path, option, message
) -> None:
    data, split = synth
    out = tmp_path / "r"
    args = ["train", str(data), "--split", str(split), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--input-size", "32", "--canvas", "96", *option])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "preprocessed" not in result.output  # said before minutes of preprocessing
    assert not out.exists()


def _damaged_run(root: Path, config: str | None = None, checkpoint: bytes = b"") -> Path:
    """A run folder whose config.json or last.pt is damaged (a copy cut short, an edit)."""
    root.mkdir()
    RunConfig(preprocess=PreprocessConfig(input_size=32, canvas=96)).save(root)
    if config is not None:
        (root / "config.json").write_text(config)
    (root / "last.pt").write_bytes(checkpoint)
    return root


@pytest.mark.parametrize(
    "config, checkpoint, message",
    [
        (None, b"", "last.ptisnotareadablecheckpoint"),  # zero bytes: click said "Aborted."
        (None, b"PK\x03\x04 cut short", "last.ptisnotareadablecheckpoint"),
        ('{"backbone": "resnet18", "colour": 1}', b"", "config.jsonisnotareadablerunconfig"),
        ("{oops", b"", "config.jsonisnotareadablerunconfig"),
    ],
)
def test_a_damaged_run_folder_is_a_clear_error(synth, tmp_path, config, checkpoint, message):
    data, split = synth
    run = _damaged_run(tmp_path / "run", config, checkpoint)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    evaluate = ["evaluate", str(run), "--data", str(data), "--split", str(split)]
    result = CliRunner().invoke(app, [*evaluate, "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in flat(result.output) and "Traceback" not in result.output
    resume = ["train", str(data), "--split", str(split), "--out", str(run), "--resume"]
    result = CliRunner().invoke(app, [*resume, "--device", "cpu", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert message in flat(result.output) and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # left as it was


@pytest.mark.parametrize(
    "command, options, message",
    [
        ("evaluate", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ("evaluate", ["--max-per-class", "-1"], "--max-per-class must be at least 1"),
        ("evaluate", ["--out", "{file}"], "is a file; choose an output folder"),
        ("ood-calibrate", ["--batch-size", "0"], "--batch-size must be at least 1"),
        ("ood-calibrate", ["--fit-per-class", "-1"], "--fit-per-class must be at least 0"),
        ("finetune", ["--out", "{file}"], "is a file; choose an output folder"),
        ("finetune", ["--max-test-per-class", "0"], "--max-test-per-class must be at least 1"),
        ("train", ["--out", "{file}"], "is a file; choose an output folder"),
        ("train", ["--cache", "{file}"], "--cache"),
        ("evaluate", ["--cache", "{file}"], "--cache"),
    ],
)
def test_bad_counts_and_outputs_are_refused_first(synth, tmp_path, command, options, message):
    """Said before anything is read: a batch size of 0 was a traceback after preprocessing,
    an --out that is a file a traceback after the predictions (or the fine-tuning)."""
    data, split = synth
    run, a_file = tmp_path / "run", tmp_path / "notes.txt"
    a_file.write_text("keep me")
    defaults = {
        "evaluate": [str(run), "--data", str(data), "--split", str(split), "--out", "ev"],
        "ood-calibrate": [str(run)],
        "finetune": [str(run), "--data", str(data), "--split", str(split), "--cells", "1"],
        "train": [str(data), "--split", str(split), "--epochs", "1"],
    }[command]
    options = [o.replace("{file}", str(a_file)) for o in options]
    if "--out" not in options and command in ("finetune", "train"):
        options += ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [command, *defaults, *options, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert a_file.read_text() == "keep me" and not (tmp_path / "out").exists()


def test_evaluate_warns_when_the_split_tests_what_the_run_trained_on(synth, tmp_path) -> None:
    import shutil

    from edge_iapp.model import create_model

    data, split = synth
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=32, canvas=96), extra={"data": str(data)}
    )
    cfg.save(run)
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet18").state_dict(), "epoch": 1}, run / "last.pt")
    shutil.copy(split, run / "split.json")  # as train keeps it
    # `data split` run again (another seed): cells 0-1 of the run's train part now test
    other = write_split(tmp_path / "other.json", [2, 3, 4, 5, 6, 7, 8], [9], [0, 1, 10])
    args = ["evaluate", str(run), "--data", str(data), "--device", "cpu", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--split", str(other), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    warning = "2ofthesplit's3testgroup(s)(S0000,S0001)wereinthetrainpartofthisrun"
    assert warning in flat(result.output) and "inflated" in result.output
    assert warning in flat(
        json.loads((tmp_path / "a" / "metrics.json").read_text())["info"]["warning"]
    )
    assert "inflated" in (tmp_path / "a" / "report.md").read_text()
    result = CliRunner().invoke(app, [*args, "--split", str(split), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "inflated" not in result.output


def test_resume_with_another_split_is_refused(synth, tmp_path) -> None:
    import shutil

    data, split = synth
    run = _damaged_run(tmp_path / "run", checkpoint=b"epoch 3's weights")
    shutil.copy(split, run / "split.json")  # as train keeps it
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    # `data split` run again: cells 0-1 of the run's train part would be tested
    other = write_split(tmp_path / "other.json", [2, 3, 4, 5, 6, 7, 8], [9], [0, 1, 10])
    args = ["train", str(data), "--split", str(other), "--out", str(run), "--resume"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--epochs", "4"])
    assert result.exit_code == 2, result.output
    assert "isnotthesplititwastrainedwith" in flat(result.output)
    assert "preprocessed" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_damaged_cache_file_is_prepared_again(synth, tmp_path) -> None:
    data, split = synth
    samples = _samples(data, split, "val")
    cfg = PreprocessConfig(input_size=32, canvas=96)
    first = prepare(samples, cfg, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("prepared_*.npz")
    cache.write_bytes(cache.read_bytes()[:100])  # a copy cut short, a full disk
    again = prepare(samples, cfg, cache_dir=tmp_path)
    assert np.array_equal(again.global_images, first.global_images)
    assert again.paths == first.paths
    assert np.array_equal(prepare(samples, cfg, cache_dir=tmp_path).labels, first.labels)
