"""The repository's shell scripts pass shellcheck; ``python -m edge_iapp`` is the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shell_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_iapp", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--time-budget" in result.stdout and "--size-mode" in result.stdout


def test_train_speed_and_preprocess_benchmarks_run_on_the_cpu(tmp_path) -> None:
    """The GPU-session scripts work before they reach a GPU: a tiny CPU run of each."""
    import json

    pytest.importorskip("torch")
    out = tmp_path / "speed.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_speed.py"),
            "--device",
            "cpu",
            "--input-size",
            "32",
            "--images",
            "40",
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["device"] == "cpu" and summary["steady_images_per_s"] > 0

    import cv2
    import numpy as np

    from edge_iapp.data.synth import synth_cell

    for k, (name, image) in enumerate(synth_cell(np.random.default_rng(0))[:12]):
        (tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "data" / name / f"c{k}.png"), image)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_preprocess.py"),
            str(tmp_path / "data"),
            "--input-size",
            "32",
            "--canvas",
            "64",
            "--images",
            "12",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12 crops" in result.stdout and "part zoom" in result.stdout


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roofline_counts_multiply_adds_and_its_int8_conv_is_a_quantized_conv(tmp_path) -> None:
    """cpu_roofline's work count against hand-computed numbers; its peak-test conv runs in
    ONNX Runtime at both precisions and the int8 one stays close to the float one."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    roofline = _load_script("cpu_roofline")
    # x (N, 3, 8, 8) -> Conv 3->4, 3x3, stride 2, pad 1 -> (N, 4, 4, 4) -> grouped Conv 4->4,
    # group 2, 1x1 -> Flatten (N, 64) -> Gemm with transB (10, 64) -> (N, 10).
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 2, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((10, 64)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], group=2),
        helper.make_node("Flatten", ["b"], ["c"]),
        helper.make_node("Gemm", ["c", "w3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    path = tmp_path / "t.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    assert roofline.branch_macs(path) == 4 * 4 * 4 * 3 * 9 + 4 * 4 * 4 * 2 + 64 * 10

    x = rng.random((2, 16, 6, 6), dtype=np.float32)
    outs = []
    for int8 in (False, True):
        model = roofline.conv_model(16, 6, 2, int8)
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": x})[0])
    assert outs[0].shape == (2, 16, 6, 6)
    # int8: input step 0.05 on [0, 1), weight step 0.002 on ~N(0, 0.05): a few percent.
    assert np.abs(outs[1] - outs[0]).max() < 0.1 * np.abs(outs[0]).max()
    assert not np.array_equal(outs[1], outs[0])


def test_ood_feature_study_distances_match_their_definitions() -> None:
    import numpy as np

    study = _load_script("ood_feature_study")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) + np.repeat(np.eye(4)[:3] * 3, 20, axis=0)
    y = np.repeat([0, 1, 2], 20)
    q = rng.normal(size=(7, 4)) * 2
    m = study.Mahalanobis(x, y, ridge=0.0)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    within = np.concatenate([x[y == c] - means[c] for c in range(3)])
    p = np.linalg.inv(within.T @ within / len(x))
    d2 = np.array([[(v - mu) @ p @ (v - mu) for mu in means] for v in q])
    np.testing.assert_allclose(m.score(q), d2.min(1), rtol=1e-9)
    p0 = np.linalg.inv(np.cov(x, rowvar=False, bias=True))
    d0 = np.array([(v - x.mean(0)) @ p0 @ (v - x.mean(0)) for v in q])
    np.testing.assert_allclose(m.relative(q), d2.min(1) - d0, rtol=1e-9, atol=1e-9)
    # k-th neighbour on the unit sphere: a reference row is at distance 0 from itself
    ref = rng.normal(size=(10, 4))
    assert study.knn_score(ref, ref[:3] * 5.0, 1) == pytest.approx([0, 0, 0], abs=1e-6)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    brute = np.sort(np.linalg.norm(unit[None] - qn[:, None], axis=2), 1)
    np.testing.assert_allclose(study.knn_score(ref, q, 3), brute[:, 2], rtol=1e-6)
    # AUROC: pairwise definition with ties counted half
    neg, pos = np.array([0.1, 0.4, 0.4, 0.9]), np.array([0.4, 0.8, 1.0])
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    assert study.auroc(neg, pos) == pytest.approx(np.mean(pairs))
    assert study.auroc(neg, pos[:0]) is None
    # the threshold that flags 20% of correct calls, applied to the errors
    correct = np.arange(100.0)
    assert study.errors_caught_at(correct, np.array([10.0, 85.0, 99.0]), 0.2) == pytest.approx(
        2 / 3
    )


def test_cross_lab_summary_reads_evaluate_and_finetune_records(tmp_path, capsys) -> None:
    """Real ``evaluate`` output (``evaluate_predictions``) and a finetune record; a run
    that left no file is a row that says so, not a crash."""
    import json

    import numpy as np

    from edge_iapp.train.evaluate import evaluate_predictions
    from edge_iapp.train.predict import Predictions

    summary = _load_script("cross_lab_summary")
    # one branch, two classes: a sure and right, b unsure and right, c unsure and wrong,
    # d sure and wrong; the OOD threshold flags b, c and d (test_ood's case)
    logits = np.array([[[5.0, 0.0], [0.1, 0.0], [0.0, 0.2], [3.0, 0.0]]], np.float32)
    preds = Predictions(("global",), logits, np.array([0, 0, 0, 1]), np.zeros(4, bool))
    cal = {"threshold": -4.0, "quantile": 0.95, "branches": ["global"]}
    out = tmp_path / "xl"
    record = evaluate_predictions(preds, out / "evals" / "a_on_b", "lambda", "unit", ood=cal)
    (out / "evals" / "a_on_a").mkdir()  # an evaluation that failed
    run2 = out / "fewshot" / "a_to_b_k5_p78"
    run2.mkdir(parents=True)
    after = {"fused": {"accuracy": 0.75}, "ood": record["ood"]}
    (run2 / "finetune.json").write_text(
        json.dumps(
            {
                "cells": ["b/1", "b/2"],
                "pseudo": {"cell_ids": ["b/3"]},
                "adapt_cells": [],
                "test_images": 4,
                "before": {"fused": {"accuracy": 0.5}},
                "after": after,
            }
        )
    )
    (run2 / "review.json").write_text(json.dumps({"min_confidence": 0.991}))
    assert summary.main([str(out)]) == 0
    table = capsys.readouterr().out
    saved = json.loads((out / "summary.json").read_text())
    a_on_b = next(e for e in saved["evals"] if e["name"] == "a_on_b")
    assert a_on_b["accuracy"] == record["main"]["accuracy"] == 0.5
    assert a_on_b["review"] == {
        "rule": "review",
        "min_confidence": 0.9,
        "errors_flagged": 1.0,
        "correct_flagged": 0.5,
    }
    assert "| a_on_b | 4 | 50.00 | 100.00 / 50.00 (review, T 0.9) |" in table
    assert "| a_on_a | no metrics.json (see logs/) |" in table
    assert (
        "| a_to_b_k5_p78 | 2 (+1, 0) | 4 | 50.00 | 75.00 | 100.00 / 50.00 (review, T 0.9) "
        "| 0.991 |" in table
    )
    assert summary.main([str(tmp_path / "none")]) == 2
    # a record of another layout (no "before") is a row that names the missing key
    (run2 / "finetune.json").write_text(json.dumps({"cells": ["b/1"], "test_images": 4}))
    assert summary.main([str(out)]) == 0
    assert "| a_to_b_k5_p78 | finetune.json lacks 'before' (another version?) |" in (
        capsys.readouterr().out
    )


def test_results_table_prints_an_undefined_auc_as_n_a(tmp_path, capsys) -> None:
    """One class in the test part: evaluate writes macro_auc null, and the table says n/a."""
    import numpy as np

    from edge_iapp.train.evaluate import evaluate_predictions
    from edge_iapp.train.predict import Predictions

    table = _load_script("results_table")
    logits = np.array([[[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]]] * 3, np.float32)
    preds = Predictions(
        ("global", "object", "part"), logits, np.zeros(3, np.int64), np.zeros(3, bool)
    )
    record = evaluate_predictions(preds, tmp_path / "eval", "lambda", "unit")
    assert record["main"]["macro_auc"] is None
    table.main([str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert "| IAPP-CNN, lambda fusion | 66.7 | " in out and "| n/a |" in out
