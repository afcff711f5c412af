"""The 24 chromosome classes and their names.

Class indices are 0..23 in network order: autosomes 1..22, then X, then Y.
Folder names on disk may be ``1``..``22``, ``X``, ``Y`` or the numeric ``23``/``24``
used by several public sets for X and Y, optionally after ``chr`` or ``chromosome``
(``chr7``, ``chrX``, ``Chromosome_12``), as labs often name them.
"""

from __future__ import annotations

import re

CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(1, 23)) + ("X", "Y")
NUM_CLASSES: int = len(CLASS_NAMES)

_ALIASES = {"23": "X", "24": "Y", "x": "X", "y": "Y"}
_PREFIX = re.compile(r"^(chromosome|chr)[ _-]?", re.IGNORECASE)


def canonical_class(name: str) -> str:
    """Map a folder or label name to its canonical class name.

    Args:
        name: ``"1"``..``"22"``, ``"X"``/``"Y"`` (any case), ``"23"``/``"24"``, with
            leading zeros (``"07"``) or after ``chr``/``chromosome`` (``"chr7"``,
            ``"Chromosome_X"``).

    Returns:
        The canonical name (``"1"``..``"22"``, ``"X"``, ``"Y"``).

    Raises:
        ValueError: when ``name`` is not one of the 24 classes.
    """
    key = _PREFIX.sub("", name.strip())
    if key.isdigit():
        key = str(int(key))
    key = _ALIASES.get(key, key)
    if key not in CLASS_NAMES:
        raise ValueError(
            f"{name!r} is not a chromosome class; expected 1..22, X, Y (or 23/24, chr1..chrY)"
        )
    return key


def class_index(name: str) -> int:
    """Index (0..23) of a class name in network order."""
    return CLASS_NAMES.index(canonical_class(name))
