"""Group-aware train/val/test splits, written to and read from a JSON split file.

Whole groups (cases / karyotypes) go to one part only, so near-duplicate cells of one
case never sit on both sides. Parts are filled greedily so that each one's class mix
follows its target fraction ("stratified-ish"); the result depends only on the groups,
their class counts, the fractions and the seed.

Split file (version 1)::

    {"version": 1, "seed": 0, "pattern": null,
     "fractions": {"train": 0.7, "val": 0.1, "test": 0.2},
     "groups": {"train": [...], "val": [...], "test": [...]},
     "counts": {"train": {"groups": n, "samples": n, "per_class": {...}}, ...}}

A split of a pre-split folder (:func:`make_folder_split`) also has ``"layout":
"part-folders"`` and ``"folders": {"train": "train", "test": "test"}``; its groups are
prefixed with their part folder (``train/case01``), and readers scan the folder that way
(:func:`scan_for_split`).

:func:`apply_split` raises :class:`SplitError` when the split names groups the data
lacks (the split was made for other data; ``allow_missing=True`` accepts it, e.g. for a
subset), and puts data groups the split does not name under ``"unassigned"``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_iapp.classes import NUM_CLASSES
from edge_iapp.ioutil import atomic_write_text

from .dataset import FolderScan, GroupRule, Sample, class_counts, scan_folder

PARTS: tuple[str, ...] = ("train", "val", "test")
SPLIT_VERSION = 1
FOLDER_LAYOUT = "part-folders"
"""``layout`` of a split that keeps a pre-split folder's parts."""


class SplitError(ValueError):
    """A split cannot be made, read or applied (the message says why)."""


def make_split(
    samples: Sequence[Sample],
    test: float = 0.2,
    val: float = 0.1,
    seed: int = 0,
    pattern: str | None = None,
) -> dict:
    """Assign whole groups to train/val/test.

    Args:
        samples: labelled samples (their ``group`` is the split unit).
        test, val: fractions of samples wanted in the test and val parts; train gets
            the rest. Each part with a non-zero fraction gets at least one group.
        seed: order in which groups are considered (ties, balance).
        pattern: the group pattern used, recorded in the file.

    Returns:
        The split as a JSON-ready dict (see the module docstring).

    Raises:
        SplitError: bad fractions, no samples, or fewer groups than non-empty parts.
    """
    fractions = {"train": 1.0 - test - val, "val": val, "test": test}
    if not (0.0 <= test < 1.0 and 0.0 <= val < 1.0 and test + val < 1.0):
        raise SplitError(f"need 0 <= test, val and test + val < 1; got test={test}, val={val}")
    if not samples:
        raise SplitError("no samples to split")
    vectors: dict[str, np.ndarray] = {}
    for s in samples:
        vectors.setdefault(s.group, np.zeros(NUM_CLASSES, dtype=np.float64))[s.label] += 1
    wanted = [p for p in PARTS if fractions[p] > 0]
    if len(vectors) < len(wanted):
        raise SplitError(
            f"{len(vectors)} group(s) cannot fill {len(wanted)} parts {wanted}; "
            "lower --test/--val to 0 or check --group-pattern"
        )
    order = sorted(vectors)
    random.Random(seed).shuffle(order)
    # Big groups first (stable, so the seed still orders equal sizes): small ones fill gaps.
    order.sort(key=lambda g: -vectors[g].sum())
    total = sum(vectors.values())
    target = {p: fractions[p] * total for p in PARTS}
    current = {p: np.zeros(NUM_CLASSES) for p in PARTS}
    assigned: dict[str, list[str]] = {p: [] for p in PARTS}
    for g in order:
        vec = vectors[g]
        part = max(wanted, key=lambda p: _need(target[p], current[p], vec))
        assigned[part].append(g)
        current[part] += vec
    _fill_empty_parts(assigned, wanted, vectors)
    return _split_record(assigned, samples, seed, pattern, fractions)


def make_folder_split(scan: FolderScan, val: float | None = None, seed: int = 0) -> dict:
    """Keep the parts of a pre-split folder (``scan_folder(root, parts=True)``).

    Every group of a part folder goes to that folder's part. Without a val folder, a
    ``val`` share (default 0.1) of the train folder's images moves to val, whole groups
    at a time, as :func:`make_split` chooses them.

    Raises:
        SplitError: no train or no test folder, ``val`` given beside a val folder, bad
            ``val``, or too few train groups to give val one.
    """
    samples = scan.samples
    part_of = {s.group: scan.part_folders[s.group.split("/", 1)[0]] for s in samples}
    found = set(part_of.values())  # parts with images, not just class folders
    if not {"train", "test"} <= found:
        have = ", ".join(f"{k} ({v})" for k, v in scan.part_folders.items()) or "none"
        raise SplitError(
            "a pre-split folder needs a train and a test folder, each with labelled images "
            f"in class folders; found part folders: {have}, with images in: "
            f"{', '.join(sorted(found)) or 'none'}"
        )
    if "val" in found and val is not None:
        raise SplitError("--val moves train images to val; this folder has its own val folder")
    if val is not None and not 0.0 <= val < 1.0:
        raise SplitError(f"--val is a share of the train folder's images in [0, 1), got {val}")
    assigned = {p: sorted({g for g, q in part_of.items() if q == p}) for p in PARTS}
    if "val" not in found:
        train = [s for s in samples if part_of[s.group] == "train"]
        try:
            carved = make_split(train, test=0.0, val=0.1 if val is None else val, seed=seed)
        except SplitError as exc:
            raise SplitError(
                f"cannot move train cases to val ({exc}); pass --val 0 for no val part, or "
                "add a val folder"
            ) from None
        assigned["train"], assigned["val"] = carved["groups"]["train"], carved["groups"]["val"]
    final = {g: p for p, groups in assigned.items() for g in groups}
    fractions = {p: sum(final[s.group] == p for s in samples) / len(samples) for p in PARTS}
    record = _split_record(assigned, samples, seed, scan.group_pattern, fractions)
    return {**record, "layout": FOLDER_LAYOUT, "folders": dict(sorted(scan.part_folders.items()))}


def shared_cases(scan: FolderScan) -> dict[str, list[str]]:
    """Cases (groups without their part-folder prefix) found in more than one part folder:
    the folders' own split is not group-aware there, and test scores would be inflated.

    Only names that a group rule matched count: an unmatched file's group is its stem,
    and benchmarks that number their files afresh in each part (``train/1/1.png``,
    ``test/1/1.png``) would all look shared.
    """
    ungrouped = set(scan.ungrouped)
    folders: dict[str, set[str]] = {}
    for s in scan.samples:
        if s.path in ungrouped:
            continue
        folder, case = s.group.split("/", 1)
        folders.setdefault(case, set()).add(scan.part_folders[folder])
    return {case: sorted(parts) for case, parts in sorted(folders.items()) if len(parts) > 1}


def _need(target: np.ndarray, current: np.ndarray, vec: np.ndarray) -> float:
    """How much a part still needs this group's classes, relative to its size."""
    missing = np.maximum(target - current, 0.0)
    room = float(target.sum() - current.sum())
    return float(np.minimum(missing, vec).sum()) / max(float(vec.sum()), 1.0) + 1e-9 * room


def _fill_empty_parts(
    assigned: dict[str, list[str]], wanted: list[str], vectors: dict[str, np.ndarray]
) -> None:
    for part in wanted:
        if assigned[part]:
            continue
        donor = max(wanted, key=lambda p: len(assigned[p]))
        smallest = min(assigned[donor], key=lambda g: (vectors[g].sum(), g))
        assigned[donor].remove(smallest)
        assigned[part].append(smallest)


def _split_record(
    assigned: dict[str, list[str]],
    samples: Sequence[Sample],
    seed: int,
    pattern: str | None,
    fractions: dict[str, float],
) -> dict:
    part_of = {g: p for p, gs in assigned.items() for g in gs}
    counts = {}
    for p in PARTS:
        members = [s for s in samples if part_of.get(s.group) == p]
        counts[p] = {
            "groups": len(assigned[p]),
            "samples": len(members),
            "per_class": class_counts(members),
        }
    return {
        "version": SPLIT_VERSION,
        "seed": seed,
        "pattern": pattern,
        "fractions": {p: round(fractions[p], 6) for p in PARTS},
        "groups": {p: sorted(assigned[p]) for p in PARTS},
        "counts": counts,
    }


def write_split(split: dict, path: str | Path) -> Path:
    """Write a split file atomically (a killed run leaves the old file or the new one)."""
    return atomic_write_text(path, json.dumps(split, indent=1) + "\n")


def load_split(path: str | Path) -> dict:
    """Read and check a split file.

    Raises:
        SplitError: unreadable, not JSON, wrong version, missing parts, a group that
            appears in two parts, or a recorded group pattern that is not a valid one.
    """
    path = Path(path)
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SplitError(f"{path}: cannot read split file ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: not a JSON split file ({exc})") from None
    if not isinstance(split, dict) or split.get("version") != SPLIT_VERSION:
        found = split.get("version") if isinstance(split, dict) else type(split).__name__
        raise SplitError(f"{path}: expected split file version {SPLIT_VERSION}, found {found!r}")
    groups = split.get("groups")
    if not isinstance(groups, dict) or any(not isinstance(groups.get(p), list) for p in PARTS):
        raise SplitError(f"{path}: 'groups' must have lists 'train', 'val' and 'test'")
    seen: dict[str, str] = {}
    for p in PARTS:
        for g in groups[p]:
            if isinstance(g, bool) or not isinstance(g, str | int):
                raise SplitError(
                    f"{path}: the groups of {p!r} must be names (strings), found {g!r}; "
                    "write the split with `edge-iapp data split`"
                )
            if str(g) in seen:
                raise SplitError(f"{path}: group {g!r} is in both {seen[str(g)]!r} and {p!r}")
            seen[str(g)] = p
    if split.get("layout") not in (None, FOLDER_LAYOUT):
        raise SplitError(
            f"{path}: unknown 'layout' {split.get('layout')!r}; expected {FOLDER_LAYOUT!r} or none"
        )
    pattern = split.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise SplitError(f"{path}: 'pattern' must be a regex string or null, got {pattern!r}")
        try:
            GroupRule(pattern)
        except ValueError as exc:
            raise SplitError(f"{path}: 'pattern': {exc}") from None
    return split


def scan_for_split(root: str | Path, split: dict, **kwargs) -> FolderScan:
    """:func:`~edge_iapp.data.dataset.scan_folder` with the file-name rule ``split`` was made with.

    ``data split --group-pattern P`` records P in the split; the default rules would give
    other groups (and cells), and the split would name groups the folder seems to lack.
    A split made with ``--from-folders`` reads the part folders (groups ``train/...``).
    ``kwargs`` go to ``scan_folder``.
    """
    parts = split.get("layout") == FOLDER_LAYOUT
    return scan_folder(root, split.get("pattern"), parts=parts, **kwargs)


def apply_split(
    samples: Sequence[Sample], split: dict, allow_missing: bool = False
) -> dict[str, list[Sample]]:
    """Sort samples into the split's parts.

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "unassigned": [...]}``;
        ``unassigned`` holds samples whose group the split does not name (new data):
        they are in no part, and the caller decides (report them, or make a new split).

    Raises:
        SplitError: the split names groups that ``samples`` lack, unless
            ``allow_missing`` (then they are ignored).
    """
    part_of = {str(g): p for p in PARTS for g in split["groups"][p]}
    out: dict[str, list[Sample]] = {p: [] for p in (*PARTS, "unassigned")}
    present = set()
    for s in samples:
        present.add(s.group)
        out[part_of.get(s.group, "unassigned")].append(s)
    missing = sorted(set(part_of) - present)
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise SplitError(
            f"the split names {len(missing)} group(s) that the data lacks ({shown}); "
            "it was made for other data or another --group-pattern"
        )
    return out


def absent_groups(split: dict, part: str, samples: Sequence[Sample]) -> str | None:
    """Which of the split's ``part`` groups no sample belongs to, said in a few words.

    For the callers that accept such splits (``allow_missing``: a folder that holds only
    part of the data): None when every group of ``part`` is present.
    """
    present = {s.group for s in samples}
    absent = sorted(str(g) for g in split["groups"][part] if str(g) not in present)
    if not absent:
        return None
    shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
    total = len(split["groups"][part])
    return f"{len(absent)} of the split's {total} {part} group(s) are not in the folder ({shown})"
