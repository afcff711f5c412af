"""edge-iapp bench: rows, statuses for unavailable combos, JSON/CSV, the accuracy floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import tiny_bundle
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from edge_iapp.bench import check_floor, macro_f1, review_shares  # noqa: E402
from edge_iapp.cli.main import app  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    bundle = tiny_bundle(tmp_path_factory)
    data = next(p for p in Path(bundle).parents[1].iterdir() if p.name.startswith("data")) / "set"
    return bundle, data, data.parent / "set_split.json"


def _bench(setup, tmp_path, *extra, backends="onnxruntime,torch", precisions="fp32,int8"):
    bundle, data, split = setup
    args = [
        "bench",
        str(bundle),
        "--data",
        str(data),
        "--split",
        str(split),
        "--subset",
        "test",
        "--backend",
        backends,
        "--precision",
        precisions,
        "--single",
        "2",
        "--threads",
        "1",
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "r.csv"),
        *extra,
    ]
    return CliRunner().invoke(app, args)


def test_bench_rows_and_outputs(setup, tmp_path):
    result = _bench(setup, tmp_path, "--min-accuracy", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert list(rows)[0] == ("onnxruntime", "fp32")  # the reference runs first
    ref = rows[("onnxruntime", "fp32")]
    assert ref["status"] == "ok" and ref["drop_points"] == 0 and ref["agreement"] == 1.0
    assert ref["images"] == report["images"] > 0
    assert ref["img_per_s"] > 0 and ref["batch_p50_ms"] > 0 and ref["single_p50_ms"] > 0
    assert 0 < ref["preprocess_share"] < 1
    assert rows[("torch", "fp32")]["agreement"] == 1.0  # torch and ORT fp32 agree
    assert rows[("torch", "int8")]["status"].startswith("unavailable")
    assert rows[("torch", "int8")]["file_mb"] is None  # nothing was loaded for that row
    assert rows[("onnxruntime", "int8")]["file_mb"] < ref["file_mb"]
    # the review flag's shares of the wrong and the right calls make up its overall rate
    wrong = round((1 - ref["accuracy"]) * ref["images"])
    flagged = [ref["review_errors"] or 0.0, ref["review_correct"] or 0.0]
    assert ref["review_rate"] * ref["images"] == pytest.approx(
        flagged[0] * wrong + flagged[1] * (ref["images"] - wrong)
    )
    assert "review%all/wrong/right" in "".join(result.output.split())
    csv_lines = (tmp_path / "r.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("backend,precision,status")


def test_bench_floor_fails_the_run(setup, tmp_path):
    result = _bench(setup, tmp_path, "--min-accuracy", "1.01")
    assert result.exit_code == 1
    assert "below the floor" in result.output


def test_bench_bad_bundle_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "nope"), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


def test_bench_bad_numbers_and_output_paths_are_clean_errors(setup, tmp_path):
    """--batch 0/-5 used to give a failed row or a traceback; --json DIR a traceback
    after the whole benchmark had run."""
    for extra in (
        ["--batch", "0"],
        ["--batch", "-5"],
        ["--limit", "0"],
        ["--single", "-1"],
        ["--threads", "0"],
    ):
        result = _bench(setup, tmp_path, *extra, backends="onnxruntime", precisions="fp32")
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output and "must be" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    bundle, data, split = setup
    args = ["bench", str(bundle), "--data", str(data), "--backend", "onnxruntime"]
    result = CliRunner().invoke(app, [*args, "--precision", "fp32", "--json", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    assert "bench onnxruntime" not in result.output  # refused before any work


def test_review_shares():
    correct = np.array([True, True, True, False, False])
    review = np.array([False, True, False, True, False])
    assert review_shares(correct, review) == (0.5, pytest.approx(1 / 3))
    assert review_shares(np.ones(3, bool), np.zeros(3, bool)) == (None, 0.0)


def test_a_cell_relative_bundle_is_benched_on_whole_cells(setup, tmp_path_factory):
    """Each image carries its cell and a cell never spans two calls, even with a batch
    smaller than a cell: the calls are those a whole-cell Classifier makes (score's)."""
    from export_helpers import make_run, shared

    from edge_iapp.bench import bench_one, load_labelled
    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.bundle import load_bundle
    from edge_iapp.runtime.classifier import Classifier

    _, data, split = setup
    run = shared(tmp_path_factory, "cellrun", lambda d: make_run(d / "run", size_mode="cell"))
    folder = tmp_path_factory.mktemp("cellbundle")
    # INT8 calibration and parity images are sized by their whole cells (the rest of each
    # cell is read for the size only)
    export_bundle(
        run,
        folder / "b",
        ("fp32", "int8"),
        calib_data=data,
        calib_split=split,
        calib_size=24,
        parity_size=8,
        log=lambda _m: None,
    )
    bundle = load_bundle(folder / "b")
    assert bundle.preprocess.size_mode == "cell"
    assert bundle.calibration["per_branch"]["global"]["images"] == 24
    assert bundle.parity["inputs"].startswith("8 held-out images")
    # --limit keeps whole cells for such a bundle (an image's size needs its cell)
    few, _, _ = load_labelled(data, limit=30, log=lambda _m: None, whole_cells=True)
    counts = {c: sum(im.cell == c for im in few) for c in {im.cell for im in few}}
    assert sum(counts.values()) >= 30 and set(counts.values()) == {24}  # 24 classes a cell
    images, labels, _ = load_labelled(data)  # 5 cells
    cells = [im.cell for im in images]
    assert None not in cells and len(set(cells)) > 1
    assert cells == sorted(cells)  # a cell's images next to each other
    row = bench_one(bundle, "onnxruntime", "fp32", images, labels, batch=5, single=0, threads=1)
    assert row.status == "ok", row.status
    with Classifier(bundle, backend="onnxruntime", precision="fp32", threads=1) as clf:
        whole = [clf.predict([im for im in images if im.cell == c]) for c in dict.fromkeys(cells)]
    assert row.predictions == [r.class_index for results in whole for r in results]


def test_macro_f1_and_floor_rules():
    labels = np.array([0, 0, 1, 1])
    assert macro_f1(labels, labels) == 1.0
    assert macro_f1(labels, np.array([0, 1, 1, 1])) == pytest.approx((2 / 3 + 0.8) / 2)
    report = {
        "rows": [
            {
                "backend": "a",
                "precision": "int8",
                "status": "ok",
                "accuracy": 0.95,
                "drop_points": 0.5,
            },
            {
                "backend": "b",
                "precision": "fp16",
                "status": "unavailable: x",
                "accuracy": None,
                "drop_points": None,
            },
        ]
    }
    assert check_floor(report, max_drop=0.3) == ["a int8: top-1 drop 0.50 points > 0.3"]
    assert check_floor(report, min_accuracy=0.9, max_drop=1.0) == []
    # the reference did not run: a drop floor cannot pass unchecked
    report["rows"][0]["drop_points"] = None
    report.update(reference="onnxruntime:fp32", reference_status="unavailable: no onnxruntime")
    assert check_floor(report, max_drop=1.0) == [
        "a int8: top-1 drop not measured (onnxruntime:fp32: unavailable: no onnxruntime)"
    ]
    assert check_floor(report, min_accuracy=0.9) == []


def test_the_reference_row_runs_even_when_not_asked_for(setup, tmp_path):
    result = _bench(setup, tmp_path, "--max-drop", "0.5", backends="torch", precisions="fp32")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["reference_added"] is True
    assert [(r["backend"], r["precision"]) for r in report["rows"]] == [
        ("onnxruntime", "fp32"),
        ("torch", "fp32"),
    ]
    assert report["rows"][1]["drop_points"] is not None and report["rows"][1]["agreement"] == 1.0


def test_limit_is_stratified_over_classes():
    from types import SimpleNamespace

    from edge_iapp.bench import stratified_subset

    samples = [
        SimpleNamespace(path=f"/d/{c}/{k}.png", class_name=c, group=f"G{k % 4}")
        for c in ("1", "2", "X")
        for k in range(10)
    ]
    picked = stratified_subset(samples, 9)
    assert sorted(s.class_name for s in picked) == ["1"] * 3 + ["2"] * 3 + ["X"] * 3
    assert [s.path for s in picked] == sorted(s.path for s in picked)
    assert len(stratified_subset(samples, 2)) == 2


def test_bench_names_and_split_groups_are_checked(setup, tmp_path):
    # a typo is an error, not an "unavailable" row
    result = _bench(setup, tmp_path, backends="onnxrt")
    assert result.exit_code == 2 and "unknown backend 'onnxrt'" in " ".join(result.output.split())
    result = _bench(setup, tmp_path, precisions="int9")
    assert result.exit_code == 2 and "unknown precision 'int9'" in result.output
    bundle, data, split = setup
    record = json.loads(split.read_text())
    # a split naming a group the folder lacks: said, and the rest is benchmarked
    record["groups"]["test"].append("S9999")
    more = tmp_path / "more.json"
    more.write_text(json.dumps(record))
    result = _bench((bundle, data, more), tmp_path, backends="onnxruntime", precisions="fp32")
    assert result.exit_code == 0, result.output
    assert "1 of the split's" in result.output and "(S9999)" in result.output
    # a part none of whose groups is there: the error says why
    record["groups"]["test"] = ["S9998", "S9999"]
    more.write_text(json.dumps(record))
    result = _bench((bundle, data, more), tmp_path, backends="onnxruntime", precisions="fp32")
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and "2 of the split's 2 test group(s)" in flat


def test_threads_go_only_to_the_backends_that_take_them(setup):
    """Backends refuse options they do not take; ``--threads`` is for the CPU backends,
    so a TensorRT row must be "unavailable" here (no TensorRT), not a failed load."""
    from edge_iapp.bench import run_bench

    bundle, data, split = setup
    messages: list[str] = []
    report = run_bench(
        bundle,
        data,
        split,
        backends=["tensorrt"],
        precisions=["fp32"],
        limit=4,
        single=0,
        threads=1,
        log=messages.append,
    )
    rows = {r["backend"]: r for r in report["rows"]}
    assert rows["onnxruntime"]["status"] == "ok"  # the reference, with threads=1
    assert not rows["tensorrt"]["status"].startswith("failed"), rows["tensorrt"]["status"]
    assert any("--threads does not apply to tensorrt" in m for m in messages), messages
