"""Per-cell counts and the numeric part of an ISCN karyotype (e.g. ``47,XY,+21``).

Only numbers are described: structural changes (translocations, deletions...) cannot
be seen by a per-chromosome classifier and are never written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..classes import CLASS_NAMES, canonical_class

AUTOSOMES: tuple[str, ...] = CLASS_NAMES[:22]
NORMAL_SEX: tuple[str, ...] = ("XX", "XY")
#: Shown in place of the sex complement when no X or Y was called (not valid ISCN; flagged).
NO_SEX = "?"


@dataclass
class Karyotype:
    """What one cell's calls add up to.

    Attributes:
        count: number of classified chromosomes.
        class_counts: ``{class name: count}`` for all 24 classes (zeros included), in
            network order.
        sex_chromosomes: ``"XY"``, ``"XX"``, ``"X"``, ``"XXY"``...; ``""`` when none.
        iscn: numeric ISCN-style string, e.g. ``"46,XX"``, ``"47,XY,+21"``, ``"45,X"``.
        gains, losses: autosome changes in ISCN form (``"+21"``, ``"-13"``), numeric order.
        not_46: the count is not 46.
        aneuploidy: any autosome count differs from 2, or the sex complement is not XX/XY.
        doubtful: number of calls a person should check.
        clusters: number of touching/overlapping groups that were not classified.
        unclassified: number of objects or files without a call (clusters included).
        flags: short names of everything unusual, for tables and filters.
    """

    count: int
    class_counts: dict[str, int]
    sex_chromosomes: str
    iscn: str
    gains: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    not_46: bool = False
    aneuploidy: bool = False
    doubtful: int = 0
    clusters: int = 0
    unclassified: int = 0
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sex_complement(counts: dict[str, int]) -> str:
    """ISCN sex complement: all X first, then all Y (``"XXY"``); ``""`` when none."""
    return "X" * counts.get("X", 0) + "Y" * counts.get("Y", 0)


def iscn_string(counts: dict[str, int]) -> str:
    """Numeric ISCN karyotype from per-class counts.

    Args:
        counts: ``{class: count}``; missing classes count 0.

    Returns:
        ``"<total>,<sex>[,<autosome changes>]"``: sex chromosome changes are carried by
        the sex complement (``45,X``, ``47,XXY``), autosome gains/losses are listed in
        numeric order, one entry per extra or missing copy (``48,XY,+13,+21``,
        ``44,XX,-7,-7``). With no X or Y the complement is written ``?``.
    """
    total = sum(counts.get(c, 0) for c in CLASS_NAMES)
    parts = [str(total), sex_complement(counts) or NO_SEX]
    parts += autosome_changes(counts)
    return ",".join(parts)


def autosome_changes(counts: dict[str, int]) -> list[str]:
    """``["+13", "-18", ...]``: one entry per copy above or below two, numeric order."""
    out: list[str] = []
    for name in AUTOSOMES:
        n = counts.get(name, 0)
        sign = "+" if n > 2 else "-"
        out += [f"{sign}{name}"] * abs(n - 2)
    return out


def karyotype(
    calls: Iterable[str | None],
    doubtful: int = 0,
    clusters: int = 0,
) -> Karyotype:
    """Summarise one cell.

    Args:
        calls: one class name per object; None for an object without a call (an
            unreadable file, a cluster). Names may use the 23/24 aliases.
        doubtful: how many calls are marked for review.
        clusters: how many of the None calls are clusters of touching chromosomes.

    Returns:
        The cell's :class:`Karyotype`.
    """
    names: list[str] = []
    unclassified = 0
    for c in calls:
        if c is None:
            unclassified += 1
        else:
            names.append(canonical_class(c))
    tally = Counter(names)
    counts = {name: int(tally.get(name, 0)) for name in CLASS_NAMES}
    sex = sex_complement(counts)
    changes = autosome_changes(counts)
    count = len(names)
    aneuploidy = bool(changes) or sex not in NORMAL_SEX
    flags: list[str] = []
    if count != 46:
        flags.append("not_46")
    if aneuploidy:
        flags.append("aneuploidy")
    if not sex:
        flags.append("no_sex_chromosome")
    if doubtful:
        flags.append("doubtful_calls")
    if clusters:
        flags.append("clusters")
    if unclassified:
        # The true count is unknown while objects are unclassified.
        flags.append("count_uncertain")
    return Karyotype(
        count=count,
        class_counts=counts,
        sex_chromosomes=sex,
        iscn=iscn_string(counts),
        gains=[c for c in changes if c.startswith("+")],
        losses=[c for c in changes if c.startswith("-")],
        not_46=count != 46,
        aneuploidy=aneuploidy,
        doubtful=int(doubtful),
        clusters=int(clusters),
        unclassified=unclassified,
        flags=flags,
    )


def cell_tally(karyotypes: Iterable[str]) -> str:
    """The karyotypes of a slide's cells with how many cells gave each, in ISCN's clone
    notation: ``"47,XX,+21[3]/46,XX[17]"``.

    Larger groups first and a normal karyotype (46,XX or 46,XY) last, as ISCN lists clones;
    ties in name order, so the string does not depend on the cells' order. It counts
    automatic calls before review: a tally to guide the review (which cells to check, is
    there a second line?), not a reported karyotype. ``""`` when there is no cell.

    Args:
        karyotypes: one numeric ISCN string per scored cell (``Karyotype.iscn``); empty
            strings are left out.
    """
    counts = Counter(k for k in karyotypes if k)
    order = sorted(counts, key=lambda k: (_is_normal(k), -counts[k], k))
    return "/".join(f"{k}[{counts[k]}]" for k in order)


def _is_normal(iscn: str) -> bool:
    return iscn in {f"46,{sex}" for sex in NORMAL_SEX}
