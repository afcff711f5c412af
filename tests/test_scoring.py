"""Scoring slide folders end to end: real Classifier on ONNX Runtime (CPU), tiny bundle.

The bundle is an untrained resnet18 IAPP-CNN at input 64 (``export_helpers``): scoring
mechanics (files, counts, resumption, errors) do not need accuracy, so the tests check
structure and agreement between outputs, never class accuracy.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_iapp.cli.main import app
from edge_iapp.scoring.cell import PREDICTION_COLUMNS
from edge_iapp.scoring.karyotype import karyotype
from edge_iapp.scoring.score import OutputWriteError, run_scoring

N_CELLS = 50


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import torch
    from export_helpers import tiny_bundle

    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory, precisions=("fp32",))


@pytest.fixture(scope="module")
def classifier(bundle):
    from edge_iapp.runtime.classifier import Classifier

    clf = Classifier(bundle, backend="onnxruntime", precision="fp32")
    yield clf
    clf.close()


@pytest.fixture(scope="module")
def synth_slides(tmp_path_factory) -> Path:
    from edge_iapp.data.synth import synth_cells, write_slides

    out = tmp_path_factory.mktemp("synth") / "slides"
    write_slides(out, synth_cells(N_CELLS, seed=1), seed=1)
    return out


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def scored(synth_slides, bundle, tmp_path_factory):
    """The 50 synthetic cells scored once through the CLI."""
    before = _tree_hash(synth_slides)
    out = tmp_path_factory.mktemp("scored") / "out"
    res = CliRunner().invoke(
        app,
        ["score", str(synth_slides), "--bundle", str(bundle), "--out", str(out), "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    assert _tree_hash(synth_slides) == before  # inputs never modified
    return out, res.output


def test_fifty_cells_every_output_written(scored, synth_slides):
    out, output = scored
    assert "onnxruntime fp32" in output
    truth_cells = _read_csv(synth_slides / "truth_cells.csv")
    truth = _read_csv(synth_slides / "truth.csv")
    assert len(truth_cells) == N_CELLS
    for row in truth_cells:
        cell = out / row["slide"] / row["cell"]
        for name in ("predictions.csv", "karyogram.png", "summary.json"):
            assert (cell / name).is_file(), cell / name
        summary = json.loads((cell / "summary.json").read_text())
        preds = _read_csv(cell / "predictions.csv")
        files = [
            Path(t["file"]).name
            for t in truth
            if t["slide"] == row["slide"] and t["cell"] == row["cell"]
        ]
        assert sorted(p["object"] for p in preds) == sorted(files)
        assert list(preds[0]) == PREDICTION_COLUMNS
        assert summary["count"] == int(row["count"]) == len(preds)
        assert summary["backend"] == "onnxruntime" and summary["precision"] == "fp32"
        # The summary is what the predictions add up to, plain and consistency-adjusted.
        assert summary["karyotype"] == karyotype([p["class"] for p in preds]).iscn
        adjusted = karyotype([p["consistency_class"] for p in preds])
        assert summary["consistency"]["karyotype"] == adjusted.iscn
        changed = sum(p["consistency_class"] != p["class"] for p in preds)
        assert summary["consistency"]["changed"] == changed
        assert summary["doubtful"] == sum(p["review"] == "1" for p in preds)
        for p in preds:
            conf = float(p["confidence"])
            assert 0.0 < conf <= 1.0
            assert all(0.0 < float(p[f"lambda_{b}"]) <= 1.0 for b in ("global", "object", "part"))
            assert (p["review"] == "1") == bool(p["review_reasons"])
            if p["consistency_class"] != p["class"]:
                assert conf < 0.9  # only low-confidence calls move
        image = cv2.imread(str(cell / "karyogram.png"))
        assert image is not None and image.shape == (930, 1070, 3)


def test_slide_tables_reports_and_index_link_everything(scored):
    from html import escape

    from edge_iapp.scoring.karyotype import cell_tally

    out, output = scored
    tallies = {}
    slides = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(slides) == N_CELLS // 5
    for slide in slides:
        rows = _read_csv(slide / "slide_summary.csv")
        assert [r["cell"] for r in rows] == [f"cell_{i:03d}" for i in range(1, 6)]
        assert all(r["status"] == "scored" and r["backend"] == "onnxruntime" for r in rows)
        assert _read_csv(slide / "errors.csv") == []
        html = (slide / "report.html").read_text()
        links = set(re.findall(r'(?:href|src)="([^"]+)"', html))
        for r in rows:
            for name in ("karyogram.png", "predictions.csv", "summary.json"):
                assert f"{r['cell']}/{name}" in links
        for link in links:
            assert (slide / link).is_file(), link
        # the slide's karyotypes by cell count, as the rows give them (html-escaped)
        tally = cell_tally(r["karyotype"] for r in rows)
        consistent = cell_tally(r["karyotype_consistent"] for r in rows)
        assert sum(int(n) for n in re.findall(r"\[(\d+)\]", tally)) == len(rows)
        assert f"before review: {escape(tally)}; after the consistency step: " in html
        assert escape(consistent) in html
        tallies[slide.name] = escape(tally)
        assert f"{slide.name}: {tally}" in output  # score prints up to 10 slides' tallies
    index = (out / "index.html").read_text()
    for slide in slides:
        assert f'href="{slide.name}/report.html"' in index
        assert f"<td>{tallies[slide.name]}</td></tr>" in index
    info = json.loads((out / "run_info.json").read_text())
    assert info["ran"]["backend"] == "onnxruntime" and info["ran"]["precision"] == "fp32"
    assert info["stats"]["scored"] == N_CELLS and info["stats"]["stages"]["branches"] > 0


def test_rerun_skips_finished_cells_and_changes_nothing(scored, synth_slides, classifier):
    out, _ = scored
    before = _tree_hash(out)
    stats = run_scoring(synth_slides, out, classifier, progress=False)
    assert stats.skipped == N_CELLS and stats.scored == 0
    after = _tree_hash(out)
    before.pop("run_info.json")
    after.pop("run_info.json")
    assert after == before


def _spread(crops: list[np.ndarray], cross: np.ndarray) -> np.ndarray:
    canvas = np.full((1100, 1500), 250, np.uint8)
    for i, c in enumerate(crops):
        r, k = divmod(i, 10)
        y, x = 20 + r * 180, 20 + k * 145
        h, w = min(c.shape[0], 170), min(c.shape[1], 135)
        np.minimum(canvas[y : y + h, x : x + w], c[:h, :w], out=canvas[y : y + h, x : x + w])
    y, x = 930, 1300
    v = cross[:, : cross.shape[1]]
    h, w = v.shape
    np.minimum(canvas[y : y + h, x : x + w], v, out=canvas[y : y + h, x : x + w])
    t = np.ascontiguousarray(v.T)
    yy, xx = y + h // 2 - w // 2, x + w // 2 - h // 2
    np.minimum(canvas[yy : yy + w, xx : xx + h], t, out=canvas[yy : yy + w, xx : xx + h])
    return canvas


@pytest.fixture(scope="module")
def bad_slide(tmp_path_factory, synth_slides):
    """One slide with good cells and every kind of bad input."""
    slide = tmp_path_factory.mktemp("bad") / "slide_bad"
    src = synth_slides / "slide_001" / "cell_001"
    good = sorted(src.glob("*.png"))
    (slide / "a_good").mkdir(parents=True)
    for p in good:
        (slide / "a_good" / p.name).write_bytes(p.read_bytes())
    (slide / "b_empty").mkdir()
    mixed = slide / "c_mixed"
    mixed.mkdir()
    for p in good[:10]:
        (mixed / p.name).write_bytes(p.read_bytes())
    (mixed / "notes.txt").write_text("not an image")
    (mixed / "broken.png").write_bytes(good[0].read_bytes()[:60])
    ok, huge = cv2.imencode(".png", np.full((9000, 4), 255, np.uint8))
    (mixed / "huge.png").write_bytes(huge.tobytes())
    spread_dir = slide / "d_spread"
    spread_dir.mkdir()
    crops = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in good]
    longest = max(crops, key=lambda c: c.shape[0] * c.shape[1])  # two large ones crossing
    cv2.imwrite(str(spread_dir / "metaphase.png"), _spread(crops, longest))
    (slide / "e_onebad").mkdir()
    (slide / "e_onebad" / "spread.tif").write_bytes(b"II*\x00garbage")
    return slide


def test_bad_input_is_reported_and_never_stops_the_run(bad_slide, classifier, tmp_path):
    before = _tree_hash(bad_slide)
    out = tmp_path / "out"
    stats = run_scoring(bad_slide, out, classifier, progress=False)
    assert _tree_hash(bad_slide) == before
    assert stats.cells == 5 and stats.scored == 4 and stats.failed == 1
    errors = _read_csv(out / "slide_bad" / "errors.csv")
    by = {(e["cell"], e["file"]): e["error"] for e in errors}
    assert "empty cell folder" in by[("b_empty", "")]
    assert "notes.txt" in {f for c, f in by if c == "c_mixed"}
    assert ("c_mixed", "broken.png") in by and ("c_mixed", "huge.png") in by
    assert "max_side" in by[("c_mixed", "huge.png")] or "larger" in by[("c_mixed", "huge.png")]
    assert ("e_onebad", "spread.tif") in by
    mixed = json.loads((out / "slide_bad" / "c_mixed" / "summary.json").read_text())
    assert mixed["count"] == 10 and mixed["unclassified"] == 3
    assert "count_uncertain" in mixed["flags"]
    preds = _read_csv(out / "slide_bad" / "c_mixed" / "predictions.csv")
    assert sum(p["kind"] == "unreadable" for p in preds) == 3
    table = {r["cell"]: r for r in _read_csv(out / "slide_bad" / "slide_summary.csv")}
    assert table["b_empty"]["status"] == "not scored"
    assert table["a_good"]["count"] == "46"
    # A whole image is segmented: 46 chromosomes, the crossing pair is a cluster.
    spread = json.loads((out / "slide_bad" / "d_spread" / "summary.json").read_text())
    assert spread["input"] == "whole_image"
    assert spread["count"] == 46 and spread["clusters"] == 1
    assert "clusters" in spread["flags"] and spread["segmentation"]["objects"] == 47
    sp = _read_csv(out / "slide_bad" / "d_spread" / "predictions.csv")
    assert [p["kind"] for p in sp].count("cluster") == 1
    assert all(p["bbox"] for p in sp)
    # The empty cell is retried on the next run; the others are finished.
    again = run_scoring(bad_slide, out, classifier, progress=False)
    assert again.skipped == 4 and again.failed == 1


def test_missing_or_corrupted_bundle_fails_before_any_work(tmp_path, synth_slides):
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(
        app, ["score", str(synth_slides), "--bundle", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert res.exit_code == 2 and "not found" in res.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ not json")
    res = runner.invoke(
        app, ["score", str(synth_slides), "--bundle", str(broken), "--out", str(out)]
    )
    assert res.exit_code == 2 and "cannot load bundle" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    res = runner.invoke(
        app,
        [
            "score",
            str(synth_slides),
            "--bundle",
            str(broken),
            "--out",
            str(synth_slides / "inside"),
        ],
    )
    assert res.exit_code == 2 and "overlap" in res.output


def test_output_that_is_a_file_and_bundle_given_as_its_manifest(synth_slides, bundle, tmp_path):
    """-o FILE used to fail after loading with 'File exists ... (free space)'; --bundle
    B/manifest.json (which load_bundle and watch accept) was refused as 'not a bundle'."""
    import shutil

    slide = tmp_path / "slide"
    shutil.copytree(synth_slides / "slide_002" / "cell_001", slide / "cell_001")
    runner = CliRunner()
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    args = ["score", str(slide), "--bundle", str(bundle), "--no-progress", "--out"]
    res = runner.invoke(app, [*args, str(taken)])
    flat = " ".join(res.output.split())
    assert res.exit_code == 2 and "is a file; choose an output folder" in flat
    assert "free space" not in flat and "scoring" not in flat
    assert taken.read_text() == "keep me"
    args[3] = str(bundle / "manifest.json")
    res = runner.invoke(app, [*args, str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "slide" / "cell_001" / "summary.json").is_file()


def test_nan_penalty_and_zero_batch_size_are_refused(synth_slides, tmp_path):
    """--penalty nan used to be written as NaN into every summary.json; --batch-size 0
    made a cell of unreadable files fail with 'range() arg 3 must not be zero'."""
    runner = CliRunner()
    base = ["score", str(synth_slides), "--bundle", str(tmp_path / "nope"), "--no-progress"]
    for extra in (["--penalty", "nan"], ["--penalty", "-1"], ["--batch-size", "0"]):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / "out"), *extra])
        assert res.exit_code == 2 and "must be" in res.output, (extra, res.output)
        assert not (tmp_path / "out").exists()


def test_a_slide_given_as_dot_or_dotdot_keeps_its_name(synth_slides, tmp_path, monkeypatch):
    """`score .` used to write the slide into OUT itself (slide name ""), `score ..` into
    OUT's parent; a second slide scored the same way was then skipped as finished."""
    from edge_iapp.scoring.layout import discover

    out = tmp_path / "out"
    slide = synth_slides / "slide_002"
    for where, arg in ((slide, "."), (slide / "cell_001", ".."), (slide, "./")):
        monkeypatch.chdir(where)
        (job,) = discover(Path(arg), out)
        assert job.name == "slide_002" and job.out == out / "slide_002"
        assert all(c.out.parent == out / "slide_002" for c in job.cells)


def test_images_outside_cell_folders_are_listed_not_skipped_unsaid(synth_slides, bundle, tmp_path):
    """A slide whose images sat directly in its folder (no cell folders), and images
    beside the slide folders, used to be skipped with 0 error rows and no word."""
    import shutil

    cell = synth_slides / "slide_002" / "cell_001"
    slides = tmp_path / "slides"
    shutil.copytree(cell, slides / "slideA" / "cell_001")
    (slides / "slideB").mkdir()
    flat = sorted(cell.glob("*.png"))[:3]
    for f in flat:
        shutil.copy(f, slides / "slideB" / f.name)
    shutil.copy(flat[0], slides / "beside.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["score", str(slides), "--bundle", str(bundle), "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert "beside.png" in res.output and "not scored" in res.output
    rows = _read_csv(out / "slideB" / "errors.csv")
    assert sorted(r["file"] for r in rows) == sorted(f.name for f in flat)
    assert all("outside every cell folder" in r["error"] for r in rows)


def test_full_disk_stops_with_a_clear_message_and_keeps_finished_cells(
    synth_slides, classifier, tmp_path, monkeypatch
):
    # A full disk cannot be made here without root: the write function raises ENOSPC
    # after a few cells, exactly as os.write would.
    import edge_iapp.scoring.cell as cell_mod

    real = cell_mod.atomic_write_text
    calls = {"n": 0}

    def flaky(path, text):
        calls["n"] += 1
        if calls["n"] > 6:  # 2 text files per cell: 3 cells finish
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(cell_mod, "atomic_write_text", flaky)
    slide = synth_slides / "slide_002"
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError, match="disk is full") as info:
        run_scoring(slide, out, classifier, progress=False)
    assert "3 finished cell(s) are kept" in str(info.value)
    done = sorted(p.parent.name for p in out.rglob("summary.json"))
    assert done == ["cell_001", "cell_002", "cell_003"]
    for p in out.rglob("summary.json"):
        json.loads(p.read_text())
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(cell_mod, "atomic_write_text", real)
    stats = run_scoring(slide, out, classifier, progress=False)
    assert stats.skipped == 3 and stats.scored == 2


def test_scoring_modules_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import edge_iapp.scoring.score, edge_iapp.scoring.from_karyograms\n"
        "import edge_iapp.cli.score_cmd\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_pipelined_writing_gives_the_same_files_as_inline(
    scored, synth_slides, classifier, tmp_path
):
    out, _ = scored  # written inline (the default)
    piped = tmp_path / "piped"
    run_scoring(synth_slides / "slide_003", piped, classifier, progress=False, pipeline=True)
    a = _tree_hash(out / "slide_003")
    b = _tree_hash(piped / "slide_003")
    assert a == b and len(a) == 5 * 3 + 3


class _OodPredictor:
    """Calls every chromosome class "1"; the first ``k`` of each cell are out of distribution."""

    backend_name = "fake"

    def __init__(self, k: int) -> None:
        self.k = k

    def predict(self, images):
        from edge_iapp.runtime.result import ChromosomeResult

        probs = np.full(24, 1 / 24, np.float32)
        return [
            ChromosomeResult(
                class_name="1",
                class_index=0,
                confidence=0.99,
                probabilities=probs,
                review=i < self.k,
                review_reasons=["out_of_distribution"] if i < self.k else [],
            )
            for i in range(len(images))
        ]


@pytest.mark.parametrize(("k", "flagged"), [(11, False), (12, True)])
def test_a_cell_mostly_out_of_distribution_is_flagged_unlike_the_training_lab(
    tmp_path, k, flagged
) -> None:
    from edge_iapp.data.synth import synth_cells, write_slides
    from edge_iapp.scoring.cell import CellOptions
    from edge_iapp.scoring.score import run_scoring

    slides = tmp_path / "slides"
    write_slides(slides, synth_cells(1, seed=3), seed=3)
    cell_dir = next(
        p for p in slides.rglob("*") if p.is_dir() and not any(c.is_dir() for c in p.iterdir())
    )
    n = len(list(cell_dir.iterdir()))
    assert n == 46  # a quarter of 46 is 11.5: 12 flagged calls tip the cell
    out = tmp_path / "out"
    stats = run_scoring(
        slides, out, _OodPredictor(k), CellOptions(consistency=False), progress=False
    )
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    assert summary["out_of_distribution"] == {
        "checked": True,
        "calls": 46,
        "flagged": k,
        "share": round(k / 46, 6),
        "unlike_training_lab": flagged,
    }
    assert ("unlike_training_lab" in summary["flags"]) is flagged
    assert sum(s["unlike_training_lab"] for s in stats.slides) == int(flagged)
    table = _read_csv(next(out.rglob("slide_summary.csv")))
    assert ("unlike_training_lab" in table[0]["flags"]) is flagged


def test_lab_shift_needs_ten_calls_and_a_calibration() -> None:
    from edge_iapp.runtime.result import ChromosomeResult
    from edge_iapp.scoring.cell import lab_shift

    def calls(n, k):
        p = np.full(24, 1 / 24, np.float32)
        return [
            ChromosomeResult("1", 0, 0.9, p, review_reasons=["out_of_distribution"] * (i < k))
            for i in range(n)
        ]

    assert lab_shift(calls(9, 9))["unlike_training_lab"] is False  # too few to say
    assert lab_shift(calls(10, 3))["unlike_training_lab"] is True
    assert lab_shift([]) == {
        "checked": True,
        "calls": 0,
        "flagged": 0,
        "share": None,
        "unlike_training_lab": False,
    }
    unchecked = lab_shift(calls(46, 0), checked=False)  # a bundle without OOD calibration
    assert unchecked["flagged"] is None and unchecked["share"] is None
    assert unchecked["unlike_training_lab"] is False and unchecked["checked"] is False


def test_resuming_into_an_output_of_other_settings_is_refused(synth_slides, bundle, tmp_path):
    """Cells of another bundle, precision or option set are never mixed into one report."""
    import shutil

    slide, out = synth_slides / "slide_002", tmp_path / "out"

    def flat(text: str) -> str:  # rich wraps long lines
        return "".join(text.split())

    def score(*extra: str, bundle_dir: Path = bundle):
        args = ["score", str(slide), "--bundle", str(bundle_dir), "--out", str(out)]
        return CliRunner().invoke(app, [*args, "--no-progress", *extra])

    first = score()
    assert first.exit_code == 0, first.output
    scored = _tree_hash(out)
    # same settings (a batch size changes no call): finished cells are skipped
    again = score("--batch-size", "7")
    assert again.exit_code == 0 and "0scored,5alreadyfinished" in flat(again.output)
    # other options: refused before any cell is touched
    other = score("--threshold", "0.8")
    assert other.exit_code == 2 and "holdscellsscoredwithothersettings" in flat(other.output)
    assert '"threshold":0.9' in flat(other.output) and '"threshold":0.8' in flat(other.output)
    # another bundle (same files, another manifest): refused too
    copy = tmp_path / "bundle2"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "created": "another export"}))
    assert score(bundle_dir=copy).exit_code == 2
    after = _tree_hash(out)
    scored.pop("run_info.json")
    after.pop("run_info.json")
    assert after == scored  # nothing was mixed in
    # --force re-scores every cell with the new settings, and records them
    forced = score("--threshold", "0.8", "--force")
    assert forced.exit_code == 0 and "5scored" in flat(forced.output)
    info = json.loads((out / "run_info.json").read_text())
    assert info["options"]["threshold"] == 0.8 and info["model"]["precision"] == "fp32"
    assert score("--threshold", "0.8").exit_code == 0


def test_advice_for_cells_unlike_the_lab_follows_how_the_bundle_was_made():
    from edge_iapp.cli.score_cmd import _lab_advice

    adapted = {"run": "r", "slides": "/slides/labB", "cells": ["s/c1", "s/c2"]}
    assert "adapt the model to them" in _lab_advice({"source": {"run": "r"}})
    advice = _lab_advice({"source": {"run": "r2", "adapted": adapted}})
    assert "already adapted, to 2 cell(s) of /slides/labB" in advice and "finetune" in advice
    assert "adapt r on cells" in advice
    assert "adapt the model to them" in _lab_advice({})  # an old manifest: the default


def test_resume_checks_precision_old_outputs_and_interrupted_force_runs(
    synth_slides, classifier, tmp_path
):
    """The API path: precision recorded as ``model``; older OUTs by what ran; --force runs."""
    from edge_iapp.scoring.score import RUN_INFO, OutputMismatchError

    slide, out = synth_slides / "slide_004", tmp_path / "out"
    fp32 = {"model": {"bundle_sha256": "b", "backend": "onnxruntime", "precision": "fp32"}}
    int8 = {"model": {**fp32["model"], "precision": "int8"}}
    ran_int8 = {"ran": {"backend": "onnxruntime", "precision": "int8"}}
    # nothing finished yet (an earlier run wrote run_info.json, then no cell): no refusal
    out.mkdir()
    (out / RUN_INFO).write_text(json.dumps({**int8, "status": "running"}))
    assert run_scoring(slide, out, classifier, progress=False, run_info=fp32).scored == 5
    info_before = (out / RUN_INFO).read_text()
    with pytest.raises(OutputMismatchError, match="other settings"):
        run_scoring(slide, out, classifier, progress=False, run_info=int8)
    assert (out / RUN_INFO).read_text() == info_before  # refused before writing anything
    # an OUT from before `model` was recorded: compared by the backend and precision that ran
    (out / RUN_INFO).write_text(json.dumps({**ran_int8, "status": "finished"}))
    with pytest.raises(OutputMismatchError, match="precision"):
        run_scoring(slide, out, classifier, progress=False, run_info=fp32)
    # an option field a later version added is no reason to refuse
    old = json.loads(info_before)
    old["options"] = {k: v for k, v in old["options"].items() if k != "penalty"}
    (out / RUN_INFO).write_text(json.dumps(old))
    assert run_scoring(slide, out, classifier, progress=False, run_info=fp32).skipped == 5
    # a --force run that did not finish: only --force may continue it
    (out / RUN_INFO).write_text(
        json.dumps({**json.loads(info_before), "forced": True, "status": "running"})
    )
    with pytest.raises(OutputMismatchError, match="--force"):
        run_scoring(slide, out, classifier, progress=False, run_info=fp32)
    assert (
        run_scoring(slide, out, classifier, progress=False, run_info=fp32, force=True).scored == 5
    )
    assert run_scoring(slide, out, classifier, progress=False, run_info=fp32).skipped == 5
