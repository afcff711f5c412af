"""Labelled chromosome folders ``<root>/<class>/<images>`` and the groups used for splits.

Class folders are ``1``..``22``, ``X``, ``Y`` (``23``/``24`` and leading zeros accepted,
see :func:`edge_iapp.classes.canonical_class`). Images may sit in sub-folders of a class
folder. Hidden files and folders (name starting with ``.``) are ignored; other files at
the top level are ignored too (``SOURCE.md``, split files), except images, which are
reported as skipped because they carry no label.

A *group* is the unit a split keeps whole (a case or karyotype: homologues and the
cells of one case are near-duplicates); a *cell* is one metaphase. Both come from the
file name: see :class:`GroupRule`.

A *pre-split* folder holds part folders (``<root>/train/<class>/...``, ``test``, and
maybe ``val``; see :data:`PART_FOLDERS`). ``scan_folder(root, parts=True)`` reads it,
each group prefixed with its part folder (``train/case01``), so that a split file can
keep the folders' parts (``edge-iapp data split --from-folders``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge_iapp.classes import CLASS_NAMES, canonical_class, class_index

from .imread import IMAGE_SUFFIXES, TINY_SIDE, ImageReadError, read_header, read_image

DEFAULT_GROUP_PATTERNS: tuple[tuple[str, str], ...] = (
    # gband612 and the synthetic set: clase<N>_<k>_<case>.<cell>.<ext>
    # e.g. clase3_0_97002135.5.tiff (case 97002135), clase3_0_S0003.1.png (S0003).
    ("clase", r"^clase\d+_\d+_(?P<cell>(?P<group>[^.]+)\.[^.]+)\.[A-Za-z0-9]+$"),
    # the same without a cell number: clase<N>_<k>_<case>.<ext>
    ("clase-nocell", r"^clase\d+_\d+_(?P<group>[^.]+)\.[A-Za-z0-9]+$"),
    # bioimlab: "<K> <C>[ab].bmp", e.g. "10 23.bmp", "10 5a.bmp" (karyotype K = one cell)
    ("bioimlab", r"^(?P<group>\d+) \d+[ab]?\.[A-Za-z0-9]+$"),
)
"""Default file-name rules, tried in order (``re.match`` on the file name)."""

PART_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
"""Folder names of a pre-split layout (compared in lower case) and the part each one is."""


@dataclass(frozen=True)
class Sample:
    """One labelled image file.

    Attributes:
        path: the image file.
        label: class index 0..23 (network order: 1..22, X, Y).
        class_name: canonical class name (``"1"``..``"22"``, ``"X"``, ``"Y"``).
        group: split unit (case / karyotype), from the file name.
        cell: metaphase the chromosome came from (equals ``group`` when unknown).
    """

    path: Path
    label: int
    class_name: str
    group: str
    cell: str


def cell_key(sample) -> str | None:
    """The cell of a sample as one string (``group/cell``), None when it has none.

    Cell names repeat across cases (``1``, ``2``, ...), so the group is part of the key.
    """
    cell = getattr(sample, "cell", None)
    return None if cell is None else f"{getattr(sample, 'group', '')}/{cell}"


@dataclass
class FolderScan:
    """The result of :func:`scan_folder`.

    Attributes:
        root: the scanned folder.
        samples: readable labelled images, sorted by path.
        skipped: ``(path, reason)`` for every file or folder left out.
        warnings: ``(path, warning)`` for images that were kept but look wrong
            (``tiny``, ``blank``); ``blank`` needs ``verify=True``.
        ungrouped: paths whose name matched no group rule (group = file stem).
        group_pattern: the custom pattern, or None for the defaults.
        class_parents: folders that are not a class but hold class folders (a pre-split
            ``DATA/train/<class>`` layout); they are also in ``skipped``.
        parts: scanned as a pre-split folder (``scan_folder(..., parts=True)``).
        part_folders: with ``parts``, each part folder read and its part
            (``{"train": "train", "valid": "val", "test": "test"}``).
    """

    root: Path
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    ungrouped: list[Path] = field(default_factory=list)
    group_pattern: str | None = None
    class_parents: list[Path] = field(default_factory=list)
    parts: bool = False
    part_folders: dict[str, str] = field(default_factory=dict)


class GroupRule:
    """Group and cell from a file name.

    With ``pattern=None`` the :data:`DEFAULT_GROUP_PATTERNS` are tried in order. A custom
    pattern replaces them; it must have a named group ``group`` and may have ``cell``;
    it is applied with ``re.search`` to the file name (extension included). A name that
    matches no rule gets ``group = cell = file stem`` and counts as ungrouped.

    Raises:
        ValueError: the custom pattern does not compile or has no ``group`` group.
    """

    def __init__(self, pattern: str | None = None) -> None:
        self.pattern = pattern
        if pattern is None:
            self._rules = [re.compile(p) for _, p in DEFAULT_GROUP_PATTERNS]
            self._search = False
            return
        try:
            rule = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"group pattern {pattern!r} is not a valid regex: {exc}") from None
        if "group" not in rule.groupindex:
            raise ValueError(f"group pattern {pattern!r} needs a named group (?P<group>...)")
        self._rules = [rule]
        self._search = True

    def __call__(self, name: str) -> tuple[str, str, bool]:
        """``(group, cell, matched)`` for a file name."""
        for rule in self._rules:
            m = rule.search(name) if self._search else rule.match(name)
            if m and m.group("group"):
                group = m.group("group")
                cell = m.groupdict().get("cell") or group
                return group, cell, True
        stem = Path(name).stem
        return stem, stem, False


def scan_folder(
    root: str | Path,
    group_pattern: str | None = None,
    *,
    parts: bool = False,
    verify: bool = False,
    max_side: int | None = None,
) -> FolderScan:
    """List the labelled images under ``root``.

    By default only file headers are read (fast). With ``verify=True`` every image is
    decoded; the ones that fail are skipped with the reason, and blank images are
    warned about.

    Args:
        root: folder with one sub-folder per class; with ``parts``, a folder of part
            folders (:data:`PART_FOLDERS`), each with one sub-folder per class.
        group_pattern: custom group regex (see :class:`GroupRule`), None for defaults.
        parts: read a pre-split layout; every group is prefixed with its part folder's
            name (``train/case01``), so one case in two part folders is two groups.
        verify: decode every image.
        max_side: also skip images larger than this (default: the reader's default).

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        ValueError: bad ``group_pattern``.
    """
    from .imread import DEFAULT_MAX_SIDE

    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    rule = GroupRule(group_pattern)
    limit = DEFAULT_MAX_SIDE if max_side is None else max_side
    scan = FolderScan(root=root, group_pattern=group_pattern, parts=parts)
    if not parts:
        _scan_classes(scan, root, rule, verify, limit, prefix="")
    else:
        for entry in _entries(scan, root):
            part = PART_FOLDERS.get(entry.name.lower())
            if part is None or not _holds_classes(entry):
                why = "holds no class folders" if part else "is not a part folder"
                names = ", ".join(sorted(set(PART_FOLDERS)))
                scan.skipped.append((entry, f"folder {entry.name!r} {why} ({names})"))
                continue
            scan.part_folders[entry.name] = part
            _scan_classes(scan, entry, rule, verify, limit, prefix=f"{entry.name}/")
    scan.samples.sort(key=lambda s: str(s.path))
    return scan


def _entries(scan: FolderScan, folder: Path) -> Iterable[Path]:
    """The visible sub-folders of ``folder``; loose images there are skipped (no label)."""
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix.lower() in IMAGE_SUFFIXES:
                scan.skipped.append((entry, "image not inside a class folder (no label)"))
            continue
        yield entry


def _scan_classes(
    scan: FolderScan, folder: Path, rule: GroupRule, verify: bool, limit: int, prefix: str
) -> None:
    """Add the images of ``folder``'s class folders; groups get ``prefix``."""
    for entry in _entries(scan, folder):
        try:
            class_name = canonical_class(entry.name)
        except ValueError:
            why = f"folder {entry.name!r} is not a class (1..22, X, Y)"
            if not prefix and _holds_classes(entry):
                scan.class_parents.append(entry)
                why += (
                    f"; it holds class folders (a pre-split layout): keep its parts with "
                    f"`edge-iapp data split {folder} --from-folders`, or pass {entry} itself"
                )
            scan.skipped.append((entry, why))
            continue
        for path in _files(entry):
            _add_file(scan, path, class_name, rule, verify, limit, prefix)


def no_images_reason(scan: FolderScan) -> str:
    """What to tell a user whose folder gave no labelled image, and what to do."""
    if scan.parts:
        return (
            f"no labelled images in the part folders of {scan.root}: expected "
            "train/<class>/... and test/<class>/... (and maybe val/<class>/...) in it "
            f"({len(scan.skipped)} entries skipped)"
        )
    if scan.class_parents:
        names = ", ".join(p.name for p in scan.class_parents)
        return (
            f"no labelled images in {scan.root}: its folder(s) {names} hold the class folders "
            f"(a pre-split layout); keep these parts with `edge-iapp data split {scan.root} "
            f"--from-folders --out SPLIT.json` and pass {scan.root} with that split, or pass "
            f"one of them (e.g. {scan.class_parents[0]})"
        )
    return (
        f"no labelled images in {scan.root}: expected class folders 1..22, X, Y with images "
        f"({len(scan.skipped)} entries skipped)"
    )


def _holds_classes(folder: Path) -> bool:
    """Whether ``folder`` has class sub-folders (``DATA/train/<class>``)."""
    try:
        return any(sub.is_dir() and _is_class(sub.name) for sub in folder.iterdir())
    except OSError:
        return False


def _is_class(name: str) -> bool:
    try:
        canonical_class(name)
    except ValueError:
        return False
    return True


def _files(folder: Path) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        yield path


def _add_file(
    scan: FolderScan,
    path: Path,
    class_name: str,
    rule: GroupRule,
    verify: bool,
    limit: int,
    prefix: str = "",
) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        scan.skipped.append((path, f"not an image file (suffix {path.suffix or 'none'!r})"))
        return
    try:
        header = read_header(path, max_side=limit)
        flags: tuple[str, ...] = ()
        if verify:
            flags = read_image(path, max_side=limit).flags
        elif header.width is not None and header.height is not None:
            flags = ("tiny",) if max(header.width, header.height) < TINY_SIDE else ()
    except ImageReadError as exc:
        scan.skipped.append((path, exc.reason))
        return
    for flag in flags:
        scan.warnings.append((path, flag))
    group, cell, matched = rule(path.name)
    if not matched:
        scan.ungrouped.append(path)
    label = class_index(class_name)
    scan.samples.append(Sample(path, label, class_name, prefix + group, cell))


def class_counts(samples: Iterable[Sample]) -> dict[str, int]:
    """Samples per class, all 24 classes in network order (zeros included)."""
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for s in samples:
        counts[s.class_name] += 1
    return counts


def summarize(scan: FolderScan) -> dict:
    """JSON-ready summary of a scan: ``total``, ``per_class``, groups, cells, skipped, warnings."""
    groups = {s.group for s in scan.samples}
    cells = {(s.group, s.cell) for s in scan.samples}
    return {
        "root": str(scan.root),
        "total": len(scan.samples),
        "per_class": class_counts(scan.samples),
        "groups": len(groups),
        "cells": len(cells),
        "ungrouped": len(scan.ungrouped),
        "group_pattern": scan.group_pattern,
        "skipped": [{"path": str(p), "reason": r} for p, r in scan.skipped],
        "warnings": [{"path": str(p), "warning": w} for p, w in scan.warnings],
    }
