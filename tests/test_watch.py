"""The watched-folder service: once over good and bad files, restart, inputs untouched."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import chromosome_crop
from typer.testing import CliRunner

from edge_iapp.cli.main import app
from edge_iapp.runtime import watch as watch_mod
from edge_iapp.runtime.watch import (
    INDEX_FILE,
    RESULTS_DIR,
    FolderWatcher,
    WatchLocked,
    read_index,
)


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from edge_iapp.runtime.classifier import Classifier

    clf = Classifier(tiny_bundle, backend="onnxruntime", precision="fp32")
    yield clf
    clf.close()


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), chromosome_crop(40 + seed, 16 + seed % 4, seed=seed))


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file, hidden and temporary ones included."""
    return {
        p.relative_to(folder).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """A capture folder: 4 good images (one in a sub-folder), 3 bad ones, 3 ignored."""
    d = tmp_path / "incoming"
    for i in range(3):
        _png(d / f"cell1_chr{i}.png", i)
    _png(d / "slide2" / "cell1_chr0.png", 7)
    good = cv2.imencode(".png", chromosome_crop(seed=9))[1].tobytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "empty.tif").write_bytes(b"")
    (d / "not_an_image.bmp").write_bytes(b"hello, this is text")
    (d / "notes.txt").write_text("operator notes")  # not an image suffix: ignored
    (d / "being_written.png.tmp").write_bytes(good)  # temporary name: ignored
    (d / ".hidden.png").write_bytes(good)  # hidden: ignored
    return d


GOOD = {"cell1_chr0.png", "cell1_chr1.png", "cell1_chr2.png", "slide2/cell1_chr0.png"}
BAD = {"truncated.png", "empty.tif", "not_an_image.bmp"}


def _watch(capture: Path, out: Path, bundle: Path, *extra: str):
    return CliRunner().invoke(
        app,
        [
            "watch",
            str(capture),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--once",
            "--settle",
            "0",
            *extra,
        ],
    )


def test_once_then_restart_processes_only_new_files(capture, tmp_path, tiny_bundle, classifier):
    out = tmp_path / "out"
    before = _snapshot(capture)
    res = _watch(capture, out, tiny_bundle)
    assert res.exit_code == 0, res.output
    assert "4 classified, 3 errors" in res.output

    rows = {r["file"]: r for r in _rows(out / "results.csv")}
    assert set(rows) == GOOD
    errors = {r["file"]: r["error"] for r in _rows(out / "errors.csv")}
    assert set(errors) == BAD
    assert all(msg.strip() for msg in errors.values())
    assert "0 bytes" in errors["empty.tif"]
    # The CSV row and the per-file JSON are the classifier's own call for that file.
    ref = classifier.predict([capture / "cell1_chr1.png"])[0]
    data = json.loads((out / "results" / "cell1_chr1.png.json").read_text())
    assert data["class_name"] == ref.class_name == rows["cell1_chr1.png"]["class"]
    np.testing.assert_allclose(data["probabilities"], ref.probabilities, atol=1e-5)
    assert data["backend"] == "onnxruntime" and data["precision"] == "fp32"
    assert _snapshot(capture) == before  # inputs untouched
    # Outputs get the mode open() would give (mkstemp alone would make them 0600).
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "results.csv").stat().st_mode & 0o777 == 0o666 & ~umask

    # Restart: one new file, one changed file; nothing else is redone.
    first_index = read_index(out)
    _png(capture / "slide2" / "cell1_chr1.png", 11)
    _png(capture / "cell1_chr2.png", 12)  # rewritten by the capture system
    os.utime(capture / "cell1_chr2.png", ns=(1, 1))  # a different mtime for sure
    res = _watch(capture, out, tiny_bundle)
    assert res.exit_code == 0, res.output
    assert "2 classified, 0 errors" in res.output
    index = read_index(out)
    assert len((out / INDEX_FILE).read_text().splitlines()) == 1 + len(index)  # compacted
    redone = {k for k in index if index[k] != first_index.get(k)}
    assert redone == {"slide2/cell1_chr1.png", "cell1_chr2.png"}
    assert set(r["file"] for r in _rows(out / "results.csv")) == GOOD | {"slide2/cell1_chr1.png"}
    assert set(r["file"] for r in _rows(out / "errors.csv")) == BAD

    # A third run has nothing to do.
    res = _watch(capture, out, tiny_bundle)
    assert "0 classified, 0 errors" in res.output and "8 done before" in res.output


def test_a_file_still_being_written_waits(capture, tmp_path, classifier):
    out = tmp_path / "out"
    with FolderWatcher(classifier.predict, capture, out, settle_s=3600) as w:
        report = w.process_ready()  # first sighting of every file: none is ready
        assert report.classified == report.errors == 0 and report.waiting == 7
        report = w.process_ready()  # unchanged, but not for settle_s yet
        assert report.classified == 0 and report.waiting == 7
    with FolderWatcher(classifier.predict, capture, out, settle_s=0) as w:
        w.scan()
        # The capture software renames its temporary file: picked up after it settles.
        os.replace(capture / "being_written.png.tmp", capture / "renamed.png")
        _png(capture / "cell1_chr0.png", 20)  # rewritten between the two scans: not ready
        report = w.process_ready()
        assert report.classified == 3  # 2 unchanged good ones + slide2's
        assert report.errors == 3 and report.waiting == 2
        report = w.process_ready()
        assert report.classified == 2  # renamed.png and the grown file, now stable


def test_an_output_write_failure_loses_nothing(capture, tmp_path, classifier, monkeypatch):
    out = tmp_path / "out"
    real = watch_mod.atomic_write_text
    calls = {"n": 0}

    def disk_full_on_a_result(path, text):
        # A full disk cannot be made here: fail the second per-file result write.
        if Path(path).suffix == ".json" and RESULTS_DIR in Path(path).parts:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(watch_mod, "atomic_write_text", disk_full_on_a_result)
    with FolderWatcher(classifier.predict, capture, out, settle_s=0, batch_size=46) as w:
        with pytest.raises(OSError, match="No space"):
            w.run_once()
        assert read_index(out) == {}  # nothing of the failed batch recorded as done
        report = w.run_once()  # the disk has room again: the whole batch is redone
    assert report.classified == 4 and report.errors == 3
    assert set(read_index(out)) == GOOD | BAD


def test_a_line_cut_short_by_a_kill_is_redone(capture, tmp_path, classifier):
    out = tmp_path / "out"
    with FolderWatcher(classifier.predict, capture, out, settle_s=0) as w:
        assert w.run_once().classified == 4
    lines = (out / INDEX_FILE).read_text().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if '"cell1_chr2.png"' in ln)
    # A kill while appending: the last line is half written.
    (out / INDEX_FILE).write_text("".join(lines[:cut] + lines[cut + 1 :]) + lines[cut][:40])
    with FolderWatcher(classifier.predict, capture, out, settle_s=0) as w:
        assert "cell1_chr2.png" not in w.index["files"]
        report = w.run_once()
    assert report.classified == 1 and report.errors == 0
    assert {r["file"] for r in _rows(out / "results.csv")} == GOOD
    assert len(_rows(out / "results.csv")) == 4  # no duplicate rows


def test_retry_errors_classifies_failed_files_again(capture, tmp_path, classifier):
    out = tmp_path / "out"
    with FolderWatcher(classifier.predict, capture, out, settle_s=0) as w:
        assert w.run_once().errors == 3
    with FolderWatcher(classifier.predict, capture, out, settle_s=0) as w:
        assert w.run_once().errors == 0  # failed files are not retried by default
    with FolderWatcher(classifier.predict, capture, out, settle_s=0, retry_errors=True) as w:
        report = w.run_once()
        assert report.errors == 3 and report.classified == 0
        assert w.run_once().errors == 0  # once each: not again at every poll
    assert len(_rows(out / "errors.csv")) == 3  # rebuilt, not appended twice


def test_two_watchers_cannot_share_an_output_folder(capture, tmp_path, classifier):
    out = tmp_path / "out"
    with FolderWatcher(classifier.predict, capture, out), pytest.raises(WatchLocked):
        FolderWatcher(classifier.predict, capture, out)


def test_output_inside_the_watched_folder_is_not_scanned(capture, classifier):
    out = capture / "edge-iapp-results"
    with FolderWatcher(classifier.predict, capture, out, settle_s=0) as w:
        assert w.run_once().classified == 4
        assert w.run_once().classified == 0


def test_the_banner_says_what_runs(capture, tmp_path, tiny_bundle):
    pytest.importorskip("openvino")
    res = _watch(capture, tmp_path / "out", tiny_bundle, "--backend", "ov", "--precision", "FP32")
    assert res.exit_code == 0, res.output
    assert f"-> {tmp_path / 'out'} (openvino, fp32)" in " ".join(res.output.split())
    header = json.loads((tmp_path / "out" / "processed.jsonl").read_text().splitlines()[0])
    assert header["model"]["backend"] == "openvino"  # the alias resolved


def test_a_cell_relative_bundle_is_said_to_flag_every_watched_image(capture, tmp_path, tiny_bundle):
    """The watcher never has a whole cell: with a cell-relative bundle it says so at start,
    and every image is flagged with the reason."""
    import shutil

    bundle = tmp_path / "cell_bundle"  # the same graphs; only the host preprocessing differs
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocess"].update(size_mode="cell", cell_length=48)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    res = _watch(capture, tmp_path / "out", bundle)
    assert res.exit_code == 0, res.output
    assert "sizedbythetrainingset'smedianandflaggedforreview" in "".join(res.output.split())
    rows = _rows(tmp_path / "out" / "results.csv")
    assert {r["file"] for r in rows} == GOOD
    assert all("size_fallback" in r["review_reasons"] for r in rows)
    plain = _watch(capture, tmp_path / "out_plain", tiny_bundle)
    assert "size_fallback" not in plain.output and "sizedbythetraining" not in plain.output


def test_cli_errors_are_clear(tmp_path, tiny_bundle):
    res = CliRunner().invoke(
        app,
        [
            "watch",
            str(tmp_path / "nope"),
            "--bundle",
            str(tiny_bundle),
            "--out",
            str(tmp_path / "o"),
            "--once",
        ],
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "in").mkdir()
    res = CliRunner().invoke(
        app,
        [
            "watch",
            str(tmp_path / "in"),
            "--bundle",
            str(tmp_path / "no_bundle"),
            "--out",
            str(tmp_path / "o"),
            "--once",
        ],
    )
    assert res.exit_code == 2 and "cannot load bundle" in res.output
    assert "Traceback" not in res.output


def test_an_output_that_is_a_file_or_the_watched_folder_is_refused_up_front(capture, tmp_path):
    """-o FILE used to end in '[Errno 17] File exists' after loading the bundle."""
    taken = tmp_path / "results.txt"
    taken.write_text("keep me")
    no_bundle = tmp_path / "no_bundle"  # the checks come first: no bundle is needed
    res = _watch(capture, taken, no_bundle)
    assert res.exit_code == 2 and "is a file; choose an output folder" in res.output
    assert taken.read_text() == "keep me"
    res = _watch(capture, capture, no_bundle)
    assert res.exit_code == 2 and "is the watched folder" in " ".join(res.output.split())


def test_service_mode_picks_up_new_files_and_stops_cleanly_on_sigterm(
    capture, tmp_path, tiny_bundle
):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_iapp.cli.main",
            "watch",
            str(capture),
            "--bundle",
            str(tiny_bundle),
            "--out",
            str(out),
            "--poll",
            "0.2",
            "--settle",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )

    def wait_for_rows(n: int) -> set[str]:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.csv").exists():
                files = {r["file"] for r in _rows(out / "results.csv")}
                if len(files) >= n:
                    return files
            time.sleep(0.2)
        raise AssertionError(f"no {n} results; watcher output:\n{proc.communicate()[0]}")

    try:
        assert wait_for_rows(4) == GOOD
        _png(capture / "late.png", 30)  # arrives while the service runs
        assert wait_for_rows(5) == GOOD | {"late.png"}
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopping after the current batch" in output
    assert {r["file"] for r in _rows(out / "errors.csv")} == BAD


def test_a_stop_request_ends_the_pass_after_the_current_batch(capture, tmp_path, classifier):
    import threading

    stop = threading.Event()

    def predict_then_stop(paths):  # SIGTERM arrives while the first batch runs
        stop.set()
        return classifier.predict(paths)

    with FolderWatcher(predict_then_stop, capture, tmp_path / "out", settle_s=0, batch_size=2) as w:
        w.scan()
        report = w.process_ready(stop)
        assert report.classified + report.errors == 2  # one batch, then stop
        stop.clear()
        report = w.process_ready(stop)
        assert report.already_done == 2


def test_an_output_of_another_model_is_refused_before_loading(
    capture, tmp_path, tiny_bundle, monkeypatch
):
    """watch into an OUT written with another bundle or precision used to log a warning
    and mix both models' rows in one index (whose header then took the new model, so the
    next run did not even warn). Like score: refused, before the bundle is loaded, with
    the hint to use a new OUT or --force; --force classifies every file again."""
    import shutil

    from edge_iapp.runtime import classifier as classifier_mod

    out = tmp_path / "out"
    assert _watch(capture, out, tiny_bundle).exit_code == 0
    other = tmp_path / "other_bundle"  # the same graphs, exported again: another manifest
    shutil.copytree(tiny_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["created"] = "2001-01-01T00:00:00+00:00"
    (other / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(out)

    def loaded(*_a, **_k):
        raise AssertionError("the bundle was loaded before OUT was checked")

    with monkeypatch.context() as m:
        m.setattr(classifier_mod.Classifier, "__init__", loaded)
        for bundle, extra, differs in (
            (other, [], f"this run has bundle {other.resolve()} (manifest sha256 "),
            (tiny_bundle, ["--precision", "int8"], "(precision fp32); this run has precision int8"),
        ):
            res = _watch(capture, out, bundle, *extra)
            text = " ".join(res.output.split())
            assert res.exit_code == 2, res.output
            assert "holds calls of another model" in text and differs in text, text
            assert "new output folder" in text and "--force" in text and "Traceback" not in text
    assert _snapshot(out) == before  # nothing written

    res = _watch(capture, out, other, "--force")
    assert res.exit_code == 0, res.output
    assert "4 classified, 3 errors" in res.output  # everything again, with this model
    header = json.loads((out / INDEX_FILE).read_text().splitlines()[0])
    assert header["model"]["bundle"] == str(other.resolve())
    assert (
        header["model"]["bundle_sha256"]
        == hashlib.sha256((other / "manifest.json").read_bytes()).hexdigest()
    )
    assert set(read_index(out)) == GOOD | BAD
    assert len(_rows(out / "results.csv")) == 4  # no row of the first model left
    res = _watch(capture, out, tiny_bundle)  # the header says what the rows came from
    assert res.exit_code == 2 and "holds calls of another model" in " ".join(res.output.split())
    res = _watch(capture, out, other)  # the same model resumes
    assert res.exit_code == 0 and "0 classified, 0 errors" in res.output


def test_a_watcher_refuses_an_index_of_another_model(capture, tmp_path, classifier):
    """The library refuses too (and frees the folder); a moved bundle is the same model;
    an index written before the manifest hash was recorded is compared by path."""
    from edge_iapp.runtime.watch import WatchModelMismatch

    out = tmp_path / "out"
    model = {"bundle": "/b", "bundle_sha256": "aa", "backend": "onnxruntime", "precision": "fp32"}
    with FolderWatcher(classifier.predict, capture, out, settle_s=0, model=model) as w:
        assert w.run_once().classified == 4
    for change in ({"precision": "int8"}, {"backend": "openvino"}, {"bundle_sha256": "bb"}):
        with pytest.raises(WatchModelMismatch, match="--force"):
            FolderWatcher(classifier.predict, capture, out, model={**model, **change})
    moved = {**model, "bundle": "/elsewhere/b"}
    with FolderWatcher(classifier.predict, capture, out, settle_s=0, model=moved) as w:
        assert w.run_once().classified == 0  # not locked by the refused ones; same model
    old = {k: v for k, v in model.items() if k != "bundle_sha256"}
    with FolderWatcher(classifier.predict, capture, tmp_path / "old", model=old):
        pass
    (tmp_path / "old" / INDEX_FILE).write_text(
        (tmp_path / "old" / INDEX_FILE).read_text()
        + (out / INDEX_FILE).read_text().split("\n", 1)[1]
    )
    with pytest.raises(WatchModelMismatch, match="bundle"):
        FolderWatcher(classifier.predict, capture, tmp_path / "old", model=moved)
    with FolderWatcher(classifier.predict, capture, tmp_path / "old", model=model) as w:
        assert len(w.index["files"]) == 7  # same path, backend, precision: resumed
    # force: the earlier rows go, and their result files (a vanished input's too)
    gone = out / RESULTS_DIR / "slide2" / "cell1_chr0.png.json"
    assert gone.is_file()
    (capture / "slide2" / "cell1_chr0.png").unlink()
    other = {**model, "precision": "int8"}
    with FolderWatcher(classifier.predict, capture, out, settle_s=0, model=other, force=True) as w:
        assert w.run_once().classified == 3
    assert not gone.exists() and len(list((out / RESULTS_DIR).rglob("*.json"))) == 3
    assert len(_rows(out / "results.csv")) == 3 and len(read_index(out)) == 6
