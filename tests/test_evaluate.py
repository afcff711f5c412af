"""Evaluation maths (eq. 18-22, ROC/AUC, calibration, risk-coverage) and the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_iapp.train import metrics as M
from edge_iapp.train.evaluate import evaluate_predictions
from edge_iapp.train.predict import Predictions


def test_confusion_and_prf_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    cm = M.confusion_matrix(labels, pred, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    prf = M.per_class_prf(cm)
    # class 0: P 2/2, R 2/3; class 1: P 1/2, R 1/2; class 2: P 1/2, R 1/1; class 3 absent
    np.testing.assert_allclose(prf["precision"][:3], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(prf["recall"][:3], [2 / 3, 0.5, 1.0])
    f1 = [2 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    np.testing.assert_allclose(prf["f1"][:3], f1)
    assert np.isnan(prf["f1"][3]) and prf["support"].tolist() == [3, 2, 1, 0]
    assert M.macro_f1(cm) == pytest.approx(np.mean(f1))  # absent class 3 is skipped
    assert M.accuracy(labels, pred) == pytest.approx(4 / 6)


def test_never_predicted_class_has_f1_zero() -> None:
    cm = M.confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
    prf = M.per_class_prf(cm)
    assert np.isnan(prf["precision"][1]) and prf["f1"][1] == 0.0


def test_roc_auc_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    positive = np.array([True, False, True, False])
    fpr, tpr = M.roc_curve(scores, positive)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1.0, 1.0])
    assert M.auc(fpr, tpr) == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered
    # ties count half
    assert M.auc(*M.roc_curve(np.array([0.5, 0.5]), np.array([True, False]))) == pytest.approx(0.5)
    assert np.isnan(M.auc(*M.roc_curve(np.array([0.1, 0.2]), np.array([False, False]))))


def test_reliability_and_risk_coverage_by_hand() -> None:
    conf = np.array([0.95, 0.9, 0.6, 0.55])
    correct = np.array([True, False, True, False])
    rel = M.reliability(conf, correct, bins=2)
    # bin [0.5, 1.0] holds all four: mean confidence 0.75, accuracy 0.5 -> ECE 0.25
    assert rel["count"].tolist() == [0, 4]
    assert rel["ece"] == pytest.approx(0.25)
    rc = M.risk_coverage(conf, correct)
    np.testing.assert_allclose(rc["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(rc["risk"], [0.0, 0.5, 1 / 3, 0.5])
    assert M.coverage_at_risk(rc, 0.0) == (0.25, 0.95)
    assert M.coverage_at_risk(rc, 0.4)[0] == 0.75


def test_evaluate_predictions_writes_report_and_figures(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n, k = 120, 24
    labels = np.arange(n) % k
    onehot = np.eye(k)[labels] * 4.0
    logits = np.stack([onehot + rng.normal(0, s, (n, k)) for s in (1.0, 2.0, 3.0)]).astype(
        np.float32
    )
    preds = Predictions(("global", "object", "part"), logits, labels, np.zeros(n, bool))
    base = Predictions(("global",), logits[:1] * 0.5, labels, np.zeros(n, bool))
    record = evaluate_predictions(preds, tmp_path, "lambda", "unit", baseline=base)
    for name in ("confusion.png", "roc.png", "reliability.png", "risk_coverage.png"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["main"]["accuracy"] == pytest.approx(record["main"]["accuracy"])
    rows = {(tuple(r["branches"]), r["fusion"]) for r in saved["ablation"]}
    for subset in [("global",), ("global", "object"), ("global", "part")]:
        assert (subset, "sum") in rows and (subset, "lambda") in rows
    assert (("global", "object", "part"), "lambda") in rows
    fused_acc = [r["accuracy"] for r in saved["ablation"] if len(r["branches"]) == 3]
    global_acc = [r["accuracy"] for r in saved["ablation"] if r["branches"] == ["global"]]
    assert len(fused_acc) == 2 and len(global_acc) == 2
    report = (tmp_path / "report.md").read_text()
    assert "Table 3" in report and "Table 4" in report and "| X |" in report
    assert "P base" in report  # the baseline columns of Table 3
    assert 0.0 <= saved["review"]["ece"] <= 1.0
    assert 0.0 <= saved["baseline_review"]["aurc"] <= 1.0


def test_one_class_gives_no_nan_in_metrics_json_or_report(tmp_path) -> None:
    # a test part of one image (or one class): no AUC can be computed
    logits = np.zeros((3, 1, 24), np.float32)
    preds = Predictions(("global", "object", "part"), logits, np.array([5]), np.zeros(1, bool))
    base = Predictions(("global",), logits[:1], np.array([5]), np.zeros(1, bool))
    record = evaluate_predictions(preds, tmp_path, "lambda", "unit", baseline=base)

    def refuse(constant):
        raise AssertionError(f"{constant} in metrics.json")

    saved = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert saved["main"]["macro_auc"] is None and record["main"]["macro_auc"] is None
    assert "nan" not in (tmp_path / "report.md").read_text().lower()
