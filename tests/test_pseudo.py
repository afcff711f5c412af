"""Pseudo-labels for unlabelled cells: the consistency step per cell, plain calls elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from edge_iapp.classes import CLASS_NAMES
from edge_iapp.train.pseudo import pseudo_labels

ONE, TWO, X, Y = (CLASS_NAMES.index(n) for n in ("1", "2", "X", "Y"))


def _row(first: int, second: int, p_first: float = 0.5, p_second: float = 0.4) -> np.ndarray:
    """A doubtful call: ``first`` ahead of ``second``, the rest spread thinly."""
    p = np.full(len(CLASS_NAMES), (1.0 - p_first - p_second) / (len(CLASS_NAMES) - 2))
    p[first], p[second] = p_first, p_second
    return p


def _cell() -> np.ndarray:
    """Three objects called "1" (one of them a doubtful "1" that could be a "2"), an X, a Y."""
    return np.stack(
        [
            _row(ONE, TWO, 0.95, 0.01),
            _row(ONE, TWO, 0.95, 0.01),
            _row(ONE, TWO, 0.5, 0.4),
            _row(X, Y, 0.95, 0.01),
            _row(Y, X, 0.95, 0.01),
        ]
    )


def test_a_cell_gives_its_third_one_to_the_empty_class() -> None:
    p = _cell()
    pseudo = pseudo_labels(p, ["c"] * 5)
    assert pseudo.plain.tolist() == [ONE, ONE, ONE, X, Y]
    assert pseudo.labels.tolist() == [ONE, ONE, TWO, X, Y]
    assert pseudo.summary()["changed_by_consistency"] == 1 and pseudo.cells == 1
    assert pseudo.confidence[2] == pytest.approx(0.4)
    off = pseudo_labels(p, ["c"] * 5, consistency=False)
    assert off.labels.tolist() == off.plain.tolist() == [ONE, ONE, ONE, X, Y]


def test_cells_are_constrained_one_by_one() -> None:
    # two cells with two doubtful "1"s each: normal per cell, four "1"s if pooled
    p = np.stack([_row(ONE, TWO)] * 4)
    pseudo = pseudo_labels(p, ["a", "a", "b", "b"])
    assert pseudo.labels.tolist() == [ONE] * 4 and pseudo.cells == 2
    pooled = pseudo_labels(p, ["a"] * 4)
    assert sorted(pooled.labels.tolist()) == [ONE, ONE, TWO, TWO]


def test_crops_without_a_cell_keep_their_plain_call() -> None:
    p = _cell()
    pseudo = pseudo_labels(p, [None] * 5)
    assert pseudo.labels.tolist() == pseudo.plain.tolist() and pseudo.without_cell == 5
    mixed = pseudo_labels(np.concatenate([p, p[2:3]]), ["c"] * 5 + [None])
    assert mixed.labels.tolist() == [ONE, ONE, TWO, X, Y, ONE]


def test_bad_input_is_refused() -> None:
    p = _cell()
    with pytest.raises(ValueError, match="expected"):
        pseudo_labels(p, ["c"] * 4)
    p[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pseudo_labels(p, ["c"] * 5)
    empty = pseudo_labels(np.zeros((0, len(CLASS_NAMES))), [])
    assert empty.labels.size == 0 and empty.summary()["mean_confidence"] is None
