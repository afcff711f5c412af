"""Karyogram images in the ISCN layout (OpenCV drawing, no torch).

Rows as on a standard karyogram: ``1 2 3 | 4 5`` (groups A, B); ``6 .. 12 X`` (C);
``13 14 15 | 16 17 18`` (D, E); ``19 20 | 21 22 Y`` (F, G); then a strip for clusters
and unclassified objects. Homologues sit side by side in their class slot; extra copies
share the slot. One scale per cell keeps relative sizes (the tallest crop fills row 1).
Crops are turned so the long axis is vertical; which end is the p arm is not detected.
Doubtful calls get a red frame and a ``?``; clusters an orange frame.

The image size depends only on :class:`KaryogramLayout`, never on the cell.

It is drawn in one channel of palette indices (:func:`render_indexed`): grey levels are
their own index, except the two darkest, which hold the red and orange marks (crop
pixels darker than grey 3 are drawn as 3). The scorer writes that as an 8-bit palette
PNG, which is 3x faster to encode and 2.6x smaller than the same picture in BGR
(docs/SCORING.md); :func:`render` gives the BGR picture.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..ioutil import atomic_write_bytes

#: ISCN rows: each row is a list of groups ``(letter, classes)``.
ROWS: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = (
    (("A", ("1", "2", "3")), ("B", ("4", "5"))),
    (("C", ("6", "7", "8", "9", "10", "11", "12", "X")),),
    (("D", ("13", "14", "15")), ("E", ("16", "17", "18"))),
    (("F", ("19", "20")), ("G", ("21", "22", "Y"))),
)

_RED, _ORANGE = 1, 2  # palette indices of the marks
_FIRST_GREY = 3  # darkest grey level drawn as itself
_TEXT = 40
_RULE = 160
_FONT = cv2.FONT_HERSHEY_SIMPLEX

PALETTE = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
"""``(256, 3)`` uint8 BGR colour of each index of :func:`render_indexed`'s image."""
PALETTE[:_FIRST_GREY] = 0
PALETTE[_RED] = (0, 0, 220)
PALETTE[_ORANGE] = (0, 140, 255)
PALETTE.flags.writeable = False


@dataclass(frozen=True)
class KaryogramLayout:
    """Geometry of the karyogram (pixels).

    Attributes:
        chrom_width: width of one chromosome's box inside a slot.
        copies_per_slot: boxes per class slot (2 homologues + room for one extra).
        slot_gap, group_gap: horizontal gaps between slots and between groups.
        row_heights: crop area height of the four ISCN rows.
        cluster_height: height of the cluster strip.
        margin: border around everything.
        header: height of the title line.
        label_height: room for the class label under each slot and the group letter above.
    """

    chrom_width: int = 40
    copies_per_slot: int = 3
    slot_gap: int = 10
    group_gap: int = 30
    row_heights: tuple[int, int, int, int] = (170, 140, 110, 90)
    cluster_height: int = 120
    margin: int = 20
    header: int = 40
    label_height: int = 22

    @property
    def slot_width(self) -> int:
        return self.chrom_width * self.copies_per_slot

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the image."""
        widths = [self._row_width(row) for row in ROWS]
        width = 2 * self.margin + max(widths)
        height = self.margin * 2 + self.header
        height += sum(h + 2 * self.label_height for h in self.row_heights)
        height += self.cluster_height + 2 * self.label_height
        return width, height

    def _row_width(self, row: tuple[tuple[str, tuple[str, ...]], ...]) -> int:
        n = sum(len(classes) for _, classes in row)
        gaps = (n - len(row)) * self.slot_gap + (len(row) - 1) * self.group_gap
        return n * self.slot_width + gaps

    def slot_boxes(self) -> dict[str, tuple[int, int, int, int]]:
        """``{class: (x, y, w, h)}`` crop area of every class slot (labels excluded)."""
        boxes: dict[str, tuple[int, int, int, int]] = {}
        y = self.margin + self.header
        for row, row_h in zip(ROWS, self.row_heights, strict=False):
            y += self.label_height  # group letters above
            x = self.margin
            for g, (_, classes) in enumerate(row):
                if g:
                    x += self.group_gap - self.slot_gap
                for name in classes:
                    boxes[name] = (x, y, self.slot_width, row_h)
                    x += self.slot_width + self.slot_gap
            y += row_h + self.label_height  # class labels below
        return boxes

    def group_origins(self) -> list[tuple[str, int, int]]:
        """``(letter, x, y)`` of each group letter."""
        boxes = self.slot_boxes()
        return [(letter, boxes[c[0]][0], boxes[c[0]][1] - 6) for row in ROWS for letter, c in row]

    def cluster_box(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the cluster strip's crop area."""
        _, height = self.size
        top = height - self.margin - self.label_height - self.cluster_height
        width, _ = self.size
        return self.margin, top, width - 2 * self.margin, self.cluster_height


@dataclass
class KaryogramItem:
    """One object to place.

    Attributes:
        crop: ``(h, w)`` uint8 dark-on-white crop.
        class_name: where it goes (``"1"``..``"Y"``); None puts it in the cluster strip.
        doubtful: draw the review mark.
        cluster: a cluster of touching chromosomes (drawn in the strip).
        order: sort key inside a slot (e.g. negative confidence); ties keep input order.
    """

    crop: np.ndarray
    class_name: str | None
    doubtful: bool = False
    cluster: bool = False
    order: float = 0.0


@dataclass
class _Placed:
    items: list[KaryogramItem] = field(default_factory=list)


def upright(crop: np.ndarray) -> np.ndarray:
    """Rotate a crop by 90 degrees when it is wider than tall (long axis vertical)."""
    return np.ascontiguousarray(np.rot90(crop)) if crop.shape[1] > crop.shape[0] else crop


def render(
    items: list[KaryogramItem],
    title: str = "",
    layout: KaryogramLayout | None = None,
) -> np.ndarray:
    """Draw a karyogram.

    Args:
        items: the cell's objects.
        title: header text (cell id, karyotype, backend).
        layout: geometry (default :class:`KaryogramLayout`).

    Returns:
        ``(H, W, 3)`` uint8 BGR image of size ``layout.size``.
    """
    indices = render_indexed(items, title, layout)
    image = cv2.cvtColor(indices, cv2.COLOR_GRAY2BGR)
    marks = indices < _FIRST_GREY
    image[marks] = PALETTE[indices[marks]]
    return image


def fit_text(text: str, width: int, scale: float) -> str:
    """``text``, its middle cut to "..." until it is at most ``width`` pixels wide at
    ``scale``: the head (slide / cell) and the tail ([backend precision]) both stay."""

    def fits(t: str) -> bool:
        return cv2.getTextSize(t, _FONT, scale, 1)[0][0] <= width

    if fits(text):
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2 :]
        if fits(f"{head}...{tail}"):
            return f"{head}...{tail}"
    return "..."


def render_indexed(
    items: list[KaryogramItem],
    title: str = "",
    layout: KaryogramLayout | None = None,
) -> np.ndarray:
    """Draw a karyogram as ``(H, W)`` uint8 indices into :data:`PALETTE` (see :func:`render`)."""
    layout = layout or KaryogramLayout()
    width, height = layout.size
    canvas = np.full((height, width), 255, dtype=np.uint8)
    title = fit_text(title, width - 2 * layout.margin, 0.6)
    cv2.putText(
        canvas, title, (layout.margin, layout.margin + 22), _FONT, 0.6, _TEXT, 1, cv2.LINE_AA
    )
    boxes = layout.slot_boxes()
    slots: dict[str, _Placed] = {name: _Placed() for name in boxes}
    strip: list[KaryogramItem] = []
    for item in items:
        if item.class_name in slots and not item.cluster:
            slots[item.class_name].items.append(item)
        else:
            strip.append(item)
    scale = _cell_scale([upright(i.crop) for i in items if i.class_name in slots], layout)
    for letter, x, y in layout.group_origins():
        cv2.putText(canvas, letter, (x, y), _FONT, 0.55, _TEXT, 1, cv2.LINE_AA)
    for name, (x, y, w, h) in boxes.items():
        cv2.line(canvas, (x, y + h + 2), (x + w, y + h + 2), _RULE, 1)
        cv2.putText(
            canvas,
            name,
            (x + w // 2 - 6 * len(name), y + h + 18),
            _FONT,
            0.5,
            _TEXT,
            1,
            cv2.LINE_AA,
        )
        placed = sorted(slots[name].items, key=lambda i: i.order)
        if placed:
            _place_row(canvas, placed, (x, y, w, h), scale, max(len(placed), 2))
    cx, cy, cw, ch = layout.cluster_box()
    label = f"clusters / unclassified: {len(strip)}"
    cv2.putText(canvas, label, (cx, cy - 6), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
    if strip:
        per = max(cw // ch, 1)
        shown = strip[:per]
        _place_row(canvas, shown, (cx, cy, len(shown) * ch, ch), None, len(shown))
        if len(strip) > per:
            cv2.putText(
                canvas,
                f"+{len(strip) - per} more",
                (cx + cw - 90, cy + ch + 16),
                _FONT,
                0.5,
                _TEXT,
                1,
                cv2.LINE_AA,
            )
    return canvas


def _cell_scale(crops: list[np.ndarray], layout: KaryogramLayout) -> float:
    """One scale for the cell: the tallest crop fills 95% of row 1, clamped to 0.1..4."""
    if not crops:
        return 1.0
    tallest = max(c.shape[0] for c in crops)
    return float(np.clip(0.95 * layout.row_heights[0] / max(tallest, 1), 0.1, 4.0))


def _place_row(
    canvas: np.ndarray,
    items: list[KaryogramItem],
    box: tuple[int, int, int, int],
    scale: float | None,
    n_boxes: int,
) -> None:
    x, y, w, h = box
    sub_w = w // n_boxes
    for k, item in enumerate(items):
        crop = upright(item.crop) if scale is not None else item.crop
        s = scale if scale is not None else 1.0
        # Shrink further when the crop does not fit its sub-box (never enlarge here).
        s = min(s, (h - 4) / max(crop.shape[0], 1), (sub_w - 4) / max(crop.shape[1], 1))
        ch = max(int(round(crop.shape[0] * s)), 1)
        cw = max(int(round(crop.shape[1] * s)), 1)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        small = cv2.resize(crop, (cw, ch), interpolation=interp)
        left = x + k * sub_w + (sub_w - cw) // 2
        top = y + h - ch  # chromosomes stand on the slot's base line
        region = canvas[top : top + ch, left : left + cw]
        # Grey levels below _FIRST_GREY are the marks' palette indices: draw them as 3.
        np.minimum(region, np.maximum(small, _FIRST_GREY), out=region)
        if item.cluster or item.class_name is None:
            cv2.rectangle(canvas, (left - 2, top - 2), (left + cw + 1, top + ch + 1), _ORANGE, 1)
        elif item.doubtful:
            cv2.rectangle(canvas, (left - 2, top - 2), (left + cw + 1, top + ch + 1), _RED, 1)
            _mark_text(canvas, "?", (left + cw - 2, max(top - 2, y + 12)), _RED)


def _mark_text(canvas: np.ndarray, text: str, origin: tuple[int, int], index: int) -> None:
    """Text in one palette index, without blended edges.

    OpenCV 5 blends glyph edges even with ``LINE_8``; blended values would be the indices
    of unrelated greys (or the other mark). The glyph is drawn on a scratch mask and
    thresholded instead.
    """
    (w, h), base = cv2.getTextSize(text, _FONT, 0.6, 2)
    x, y = origin
    pad = 4
    mask = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(mask, text, (pad, pad + h), _FONT, 0.6, 255, 2, cv2.LINE_8)
    # The mask's top-left sits at (x - pad, y - h - pad) on the canvas; clip to it.
    top, left = y - h - pad, x - pad
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + mask.shape[0], canvas.shape[0])
    x1 = min(left + mask.shape[1], canvas.shape[1])
    if y1 > y0 and x1 > x0:
        on = mask[y0 - top : y1 - top, x0 - left : x1 - left] >= 128
        canvas[y0:y1, x0:x1][on] = index


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an image (deterministic for the same pixels)."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode the karyogram as PNG")
    return buf.tobytes()


def encode_indexed_png(indices: np.ndarray, palette: np.ndarray = PALETTE) -> bytes:
    """8-bit palette PNG of an ``(H, W)`` uint8 index image (deterministic).

    OpenCV cannot write palette PNGs, but an 8-bit grey PNG has exactly the image data
    of an 8-bit palette PNG (one byte per pixel, same filters): the grey PNG's header
    is changed to colour type 3 and a PLTE chunk (``palette``, BGR, stored as RGB) is
    added before the image data.
    """
    if indices.ndim != 2 or indices.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W) uint8 index image, got {indices.dtype} {indices.shape}"
        )
    palette = np.asarray(palette, np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 0 < len(palette) <= 256:
        raise ValueError(f"expected a (N <= 256, 3) palette, got {palette.shape}")
    if indices.size and int(indices.max()) >= len(palette):
        raise ValueError(f"index {int(indices.max())} is outside the {len(palette)}-colour palette")
    return grey_png_to_palette(encode_png(indices), palette)


def grey_png_to_palette(png: bytes, palette: np.ndarray = PALETTE) -> bytes:
    """Turn an 8-bit grey PNG into a palette PNG with the same image data.

    Ancillary chunks (lower-case first letter: sBIT, bKGD, tRNS, gAMA, text...) are
    dropped: some describe a grey image and would be wrong, or misplaced, for a palette
    one, and none is needed. Another critical chunk than IHDR/IDAT/IEND is refused.
    """
    chunks = [(kind, data) for kind, data in _chunks(png) if kind[:1].isupper()]
    kinds = [kind for kind, _ in chunks]
    ihdr = bytearray(chunks[0][1]) if chunks else bytearray()
    if kinds[:1] != [b"IHDR"] or set(kinds[1:]) != {b"IDAT", b"IEND"} or ihdr[8:10] != b"\x08\x00":
        raise ValueError(f"unexpected PNG from the encoder: chunks {kinds}, want 8-bit grey")
    ihdr[9] = 3  # colour type: palette
    plte = np.ascontiguousarray(np.asarray(palette, np.uint8)[:, ::-1]).tobytes()  # BGR -> RGB
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", bytes(ihdr)), _chunk(b"PLTE", plte)]
    out += [_chunk(kind, data) for kind, data in chunks[1:]]
    return b"".join(out)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """``[(type, data), ...]`` of a PNG file (CRCs are recomputed on writing)."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        kind = png[pos + 4 : pos + 8]
        chunks.append((kind, png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_karyogram(path: str | Path, indices: np.ndarray) -> Path:
    """Write a :func:`render_indexed` image atomically, as the scorer does (palette PNG)."""
    return atomic_write_bytes(path, encode_indexed_png(indices))
