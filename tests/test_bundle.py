"""Bundle loading: hashes verified, the offending file named, no torch/onnx needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from export_helpers import tiny_bundle

from edge_iapp.export.bundle import BundleError, load_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return tiny_bundle(tmp_path_factory)


@pytest.fixture
def copy(bundle_dir, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_load_and_api(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.format_version == 1
    assert len(b.classes) == 24 and b.classes[-1] == "Y"
    assert b.backbone == "resnet18"
    assert b.preprocess.input_size == b.input_size == 64
    assert b.file("object", "int8").name == "object.int8.onnx"
    assert b.input_name("part") == "input"
    assert b.output_names("object") == ["logits", "part_maps"]
    assert b.review["min_confidence"] == 0.9
    assert b.file_bytes("int8") < b.file_bytes("fp16") < b.file_bytes("fp32")
    assert load_bundle(bundle_dir / "manifest.json").path == b.path


def test_modified_file_is_named(copy):
    target = copy / "part.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"part\.int8\.onnx was modified.*export it again"):
        load_bundle(copy)
    load_bundle(copy, verify=False)  # explicit opt-out still opens it


def test_missing_file_is_named(copy):
    (copy / "global.fp16.onnx").unlink()
    with pytest.raises(BundleError, match=r"global\.fp16\.onnx is missing"):
        load_bundle(copy)


def test_modified_calibration_manifest_is_named(copy):
    (copy / "calibration.json").write_text("{}")
    with pytest.raises(BundleError, match=r"calibration\.json"):
        load_bundle(copy)


def test_missing_or_corrupt_manifest(copy, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="corrupted"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(copy)


def test_newer_format_version_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(copy)


def test_manifest_listing_a_precision_without_files_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    del m["files"]["part"]["int8"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="no part graph"):
        load_bundle(copy)


def test_cut_or_edited_manifest_entries_are_named_not_a_key_error(copy):
    """A manifest without preprocess.input_size used to load, then fail as KeyError."""
    from edge_iapp.runtime.classifier import Classifier

    good = json.loads((copy / "manifest.json").read_text())
    edits = [
        (lambda m: m["preprocess"].pop("input_size"), "preprocess lacks 'input_size'"),
        (lambda m: m["branches"].pop("part"), "part branch's input name"),
        (lambda m: m["branches"]["object"].pop("outputs"), "object branch's input name"),
        (lambda m: m["branches"]["global"].__setitem__("input", "x"), "global branch's input"),
        (lambda m: m["branches"].__setitem__("part", None), "part branch's input name"),
        (lambda m: m.__setitem__("classes", "1,2"), "'classes' is a str"),
        (lambda m: m.__setitem__("files", []), "'files' is a list"),
    ]
    for edit, message in edits:
        m = json.loads(json.dumps(good))
        edit(m)
        (copy / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(BundleError, match=message):
            Classifier(copy, warmup=False)
        with pytest.raises(BundleError, match="re-export"):
            load_bundle(copy)


def test_a_file_given_as_the_bundle_is_named(copy):
    with pytest.raises(BundleError, match="is a file; pass the bundle folder"):
        load_bundle(copy / "global.fp32.onnx")


def test_load_bundle_needs_neither_torch_nor_onnx(bundle_dir):
    code = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'onnxruntime'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "from edge_iapp.export.bundle import load_bundle\n"
        f"b = load_bundle({str(bundle_dir)!r})\n"
        "print(b.preprocess.input_size, len(b.precisions))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["64", "3"]
