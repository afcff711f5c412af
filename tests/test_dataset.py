"""Labelled folder scans: classes, groups and cells from file names, skipped files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_iapp.classes import canonical_class
from edge_iapp.data.dataset import GroupRule, scan_folder, summarize


def put(root: Path, folder: str, name: str, pixels: np.ndarray | None = None) -> Path:
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((30, 12), 200, np.uint8) if pixels is None else pixels
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.mark.parametrize(
    ("name", "group", "cell", "matched"),
    [
        ("clase3_0_97002135.5.tiff", "97002135", "97002135.5", True),
        ("clase24_1_97002302.18.tiff", "97002302", "97002302.18", True),
        ("clase3_0_S0003.1.png", "S0003", "S0003.1", True),
        ("clase3_0_S0003.png", "S0003", "S0003", True),
        ("10 23.bmp", "10", "10", True),
        ("10 5a.bmp", "10", "10", True),
        ("119 22b.bmp", "119", "119", True),
        ("chromosome_7.png", "chromosome_7", "chromosome_7", False),
    ],
)
def test_default_group_rules(name, group, cell, matched):
    assert GroupRule()(name) == (group, cell, matched)


def test_custom_group_pattern():
    rule = GroupRule(r"patient(?P<group>\d+)_slide(?P<cell>\d+)")
    assert rule("img_patient12_slide3_c7.png") == ("12", "3", True)
    assert GroupRule(r"^(?P<group>[A-Z]+)-")("ABC-1.png") == ("ABC", "ABC", True)
    assert rule("other.png") == ("other", "other", False)  # no fall-back to the defaults


@pytest.mark.parametrize("pattern", ["(", r"(?P<case>\d+)"])
def test_bad_group_pattern(pattern):
    with pytest.raises(ValueError, match="group pattern"):
        GroupRule(pattern)


@pytest.mark.parametrize(
    ("folder", "name"),
    [("chr7", "7"), ("chrX", "X"), ("Chromosome_12", "12"), ("chr-01", "1"), ("CHR 23", "X")],
)
def test_class_folders_named_chr(folder, name):
    assert canonical_class(folder) == name


@pytest.mark.parametrize("folder", ["chrM", "chr", "chr25", "chromosomes", "7chr"])
def test_other_folders_are_not_classes(folder):
    with pytest.raises(ValueError, match="not a chromosome class"):
        canonical_class(folder)


def test_scan_labels_groups_and_skips(tmp_path, make_crop):
    root = tmp_path / "data"
    put(root, "1", "clase1_0_97002023.12.tiff")
    put(root, "01", "clase1_1_97002023.13.tiff")  # leading zero: class 1
    put(root, "23", "10 23.bmp")  # numeric X
    put(root, "X", "10 23a.bmp")
    put(root, "Y", "clase24_0_S0001.1.png")
    put(root, "Y/nested", "clase24_1_S0001.1.png")  # images in sub-folders count
    put(root, "7", "loose.png")  # no group rule: ungrouped
    put(root, "7", "tiny.png", np.full((5, 5), 100, np.uint8))
    (root / "7" / "notes.txt").write_text("hi")
    (root / "7" / "empty.png").write_bytes(b"")
    (root / "7" / ".hidden.png").write_bytes(b"")  # hidden: ignored
    (root / "25").mkdir()
    (root / "SOURCE.md").write_text("x")  # top-level non-image: ignored
    put(root, ".", "unlabelled.png")

    scan = scan_folder(root)
    by_name = {s.path.name: s for s in scan.samples}
    assert set(by_name) == {
        "clase1_0_97002023.12.tiff",
        "clase1_1_97002023.13.tiff",
        "10 23.bmp",
        "10 23a.bmp",
        "clase24_0_S0001.1.png",
        "clase24_1_S0001.1.png",
        "loose.png",
        "tiny.png",
    }
    assert by_name["clase1_1_97002023.13.tiff"].label == 0
    assert by_name["10 23.bmp"].class_name == "X" and by_name["10 23.bmp"].label == 22
    assert by_name["10 23a.bmp"].label == 22
    assert by_name["clase24_1_S0001.1.png"].class_name == "Y"
    assert by_name["clase24_1_S0001.1.png"].label == 23
    assert by_name["clase1_0_97002023.12.tiff"].group == "97002023"
    assert by_name["clase1_0_97002023.12.tiff"].cell == "97002023.12"
    assert [p.name for p in scan.ungrouped] == ["loose.png", "tiny.png"]
    skipped = {p.name: reason for p, reason in scan.skipped}
    assert set(skipped) == {"notes.txt", "empty.png", "25", "unlabelled.png"}
    assert "empty" in skipped["empty.png"] and "not a class" in skipped["25"]
    assert [(p.name, w) for p, w in scan.warnings] == [("tiny.png", "tiny")]

    info = summarize(scan)
    assert info["total"] == 8
    assert info["per_class"]["1"] == 2 and info["per_class"]["X"] == 2
    assert info["per_class"]["Y"] == 2 and info["per_class"]["7"] == 2
    assert sum(info["per_class"].values()) == 8 and len(info["per_class"]) == 24
    assert info["groups"] == 5  # 97002023, 10, S0001, loose, tiny
    assert info["cells"] == 6  # 97002023.12 and .13 are two cells of one case
    assert info["ungrouped"] == 2 and len(info["skipped"]) == 4


def test_verify_finds_damage_that_headers_hide(tmp_path, make_crop):
    root = tmp_path / "data"
    good = put(root, "5", "good.png", make_crop())
    bad = put(root, "5", "bad.tif", make_crop(200, 100))
    data = bad.read_bytes()
    bad.write_bytes(data[:600])  # the header survives, the strips do not
    put(root, "5", "white.png", np.full((40, 20), 255, np.uint8))

    quick = scan_folder(root)
    assert len(quick.samples) == 3 and not quick.skipped  # headers only: looks fine
    full = scan_folder(root, verify=True)
    assert [s.path for s in full.samples] == sorted([good, root / "5" / "white.png"])
    assert [p for p, _ in full.skipped] == [bad]
    assert [(p.name, w) for p, w in full.warnings] == [("white.png", "blank")]


def test_scan_of_a_file_is_an_error(tmp_path):
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        scan_folder(tmp_path / "f.png")


def _cells(n: int, classes: int) -> list:
    """``n`` cells of two samples per class (stand-ins for ``Sample``)."""
    from types import SimpleNamespace

    return [
        SimpleNamespace(label=c, group="g", cell=f"c{i}", path=f"{i}_{c}_{k}")
        for i in range(n)
        for c in range(classes)
        for k in range(2)
    ]


def test_pick_whole_cells_stops_before_the_image_limit() -> None:
    from edge_iapp.train.data import pick_whole_cells

    samples = _cells(10, classes=3)
    chosen = pick_whole_cells(samples, 20, seed=0)
    cells = {s.cell for s in chosen}
    assert len(cells) == 3 and len(chosen) == 18  # a fourth cell of 6 would pass 20
    for cell in cells:  # whole cells only
        assert sum(s.cell == cell for s in chosen) == 6
    assert pick_whole_cells(samples, 20, seed=0) == chosen
    assert pick_whole_cells(samples, 20, seed=1) != chosen
    assert len(pick_whole_cells(samples, 1000, seed=0)) == len(samples)  # all there is
    assert len(pick_whole_cells(samples, 1, seed=0)) == 6  # at least one cell


def test_balanced_subset_keeps_whole_cells_when_asked() -> None:
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.data import balanced_subset

    samples = _cells(20, classes=4)
    crops = balanced_subset(samples, 3, seed=0)
    per_cell = {s.cell: sum(t.cell == s.cell for t in crops) for s in crops}
    assert min(per_cell.values()) < 8  # single crops: cells come in pieces
    cells = balanced_subset(samples, 3, seed=0, preprocess=PreprocessConfig(size_mode="cell"))
    assert all(sum(t.cell == s.cell for t in cells) == 8 for s in cells)
    assert len(cells) == 8  # 3 x 4 classes = 12 images allow one cell of 8
    absolute = balanced_subset(samples, 3, seed=0, preprocess=PreprocessConfig())
    assert absolute == crops  # the absolute size mode picks single crops
