"""Karyotype strings and the consistency step on hand-built calls and probability tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_iapp.classes import CLASS_NAMES
from edge_iapp.scoring.consistency import capacities, hungarian, reassign, solve_assignment
from edge_iapp.scoring.karyotype import karyotype


def normal(sex: str = "XY") -> list[str]:
    return [str(i) for i in range(1, 23) for _ in range(2)] + list(sex)


@pytest.mark.parametrize(
    ("calls", "iscn", "not_46", "aneuploidy"),
    [
        (normal("XY"), "46,XY", False, False),
        (normal("XX"), "46,XX", False, False),
        (normal("XY") + ["21"], "47,XY,+21", True, True),
        ([c for c in normal("XX") if c != "X"] + ["X"], "45,X", True, True),
        (normal("XXY"), "47,XXY", True, True),
        (normal("XX") + ["13", "21"], "48,XX,+13,+21", True, True),
        (normal("XY")[:40] + normal("XY")[41:], "45,XY,-21", True, True),
    ],
)
def test_iscn_strings(calls, iscn, not_46, aneuploidy):
    k = karyotype(calls)
    assert k.iscn == iscn
    assert k.count == len(calls)
    assert k.not_46 is not_46
    assert k.aneuploidy is aneuploidy


def test_losses_and_gains_in_numeric_order():
    calls = normal("XX")
    calls.remove("13")
    calls.remove("7")
    calls.remove("7")
    calls.append("21")
    k = karyotype(calls)
    assert k.iscn == "44,XX,-7,-7,-13,+21"
    assert k.losses == ["-7", "-7", "-13"]
    assert k.gains == ["+21"]
    assert k.class_counts["7"] == 0 and k.class_counts["21"] == 3


def test_aliases_none_calls_clusters_and_no_sex():
    calls = [c if c not in ("X", "Y") else {"X": "23", "Y": "24"}[c] for c in normal("XY")]
    k = karyotype(calls + [None, None], doubtful=3, clusters=1)
    assert k.iscn == "46,XY"
    assert k.unclassified == 2 and k.clusters == 1 and k.doubtful == 3
    assert {"clusters", "count_uncertain", "doubtful_calls"} <= set(k.flags)
    assert "not_46" not in k.flags
    none = karyotype([c for c in normal("XY") if c not in "XY"])
    assert none.iscn == "44,?" and "no_sex_chromosome" in none.flags and none.aneuploidy


def table(classes: list[str], conf: float = 0.99) -> np.ndarray:
    """One-hot-ish probabilities: ``conf`` on the given class, the rest spread evenly."""
    p = np.full((len(classes), 24), (1 - conf) / 23)
    for i, c in enumerate(classes):
        p[i, CLASS_NAMES.index(c)] = conf
    return p


def set_row(p: np.ndarray, i: int, probs: dict[str, float]) -> None:
    rest = (1 - sum(probs.values())) / (24 - len(probs))
    p[i] = rest
    for c, v in probs.items():
        p[i, CLASS_NAMES.index(c)] = v


def test_low_confidence_swap_is_repaired():
    calls = normal("XY")
    p = table(calls)
    i = calls.index("9")  # first 9 looks like an 8, but only just
    set_row(p, i, {"8": 0.55, "9": 0.40})
    res = reassign(p, threshold=0.9, penalty=2.0)
    assert CLASS_NAMES[p[i].argmax()] == "8"
    assert res.class_names[i] == "9"
    assert int(res.changed.sum()) == 1
    assert karyotype(res.class_names).iscn == "46,XY"
    assert res.sex_hypothesis == "XY"


def test_confident_calls_never_change_and_true_trisomy_survives():
    calls = normal("XY") + ["21"]
    p = table(calls, conf=0.95)
    res = reassign(p, threshold=0.9)
    assert not res.changed.any()
    assert karyotype(res.class_names).iscn == "47,XY,+21"
    # A low-confidence third 21 keeps its class when the alternative is far less likely
    # (ratio 0.85/0.05 = 17 > exp(2)).
    set_row(p, len(calls) - 1, {"21": 0.85, "22": 0.05})
    res = reassign(p, threshold=0.9, penalty=2.0)
    assert res.class_names[-1] == "21"
    # ... and moves when the alternative slot is free and nearly as likely.
    p2 = table(calls[:-1] + ["21"], conf=0.95)
    p2 = np.delete(p2, calls.index("22"), axis=0)  # one 22 missing: a free slot
    set_row(p2, len(p2) - 1, {"21": 0.5, "22": 0.45})
    res = reassign(p2, threshold=0.9, penalty=2.0)
    assert res.class_names[-1] == "22"


def test_sex_hypothesis_chooses_capacities():
    calls = normal("XY")
    calls.remove("7")
    calls.append("X")  # an object called X that is really the missing 7
    p = table(calls)
    set_row(p, len(calls) - 1, {"X": 0.6, "7": 0.35})
    res = reassign(p, threshold=0.9, penalty=2.0)
    assert res.sex_hypothesis == "XY"
    assert res.class_names[-1] == "7"
    assert karyotype(res.class_names).iscn == "46,XY"


def test_threshold_zero_changes_nothing_and_bad_input():
    p = table(normal("XX"))
    set_row(p, 0, {"2": 0.5, "1": 0.4})
    assert not reassign(p, threshold=0.0).changed.any()
    assert reassign(np.zeros((0, 24))).class_indices.shape == (0,)
    with pytest.raises(ValueError, match="probabilities"):
        reassign(np.full((2, 24), np.nan))
    with pytest.raises(ValueError, match="24"):
        reassign(np.ones((2, 5)))


def test_capacities():
    assert capacities("XX")[22:].tolist() == [2, 0]
    assert capacities("XY")[22:].tolist() == [1, 1]
    assert capacities("XY")[:22].tolist() == [2] * 22


@pytest.mark.parametrize("seed", range(40))
def test_hungarian_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    m = int(rng.integers(n, 7))
    cost = rng.random((n, m)) * 10
    if seed % 4 == 0:
        cost = np.round(cost)  # ties
    cols = hungarian(cost)
    assert len(set(cols.tolist())) == n
    best = min(
        sum(cost[i, c] for i, c in enumerate(perm)) for perm in itertools.permutations(range(m), n)
    )
    assert cost[np.arange(n), cols].sum() == pytest.approx(best)


@pytest.mark.parametrize("seed", range(10))
def test_scipy_and_fallback_agree_on_cell_sized_problems(seed):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(seed)
    cost = -np.log(rng.dirichlet(np.ones(24) * 0.3, size=46).clip(1e-12))
    cost = np.repeat(cost, 3, axis=1) + np.tile([0.0, 0.0, 2.0], 24)
    a, b = hungarian(cost), solve_assignment(cost)
    assert cost[np.arange(46), a].sum() == pytest.approx(cost[np.arange(46), b].sum())


def test_reassign_without_scipy_gives_the_same_cost(monkeypatch):
    import builtins

    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(24), size=46)
    with_scipy = reassign(p, threshold=0.9)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    without = reassign(p, threshold=0.9)
    assert without.cost == pytest.approx(with_scipy.cost)
    assert without.sex_hypothesis == with_scipy.sex_hypothesis


def test_reassign_cells_repairs_each_cell_on_its_own():
    from edge_iapp.scoring.consistency import reassign_cells

    calls = normal("XY")
    p = table(calls)
    i = calls.index("9")
    set_row(p, i, {"8": 0.55, "9": 0.40})  # repaired within its cell (as above)
    both = np.concatenate([p, p])
    cells = ["a"] * len(calls) + ["b"] * len(calls)
    out = reassign_cells(both, cells)
    assert [CLASS_NAMES[c] for c in out] == calls + calls
    # pooled into one cell there are four 8s and four 9s: the swap is not made
    pooled = reassign_cells(both, ["a"] * len(both))
    assert CLASS_NAMES[pooled[i]] == "8"
    # without a cell the plain call stays
    loose = reassign_cells(both, [None] * len(both))
    assert np.array_equal(loose, both.argmax(1))
    with pytest.raises(ValueError, match="probabilities for 3 cell ids"):
        reassign_cells(both, ["a"] * 3)


def test_cell_tally_lists_larger_groups_first_and_normal_last():
    from edge_iapp.scoring.karyotype import cell_tally

    cells = ["46,XX"] * 17 + ["47,XX,+21"] * 2 + ["45,XX,-7"] * 2 + ["46,XX"] + [""]
    assert cell_tally(cells) == "45,XX,-7[2]/47,XX,+21[2]/46,XX[18]"
    assert cell_tally(reversed(cells)) == cell_tally(cells)
    assert cell_tally(["46,XY", "45,X", "46,XY"]) == "45,X[1]/46,XY[2]"
    assert cell_tally(["46,XY"] * 3 + ["46,XX"] * 4) == "46,XX[4]/46,XY[3]"  # chimera: both
    assert cell_tally(["44,?"]) == "44,?[1]" and cell_tally([]) == ""
