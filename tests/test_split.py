"""Group-aware splits: whole groups only, deterministic, stratified-ish, checked on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_iapp.classes import CLASS_NAMES
from edge_iapp.data.dataset import Sample
from edge_iapp.data.split import (
    PARTS,
    SplitError,
    apply_split,
    load_split,
    make_split,
    write_split,
)


def samples_from(groups: list[list[int]]) -> list[Sample]:
    """One sample per label; group ``g{k}`` holds ``groups[k]``."""
    out = []
    for k, labels in enumerate(groups):
        for j, label in enumerate(labels):
            out.append(
                Sample(Path(f"g{k}_{j}.png"), label, CLASS_NAMES[label], f"g{k}", f"g{k}.{j % 2}")
            )
    return out


group_lists = st.lists(
    st.lists(st.integers(0, 23), min_size=1, max_size=12), min_size=3, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(
    groups=group_lists,
    test=st.sampled_from([0.0, 0.1, 0.2, 0.3]),
    val=st.sampled_from([0.0, 0.1, 0.2]),
    seed=st.integers(0, 5),
)
def test_no_group_in_two_parts(groups, test, val, seed):
    samples = samples_from(groups)
    split = make_split(samples, test=test, val=val, seed=seed)
    named = [g for p in PARTS for g in split["groups"][p]]
    assert len(named) == len(set(named)) == len(groups)  # each group exactly once
    parts = apply_split(samples, split)
    assert not parts["unassigned"]
    seen = {}
    for p in PARTS:
        for s in parts[p]:
            assert seen.setdefault(s.group, p) == p
    assert sum(split["counts"][p]["samples"] for p in PARTS) == len(samples)
    for p, fraction in (("test", test), ("val", val)):
        assert bool(split["groups"][p]) == (fraction > 0)  # non-zero parts are not empty
    assert make_split(samples, test=test, val=val, seed=seed) == split  # deterministic


def test_fractions_and_class_balance_on_many_groups():
    # 200 cases of 46 chromosomes each, a quarter male: Y is rare, as in real sets.
    groups = []
    for k in range(200):
        autosomes = [c for c in range(22) for _ in range(2)]
        groups.append(autosomes + ([22, 23] if k % 4 == 0 else [22, 22]))
    samples = samples_from(groups)
    split = make_split(samples, test=0.2, val=0.1, seed=3)
    total = len(samples)
    for p, want in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        got = split["counts"][p]["samples"] / total
        assert abs(got - want) < 0.02, (p, got)
        y_share = split["counts"][p]["per_class"]["Y"] / 50
        assert abs(y_share - want) < 0.06, (p, y_share)
    assert make_split(samples, test=0.2, val=0.1, seed=4) != split  # the seed matters


def test_write_load_roundtrip(tmp_path):
    samples = samples_from([[0, 1], [2], [3, 4, 5], [6], [7, 8]])
    split = make_split(samples, seed=1, pattern=r"(?P<group>g\d+)")
    path = write_split(split, tmp_path / "sub" / "split.json")
    loaded = load_split(path)
    assert loaded == split
    assert loaded["version"] == 1 and loaded["pattern"] == r"(?P<group>g\d+)"
    assert set(loaded) >= {"version", "seed", "pattern", "fractions", "groups", "counts"}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["split.json"]  # no temp left


def test_apply_split_missing_and_unassigned(tmp_path):
    samples = samples_from([[0], [1], [2], [3], [4]])
    split = make_split(samples, seed=0)
    fewer = [s for s in samples if s.group != "g0"]
    with pytest.raises(SplitError, match="names 1 group.*g0"):
        apply_split(fewer, split)
    parts = apply_split(fewer, split, allow_missing=True)
    assert sum(len(parts[p]) for p in PARTS) == 4
    extra = samples + samples_from([[0]] * 7)[6:]  # group g6: not in the split
    parts = apply_split(extra, split)
    assert [s.group for s in parts["unassigned"]] == ["g6"]


EMPTY_GROUPS = {"train": [], "val": [], "test": []}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a JSON split file"),
        (json.dumps({"version": 2, "groups": {}}), "version 1"),
        (json.dumps({"version": 1, "groups": {"train": []}}), "lists 'train'"),
        (
            json.dumps({"version": 1, "groups": {"train": ["a"], "val": [], "test": ["a"]}}),
            "'a' is in both 'train' and 'test'",
        ),
        (
            json.dumps({"version": 1, "pattern": "(", "groups": EMPTY_GROUPS}),
            "'pattern': group pattern '\\(' is not a valid regex",
        ),
        (
            json.dumps({"version": 1, "pattern": 3, "groups": EMPTY_GROUPS}),
            "'pattern' must be a regex string or null",
        ),
        (
            json.dumps({"version": 1, "groups": {"train": [["a"]], "val": [], "test": []}}),
            "groups of 'train' must be names",
        ),
        (
            json.dumps({"version": 1, "groups": {"train": ["7"], "val": [7], "test": []}}),
            "7 is in both 'train' and 'val'",
        ),
    ],
)
def test_load_split_rejects(tmp_path, content, message):
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(SplitError, match=message):
        load_split(path)


def test_make_split_rejects():
    with pytest.raises(SplitError, match="test \\+ val < 1"):
        make_split(samples_from([[0], [1]]), test=0.6, val=0.5)
    with pytest.raises(SplitError, match="no samples"):
        make_split([])
    with pytest.raises(SplitError, match="2 group\\(s\\) cannot fill 3 parts"):
        make_split(samples_from([[0], [1]]))
    with pytest.raises(SplitError, match="cannot read"):
        load_split(Path("/nonexistent/split.json"))
