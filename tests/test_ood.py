"""Out-of-distribution review flag: energy maths, calibration, the run file, bundle and runtime."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from edge_iapp.ood import calibrate_ood, check_calibration, energy, is_ood, ood_scores
from edge_iapp.runtime.review import ReviewPolicy
from edge_iapp.train.evaluate import evaluate_predictions, ood_review
from edge_iapp.train.predict import Predictions


def test_energy_by_hand() -> None:
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0], [1000.0, 1000.0], [-1000.0, -1000.0]])
    assert energy(logits) == pytest.approx(
        [-math.log(2), -math.log(4), -1000 - math.log(2), 1000 - math.log(2)]
    )
    # (B=2, N=1, K=2): mean of -log 2 and -log 4
    two = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    assert ood_scores(two) == pytest.approx([-1.5 * math.log(2)])
    with pytest.raises(ValueError, match="branches, N, classes"):
        ood_scores(np.zeros((3, 2)))


def test_calibration_quantile() -> None:
    scores = np.arange(1, 101, dtype=float)
    cal = calibrate_ood(np.concatenate([scores, [np.nan]]), 0.95, branches=("global",))
    # NumPy's linear rule: position 0.95 * 99 = 94.05 -> 95 + 0.05
    assert cal["threshold"] == pytest.approx(95.05)
    assert cal["n"] == 100 and cal["flagged_fraction"] == pytest.approx(0.05)
    assert (cal["mean"], cal["min"], cal["max"]) == (50.5, 1.0, 100.0)
    assert cal["branches"] == ["global"] and cal["quantile"] == 0.95
    assert calibrate_ood(scores, 0.5)["threshold"] == pytest.approx(50.5)
    assert calibrate_ood(scores, 0.99)["threshold"] > cal["threshold"]
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            calibrate_ood(scores, q)
    with pytest.raises(ValueError, match="no finite scores"):
        calibrate_ood(np.array([np.nan, np.inf]))


def test_is_ood_and_bad_records() -> None:
    cal = calibrate_ood(np.arange(1, 101, dtype=float))
    flags = is_ood(np.array([95.0, 95.05, 95.06, np.nan, np.inf, -np.inf]), cal)
    assert flags.tolist() == [False, False, True, True, True, True]
    for bad, msg in (
        ({"threshold": "x"}, "numeric"),
        ({"threshold": float("nan")}, "not finite"),
        ({"score": "mahalanobis", "threshold": 1.0}, "unknown OOD score"),
        ([1, 2], "JSON object"),
    ):
        with pytest.raises(ValueError, match=msg):
            check_calibration(bad)


def test_flatter_logits_are_flagged() -> None:
    rng = np.random.default_rng(0)

    def peaked(n):  # a confident vote per branch, like in-distribution images
        logits = rng.normal(0, 1, (3, n, 24))
        logits[:, np.arange(n), rng.integers(0, 24, n)] += 9.0
        return logits

    flat = rng.normal(0, 1, (3, 500, 24))  # no class stands out: unlike the training data
    cal = calibrate_ood(ood_scores(peaked(500)), 0.95)
    assert is_ood(ood_scores(peaked(500)), cal).mean() < 0.1
    assert is_ood(ood_scores(flat), cal).mean() > 0.95


def test_review_policy_ood_reason() -> None:
    cal = {"threshold": -5.0}
    policy = ReviewPolicy.from_dict({"ood": cal, "min_confidence": 0.5})
    assert policy.reasons(0.99, 3, False, False, ood_score=-4.0) == ["out_of_distribution"]
    assert policy.reasons(0.99, 3, False, False, ood_score=-6.0) == []
    assert policy.reasons(0.99, 3, False, False, ood_score=float("nan")) == ["out_of_distribution"]
    assert policy.reasons(0.99, 3, False, False) == []  # no score given: no OOD check
    no_ood = ReviewPolicy.from_dict({"min_confidence": 0.5})  # an older bundle
    assert no_ood.ood is None and no_ood.reasons(0.99, 3, False, False, ood_score=1e9) == []
    with pytest.raises(ValueError, match="threshold"):
        ReviewPolicy.from_dict({"ood": {"quantile": 0.95}})


def test_ood_review_shares_by_hand(tmp_path) -> None:
    # one branch, two classes: a sure and right, b unsure and right,
    # c unsure and wrong, d sure (0.95) and wrong
    logits = np.array([[[5.0, 0.0], [0.1, 0.0], [0.0, 0.2], [3.0, 0.0]]], np.float32)
    labels = np.array([0, 0, 0, 1])
    preds = Predictions(("global",), logits, labels, np.zeros(4, bool))
    cal = {"threshold": -4.0, "quantile": 0.95, "branches": ["global"]}
    record = evaluate_predictions(preds, tmp_path, "lambda", "unit", ood=cal)
    ood = record["ood"]
    # energies: a -5.007 (accepted); b -0.744, c -0.798, d -3.049 (all above -4: flagged)
    assert (ood["errors"], ood["correct"]) == (2, 2)
    assert ood["by"]["ood"] == {"errors_flagged": 1.0, "correct_flagged": 0.5, "all_flagged": 0.75}
    # confidence < 0.9: b (0.525) and c (0.550); d is 0.953
    assert ood["by"]["confidence"]["errors_flagged"] == 0.5
    assert ood["by"]["confidence"]["correct_flagged"] == 0.5
    assert ood["by"]["either"] == ood["by"]["ood"]
    assert ood["by"]["review"] == ood["by"]["ood"]  # one branch always agrees with itself
    three = Predictions(
        ("global", "object", "part"),
        np.concatenate([logits, logits, logits[:, :, ::-1]]),  # part votes the other way
        labels,
        np.array([True, False, False, False]),  # a's part mask fell back
    )
    probs3 = evaluate_predictions(three, tmp_path / "three", "sum", "unit", ood=cal)["ood"]
    assert probs3["by"]["review"]["correct_flagged"] == 1.0  # a: part fall-back, b: unsure
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["ood"]["by"]["ood"]["errors_flagged"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "## Out-of-distribution flag" in report and "| ood | 100.00 | 50.00 | 75.00 |" in report
    # where the review threshold goes: the OOD flag alone already catches both errors
    assert record["review_threshold"]["rule"] == "ood or confidence"
    assert record["review_threshold"]["placed"]["min_confidence"] is None
    assert "## Review threshold" in report and "| 0.9 | 100.00 | 50.00 | 75.00 |" in report
    # no calibration: no "ood" key (an older run), the confidence rule alone: d (0.9457
    # after the lambda fusion) is the surest error, so T = 0.946 flags both errors and b
    plain = evaluate_predictions(preds, tmp_path / "plain", "lambda", "unit")
    assert "ood" not in plain and plain["review_threshold"]["rule"] == "confidence"
    placed = plain["review_threshold"]["placed"]
    assert placed["min_confidence"] == pytest.approx(0.946)
    assert (placed["errors_flagged"], placed["correct_flagged"]) == (1.0, 0.5)
    # a threshold of 0.5 flags neither b nor c by confidence
    low = evaluate_predictions(preds, tmp_path / "lo", "lambda", "u", ood=cal, min_confidence=0.5)
    assert low["ood"]["min_confidence"] == 0.5
    assert low["ood"]["by"]["confidence"]["all_flagged"] == 0
    # no error at all: the error share is n/a, not a division by zero
    right = Predictions(("global",), logits[:, :2], labels[:2], np.zeros(2, bool))
    probs = np.exp(logits[0, :2]) / np.exp(logits[0, :2]).sum(1, keepdims=True)
    assert ood_review(right, probs, cal)["by"]["ood"]["errors_flagged"] is None


def _gaussian_lab(n: int, seed: int, second: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two branches of K = 4 confident logits (8 on the class, noise 0.5 elsewhere);
    ``second`` adds that much to another class's logit: a confident call whose pattern
    the training lab never showed (how a model fails on another lab)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    logits = rng.normal(0, 0.5, (2, n, 4)) + 8.0 * np.eye(4)[y]
    logits += second * np.eye(4)[(y + 1) % 4]
    return logits, y


def test_mahalanobis_matches_its_definition() -> None:
    from edge_iapp.ood import fit_class_gaussians, mahalanobis

    x, y = _gaussian_lab(200, 0)
    g = fit_class_gaussians(x, y, ridge=0.0)
    q, _ = _gaussian_lab(5, 1, second=3.0)
    want = []
    for b in range(2):
        mu = np.stack([x[b][y == c].mean(0) for c in range(4)])
        within = x[b] - mu[y]
        p = np.linalg.inv(within.T @ within / len(y))
        want.append([min((v - m) @ p @ (v - m) for m in mu) for v in q[b]])
    np.testing.assert_allclose(mahalanobis(q, g), np.mean(want, axis=0), rtol=1e-9)
    assert g["classes"] == [0, 1, 2, 3] and np.asarray(g["precision"]).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="two classes"):
        fit_class_gaussians(x, np.zeros_like(y))
    with pytest.raises(ValueError, match="2 branch"):
        mahalanobis(q[:1], g)


def test_combined_score_catches_confident_calls_the_energy_misses() -> None:
    from edge_iapp.ood import COMBINED_SCORE, calibrate_combined

    fit, fit_y = _gaussian_lab(400, 0)
    val, _ = _gaussian_lab(400, 1)
    odd, _ = _gaussian_lab(400, 2, second=5.0)
    cal = calibrate_combined(val, fit, fit_y, 0.95, branches=("global", "object"))
    assert cal["score"] == COMBINED_SCORE and cal["flagged_fraction"] == pytest.approx(
        0.05, abs=0.01
    )
    cal = check_calibration(json.loads(json.dumps(cal)))  # survives the manifest round trip
    from edge_iapp.ood import with_arrays

    compiled = with_arrays(cal)  # what the runtime scores with: the same numbers
    np.testing.assert_array_equal(ood_scores(odd, compiled), ood_scores(odd, cal))
    assert isinstance(cal["components"]["mahalanobis"]["means"], list)  # record untouched
    energy_only = calibrate_ood(ood_scores(val), 0.95)
    assert is_ood(ood_scores(odd), energy_only).mean() < 0.2  # the energy barely moves
    assert is_ood(ood_scores(odd, cal), cal).mean() > 0.95
    fresh, _ = _gaussian_lab(400, 3)
    assert is_ood(ood_scores(fresh, cal), cal).mean() < 0.1
    nan = val[:, :1].copy()
    nan[0, 0, 0] = np.nan
    assert is_ood(ood_scores(nan, cal), cal).all()  # never silently accepted


def test_a_failed_fit_falls_back_to_the_energy_and_says_why() -> None:
    from edge_iapp.train.ood_run import calibration_from_predictions

    val, y = _gaussian_lab(50, 1)
    preds = Predictions(("global", "object"), val, y, np.zeros(50, bool))
    one_class = Predictions(("global", "object"), val, np.zeros(50, np.int64), np.zeros(50, bool))
    record = calibration_from_predictions(preds, fit=one_class)
    assert record["score"] == "energy" and "two classes" in record["fit_error"]
    assert calibration_from_predictions(preds, fit=preds)["score"] == "energy+mahalanobis"
    from edge_iapp.train.ood_run import MIN_CALIBRATION_IMAGES, calibration_warnings

    assert calibration_warnings(calibration_from_predictions(preds, fit=preds)) == []
    (failed,) = calibration_warnings(record)
    assert failed.startswith("OOD score: ") and "two classes" in failed
    few = MIN_CALIBRATION_IMAGES - 1
    small = Predictions(("global",), val[:1, :few], y[:few], np.zeros(few, bool))
    (rough,) = calibration_warnings(calibration_from_predictions(small))
    assert f"from {few} val image(s)" in rough and "ood-calibrate" in rough


def test_mahalanobis_in_chunks_equals_all_at_once(monkeypatch) -> None:
    import edge_iapp.ood as ood

    fit, y = _gaussian_lab(100, 0)
    q, _ = _gaussian_lab(37, 4, second=2.0)
    g = ood.fit_class_gaussians(fit, y)
    whole = ood.mahalanobis(q, g)
    monkeypatch.setattr(ood, "_CHUNK", 5)
    np.testing.assert_allclose(ood.mahalanobis(q, g), whole, rtol=1e-12)


def test_combined_records_are_checked() -> None:
    from edge_iapp.ood import calibrate_combined

    fit, fit_y = _gaussian_lab(100, 0)
    cal = calibrate_combined(fit, fit, fit_y, branches=("global", "object"))
    for broken, message in (
        ({k: v for k, v in cal.items() if k != "components"}, "lacks"),
        ({**cal, "branches": ["global"]}, "inconsistent"),
        ({**cal, "branches": ["global", "spare"]}, "unknown branches"),
        (
            {**cal, "components": {**cal["components"], "energy": {"center": 0, "scale": 0}}},
            "scale",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            ReviewPolicy.from_dict({"ood": broken})


# -- a trained tiny run: RUN/ood.json at the end of training, ood-calibrate, evaluate, bundle --


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """4 synthetic classes at 40 px, 4 epochs (about 25 s on one thread); val cells 6-7."""
    torch = pytest.importorskip("torch")
    from test_train import CLASSES, write_split, write_synthetic

    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.data import prepare
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.run import RunConfig
    from edge_iapp.train.trainer import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ood")
    data = write_synthetic(root / "data", 12, [c for c in CLASSES for _ in range(2)])
    split = write_split(root / "split.json", list(range(6)), [6, 7], [8, 9, 10, 11])
    parts = load_parts(data, split)
    cfg = RunConfig(
        preprocess=PreprocessConfig(input_size=40, canvas=128),
        epochs=4,
        batch_size=8,
        lr=0.01,
        extra={"data": str(data)},
    )
    train(
        cfg,
        prepare(parts.parts["train"], cfg.preprocess),
        root / "run",
        prepare(parts.parts["val"], cfg.preprocess),
        split=parts.split,
    )
    return root / "run", data, split


def test_training_writes_ood_json_and_the_cli_recomputes_it(trained, tmp_path) -> None:
    from test_train import flat
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app
    from edge_iapp.ioutil import sha256_file

    run, data, split = trained
    written = json.loads((run / "ood.json").read_text())
    assert written["n"] == 16 and written["quantile"] == 0.95  # 2 val cells x 8 images
    assert written["score"] == "energy+mahalanobis" and written["source"]["fit_images"] == 48
    assert written["branches"] == ["global", "object", "part"]
    assert written["source"]["checkpoint_sha256"] == sha256_file(run / "last.pt")
    assert json.loads((run / "metrics.json").read_text())["ood_threshold"] == written["threshold"]
    runner = CliRunner()
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "ood.json").unlink()
    # defaults: the data folder and split saved in the run
    result = runner.invoke(app, ["ood-calibrate", str(copy), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    again = json.loads((copy / "ood.json").read_text())
    assert again["threshold"] == pytest.approx(written["threshold"], abs=1e-4)
    result = runner.invoke(
        app, ["ood-calibrate", str(copy), "--fit-per-class", "0", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "ood.json").read_text())["score"] == "energy"  # the first version
    # a T placed with this OOD calibration (finetune's review.json) is placed again when
    # ood-calibrate rewrites ood.json, and a hand-changed ood.json makes export ignore it
    from edge_iapp.train.review_run import load_run_review, write_run_review

    placed = {"target": 0.8, "min_confidence": 0.95, "reached": True, "note": ""}
    placement = {"rule": "ood or confidence", "placed": placed, "spread": None}
    write_run_review(copy, placement, {"part": "val"}, with_ood=True)
    assert load_run_review(copy)[0] is not None
    result = runner.invoke(app, ["ood-calibrate", str(copy), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "reviewthresholdfor80%oftheerrorsonthe16valimages" in flat(result.output)
    review = json.loads((copy / "review.json").read_text())
    assert review["ood_sha256"] == sha256_file(copy / "ood.json")
    assert review["rule"] == "ood or confidence" and review["source"]["cells"] == 2
    assert "another OOD calibration" not in load_run_review(copy)[1]
    ood = json.loads((copy / "ood.json").read_text())
    (copy / "ood.json").write_text(json.dumps({**ood, "threshold": ood["threshold"] + 1.0}))
    record, note = load_run_review(copy)
    assert record is None and "another OOD calibration" in note
    result = runner.invoke(app, ["ood-calibrate", str(copy), "--quantile", "1.5"])
    assert result.exit_code == 2 and "between0and1" in flat(result.output)
    # evaluate reports what each flag sends to review
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--split", str(split), "--out", str(out)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["ood"]["threshold"] == written["threshold"]
    assert set(record["ood"]["by"]) == {"ood", "confidence", "either", "review"}
    assert record["ood"]["errors"] + record["ood"]["correct"] == 32
    report = (out / "report.md").read_text()
    assert "Out-of-distribution flag" in report and "logit-space Mahalanobis" in report
    assert record["ood"]["min_confidence"] == 0.9  # the runtime's default
    assert "reviewthresholdfor80%oftheerrors" in flat(result.output)
    # the val part places T and prints how to write it into a bundle; test checks it
    result = runner.invoke(
        app,
        [*args[:-1], str(tmp_path / "eval_val"), "--subset", "val", "--review-target", "0.5"]
        + ["--device", "cpu", "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    placed = json.loads((tmp_path / "eval_val" / "metrics.json").read_text())["review_threshold"]
    assert placed["placed"]["target"] == 0.5
    if placed["placed"]["min_confidence"] is not None:
        assert "edge-iappexport" in flat(result.output) and "--min-confidence" in result.output
        moved = placed["spread"]  # the val part's cells, resampled
        assert moved is None or f"resamplesofthese{moved['cells']}cells" in flat(result.output)
    else:  # no threshold needed: the record says why
        assert placed["placed"]["note"] and placed["placed"]["reached"]
    # the test part checks a T (the placed one, else the default)
    t = str(placed["placed"]["min_confidence"] or 0.9)
    result = runner.invoke(
        app,
        [*args[:-1], str(tmp_path / "eval_t"), "--min-confidence", t, "--review-target"]
        + ["0.5", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    checked = json.loads((tmp_path / "eval_t" / "metrics.json").read_text())
    assert checked["ood"]["min_confidence"] == float(t)
    row = checked["review_threshold"]["checked"]
    in_sweep = [r for r in checked["review_threshold"]["sweep"] if r["min_confidence"] == float(t)]
    assert in_sweep == [{k: v for k, v in row.items() if k != "target_met"}]
    assert row["target_met"] == (row["errors_flagged"] >= 0.5)
    met = "met" if row["target_met"] else "notmet"
    assert f"T={float(t):g}(--min-confidence)" in flat(result.output)
    assert flat(result.output).endswith(f"target50%oftheerrors:{met}")
    report = (tmp_path / "eval_t" / "report.md").read_text()
    assert f"Checked (`--min-confidence {float(t):g}`)" in report and f"is{met}." in flat(report)
    result = runner.invoke(app, [*args, "--min-confidence", "0"])
    assert result.exit_code == 2 and "(0,1]" in flat(result.output)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none"), *args[2:]])
    assert result.exit_code == 2 and "doesnotexist" in flat(result.output)
    # an ood.json made for other weights is not applied silently
    other = dict(written, source={**written["source"], "checkpoint_sha256": "0" * 64})
    (copy / "ood.json").write_text(json.dumps(other))
    out2 = tmp_path / "eval2"
    result = runner.invoke(
        app,
        ["evaluate", str(copy), "--data", str(data), "--split", str(split), "--out", str(out2)]
        + ["--device", "cpu", "--threads", "1"],
    )
    assert result.exit_code == 0 and "otherweights" in flat(result.output)
    assert "ood" not in json.loads((out2 / "metrics.json").read_text())


def test_bundle_carries_ood_and_the_classifier_flags_noise(trained, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from edge_iapp.export.build import export_bundle
    from edge_iapp.runtime.classifier import Classifier

    run, data, split = trained
    bundle = export_bundle(run, tmp_path / "bundle", ("fp32",), log=lambda _m: None)
    assert bundle.manifest["review"]["ood"]["threshold"] == pytest.approx(
        json.loads((run / "ood.json").read_text())["threshold"]
    )
    parts = json.loads(split.read_text())["groups"]
    val = sorted(p for p in data.rglob("*.png") if p.name.split("_")[-1][:5] in parts["val"])
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((60, 40), (120, 120))]
    with Classifier(bundle.path, precision="fp32", threads=1, warmup=False) as clf:
        results = clf.predict([*val, *noise])
    val_res, noise_res = results[: len(val)], results[len(val) :]
    assert len(val_res) == 16
    for r in noise_res:
        assert "out_of_distribution" in r.review_reasons and r.review
        assert r.ood_score > bundle.manifest["review"]["ood"]["threshold"]
    # calibrated at the 95th percentile of exactly these images (torch vs ORT logits)
    assert sum("out_of_distribution" in r.review_reasons for r in val_res) <= 2
    assert all(r.ood_score is not None and np.isfinite(r.ood_score) for r in results)
    # an older bundle (no "ood" in the manifest) still loads and never gives the reason
    old = tmp_path / "old"
    shutil.copytree(bundle.path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["review"]["ood"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with Classifier(old, precision="fp32", threads=1, warmup=False) as clf:
        assert not clf.checks_ood
        for r in clf.predict(noise):
            assert "out_of_distribution" not in r.review_reasons and r.ood_score is not None
    # a first-version record (the energy alone) still drives the flag: its scores are
    # mean branch energies (negative for these logits), not the combined scaled score
    combined_scores = [r.ood_score for r in val_res]
    manifest["review"]["ood"] = {
        "score": "energy",
        "threshold": float(np.quantile(combined_scores, 0.5)),  # any finite value
        "branches": ["global", "object", "part"],
    }
    (old / "manifest.json").write_text(json.dumps(manifest))
    with Classifier(old, precision="fp32", threads=1, warmup=False) as clf:
        assert clf.checks_ood
        energies = [r.ood_score for r in clf.predict(val)]
    assert all(e < 0 for e in energies)
    assert not np.allclose(energies, combined_scores)
