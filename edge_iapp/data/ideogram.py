"""Per-class facts from the human G-band ideogram: length, centromere position, bands.

Sources (approximate values, good enough to draw plausible synthetic chromosomes; not a
clinical reference):

- Relative length (% of the haploid autosomal length) and centromere index (short-arm
  fraction) are the classical measurements published with the ISCN ideograms (Paris
  Conference 1971, carried into ISCN 2020 tables), e.g. chr1 8.44 % / 48.4, chr21 1.90 % /
  30.1, Y 2.15 % / 27.2. Acrocentric short arms (13-15, 21, 22) include satellites and
  stalks, which is why their indices are 17-30 % and not ~0.
- Bands (name, extent, Giemsa stain ``gneg``/``gpos25..100``/``acen``/``stalk``/``gvar``)
  are the ISCN ~850-band ideogram as placed on the genome by the UCSC Genome Browser
  ``cytoBand`` table (GRCh37). Positions there are in megabases, so each arm is rescaled
  so that the centromere falls at the measured centromere index. :func:`facts` merges
  sub-bands to a coarser level (``"550"`` by default, ``"350"`` merges to whole bands),
  which is what light microscopy resolves on the ~20x60 px crops this project sees.

The table lives in ``ideogram.json`` beside this module (package data) and is read once,
on first use (no work at import time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from ..classes import CLASS_NAMES, canonical_class

STAINS: tuple[str, ...] = ("gneg", "gpos25", "gpos50", "gpos75", "gpos100", "acen", "stalk", "gvar")

STAIN_DARKNESS: dict[str, float] = {
    "gneg": 0.0,
    "gpos25": 0.25,
    "gpos50": 0.5,
    "gpos75": 0.75,
    "gpos100": 1.0,
    "acen": 0.35,  # the constriction itself is drawn by narrowing; the stain is mid grey
    "stalk": 0.05,  # pale, thin nucleolar organiser stalk
    "gvar": 0.7,  # heterochromatin: 1q12, 16q11.2, Yq12 and satellites stain dark
}
"""G-band darkness of each stain, 0 (pale) .. 1 (darkest)."""

GVAR_DARKNESS: dict[str, float] = {"9": 0.2}
"""Class-specific ``gvar`` darkness: 9q12 (9qh) is pale with G-banding."""

ACROCENTRIC: frozenset[str] = frozenset({"13", "14", "15", "21", "22"})

LEVELS: tuple[str, ...] = ("850", "550", "350")
_REGULAR = ("gneg", "gpos25", "gpos50", "gpos75", "gpos100")


@dataclass(frozen=True)
class Band:
    """One band along the chromosome, p-ter (0) to q-ter (1).

    Attributes:
        name: ISCN band name (``p36.3``, ``q21``), arm letter first.
        start: start as a fraction of the chromosome length.
        end: end as a fraction of the chromosome length.
        stain: one of :data:`STAINS`.
    """

    name: str
    start: float
    end: float
    stain: str


@dataclass(frozen=True)
class ChromosomeFacts:
    """What the ideogram says about one class.

    Attributes:
        name: class name (``"1"``..``"22"``, ``"X"``, ``"Y"``).
        relative_length: % of the haploid autosomal length.
        centromere_index: short-arm fraction, 0..1.
        acrocentric: 13-15, 21, 22 (short arm of stalk and satellites).
        bands: p-ter to q-ter, contiguous, covering 0..1.
    """

    name: str
    relative_length: float
    centromere_index: float
    acrocentric: bool
    bands: tuple[Band, ...]


@cache
def _table() -> dict:
    text = resources.files(__package__).joinpath("ideogram.json").read_text(encoding="utf-8")
    return json.loads(text)["classes"]


def _prefix(name: str, level: str) -> str:
    """Band name at a coarser level: ``p36.33`` -> ``p36.3`` (550) or ``p36`` (350)."""
    if level == "850" or "." not in name:
        return name
    head, tail = name.split(".", 1)
    return head if level == "350" else f"{head}.{tail[0]}"


def _merge(bands: list[Band], level: str) -> list[Band]:
    """Merge consecutive sub-bands sharing a coarser name; special stains stay apart."""
    groups: list[list[Band]] = []
    for band in bands:
        key = (_prefix(band.name, level), band.stain if band.stain not in _REGULAR else "g")
        if groups:
            last = groups[-1][0]
            last_key = (
                _prefix(last.name, level),
                last.stain if last.stain not in _REGULAR else "g",
            )
            if key == last_key:
                groups[-1].append(band)
                continue
        groups.append([band])
    merged = []
    for group in groups:
        stain = group[0].stain
        if len({b.stain for b in group}) > 1:
            # Length-weighted darkness, snapped to the nearest G-band level.
            weights = np.array([b.end - b.start for b in group])
            dark = np.array([STAIN_DARKNESS[b.stain] for b in group])
            mean = float((weights * dark).sum() / weights.sum())
            stain = _REGULAR[int(np.argmin([abs(mean - STAIN_DARKNESS[s]) for s in _REGULAR]))]
        name = _prefix(group[0].name, level)
        merged.append(Band(name, group[0].start, group[-1].end, stain))
    return merged


@cache
def facts(class_name: str, level: str = "550") -> ChromosomeFacts:
    """Ideogram facts of one class.

    Args:
        class_name: any spelling :func:`edge_iapp.classes.canonical_class` accepts.
        level: band resolution, one of :data:`LEVELS` (``"850"`` as tabulated).

    Returns:
        The class's :class:`ChromosomeFacts`; band extents are fractions of the length with
        the centromere (end of the ``p`` ``acen`` band) at ``centromere_index``.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    name = canonical_class(class_name)
    entry = _table()[name]
    ci = entry["centromere_index"] / 100.0
    rows = entry["bands"]
    total = rows[-1][2]
    # Centromere in megabases: where the p arm ends.
    cen = max(end for band, _start, end, _stain in rows if band.startswith("p"))
    bands = []
    for band, start, end, stain in rows:
        if band.startswith("p"):
            s, e = start / cen * ci, end / cen * ci
        else:
            s = ci + (start - cen) / (total - cen) * (1.0 - ci)
            e = ci + (end - cen) / (total - cen) * (1.0 - ci)
        bands.append(Band(band, s, e, stain))
    return ChromosomeFacts(
        name=name,
        relative_length=float(entry["relative_length"]),
        centromere_index=ci,
        acrocentric=name in ACROCENTRIC,
        bands=tuple(_merge(bands, level)),
    )


def all_facts(level: str = "550") -> dict[str, ChromosomeFacts]:
    """Facts of all 24 classes in network order."""
    return {name: facts(name, level) for name in CLASS_NAMES}


def darkness_profile(chrom: ChromosomeFacts, n: int) -> np.ndarray:
    """G-band darkness sampled at ``n`` evenly spaced points p-ter -> q-ter.

    Args:
        chrom: the class's facts.
        n: number of samples (>= 1); sample ``i`` is at ``(i + 0.5) / n``.

    Returns:
        ``(n,)`` float32 in 0..1 (piecewise constant; the renderer blurs it).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pos = (np.arange(n, dtype=np.float64) + 0.5) / n
    ends = np.array([b.end for b in chrom.bands])
    idx = np.minimum(np.searchsorted(ends, pos, side="right"), len(chrom.bands) - 1)
    gvar = GVAR_DARKNESS.get(chrom.name, STAIN_DARKNESS["gvar"])
    values = np.array([gvar if b.stain == "gvar" else STAIN_DARKNESS[b.stain] for b in chrom.bands])
    return values[idx].astype(np.float32)
