"""Placing the review flag's confidence threshold (edge_iapp/train/review_threshold.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_iapp.train.review_threshold import STEP, place, sweep

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
