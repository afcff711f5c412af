"""Which images of a pool are images of a split's held-out (val/test) parts.

Training on a held-out image, even without its label (pseudo-labels, unlabelled slides),
inflates the scores measured on it. A lab's slides can hold the held-out images as the
same file, a link, a byte-identical copy, or the same crop saved again by the capture
software in another format or at another JPEG quality. All four are found here:

1. the same file (links resolved);
2. the same bytes (hashed only where the file sizes agree);
3. the same pixels: decoded as :func:`~edge_iapp.data.imread.read_image` decodes them
   (grey, dark-on-white), of the same width and height, and within
   :data:`SAME_PIXELS_LEVELS` grey levels of each other on the chromosome.

Step 3 compares the images after a 5 x 5 Gaussian blur, over the pixels darker than
:data:`FOREGROUND_BELOW` in either image: the blur removes most of a lossy re-encoding's
noise and the mask keeps the white background from diluting the difference. Measured on
the two real sets (``scripts/held_out_check.py``, docs/RESULTS.md round 10), a JPEG
re-encoding differs by at most 2.0 levels at quality 30 (1.3 at 50); two different
crops of one size by at least 3.7 (two pale chromosome 19s on bioimlab's 200 x 100
canvases; 15.3 on gband612). Resized, rotated or re-cropped copies are not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAME_PIXELS_LEVELS = 2.5
"""Mean absolute difference (grey levels, after the blur, on the chromosome) up to which
two decoded images of the same size are the same image."""
FOREGROUND_BELOW = 200
"""Grey level under which a pixel of a dark-on-white image counts as chromosome."""


@dataclass(frozen=True)
class HeldOutMatch:
    """A pool image that is a held-out image.

    Attributes:
        path: the pool image.
        held_out: the held-out image it is.
        how: ``"same file"``, ``"same bytes"`` or ``"same pixels"`` (another encoding).
    """

    path: str
    held_out: str
    how: str

    def __str__(self) -> str:
        return f"{self.path} ({self.how} as {self.held_out})"


def held_out_images(samples: Sequence, held_out: Sequence) -> list[HeldOutMatch]:
    """The images of ``samples`` that are images of ``held_out``, in ``samples``' order.

    Args:
        samples, held_out: objects with a ``path`` attribute (e.g.
            :class:`~edge_iapp.data.dataset.Sample`).

    Returns:
        One :class:`HeldOutMatch` per pool image found; unreadable files are skipped
        (they are reported where they are read).
    """
    index = _HeldOutIndex([Path(s.path) for s in held_out])
    found = []
    for s in samples:
        match = index.find(Path(s.path))
        if match is not None:
            found.append(match)
    return found


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(H, W)`` uint8 dark-on-white images are one image saved twice.

    False for images of different shapes, and for images with no chromosome pixel
    (blank crops are not evidence of a copy).
    """
    return _same(_Decoded.of(a), _Decoded.of(b))


def pixel_difference(a: np.ndarray, b: np.ndarray) -> float | None:
    """The difference :func:`same_pixels` compares with :data:`SAME_PIXELS_LEVELS`: mean
    absolute difference in grey levels after the blur, over the chromosome pixels of
    either image. None for images of different shapes or with no chromosome pixel."""
    return _difference(_Decoded.of(a), _Decoded.of(b))


@dataclass(frozen=True)
class _Decoded:
    """An image's chromosome pixels and its blurred grey levels (blurred once, compared
    with every held-out image of its size)."""

    foreground: np.ndarray  # (H, W) bool
    blurred: np.ndarray  # (H, W) int16

    @classmethod
    def of(cls, pixels: np.ndarray) -> _Decoded:
        import cv2

        blurred = cv2.GaussianBlur(pixels, (5, 5), 0).astype(np.int16)
        return cls(pixels < FOREGROUND_BELOW, blurred)


def _difference(a: _Decoded, b: _Decoded) -> float | None:
    if a.blurred.shape != b.blurred.shape:
        return None
    mask = a.foreground | b.foreground
    if not mask.any():
        return None
    return float(np.abs(a.blurred - b.blurred)[mask].mean())


def _same(a: _Decoded, b: _Decoded) -> bool:
    difference = _difference(a, b)
    return difference is not None and difference <= SAME_PIXELS_LEVELS


class _HeldOutIndex:
    """The held-out files by path, by size in bytes and by size in pixels; their hashes
    and pixels are read the first time a pool file could match them."""

    def __init__(self, paths: list[Path]) -> None:
        self.by_resolved = {p.resolve(): p for p in paths}
        self.by_bytes: dict[int, list[Path]] = {}
        self.by_shape: dict[tuple[int, int], list[Path]] = {}
        for p in paths:
            n = _file_size(p)
            if n is not None:
                self.by_bytes.setdefault(n, []).append(p)
            shape = _pixel_size(p)
            if shape is not None:
                self.by_shape.setdefault(shape, []).append(p)
        self._digests: dict[int, dict[str, Path]] = {}
        self._pixels: dict[tuple[int, int], list[tuple[Path, _Decoded]]] = {}

    def find(self, path: Path) -> HeldOutMatch | None:
        same = self.by_resolved.get(path.resolve())
        if same is not None:
            return HeldOutMatch(str(path), str(same), "same file")
        n = _file_size(path)
        if n in self.by_bytes:
            same = self._hashes(n).get(_digest(path) or "")
            if same is not None:
                return HeldOutMatch(str(path), str(same), "same bytes")
        shape = _pixel_size(path)
        if shape in self.by_shape:
            decoded = _decode(path)
            if decoded is not None:
                for other, other_decoded in self._decoded(shape):
                    if _same(decoded, other_decoded):
                        return HeldOutMatch(str(path), str(other), "same pixels")
        return None

    def _hashes(self, n: int) -> dict[str, Path]:
        if n not in self._digests:
            digests = ((_digest(p), p) for p in self.by_bytes[n])
            self._digests[n] = {d: p for d, p in digests if d is not None}
        return self._digests[n]

    def _decoded(self, shape: tuple[int, int]) -> list[tuple[Path, _Decoded]]:
        if shape not in self._pixels:
            decoded = ((p, _decode(p)) for p in self.by_shape[shape])
            self._pixels[shape] = [(p, a) for p, a in decoded if a is not None]
        return self._pixels[shape]


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _digest(path: Path) -> str | None:
    from ..ioutil import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return None


def _pixel_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header; None when the header does not say."""
    from .imread import ImageReadError, read_header

    try:
        header = read_header(path)
    except ImageReadError:
        return None
    if header.width is None or header.height is None:
        return None
    return header.width, header.height


def _decode(path: Path) -> _Decoded | None:
    from .imread import ImageReadError, read_image

    try:
        return _Decoded.of(read_image(path).pixels)
    except ImageReadError:
        return None
