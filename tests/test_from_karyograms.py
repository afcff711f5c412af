"""Cutting labelled crops out of karyogram images with a layout of class positions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_iapp.classes import CLASS_NAMES
from edge_iapp.scoring.from_karyograms import (
    LayoutError,
    cut_karyograms,
    layout_of_renderer,
    load_layout,
    parse_layout,
)
from edge_iapp.scoring.karyogram import (
    KaryogramItem,
    encode_indexed_png,
    render,
    render_indexed,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "layouts" / "edge_iapp_karyogram.json"


def _karyogram(
    make_crop, classes: list[str], seed: int = 0, marks: bool = False, indexed: bool = False
) -> np.ndarray:
    items = [
        KaryogramItem(
            make_crop(100 - 3 * CLASS_NAMES.index(c), 22, seed + i),
            c,
            doubtful=marks and i % 5 == 0,
        )  # red frames and "?" inside the slots
        for i, c in enumerate(classes)
    ]
    return (render_indexed if indexed else render)(items, title="test karyogram 46,XY")


def _normal(sex: str) -> list[str]:
    return [str(i) for i in range(1, 23) for _ in range(2)] + list(sex)


def test_shipped_example_is_the_renderer_layout():
    spec = load_layout(EXAMPLE)
    assert spec.slots == layout_of_renderer().slots
    assert spec.image_size == layout_of_renderer().image_size


def test_round_trip_cuts_every_chromosome_into_its_class(tmp_path, make_crop):
    src = tmp_path / "karyograms"
    src.mkdir()
    # The first one is written exactly as `edge-iapp score` writes it (a palette PNG).
    first = _karyogram(make_crop, _normal("XY"), marks=True, indexed=True)
    (src / "97000001.3.png").write_bytes(encode_indexed_png(first))
    extra = _normal("XX") + ["21"]
    image = _karyogram(make_crop, extra, seed=100)
    big = cv2.resize(image, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(src / "case2.png"), big)  # another size: boxes are scaled
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "crops"
    stats = cut_karyograms(src, load_layout(EXAMPLE), out)
    assert stats.karyograms == 2 and stats.errors == 1
    assert stats.crops == 46 + 47
    for name in CLASS_NAMES[:22]:
        expected = 4 + (name == "21")
        assert stats.per_class[name] == expected, name
        assert len(list((out / name).glob("*.png"))) == expected
    assert stats.per_class["X"] == 3 and stats.per_class["Y"] == 1
    assert (out / "1" / "clase1_0_97000001.3.png").is_file()
    assert (out / "Y" / "clase24_0_97000001.3.png").is_file()
    crop = cv2.imread(str(out / "1" / "clase1_0_97000001.3.png"), cv2.IMREAD_GRAYSCALE)
    assert crop.shape[0] > crop.shape[1] and crop.min() < 120
    with open(out / "from_karyograms.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["status"] == "error" and r["karyogram"] == "notes.txt" for r in rows)
    assert sum(r["status"] == "ok" for r in rows) == 93
    # The Y slot of the female karyogram is empty: a warning, not an error.
    assert any(
        r["karyogram"] == "case2.png" and r["class"] == "Y" and r["status"] == "warning"
        for r in rows
    )


def test_crossing_chromosomes_are_listed_not_written(tmp_path, make_crop):
    image = _karyogram(make_crop, _normal("XY"))
    x, y, w, h = layout_of_renderer().slots["2"]
    # A chromosome crossing the first 2 (sub-box centre x + w/4): an X-like overlap.
    cx, cy = x + w // 4, y + h - 70
    bar = np.ascontiguousarray(make_crop(84, 22, 5).T)
    region = image[cy - 11 : cy + 11, cx - 42 : cx + 42]
    np.minimum(region, bar[:, :, None], out=region)
    path = tmp_path / "k.png"
    cv2.imwrite(str(path), image)
    stats = cut_karyograms(path, load_layout(EXAMPLE), tmp_path / "out")
    assert stats.clusters == 1
    assert stats.per_class["2"] == 1
    with open(tmp_path / "out" / "from_karyograms.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["class"] == "2"]
    assert [r["status"] for r in rows].count("cluster") == 1
    assert any(r["status"] == "warning" and "1 chromosome" in r["note"] for r in rows)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"format": "x"}, "format"),
        (
            {"format": "edge-iapp-karyogram-layout/1", "image_size": [0, 5], "slots": {}},
            "image_size",
        ),
        (
            {
                "format": "edge-iapp-karyogram-layout/1",
                "image_size": [10, 10],
                "slots": {"25": [0, 0, 1, 1]},
            },
            "chromosome class",
        ),
        (
            {
                "format": "edge-iapp-karyogram-layout/1",
                "image_size": [10, 10],
                "slots": {"1": [0, 0, 0, 1]},
            },
            "x, y, w, h",
        ),
        (
            {
                "format": "edge-iapp-karyogram-layout/1",
                "image_size": [10, 10],
                "slots": {"X": [0, 0, 1, 1], "23": [0, 0, 1, 1]},
            },
            "two slots",
        ),
        (
            {
                "format": "edge-iapp-karyogram-layout/1",
                "image_size": [10, 10],
                "slots": {"X": [0, 0, 1, 1]},
                "segment": {"bogus": 1},
            },
            "unknown segment",
        ),
    ],
)
def test_bad_layouts_say_what_is_wrong(data, match):
    with pytest.raises(LayoutError, match=match):
        parse_layout(data)


def test_missing_or_broken_layout_file(tmp_path):
    with pytest.raises(LayoutError, match="not found"):
        load_layout(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LayoutError, match="JSON"):
        load_layout(bad)
    ok = tmp_path / "ok.json"
    ok.write_text(
        json.dumps(
            {
                "format": "edge-iapp-karyogram-layout/1",
                "image_size": [10, 10],
                "slots": {"1": [0, 0, 5, 5]},
                "segment": {"threshold": 128},
            }
        )
    )
    assert load_layout(ok).segment.threshold == 128


def test_review_marks_inside_slots_are_not_cut_as_chromosomes(tmp_path, make_crop):
    path = tmp_path / "marked.png"
    cv2.imwrite(str(path), _karyogram(make_crop, _normal("XY"), marks=True))
    data = json.loads(EXAMPLE.read_text())
    data["segment"] = {"min_area_fraction": 0.0}  # let the "?" marks survive segmentation
    stats = cut_karyograms(path, parse_layout(data), tmp_path / "out")
    assert stats.crops == 46
    assert all(stats.per_class[c] == 2 for c in CLASS_NAMES[:22])


def test_slot_notes() -> None:
    from edge_iapp.scoring.from_karyograms import _slot_note

    assert _slot_note("Y", 0, found=False) == "no chromosome in this slot"
    assert _slot_note("7", 1, found=True).startswith("1 chromosome cut from this slot")
    assert _slot_note("X", 1, found=True) == ""  # one X: a male cell
    assert _slot_note("7", 2, found=True) == ""
    assert _slot_note("7", 3, found=True).startswith("3 objects in this slot")
    assert _slot_note("X", 3, found=True) == ""  # XXX exists


def test_cli_says_what_it_expected_when_nothing_could_be_read(tmp_path, make_crop):
    """An empty folder, or one of unreadable files, used to end "0 crops written", exit 0."""
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    runner = CliRunner()
    src, out = tmp_path / "karyograms", tmp_path / "out"
    src.mkdir()

    def cut() -> tuple[int, str]:
        r = runner.invoke(
            app, ["dataset", "from-karyograms", str(src), "--layout", str(EXAMPLE), "-o", str(out)]
        )
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return r.exit_code, " ".join(r.output.split())

    code, said = cut()
    assert code == 2 and "no files in" in said and "karyogram images" in said
    assert not out.exists()  # nothing written before the refusal
    (src / "notes.txt").write_text("not an image")
    code, said = cut()
    assert code == 2 and "none of the 1 file(s)" in said and "could be read" in said
    cv2.imwrite(str(src / "k.png"), _karyogram(make_crop, _normal("XY")))
    code, said = cut()
    assert code == 0 and "1 karyogram(s): 46 crops written" in said
    assert "warning:" not in said  # the notes.txt beside it is counted, not fatal
    cv2.imwrite(str(src / "k.png"), np.full((300, 400), 255, np.uint8))  # nothing in any slot
    code, said = cut()
    assert code == 0 and "0 crops written" in said and "warning: no crop was cut" in said
