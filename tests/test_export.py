"""Export of a tiny run: three graphs per precision, dynamic batch, parity stored, clean errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from export_helpers import INPUT_SIZE, make_run, shared, tiny_bundle

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edge_iapp.export.bundle import BRANCHES, load_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(tiny_bundle(tmp_path_factory))


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_three_graphs_per_precision_with_dynamic_batch(bundle):
    assert bundle.precisions == ["fp32", "fp16", "int8"]
    for branch in BRANCHES:
        io = bundle.manifest["branches"][branch]
        assert io["input"]["name"] == "input"
        assert io["input"]["shape"] == ["batch", 1, INPUT_SIZE, INPUT_SIZE]
        expected = ["logits", "part_maps"] if branch == "object" else ["logits"]
        assert bundle.output_names(branch) == expected
        for precision in bundle.precisions:
            model = onnx.load(str(bundle.file(branch, precision)))
            assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
            sess = _session(bundle.file(branch, precision))
            for n in (1, 3):
                outs = sess.run(
                    None, {"input": np.full((n, 1, INPUT_SIZE, INPUT_SIZE), 0.5, np.float32)}
                )
                assert outs[0].shape == (n, 24)
                assert all(o.dtype == np.float32 for o in outs)
                if branch == "object":
                    assert outs[1].shape[:2] == (n, 2)


def test_simplified_graph_has_no_batchnorm_or_junk(bundle):
    ops = {n.op_type for n in onnx.load(str(bundle.file("object", "fp32"))).graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops
    assert {"Conv", "ReduceSum", "Gemm"} <= ops


def test_parity_is_stored_and_plausible(bundle):
    parity = bundle.parity
    assert "held-out" in parity["inputs"]
    for branch in BRANCHES:
        fp32 = parity["fp32"][branch]
        assert fp32["images"] > 0
        assert fp32["max_abs_logit_diff"] < 1e-3 and fp32["top1_agreement"] == 1.0
        assert parity["fp16"][branch]["max_abs_logit_diff"] < 0.05
        int8 = parity["int8"][branch]
        assert 0.0 < int8["max_abs_logit_diff"] < 5.0  # quantized: not bit-equal, not garbage
        assert 0.0 <= int8["top1_agreement"] <= 1.0
    assert parity["fp32"]["object"]["part_mask_agreement"] == 1.0
    assert "fused_top1_agreement" in parity["int8"]["pipeline"]


def test_fp16_graph_is_typed_with_fp32_io_and_fp32_part_maps(bundle):
    from onnx import TensorProto

    model = onnx.load(str(bundle.file("object", "fp16")))
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    for v in list(model.graph.input) + list(model.graph.output):
        assert v.type.tensor_type.elem_type == TensorProto.FLOAT, v.name
    # The channel sums that make part_maps read float32 tensors (Cast to float before them).
    prod = {o: n for n in model.graph.node for o in n.output}
    sums = [n for n in model.graph.node if n.op_type == "ReduceSum"]
    assert sums
    for n in sums:
        src = prod[n.input[0]]
        assert src.op_type == "Cast" and src.attribute[0].i == TensorProto.FLOAT


def test_manifest_records_calibration_versions_and_source(bundle):
    m = bundle.manifest
    cal = m["calibration"]
    assert cal["method"] == "max" and cal["size"] == 24
    assert set(cal["per_branch"]) == set(BRANCHES)
    assert m["libraries"]["onnxruntime"] and m["libraries"]["torch"]
    assert m["preprocess"]["input_size"] == INPUT_SIZE
    assert len(m["source"]["checkpoint_sha256"]) == 64
    manifest = json.loads((bundle.path / "calibration.json").read_text())
    assert manifest["size"] == 24 and len(manifest["per_class"]) == 24


def test_bundle_folder_is_readable_by_other_users(bundle):
    # the folder is made by mkdtemp (0700) and renamed into place: give it the usual mode
    from edge_iapp.ioutil import process_umask

    mode = bundle.path.stat().st_mode & 0o777
    assert mode == 0o777 & ~process_umask(), oct(mode)
    assert all(p.stat().st_mode & 0o444 == 0o444 & ~process_umask() for p in bundle.path.iterdir())


def test_int8_without_calibration_data_is_a_clear_error(tmp_path_factory, tmp_path):
    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.calibration import CalibrationError

    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    with pytest.raises(CalibrationError, match="calib-data"):
        export_bundle(run, tmp_path / "b", ["int8"], log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_corrupted_checkpoint_is_a_clear_error(tmp_path_factory, tmp_path):
    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.onnx_export import ExportError

    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    (bad / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="corrupted"):
        export_bundle(bad, tmp_path / "b", ["fp32"], log=lambda _m: None)


def test_existing_bundle_is_not_overwritten_without_force(bundle, tmp_path_factory):
    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.onnx_export import ExportError

    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(run, bundle.path, ["fp32"], log=lambda _m: None)
    load_bundle(bundle.path)  # untouched


def test_force_never_replaces_a_folder_that_is_not_a_bundle(tmp_path):
    """``--out RUN --force`` (or a data folder) used to delete the training run."""
    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.onnx_export import ExportError

    run = make_run(tmp_path / "run")
    data = tmp_path / "data"
    (data / "1").mkdir(parents=True)
    (data / "1" / "a.png").write_bytes(b"image")
    for out in (run, data, tmp_path, data / "1" / "a.png"):
        with pytest.raises(ExportError, match="not a model bundle"):
            export_bundle(run, out, ["fp32"], force=True, log=lambda _m: None)
    assert (run / "last.pt").is_file() and (run / "config.json").is_file()
    assert (data / "1" / "a.png").read_bytes() == b"image"


def test_a_damaged_calibration_manifest_is_named(tmp_path_factory, tmp_path):
    """A cut --calib-manifest used to fail with a bare JSON message naming no file."""
    from export_helpers import make_dataset

    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.calibration import CalibrationError

    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    data = shared(tmp_path_factory, "data", lambda d: make_dataset(d / "set")[0])
    cut = tmp_path / "gband.json"
    cut.write_text('{"format": "edge-iapp-calibration", "ima')
    with pytest.raises(CalibrationError, match=r"calibration manifest .*gband\.json"):
        export_bundle(
            run,
            tmp_path / "b",
            ["int8"],
            calib_data=data,
            calib_split=data.parent / f"{data.name}_split.json",
            calib_size=24,
            calib_manifest=cut,
            log=lambda _m: None,
        )
    assert not (tmp_path / "b").exists()


def test_export_cli_fails_cleanly_on_a_non_run(tmp_path):
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    result = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "not a training run" in " ".join(result.output.split())


def test_export_cli_writes_the_review_threshold(tmp_path_factory):
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    out = tmp_path_factory.mktemp("review") / "bundle"
    args = ["export", str(run), "--out", str(out), "-p", "fp32", "--no-engines"]
    result = CliRunner().invoke(app, [*args, "--min-confidence", "1.5"])
    assert result.exit_code == 2 and "--min-confidencemustbein(0,1]" in "".join(
        result.output.split()
    )
    assert not out.exists()
    result = CliRunner().invoke(app, [*args, "--min-confidence", "0.98"])
    assert result.exit_code == 0, result.output
    assert "confidencebelow0.98(--min-confidence)" in "".join(result.output.split())
    review = load_bundle(out).review
    assert review["min_confidence"] == 0.98 and review["min_branch_agreement"] == 2


def test_export_writes_the_threshold_finetune_placed(tmp_path_factory):
    """RUN/review.json (finetune's) sets the bundle's T; --min-confidence overrides it; a
    file placed for other weights is ignored, with a note."""
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app
    from edge_iapp.train.review_run import write_run_review

    run = tmp_path_factory.mktemp("placed") / "run"
    shutil.copytree(shared(tmp_path_factory, "run", lambda d: make_run(d / "run")), run)
    placed = {"target": 0.8, "min_confidence": 0.95, "reached": True, "note": ""}
    spread = {"upper": 0.987, "unreached": 0.0, "level": 0.9}
    placement = {"rule": "ood or confidence", "placed": placed, "spread": spread}
    write_run_review(run, placement, {"part": "val", "images": 552, "cells": 12}, with_ood=False)

    def export(name: str, *extra: str):
        out = run.parent / name
        args = ["export", str(run), "--out", str(out), "-p", "fp32", "--no-engines", *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return load_bundle(out).review, "".join(result.output.split())

    review, output = export("b1")
    assert review["min_confidence"] == 0.987  # the upper bound, not the placed 0.95
    assert review["min_confidence_source"]["chosen"] == "upper"
    assert review["min_confidence_source"]["images"] == 552
    assert "confidencebelow0.987(placedontherun'svalpart" in output
    review, output = export("b2", "--min-confidence", "0.9")
    assert review["min_confidence"] == 0.9 and "min_confidence_source" not in review
    assert "confidencebelow0.9(--min-confidence)" in output
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes() + b"\0")  # other weights
    review, output = export("b3")
    assert review["min_confidence"] == 0.9 and "min_confidence_source" not in review
    assert "wasplacedforotherweights" in output and "(thedefault)" in output
    record = json.loads((run / "review.json").read_text())
    del record["source"]  # a hand-edited file: a note and the default, no traceback
    (run / "review.json").write_text(json.dumps(record))
    review, output = export("b4")
    assert review["min_confidence"] == 0.9 and "isunusable:missingormalformedsource" in output


def test_baseline_run_is_refused(tmp_path):
    """A run that trained only the global branch must not become a three-branch bundle."""
    import json

    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.onnx_export import ExportError
    from tests.export_helpers import make_run

    run = make_run(tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["branches"] = ["global"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="baseline"):
        export_bundle(run, tmp_path / "bundle", ["fp32"], log=lambda _m: None)
    assert not (tmp_path / "bundle").exists()


def test_without_onnxsim_auto_uses_onnxscript_and_says_so(tmp_path_factory, monkeypatch):
    """Where onnxsim has no wheel, export still works, with the same numbers, and the
    manifest and the log name the simplifier that ran."""
    import sys

    from export_helpers import make_dataset

    from edge_iapp.export import onnx_export
    from edge_iapp.export.build import export_bundle
    from edge_iapp.export.onnx_export import ExportError, resolve_simplifier

    reference = load_bundle(tiny_bundle(tmp_path_factory))  # onnxsim, same run
    monkeypatch.setitem(sys.modules, "onnxsim", None)  # "not installed"
    monkeypatch.setattr(onnx_export, "_installed", lambda module: module != "onnxsim")
    assert resolve_simplifier("auto") == "onnxscript"
    with pytest.raises(ExportError, match="onnxsim package is not installed"):
        resolve_simplifier("onnxsim")
    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    data = shared(tmp_path_factory, "data", lambda d: make_dataset(d / "set")[0])
    messages: list[str] = []
    bundle = export_bundle(
        run,
        tmp_path_factory.mktemp("nosim") / "bundle",
        ["int8"],
        calib_data=data,
        calib_split=data.parent / f"{data.name}_split.json",
        calib_size=24,
        parity_size=24,
        log=messages.append,
    )
    assert bundle.manifest["export"]["simplifier"] == "onnxscript"
    assert any("simplifying with onnxscript" in m for m in messages)
    x = np.random.default_rng(0).random((3, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for branch in BRANCHES:
        ops = {n.op_type for n in onnx.load(str(bundle.file(branch, "fp32"))).graph.node}
        assert "BatchNormalization" not in ops and "Identity" not in ops
        ours = _session(bundle.file(branch, "fp32")).run(None, {"input": x})
        theirs = _session(reference.file(branch, "fp32")).run(None, {"input": x})
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert bundle.parity["int8"]["pipeline"]["fused_top1_agreement"] > 0.5


def test_calibration_inputs_are_checked_before_any_graph_is_exported(
    tmp_path_factory, tmp_path, monkeypatch
):
    """A missing --calib-data folder, one without labelled images, a --calib-split that
    is missing or not a split, a --calib-manifest that is a folder or lists images outside
    the training part, a --calib-size larger than the training part: all used to be said
    only after the fp32 graphs were exported (or, for --calib-split alone, never)."""
    from export_helpers import make_dataset
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app
    from edge_iapp.data import apply_split, load_split, scan_folder
    from edge_iapp.export import build
    from edge_iapp.export.calibration import build_manifest, write_manifest

    def exported(*_a, **_k):
        raise AssertionError("a graph was exported before the calibration inputs were checked")

    monkeypatch.setattr(build, "export_branch", exported)
    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    data = shared(tmp_path_factory, "data", lambda d: make_dataset(d / "set")[0])
    split = data.parent / f"{data.name}_split.json"
    empty = tmp_path / "empty"
    (empty / "1").mkdir(parents=True)
    not_a_split = tmp_path / "split.json"
    not_a_split.write_text('{"groups": []}')
    val = apply_split(scan_folder(data).samples, load_split(split))["val"]
    leaky = write_manifest(build_manifest(val, data, len(val), 0, split), tmp_path / "val.json")
    out = tmp_path / "bundle"
    good = ["--calib-data", str(data), "--calib-split", str(split)]
    cases = [
        (["--calib-data", str(tmp_path / "nope"), "--calib-split", str(split)], "does not exist"),
        (["--calib-data", str(split), "--calib-split", str(split)], "is a file"),
        (["--calib-data", str(empty), "--calib-split", str(split)], "no labelled images"),
        (["--calib-data", str(data), "--calib-split", str(tmp_path / "no.json")], "no split"),
        (["--calib-data", str(data)], "pass --calib-split"),  # the run has no split.json
        (["--calib-data", str(data), "--calib-split", str(not_a_split)], "--calib-split:"),
        ([*good, "--calib-manifest", str(tmp_path)], "is a folder"),
        ([*good, "--calib-manifest", str(leaky)], "are not in the training split"),
        ([*good, "--calib-size", "5000"], "the training split has only"),
    ]
    cases = [(["-p", "fp32,int8", *extra], expected) for extra, expected in cases]
    cases.append((["-p", "fp32", "--calib-split", str(split)], "without --calib-data"))
    for extra, expected in cases:
        args = ["export", str(run), "-o", str(out), "--no-engines", *extra]
        result = CliRunner().invoke(app, args)
        output = " ".join(result.output.split())
        assert result.exit_code == 2, (extra, result.output)
        assert expected in output and "Traceback" not in output, (extra, output)
        assert "exporting" not in output, (extra, output)
        assert not out.exists()


def test_a_profile_typo_is_refused_before_the_export(tmp_path_factory, tmp_path, monkeypatch):
    """``--profile h300`` used to go unreported without TensorRT (and be said only after
    the export with it): it is checked first, whatever is installed, listing the profiles."""
    from typer.testing import CliRunner

    from edge_iapp.backends.tensorrt.profiles import list_profiles
    from edge_iapp.cli.main import app
    from edge_iapp.export import build

    class Exported(Exception):
        pass

    def exported(*_a, **_k):
        raise Exported

    monkeypatch.setattr(build, "export_branch", exported)
    run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
    out = tmp_path / "bundle"
    bad = tmp_path / "mine.json"
    bad.write_text('{"name": "mine", "sm": 90}')

    def export(*extra: str):
        result = CliRunner().invoke(app, ["export", str(run), "-o", str(out), "-p", "fp32", *extra])
        return result, " ".join(result.output.split())

    for extra in (["--profile", "h300"], ["--profile", "h300", "--no-engines"]):
        result, output = export(*extra)
        assert result.exit_code == 2, output
        assert "unknown profile 'h300'" in output and "Traceback" not in output
        assert all(name in output for name in list_profiles()) and "h100" in output
        assert not out.exists()
    result, output = export("--profile", str(bad))
    assert result.exit_code == 2 and "missing or invalid field" in output and "mine.json" in output
    # a good profile passes the check: the export itself is reached
    result, output = export("--profile", "h100", "--no-engines")
    assert isinstance(result.exception, Exported), output
    assert "--no-engines skips" in output
