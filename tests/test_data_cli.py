"""``edge-iapp data summary``, ``data split``, ``data copies`` and ``preview`` (typer app)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_iapp.cli.main import app

runner = CliRunner()


def text(result) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def folder(tmp_path, make_crop) -> Path:
    """4 cases x 2 cells, classes 1, 2 and X (as 23), plus bad files."""
    root = tmp_path / "data"
    for case in range(4):
        for cell in (1, 2):
            for cls, folder_name in (("1", "1"), ("2", "2"), ("23", "23")):
                path = root / folder_name / f"clase{cls}_0_C{case:03d}.{cell}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), make_crop(40 + 5 * case, 16, seed=case * 10 + cell))
    (root / "1" / "empty.png").write_bytes(b"")
    (root / "2" / "text.tif").write_text("not a tiff")
    cv2.imwrite(str(root / "2" / "clase2_1_C000.1.png"), np.full((30, 10), 255, np.uint8))
    return root


def test_summary_json(folder):
    result = runner.invoke(app, ["data", "summary", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["total"] == 25
    assert info["per_class"]["1"] == 8 and info["per_class"]["2"] == 9
    assert info["per_class"]["X"] == 8 and info["per_class"]["Y"] == 0
    assert info["groups"] == 4 and info["cells"] == 8 and info["ungrouped"] == 0
    assert sorted(Path(s["path"]).name for s in info["skipped"]) == ["empty.png", "text.tif"]
    assert [w["warning"] for w in info["warnings"]] == ["blank"]


def test_summary_text_lists_bad_files(folder):
    result = runner.invoke(app, ["data", "summary", str(folder)])
    assert result.exit_code == 0, result.output
    assert "25" in text(result) and "skipped 2 file(s)" in text(result)
    assert "file is empty" in text(result) and "blank" in text(result)


def test_summary_errors_without_traceback(tmp_path):
    result = runner.invoke(app, ["data", "summary", str(tmp_path / "missing")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "is not a folder" in text(result)
    result = runner.invoke(app, ["data", "summary", str(tmp_path), "--group-pattern", "("])
    assert result.exit_code == 2 and "not a valid regex" in text(result)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["data", "summary", str(empty)])  # was a table of zeros, exit 0
    assert result.exit_code == 1 and "expected class folders 1..22, X, Y" in text(result)


def test_a_split_made_with_a_group_pattern_is_read_with_it(tmp_path, make_crop):
    """A lab's own file names: ``<case>_<cell>_<n>.png``, cell names repeating per case.

    The split records the pattern; training, fine-tuning, calibration and bench read the
    folder with it (the default rules would give every file its own group).
    """
    from edge_iapp.bench import load_labelled
    from edge_iapp.export.calibration import choose_from_folder
    from edge_iapp.train.finetune import of_cells, pick_cells
    from edge_iapp.train.loading import load_parts

    root = tmp_path / "lab"
    for case in range(4):
        for cell in (1, 2):
            for cls in ("1", "2", "X"):
                path = root / cls / f"case{case}_c{cell}_{cls}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), make_crop(40 + 5 * case, 16, seed=case * 10 + cell))
    out = tmp_path / "split.json"
    pattern = r"^(?P<group>case\d+)_(?P<cell>c\d+)_"
    args = ["data", "split", str(root), "--out", str(out), "--test", "0.25", "--val", "0.25"]
    result = runner.invoke(app, [*args, "--group-pattern", pattern])
    assert result.exit_code == 0, result.output
    parts = load_parts(root, out).parts
    assert sorted({s.group for p in parts.values() for s in p}) == [f"case{i}" for i in range(4)]
    assert len(parts["train"]) == 12 and len(parts["val"]) == len(parts["test"]) == 6
    # cells are case/cell: the two train cases' "c1" are two cells
    cells = pick_cells(parts["train"], 4)
    assert len(cells) == 4 and all("/" in c for c in cells)
    assert len(of_cells(parts["train"], cells[:1])) == 3
    manifest = choose_from_folder(root, out, 6, require_all_classes=False)
    assert len(manifest["images"]) == 6
    images, labels, skipped = load_labelled(root, out, "test")
    assert len(images) == len(labels) == 6 and not skipped
    assert len({im.cell for im in images}) == 2


def test_split_of_ungrouped_files_says_how_to_group_them(tmp_path, make_crop):
    root = tmp_path / "lab"
    for i in range(6):
        path = root / "1" / f"case{i}_c1_a.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), make_crop(40, 16, seed=i))
    out = tmp_path / "split.json"
    result = runner.invoke(app, ["data", "split", str(root), "--out", str(out), "--test", "0.3"])
    assert result.exit_code == 0, result.output
    assert "6 file(s) matched no group rule (e.g. case0_c1_a.png)" in text(result)
    assert "pass --group-pattern" in text(result)


def test_a_pre_split_layout_is_named(folder, tmp_path):
    """DATA/train/<class>: the skipped folder says it holds class folders, and what to do."""
    nested = tmp_path / "nested"
    (nested / "notes").mkdir(parents=True)
    folder.rename(nested / "train")
    result = runner.invoke(app, ["data", "summary", str(nested)])
    assert result.exit_code == 1 and "train hold the class folders (a pre-split" in text(result)
    assert "folder 'train' is not a class (1..22, X, Y); it holds class folders" in text(result)
    assert "folder 'notes' is not a class (1..22, X, Y)" in text(result)
    assert text(result).count("it holds class folders") == 1
    result = runner.invoke(app, ["data", "split", str(nested), "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 2 and "folder(s) train hold the class folders" in text(result)
    # train and the rest say it too, through load_parts
    from edge_iapp.train.loading import DataProblem, load_parts

    split = tmp_path / "split.json"
    groups = {"train": ["C000"], "val": [], "test": []}
    split.write_text(json.dumps({"version": 1, "groups": groups}))
    with pytest.raises(DataProblem, match="folder.s. train hold the class folders"):
        load_parts(nested, split)
    from edge_iapp.bench import load_labelled
    from edge_iapp.export.calibration import CalibrationError, choose_from_folder

    with pytest.raises(ValueError, match="folder.s. train hold the class folders"):
        load_labelled(nested)
    with pytest.raises(CalibrationError, match="folder.s. train hold the class folders"):
        choose_from_folder(nested, split, 4)


def test_a_pre_split_folder_keeps_its_parts(tmp_path, make_crop):
    """DATA/{train,test}/<class>: --from-folders keeps the folders' parts, carves val from
    train by case, and every reader (train, bench, calibration) scans the folder that way."""
    from edge_iapp.bench import load_labelled
    from edge_iapp.export.calibration import choose_from_folder
    from edge_iapp.train.loading import load_parts

    root = tmp_path / "published"
    for case in range(5):
        part = "test" if case == 4 else "train"
        for cls in ("1", "2", "X"):
            for cell in (1, 2):
                number = "23" if cls == "X" else cls
                path = root / part / cls / f"clase{number}_0_C{case:03d}.{cell}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), make_crop(40 + 4 * case, 16, seed=case * 10 + cell))
    (root / "README.txt").write_text("the authors' split")
    out = tmp_path / "split.json"

    def split(*extra: str):
        args = ["data", "split", str(root), "--out", str(out), "--from-folders", *extra]
        return runner.invoke(app, [*args, "--val", "0.25"] if not extra else args)

    result = split()
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["layout"] == "part-folders" and record["folders"] == {
        "test": "test",
        "train": "train",
    }
    assert record["groups"]["test"] == ["test/C004"]
    carved = sorted(record["groups"]["train"] + record["groups"]["val"])
    assert carved == [f"train/C{c:03d}" for c in range(4)] and len(record["groups"]["val"]) == 1
    parts = load_parts(root, out).parts
    assert all(s.path.parent.parent.name == "test" for s in parts["test"])
    assert len(parts["test"]) == 6 and len(parts["train"]) + len(parts["val"]) == 24
    images, labels, skipped = load_labelled(root, out, "test")
    assert len(images) == 6 and not skipped
    manifest = choose_from_folder(root, out, 6, require_all_classes=False)
    assert all(im["path"].startswith("train/") for im in manifest["images"])
    assert "shared" not in text(result) and "more than one part folder" not in text(result)

    # one case in both folders: not group-aware, said; --test does not apply
    (root / "test" / "1" / "clase1_0_C000.9.png").write_bytes(
        (root / "train" / "1" / "clase1_0_C000.1.png").read_bytes()
    )
    result = split()
    assert result.exit_code == 0, result.output
    assert "1 case(s) have images in more than one part folder (e.g. C000 in test and train)" in (
        text(result)
    )
    assert "1 val/test image(s)" in text(result)  # the copy check sees the same file too
    result = split("--test", "0.3")
    assert result.exit_code == 2 and "the test folder is the test part" in text(result)

    # a val folder of its own: its cases are val, and --val is refused
    (root / "valid").mkdir()
    (root / "train" / "X").rename(root / "valid" / "X")
    result = split("--val", "0.1")
    assert result.exit_code == 2 and "its own val folder" in text(result)
    assert split("--seed", "3").exit_code == 0
    record = json.loads(out.read_text())
    assert record["folders"]["valid"] == "val"
    assert all(g.startswith("valid/") for g in record["groups"]["val"])
    # a test folder without images, then none: what a pre-split folder needs
    (root / "test").rename(tmp_path / "elsewhere")
    (root / "test" / "1").mkdir(parents=True)
    result = split()
    assert result.exit_code == 2 and "needs a train and a test folder" in text(result)
    assert "with images in: train, val" in text(result)
    (root / "test" / "1").rmdir()
    assert split().exit_code == 2
    from edge_iapp.data.split import SplitError, load_split

    out.write_text(json.dumps({**record, "layout": "folders"}))
    with pytest.raises(SplitError, match="unknown 'layout'"):
        load_split(out)


def test_a_benchmark_numbered_afresh_per_part_is_not_called_shared(tmp_path, make_crop):
    """train/1/1.png and test/1/1.png (no case in the names) are two images, not one case
    in two parts; a train folder too small for val says how to go on."""
    root = tmp_path / "bench"
    for part, seeds in (("train", range(0, 3)), ("test", range(10, 12))):
        for n, seed in enumerate(seeds, 1):
            path = root / part / "1" / f"{n}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), make_crop(40, 16, seed=seed))
    args = ["data", "split", str(root), "--from-folders", "--out", str(tmp_path / "s.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "more than one part folder" not in text(result)
    assert "can fall in train and val" in text(result)  # the val carve is what they affect
    result = runner.invoke(app, [*args, "--val", "1.5"])
    assert result.exit_code == 2 and "share of the train folder's images" in text(result)
    for extra in ("2.png", "3.png"):
        (root / "train" / "1" / extra).unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "pass --val 0 for no val part" in text(result)
    assert runner.invoke(app, [*args, "--val", "0"]).exit_code == 0


def test_a_data_folder_of_links_calibrates(folder, tmp_path):
    """Class folders of symbolic links (a DVC cache, an archive linked in): export's
    calibration manifest lists the links' own paths, under the data root."""
    from edge_iapp.export.calibration import choose_from_folder, read_manifest, write_manifest

    linked = tmp_path / "linked"
    for image in sorted(folder.rglob("clase*.png")):
        link = linked / image.parent.name / image.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image)
    out = tmp_path / "split.json"
    result = runner.invoke(app, ["data", "split", str(linked), "--out", str(out), "--test", "0.25"])
    assert result.exit_code == 0, result.output
    manifest = choose_from_folder(linked, out, 4, require_all_classes=False)
    assert all(not im["path"].startswith("..") for im in manifest["images"])  # was an error
    write_manifest(manifest, tmp_path / "calibration.json")
    found = read_manifest(tmp_path / "calibration.json", linked)
    assert len(found) == 4 and all(p.is_symlink() and linked in p.parents for p, _ in found)


def test_split_command(folder, tmp_path):
    out = tmp_path / "split.json"
    args = ["data", "split", str(folder), "--out", str(out), "--test", "0.25", "--val", "0.25"]
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 0, result.output
    split = json.loads(out.read_text())
    assert split["seed"] == 1 and split["fractions"]["test"] == 0.25
    assert sorted(g for p in ("train", "val", "test") for g in split["groups"][p]) == [
        "C000",
        "C001",
        "C002",
        "C003",
    ]
    assert all(len(split["groups"][p]) >= 1 for p in ("train", "val", "test"))
    bad = runner.invoke(app, [*args[:4], str(tmp_path / "x.json"), "--test", "0.9"])
    assert bad.exit_code == 2 and "test + val < 1" in text(bad)
    assert not (tmp_path / "x.json").exists()


def test_copies_across_parts_are_reported(tmp_path):
    from edge_iapp.data.synth import synth_cell

    folder = tmp_path / "data"  # 4 cases of synthetic chromosomes 1, 2 and X, all distinct
    for case in range(4):
        for name, image in synth_cell(np.random.default_rng(case), classes=["1", "2", "X"]):
            path = folder / name / f"clase{23 if name == 'X' else name}_0_C{case:03d}.1.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
    out = tmp_path / "split.json"
    args = ["data", "split", str(folder), "--out", str(out), "--test", "0.25", "--val", "0.25"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "no val/test image is also in train" in text(result)
    copies = ["data", "copies", str(folder), "--split", str(out)]
    assert runner.invoke(app, copies).exit_code == 0
    # a test image saved again as JPEG under a train case's name (capture software
    # exporting one cell twice): the split is by case, the copy crosses it
    groups = json.loads(out.read_text())["groups"]
    test_image = folder / "1" / f"clase1_0_{groups['test'][0]}.1.png"
    copy = folder / "1" / f"clase1_1_{groups['train'][0]}.1.jpg"
    cv2.imwrite(str(copy), cv2.imread(str(test_image)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    result = runner.invoke(app, copies)
    assert result.exit_code == 1, result.output
    assert "1 val/test image(s)" in text(result)
    assert f"{test_image} (same pixels as {copy})" in text(result)
    missing = runner.invoke(app, ["data", "copies", str(folder), "--split", str(tmp_path / "n")])
    assert missing.exit_code == 2 and "split" in text(missing)


def test_preview_one_image(folder, tmp_path):
    out = tmp_path / "one.png"
    image = folder / "1" / "clase1_0_C000.1.png"
    result = runner.invoke(app, ["preview", str(image), "--out", str(out)])
    assert result.exit_code == 0, result.output
    picture = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert picture.shape == (128, 3 * 128 + 2 * 2)  # global | object | part
    # the object view is a zoom: more dark pixels than the global view
    assert (picture[:, 130:258] < 128).sum() > 2 * (picture[:, :128] < 128).sum()


def test_preview_folder_contact_sheet_carries_on(folder, tmp_path):
    out = tmp_path / "sheet.png"
    result = runner.invoke(
        app,
        ["preview", str(folder), "--out", str(out), "--n", "30", "--threshold", "paper"],
    )
    assert result.exit_code == 0, result.output
    assert "empty" in text(result) and "text.tif" in text(result)  # listed, not fatal
    sheet = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    # 25 readable of 27 files: 5 rows x 5 columns of (128 x 388) strips, 6 px gaps
    assert sheet.shape == (5 * 134 + 6, 5 * 394 + 6)


def test_preview_bad_threshold_and_source(tmp_path, folder):
    out = tmp_path / "x.png"
    bad = runner.invoke(app, ["preview", str(folder), "--out", str(out), "--threshold", "otsu"])
    assert bad.exit_code == 2 and "threshold must be one of" in text(bad)
    missing = runner.invoke(app, ["preview", str(tmp_path / "nope.png"), "--out", str(out)])
    assert missing.exit_code == 2 and "does not exist" in text(missing)
    # --columns 0 was taken as 1; a .jpg got PNG bytes
    zero = runner.invoke(app, ["preview", str(folder), "--out", str(out), "--columns", "0"])
    assert zero.exit_code == 2 and "--columns must be at least 1" in text(zero)
    jpg = runner.invoke(app, ["preview", str(folder), "--out", str(tmp_path / "x.jpg")])
    assert jpg.exit_code == 2 and "ending in .png" in text(jpg)
    assert not (tmp_path / "x.jpg").exists() and not out.exists()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    unreadable = runner.invoke(app, ["preview", str(empty), "--out", str(out)])
    assert unreadable.exit_code == 2 and "no readable image" in text(unreadable)
    assert not out.exists()


def test_file_names_with_brackets_are_printed_verbatim(tmp_path, make_crop):
    root = tmp_path / "data"
    (root / "3").mkdir(parents=True)
    cv2.imwrite(str(root / "3" / "[bold]ok.png"), make_crop())
    (root / "3" / "[red]empty.png").write_bytes(b"")
    summary = runner.invoke(app, ["data", "summary", str(root)])
    assert summary.exit_code == 0 and "[red]empty.png: file is empty" in text(summary)
    out = tmp_path / "sheet.png"
    result = runner.invoke(app, ["preview", str(root), "--out", str(out)])
    assert result.exit_code == 0 and "[red]empty.png" in text(result) and out.exists()
