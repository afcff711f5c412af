"""Placing the review flag's confidence threshold (edge_iapp/train/review_threshold.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_iapp.train.review_threshold import STEP, flagged_shares, place, spread, sweep

# five errors and five correct calls, confidences chosen by hand
CONF = np.array([0.3, 0.55, 0.72, 0.96, 0.99, 0.5, 0.8, 0.97, 0.99, 0.999])
CORRECT = np.array([False] * 5 + [True] * 5)


def test_place_by_hand() -> None:
    # 80% of 5 errors = 4: the 4th least confident error is 0.96, so T = 0.961
    placed = place(CONF, CORRECT, 0.8)
    assert placed["min_confidence"] == pytest.approx(0.961)
    assert (placed["errors_flagged"], placed["correct_flagged"]) == (0.8, 0.4)  # 0.5, 0.8
    assert placed["reached"] and placed["all_flagged"] == 0.6
    # the OOD flag catches the 0.99 error (and the 0.999 correct call) at every T:
    # 3 more errors are needed, the 3rd least confident of the others is 0.72
    ood = np.zeros(10, bool)
    ood[[4, 9]] = True
    placed = place(CONF, CORRECT, 0.8, ood)
    assert placed["min_confidence"] == pytest.approx(0.721)
    assert (placed["errors_flagged"], placed["correct_flagged"]) == (0.8, 0.4)  # 0.5, 0.999
    # all errors: T just above the most confident one
    assert place(CONF, CORRECT, 1.0)["min_confidence"] == pytest.approx(0.991)


def test_place_when_no_threshold_is_needed_or_enough() -> None:
    ood = np.zeros(10, bool)
    ood[:4] = True
    placed = place(CONF, CORRECT, 0.8, ood)
    assert placed["min_confidence"] is None and placed["reached"]
    assert "OOD flag alone" in placed["note"] and placed["errors_flagged"] == 0.8
    right = place(CONF[5:], CORRECT[5:], 0.8)
    assert right["min_confidence"] is None and right["errors_flagged"] is None
    # an error at a confidence of exactly 1 cannot be flagged by any T <= 1
    sure = place(np.array([1.0, 0.5]), np.array([False, True]), 0.8)
    assert sure["min_confidence"] == 1.0 and not sure["reached"]
    assert "confidence of 1" in sure["note"]
    with pytest.raises(ValueError, match="target"):
        place(CONF, CORRECT, 0.0)


def test_sweep_by_hand() -> None:
    rows = {r["min_confidence"]: r for r in sweep(CONF, CORRECT)}
    assert (rows[0.9]["errors_flagged"], rows[0.9]["correct_flagged"]) == (0.6, 0.4)
    assert (rows[0.5]["errors_flagged"], rows[0.5]["correct_flagged"]) == (0.2, 0.0)
    ood = np.zeros(10, bool)
    ood[9] = True
    assert sweep(CONF, CORRECT, ood, (0.5,))[0]["correct_flagged"] == 0.2


def test_place_on_exact_multiples_of_the_step_and_nan() -> None:
    # 0.043 / 0.001 is 42.999...: T must still be above 0.043
    for c in (0.043, 0.5, 0.123, 0.999):
        placed = place(np.array([c, 0.9]), np.array([False, True]), 1.0)
        assert placed["min_confidence"] > c and placed["reached"], c
    nan = place(np.array([np.nan, 0.5]), np.array([False, True]), 1.0)
    assert not nan["reached"] and "NaN" in nan["note"]


CONFIDENCES = st.one_of(st.floats(0.04, 1.0), st.integers(40, 1000).map(lambda i: i / 1000))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(CONFIDENCES, st.booleans(), st.booleans()), min_size=1),
    st.floats(0.05, 1.0),
)
def test_placed_threshold_is_the_smallest_that_reaches_the_target(calls, target) -> None:
    conf = np.array([c for c, _, _ in calls])
    correct = np.array([r for _, r, _ in calls])
    ood = np.array([o for _, _, o in calls])
    placed = place(conf, correct, target, ood)
    t = placed["min_confidence"]
    # the target is out of reach only when errors the OOD flag misses sit at confidence 1
    need = math.ceil(target * (~correct).sum() - 1e-9)
    reachable = ((conf < 1.0) | ood)[~correct].sum() >= need
    assert placed["reached"] == reachable
    if t is None or not reachable:
        return
    caught = ((conf < t) | ood)[~correct].mean()
    assert caught >= target - 1e-9 and caught == pytest.approx(placed["errors_flagged"])
    assert 0 < t <= 1 and abs(t / STEP - round(t / STEP)) < 1e-6  # a multiple of the step
    if t > STEP:  # one step lower no longer reaches it
        assert ((conf < t - STEP) | ood)[~correct].mean() < target - 1e-9


def test_spread_by_hand() -> None:
    # two cells; each resample is cell a twice, b twice, or both
    confidence = np.array([0.5, 0.95, 0.7, 0.99])
    correct = np.array([False, True, False, True])
    moved = spread(confidence, correct, ["a", "a", "b", "b"], target=1.0, resamples=400)
    # a alone needs T just above 0.5, b alone or both just above 0.7
    assert (moved["low"], moved["median"], moved["upper"]) == (0.501, 0.701, 0.701)
    assert moved["cells"] == 2 and moved["resamples"] == 400 and moved["level"] == 0.9
    expected = flagged_shares(confidence < 0.701, correct)
    assert moved["at_upper"] == expected
    again = spread(confidence, correct, ["a", "a", "b", "b"], target=1.0, resamples=400)
    assert again == moved  # seeded


def test_spread_needs_two_cells_and_an_error() -> None:
    confidence = np.array([0.5, 0.95, 0.7, 0.99])
    correct = np.array([False, True, False, True])
    assert spread(confidence, correct, ["a"] * 4) is None
    assert spread(confidence, np.ones(4, bool), ["a", "a", "b", "b"]) is None
    # images without a cell count one by one
    assert spread(confidence, correct, [None] * 4, resamples=50)["cells"] == 4
    with pytest.raises(ValueError, match="expected 4 cell ids"):
        spread(confidence, correct, ["a"] * 3)
    with pytest.raises(ValueError, match="level"):
        spread(confidence, correct, ["a", "a", "b", "b"], level=1.0)


def test_the_upper_bound_meets_the_target_on_new_cells_more_often_than_t_placed() -> None:
    # scripts/review_spread_sim.py, small: a lab's val part of 12 cells, then 60 new cells
    # of the same lab, 30 times over. T placed on the val cells misses the target on the
    # new cells about half the time, the upper bound over resampled cells about a fifth of
    # the time (more than the nominal tenth: a bootstrap of 12 cells is narrower than the
    # truth)
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "review_spread_sim.py"
    spec = importlib.util.spec_from_file_location("review_spread_sim", path)
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    got = sim.coverage(val_cells=12, new_cells=60, repeats=30, resamples=200, seed=7)
    assert got["met_placed"] <= 0.7 and got["met_upper"] >= max(0.7, got["met_placed"] + 0.15)
    assert got["correct_flagged_upper"] > got["correct_flagged_placed"]  # what it costs


def test_evaluate_reports_the_spread_over_resampled_cells(tmp_path) -> None:
    from edge_iapp.train.evaluate import evaluate_predictions
    from edge_iapp.train.predict import Predictions

    rng = np.random.default_rng(3)
    n = 120
    labels = rng.integers(0, 24, n)
    logits = rng.normal(0.0, 1.0, (1, n, 24))
    logits[0, np.arange(n), labels] += rng.uniform(0.0, 6.0, n)  # right, at varied confidence
    preds = Predictions(("global",), logits, labels, np.zeros(n, bool))
    cells = [f"cell{i // 40}" for i in range(n)]  # three cells
    record = evaluate_predictions(preds, tmp_path / "a", "sum", "unit", cells=cells)
    review = record["review_threshold"]
    moved, t = review["spread"], review["placed"]["min_confidence"]
    assert moved["cells"] == 3 and moved["low"] <= moved["median"] <= moved["upper"]
    assert moved["low"] <= t <= moved["upper"]
    row = next(r for r in review["sweep"] if r["min_confidence"] == moved["upper"])
    assert {k: row[k] for k in moved["at_upper"]} == moved["at_upper"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert f"T falls between {moved['low']:g} and {moved['upper']:g}" in report
    assert (
        evaluate_predictions(preds, tmp_path / "b", "sum", "unit")["review_threshold"]["spread"]
        is None
    )  # no cells: nothing to resample


def test_spread_says_when_no_threshold_reaches_the_target() -> None:
    from edge_iapp.train.evaluate import render_spread

    # cell a's error is at a confidence of 1: no T <= 1 flags it
    confidence = np.array([1.0, 0.95, 0.5, 0.99])
    correct = np.array([False, True, False, True])
    moved = spread(confidence, correct, ["a", "a", "b", "b"], target=1.0, resamples=400)
    assert moved["unreached"] == pytest.approx(0.75, abs=0.06)  # unless b alone is drawn
    assert moved["upper"] == 1.0
    text = render_spread(moved, 1.0)
    assert "no T flags 100% of the errors" in text and "safer value" not in text
    fine = spread(np.array([0.5, 0.95, 0.7, 0.99]), correct, ["a", "a", "b", "b"], 1.0)
    assert fine["unreached"] == 0.0 and "safer value" in render_spread(fine, 1.0)


def test_suggest_takes_the_upper_bound_only_where_it_is_one() -> None:
    from edge_iapp.train.review_threshold import suggest

    def placement(t, reached=True, upper=None, unreached=0.0):
        placed = {"min_confidence": t, "reached": reached, "note": "why"}
        moved = None if upper is None else {"upper": upper, "unreached": unreached, "level": 0.9}
        return {"placed": placed, "spread": moved}

    assert suggest(placement(0.95, upper=0.99)) == (0.99, "upper")
    assert suggest(placement(0.95)) == (0.95, "placed")  # one cell: no spread
    assert suggest(placement(0.95, upper=0.93)) == (0.95, "placed")  # never below placed
    assert suggest(placement(0.95, upper=1.0, unreached=0.2)) == (0.95, "placed")  # no bound
    assert suggest(placement(None))[0] is None
    t, why = suggest(placement(1.0, reached=False, upper=1.0))
    assert t is None and "no threshold reaches" in why
