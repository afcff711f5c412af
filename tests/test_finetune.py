"""``edge-iapp finetune``: K cells of a new lab, before/after scores, clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_train import CLASSES, flat, write_split, write_synthetic  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from edge_iapp.cli.main import app  # noqa: E402
from edge_iapp.train.finetune import FinetuneError, of_cells, pick_cells  # noqa: E402

BASE_SEED = 123
"""The base run's weights come from another seed than the fine-tuning run's (0), so a
fine-tuned model that ignored ``init_from`` would not match the base."""


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A new lab: 10 synthetic cells (seed 1), cell 0 lacks class 21; and an untrained base run.

    Train part: cells 0-5, val 6, test 7-9 (24 test images).
    """
    from edge_iapp.model import create_model
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.run import RunConfig

    root = tmp_path_factory.mktemp("finetune")
    data = write_synthetic(root / "data", 10, [c for c in CLASSES for _ in range(2)], seed=1)
    for p in (data / "21").glob("*_S0000.1.png"):
        p.unlink()
    split = write_split(root / "split.json", list(range(6)), [6], [7, 8, 9])
    run = root / "base"
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=40, canvas=128),
        batch_size=8,
        lr=0.02,
        extra={
            "time_budget_min": 0.001,  # must not carry over into the fine-tuning
            "adapted": {"run": "r0", "slides": "s", "cells": ["c"]},  # replaced by it
        },
    )
    run.mkdir()
    cfg.save(run)
    torch.manual_seed(BASE_SEED)
    torch.save({"model": create_model("resnet18").state_dict(), "epoch": 1}, run / "last.pt")
    return run, data, split


def _finetune(run, data, split, out, *extra: str):
    args = ["finetune", str(run), "--data", str(data), "--split", str(split), "--out", str(out)]
    return CliRunner().invoke(app, [*args, *extra, "--device", "cpu", "--threads", "1"])


def _cells(names) -> list[SimpleNamespace]:
    """One stand-in sample per synthetic cell name ``S<case>.<cell>`` (group: the case)."""
    return [SimpleNamespace(group=c.split(".")[0], cell=c) for c in names]


TRAIN_CELLS = _cells(f"S{i:04d}.1" for i in range(6))
"""The ``lab`` fixture's train part, one stand-in per cell."""


def test_pick_cells_is_seeded_and_nested() -> None:
    samples = [SimpleNamespace(group=f"g{i % 4}", cell=f"c{i}") for i in range(20)] * 3
    five = pick_cells(samples, 5, seed=0)
    assert five == pick_cells(samples, 5, seed=0) and len(set(five)) == 5
    assert set(pick_cells(samples, 1, seed=0)) <= set(five) <= set(pick_cells(samples, 20, 0))
    assert pick_cells(samples, 5, seed=1) != five
    assert pick_cells(samples, 0) == []


def test_cells_are_keyed_by_group() -> None:
    """Two cases' cell "1" are two cells; a bare name (older runs' records) matches both."""
    samples = [SimpleNamespace(group=g, cell="1", path=f"{g}/{i}") for g in "ab" for i in range(2)]
    assert pick_cells(samples, 2) == ["a/1", "b/1"]
    with pytest.raises(FinetuneError, match="only 2 cell"):
        pick_cells(samples, 3)
    assert [s.path for s in of_cells(samples, ["b/1"])] == ["b/0", "b/1"]
    assert len(of_cells(samples, ["1"])) == 4


def test_finetune_trains_and_reports_before_and_after(lab, tmp_path) -> None:
    run, data, split = lab
    out = tmp_path / "run2"
    result = _finetune(run, data, split, out, "--cells", "3", "--epochs", "3", "--lr", "0.01")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "finetune.json").read_text())
    assert len(record["cells"]) == 3 and record["cells_requested"] == 3
    assert record["cells"] == pick_cells(TRAIN_CELLS, 3, 0)
    assert set(record["cells"]) <= {f"S{i:04d}/S{i:04d}.1" for i in range(6)}
    assert record["test_images"] == 24 and record["test_cells"] == 3
    for key in ("before", "after"):
        s = record[key]
        assert s["images"] == 24
        assert 0.0 <= s["fused"]["accuracy"] <= 1.0 and 0.0 <= s["fused"]["macro_f1"] <= 1.0
        assert set(s["branches"]) == {"global", "object", "part"}
    assert record["max_abs_weight_change"] > 0
    # an untrained base is at chance (1/4); 3 labelled cells lift it
    assert record["after"]["fused"]["accuracy"] > record["before"]["fused"]["accuracy"]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["epochs"], cfg["lr"], cfg["batch_size"]) == (3, 0.01, 8)  # the rest is RUN's
    assert cfg["preprocess"] == json.loads((run / "config.json").read_text())["preprocess"]
    assert cfg["extra"]["finetune"]["cells"] == record["cells"]
    assert "time_budget_min" not in cfg["extra"] and "adapted" not in cfg["extra"]
    assert (out / "last.pt").is_file() and (out / "split.json").is_file()
    # RUN2's own OOD calibration: threshold on the new lab's val cell, Gaussians on the
    # fine-tuning images, for RUN2's final weights; the after score reviews with it
    from edge_iapp.ioutil import sha256_file
    from edge_iapp.train.ood_run import load_run_ood

    ood, note = load_run_ood(out)
    assert ood is not None, note
    assert ood["source"]["part"] == "val" and ood["source"]["images"] == 8  # cell 6
    assert ood["source"]["fit_images"] == record["train_images"]
    assert "ood.json" in record["ood_calibration_out"]
    assert record["after"]["ood"]["errors"] + record["after"]["ood"]["correct"] == 24
    assert "reviewflagsafterfine-tuning" in flat(result.output)
    # RUN2's review threshold, placed on the labelled val cell for export (one cell: no
    # spread, so the placed T itself)
    review = json.loads((out / "review.json").read_text())
    assert review["source"]["part"] == "val" and review["source"]["images"] == 8
    assert review["source"]["cells"] == 1 and review["spread"] is None
    assert review["rule"] == "ood or confidence"  # placed with RUN2's own ood.json
    assert review["ood_sha256"] == sha256_file(out / "ood.json")
    assert review["min_confidence"] == review["placed"]["min_confidence"] or (
        review["min_confidence"] is None and not review["chosen"].startswith(("upper", "placed"))
    )
    assert record["review_threshold_out"] in " ".join(result.output.split())
    # ood-calibrate on RUN2 fits the Gaussians as finetune did (its fine-tuning cells only,
    # not the new lab's other train cells): the same record again
    before = json.loads((out / "ood.json").read_text())
    again = CliRunner().invoke(app, ["ood-calibrate", str(out), "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert "fromthe3fine-tuningcell(s)" in flat(again.output)
    after = json.loads((out / "ood.json").read_text())
    assert after["source"]["fit_images"] == before["source"]["fit_images"]
    assert after["threshold"] == pytest.approx(before["threshold"], abs=1e-4)
    assert "OODcalibrationofthefine-tunedrun" in flat(result.output)
    before, after = (f"{100 * record[k]['fused']['accuracy']:.1f}" for k in ("before", "after"))
    assert f"before│base│0│{before}" in flat(result.output)
    assert f"after│run2│3│{after}" in flat(result.output)
    # RUN2 now holds a run: a second fine-tuning into it is refused, not mixed in
    again = _finetune(run, data, split, out, "--cells", "1", "--epochs", "1")
    assert again.exit_code == 2 and "alreadyholdsarun" in flat(again.output)


def test_no_val_part_means_no_ood_file_and_a_warning(lab, tmp_path) -> None:
    run, data, _ = lab
    split = write_split(tmp_path / "split.json", list(range(6)), [], [7, 8, 9])
    out = tmp_path / "run2"
    result = _finetune(run, data, split, out, "--cells", "1", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "valpartisempty" in flat(result.output)
    assert not (out / "ood.json").exists() and (out / "last.pt").is_file()
    record = json.loads((out / "finetune.json").read_text())
    assert "val part is empty" in record["ood_calibration_out"]
    assert "ood" not in record["after"]


def test_init_from_starts_from_the_run_weights(lab, tmp_path) -> None:
    from edge_iapp.train.data import prepare
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.run import RunConfig
    from edge_iapp.train.trainer import train

    run, data, split = lab
    cfg = RunConfig.load(run)
    cfg.epochs, cfg.lr, cfg.branches, cfg.extra = 1, 1e-12, ("global",), {}
    samples = load_parts(data, split).parts["train"][::6]
    train(cfg, prepare(samples, cfg.preprocess), tmp_path / "r", init_from=run / "last.pt")
    base = torch.load(run / "last.pt", weights_only=False)["model"]
    new = torch.load(tmp_path / "r" / "last.pt", weights_only=False)["model"]
    for name, t in base.items():
        if name.startswith("object_branch") or (t.is_floating_point() and "running" not in name):
            assert torch.allclose(t, new[name], atol=1e-6), name  # lr ~ 0: base weights kept


def test_missing_classes_are_a_warning(lab, tmp_path) -> None:
    run, data, split_all = lab
    split = write_split(tmp_path / "split0.json", [0], [6], [7, 8, 9])  # cell 0 lacks "21"
    out = tmp_path / "run2"
    result = _finetune(run, data, split, out, "--cells", "1", "--epochs", "1")
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "warning" in text and "class(es)21" in text
    record = json.loads((out / "finetune.json").read_text())
    assert record["missing_classes"] == ["21"] and record["cells"] == ["S0000/S0000.1"]
    assert record["train_images"] == 6  # 8 less the two 21s


def test_refusals(lab, tmp_path) -> None:
    run, data, split = lab
    out = tmp_path / "run2"
    result = _finetune(run, data, split, out, "--cells", "7")
    assert result.exit_code == 2 and "only6cell(s)" in flat(result.output)
    result = _finetune(run, data, split, out, "--cells", "1", "--adapt-cells", "9")
    assert result.exit_code == 2 and "--adapt-cells9:" in flat(result.output)
    result = _finetune(run, data, split, out, "--cells", "1", "--adapt-cells", "-1")
    assert result.exit_code == 2 and "--adapt-cellsmustbe0ormore" in flat(result.output)
    result = _finetune(run, data, split, out, "--cells", "0", "--pseudo-cells", "2")
    assert result.exit_code == 2 and "needs--cells1ormore" in flat(result.output)
    result = _finetune(run, data, split, out, "--cells", "2", "--pseudo-cells", "5")
    assert result.exit_code == 2 and "--cells2plus--pseudo-cells5" in flat(result.output)
    result = _finetune(run, data, split, out, "--cells", "2", "--pseudo-cells", "-1")
    assert result.exit_code == 2 and "--pseudo-cellsmustbe0ormore" in flat(result.output)
    result = _finetune(
        run, data, split, out, "--cells", "1", "--pseudo-cells", "1", "--pseudo-rounds", "0"
    )
    assert result.exit_code == 2 and "--pseudo-roundsmustbe1ormore" in flat(result.output)
    assert not (out / "last.pt").exists()
    foreign = write_split(tmp_path / "other.json", [50], [51], [52])  # cells this lab lacks
    result = _finetune(run, data, foreign, out, "--cells", "1")
    assert result.exit_code == 2 and "thedatalacks" in flat(result.output)
    no_test = write_split(tmp_path / "notest.json", [0, 1], [6], [])
    result = _finetune(run, data, no_test, out, "--cells", "1")
    assert result.exit_code == 2 and "testparthasnoimages" in flat(result.output)
    result = _finetune(tmp_path / "nowhere", data, split, out, "--cells", "1")
    assert result.exit_code == 2 and "notatrainingrun" in flat(result.output)


@pytest.mark.parametrize("damaged", ["config.json", "last.pt"])
def test_a_damaged_run_is_refused_with_a_message(lab, tmp_path, damaged) -> None:
    run, data, split = lab
    copy = tmp_path / "base"
    shutil.copytree(run, copy)
    (copy / damaged).write_bytes(b"")  # a copy cut short
    result = _finetune(copy, data, split, tmp_path / "run2", "--cells", "1", "--epochs", "1")
    assert result.exit_code == 2, result.output
    assert f"cannotfine-tune{copy}" in flat(result.output) and damaged in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run2" / "last.pt").exists()


def test_zero_cells_evaluates_only(lab, tmp_path) -> None:
    from edge_iapp.train.data import prepare
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.ood_run import write_run_ood
    from edge_iapp.train.predict import predict
    from edge_iapp.train.run import load_model

    run, data, split = lab
    # an OOD calibration for the base run (plumbing only: from this lab's val cell)
    model, cfg = load_model(run)
    val = prepare(load_parts(data, split).parts["val"], cfg.preprocess)
    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "last.pt"):
        (base / name).write_bytes((run / name).read_bytes())
    write_run_ood(base, predict(model, val, cfg.branches))
    out = tmp_path / "zero"
    result = _finetune(base, data, split, out, "--cells", "0", "--max-test-per-class", "4")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "finetune.json").read_text())
    assert record["after"] is None and record["cells"] == [] and record["epochs"] == 0
    assert record["test_images"] == 16  # 4 classes x 4
    assert not (out / "last.pt").exists() and not (out / "config.json").exists()
    ood = record["before"]["ood"]
    assert set(ood["by"]) == {"ood", "confidence", "either", "review"}
    assert ood["errors"] + ood["correct"] == 16
    assert "zero-shot" in flat(result.output)
    assert np.isfinite(record["before"]["fused"]["accuracy"])


def test_runs_augmentations_are_kept(lab, tmp_path) -> None:
    pytest.importorskip("edge_iapp.train.online")
    run, data, split = lab
    base = tmp_path / "base"
    base.mkdir()
    cfg = json.loads((run / "config.json").read_text())
    cfg["extra"]["augment"] = ["contrast"]
    (base / "config.json").write_text(json.dumps(cfg))
    (base / "last.pt").write_bytes((run / "last.pt").read_bytes())
    out = tmp_path / "run2"
    result = _finetune(base, data, split, out, "--cells", "1", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["extra"]["augment"] == ["contrast"]
    assert "augmentations:contrast" in flat(result.output)


def test_adapt_cells_without_labels_makes_an_adapted_run(lab, tmp_path) -> None:
    from edge_iapp.train.run import load_model

    run, data, split = lab
    out = tmp_path / "adapted"
    result = _finetune(run, data, split, out, "--cells", "0", "--adapt-cells", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "finetune.json").read_text())
    assert record["adapt_cells"] == pick_cells(TRAIN_CELLS, 2, 0)
    assert record["adaptation"]["images"] == 16 and record["adaptation"]["layers"] == 60
    assert record["adapted"] == record["after"] and record["epochs"] == 0
    # RUN2 is a run: same weights as RUN, other BatchNorm statistics
    base = torch.load(run / "last.pt", weights_only=False)["model"]
    model, cfg = load_model(out)
    assert cfg.epochs == 0 and cfg.extra["finetune"]["adapt_cells"] == record["adapt_cells"]
    new = model.state_dict()
    stats = [k for k in base if k.endswith(("running_mean", "running_var"))]
    assert all(torch.equal(base[k], new[k]) for k in base if k not in stats and "num_b" not in k)
    assert not all(torch.equal(base[k], new[k]) for k in stats)
    assert "adapted│adapted│2u│" in flat(result.output)


def test_after_fine_tuning_the_statistics_come_from_the_adaptation_cells(lab, tmp_path) -> None:
    run, data, split = lab
    out = tmp_path / "run2"
    flags = ["--cells", "1", "--adapt-cells", "3", "--epochs", "1"]
    result = _finetune(run, data, split, out, *flags)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "finetune.json").read_text())
    assert set(record["cells"]) <= set(record["adapt_cells"]) and len(record["adapt_cells"]) == 3
    assert record["adaptation"]["images"] == record["readaptation"]["images"] == 24
    tuned = torch.load(out / "checkpoints" / "epoch_001.pt", weights_only=False)
    final = torch.load(out / "last.pt", weights_only=False)
    assert final["epoch"] == tuned["epoch"] == 1 and "optimizer" in final  # still a run
    running = [k for k in tuned["model"] if k.endswith(("running_mean", "running_var"))]
    for k, t in tuned["model"].items():  # same weights, other statistics
        if k in running:
            assert not torch.equal(t, final["model"][k]), k
        elif "num_batches" not in k:
            assert torch.equal(t, final["model"][k]), k
    for key in ("adapted", "finetuned", "after"):
        assert 0.0 <= record[key]["fused"]["accuracy"] <= 1.0
    text = flat(result.output)
    assert "adapted│run2│3u│" in text and "fine-tuned│run2│1│" in text
    assert "after│run2│1+3u│" in text


def test_pseudo_cells_fine_tune_on_labelled_plus_pseudo_labelled_cells(
    lab, tmp_path, monkeypatch
) -> None:
    import csv

    from edge_iapp.classes import CLASS_NAMES
    from edge_iapp.train import trainer

    trained: list = []  # a spy: the real training runs, the labels it got are kept
    real_train = trainer.train

    def spy(cfg, images, *args, **kwargs):
        trained.append(images)
        return real_train(cfg, images, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", spy)
    run, data, split = lab
    out = tmp_path / "run2"
    flags = ["--cells", "1", "--pseudo-cells", "2", "--epochs", "1"]
    result = _finetune(run, data, split, out, *flags)
    assert result.exit_code == 0, result.output
    with open(out / "pseudo_labels.csv", newline="") as f:
        table = list(csv.DictReader(f))
    # the second training (RUN2) learnt the pseudo-labels of the CSV, not the folder's
    assert len(trained) == 2 and len(table) == 16
    final = dict(zip(trained[1].paths, trained[1].labels.tolist(), strict=True))
    assert all(CLASS_NAMES[final[r["path"]]] == r["pseudo_label"] for r in table)
    assert set(trained[0].paths) == set(trained[1].paths) - {r["path"] for r in table}
    record = json.loads((out / "finetune.json").read_text())
    pseudo = record["pseudo"]
    # the next two cells of the seeded order, never the labelled one
    assert sorted(record["cells"] + pseudo["cell_ids"]) == pick_cells(TRAIN_CELLS, 3, 0)
    assert not set(record["cells"]) & set(pseudo["cell_ids"])
    assert pseudo["images"] == 16 and pseudo["cells"] == 2 and pseudo["consistency"] is True
    from edge_iapp.train.loading import load_parts

    used = set(record["cells"] + pseudo["cell_ids"])
    files = of_cells(load_parts(data, split).parts["train"], used)
    first = "S0000/S0000.1" in used  # the cell without class 21
    assert record["train_images"] == len(files) == pseudo["images"] + 8 - 2 * first
    assert 0.0 <= pseudo["agreement_with_folder_labels"]["used"] <= 1.0
    assert record["labelled_only"]["images"] == record["after"]["images"] == 24
    assert not (out / ".labeller").exists()  # the K-cell model is removed
    assert (
        len(pseudo["rounds"]) == 1
        and pseudo["rounds"][0]["labeller_accuracy"]
        == (record["labelled_only"]["fused"]["accuracy"])
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"]["finetune"]["pseudo_cells"] == pseudo["cell_ids"]
    text = flat(result.output)
    assert "labelledonly│run2│1│" in text and "after│run2│1+2p│" in text
    assert "Np:Ncellsofthetrainpartpseudo-labelled" in text


def test_pseudo_rounds_relabel_with_the_previous_rounds_model(lab, tmp_path, monkeypatch) -> None:
    import csv

    import torch

    from edge_iapp.classes import CLASS_NAMES
    from edge_iapp.train import pseudo_rounds, trainer

    trained: list = []  # spies: the real training and labelling run, their inputs are kept
    labellers: list = []
    real_train, real_label = trainer.train, pseudo_rounds.label_pool

    def train_spy(cfg, images, *args, **kwargs):
        trained.append(images.labels.copy())
        return real_train(cfg, images, *args, **kwargs)

    def label_spy(model, *args, **kwargs):
        labellers.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_label(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", train_spy)
    monkeypatch.setattr(pseudo_rounds, "label_pool", label_spy)
    run, data, split = lab
    out = tmp_path / "run2"
    flags = ["--cells", "1", "--pseudo-cells", "2", "--pseudo-rounds", "2", "--epochs", "1"]
    result = _finetune(run, data, split, out, *flags)
    assert result.exit_code == 0, result.output
    # K cells; K + round 1's labels; K + round 2's labels (RUN2)
    assert len(trained) == 3 and len(labellers) == 2
    first, second = (list(w.values()) for w in labellers)
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with open(out / "pseudo_labels.csv", newline="") as f:
        table = [r["pseudo_label"] for r in csv.DictReader(f)]
    assert [CLASS_NAMES[i] for i in trained[2][-len(table) :]] == table  # the last round's labels
    record = json.loads((out / "finetune.json").read_text())
    rounds = record["pseudo"]["rounds"]
    assert (
        len(rounds) == 2
        and record["pseudo"]["changed_by_consistency"] == rounds[1]["changed_by_consistency"]
    )
    assert rounds[0]["labeller_accuracy"] == record["labelled_only"]["fused"]["accuracy"]
    assert not (out / ".labeller").exists()
    text = flat(result.output)
    assert "modelofround1of2" in text and "round2:labelledbyamodel" in text


def test_pseudo_slides_take_the_unlabelled_cells_from_slides(lab, tmp_path) -> None:
    import csv
    import hashlib

    import cv2

    from edge_iapp.data.synth import synth_cells, write_slides
    from edge_iapp.train.loading import load_parts

    run, data, split = lab
    slides = tmp_path / "slides"
    write_slides(slides, synth_cells(3, seed=5), seed=5, cells_per_slide=2)
    crops = {p: hashlib.sha256(p.read_bytes()).digest() for p in slides.rglob("*.png")}
    out = tmp_path / "run2"
    pseudo_flags = ["--pseudo-cells", "2", "--pseudo-slides", str(slides)]
    result = _finetune(run, data, split, out, "--cells", "1", *pseudo_flags, "--epochs", "1")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "finetune.json").read_text())
    pseudo = record["pseudo"]
    with open(out / "pseudo_labels.csv", newline="") as f:
        table = list(csv.DictReader(f))
    chosen = {str(Path(r["path"]).parent.relative_to(slides)) for r in table}
    assert sorted(chosen) == sorted(pseudo["cell_ids"]) and len(chosen) == 2
    assert (
        len(table)
        == pseudo["images"]
        == sum(1 for p in crops if str(p.parent.relative_to(slides)) in chosen)
    )
    assert pseudo["agreement_with_folder_labels"] is None and pseudo["source"].endswith("slides")
    labelled = of_cells(load_parts(data, split).parts["train"], record["cells"])
    assert record["train_images"] == len(labelled) + pseudo["images"]
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in crops} == crops  # inputs kept
    assert "nolabelstocomparethemwith" in flat(result.output)
    # slides holding val or test images (copied here; the labelled folder itself, below)
    # are refused: training on them, even unlabelled, would inflate the scores
    leaky = tmp_path / "leaky"
    shutil.copytree(slides, leaky)
    test_image = load_parts(data, split).parts["test"][0].path
    cell = next(p for p in leaky.rglob("*.png")).parent
    shutil.copy(test_image, cell / "copied.png")
    # ... and the same crop saved again as a JPEG by other software: found by its pixels
    reencoded = tmp_path / "reencoded"
    shutil.copytree(slides, reencoded)
    cell = next(p for p in reencoded.rglob("*.png")).parent
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, 60]
    cv2.imwrite(str(cell / "saved.jpg"), cv2.imread(str(test_image)), jpeg)
    for flags, message in (
        (["--pseudo-cells", "2", "--pseudo-slides", str(leaky)], "ofthesplit'svalortestpart"),
        (["--pseudo-cells", "2", "--pseudo-slides", str(reencoded)], "samepixelsas"),
        (["--pseudo-cells", "2", "--pseudo-slides", str(data)], "ofthesplit'svalortestpart"),
        (["--pseudo-cells", "4", "--pseudo-slides", str(slides)], "has3cellfolder(s)"),
        (["--pseudo-slides", str(slides)], "--pseudo-slidesneeds--pseudo-cellsP"),
        (["--pseudo-cells", "1", "--pseudo-slides", str(tmp_path / "none")], "--pseudo-slides"),
    ):
        result = _finetune(run, data, split, tmp_path / "run3", "--cells", "1", *flags)
        assert result.exit_code == 2 and message in flat(result.output), result.output


def test_a_labelled_folder_is_not_taken_for_slides(tmp_path) -> None:
    from edge_iapp.train.adapt_bn import slide_cells

    for name in ("1", "2", "X"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / name / f"{i}.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="looks like a labelled folder"):
        slide_cells(tmp_path / "data", tmp_path / "out")
    shutil.rmtree(tmp_path / "data" / "X")  # cells numbered 1, 2: a slide
    assert sorted(slide_cells(tmp_path / "data", tmp_path / "out")[0]) == ["data/1", "data/2"]


def test_pseudo_labels_ignore_the_folder_labels(lab) -> None:
    from edge_iapp.train.data import prepare
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.pseudo_rounds import label_pool
    from edge_iapp.train.run import load_model

    run, data, split = lab
    model, cfg = load_model(run)
    samples = load_parts(data, split).parts["train"][:16]
    pool = prepare(samples, cfg.preprocess)
    folder = pool.labels.copy()
    labels, info, table = label_pool(model, pool, samples, cfg, True, "cpu", 64)
    pool.labels = (folder + 1) % 24  # other folder labels: same pseudo-labels
    again, info2, _ = label_pool(model, pool, samples, cfg, True, "cpu", 64)
    assert np.array_equal(labels, again) and info["images"] == 16
    assert info["agreement_with_folder_labels"]["used"] == np.mean(labels == folder)
    assert table.count("\n") == 17 and table.startswith("path,cell,pseudo_label")
    assert info2["agreement_with_folder_labels"]["used"] == np.mean(labels == pool.labels)
