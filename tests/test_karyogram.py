"""Karyogram PNG: fixed size, ISCN slot order, homologues side by side, marks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_iapp.classes import CLASS_NAMES
from edge_iapp.scoring.karyogram import (
    PALETTE,
    ROWS,
    KaryogramItem,
    KaryogramLayout,
    encode_indexed_png,
    grey_png_to_palette,
    render,
    render_indexed,
    upright,
    write_karyogram,
)


def _items(make_crop, doubtful: str = "7") -> list[KaryogramItem]:
    items = []
    for k, name in enumerate(CLASS_NAMES[:23]):  # a 46,XX cell
        for copy in range(2):
            h = 110 - 3 * k
            items.append(
                KaryogramItem(
                    make_crop(h, 22, 10 * k + copy), name, doubtful=(name == doubtful and copy == 1)
                )
            )
    items.append(KaryogramItem(make_crop(50, 60, 7), None, cluster=True))
    return items


def _dark(image: np.ndarray, box: tuple[int, int, int, int]) -> int:
    x, y, w, h = box
    region = image[y : y + h, x : x + w]
    grey = region.min(axis=2)
    return int((grey < 150).sum())


def test_png_written_with_layout_size(tmp_path, make_crop):
    layout = KaryogramLayout()
    image = render(_items(make_crop), title="cell 1  46,XX", layout=layout)
    indices = render_indexed(_items(make_crop), title="cell 1  46,XX", layout=layout)
    path = write_karyogram(tmp_path / "karyogram.png", indices)
    back = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert back is not None
    assert (back.shape[1], back.shape[0]) == layout.size
    assert np.array_equal(back, image)
    # The size depends on the layout only.
    assert render([], layout=layout).shape == image.shape
    other = KaryogramLayout(chrom_width=30)
    assert render(_items(make_crop), layout=other).shape[:2] == other.size[::-1]


def test_slots_follow_iscn_rows_and_hold_the_right_crops(make_crop):
    layout = KaryogramLayout()
    boxes = layout.slot_boxes()
    assert set(boxes) == set(CLASS_NAMES)
    # Row order: 1-5, 6-12+X, 13-18, 19-22+Y; left to right inside a row.
    for row in ROWS:
        names = [c for _, classes in row for c in classes]
        xs = [boxes[c][0] for c in names]
        ys = {boxes[c][1] for c in names}
        assert xs == sorted(xs) and len(ys) == 1
    assert boxes["1"][1] < boxes["6"][1] < boxes["13"][1] < boxes["19"][1]
    image = render(_items(make_crop), layout=layout)
    for name in CLASS_NAMES[:23]:
        x, y, w, h = boxes[name]
        left, right = _dark(image, (x, y, w // 2, h)), _dark(image, (x + w // 2, y, w // 2, h))
        assert left > 50 and right > 50, name  # two homologues side by side
    assert _dark(image, boxes["Y"]) == 0  # female cell: empty Y slot
    assert _dark(image, layout.cluster_box()) > 50


def test_doubtful_calls_are_marked_red(make_crop):
    boxes = KaryogramLayout().slot_boxes()

    def red(image, name):
        x, y, w, h = boxes[name]
        r = image[y - 20 : y + h, x : x + w].astype(int)
        return int(((r[:, :, 2] > 180) & (r[:, :, 1] < 80) & (r[:, :, 0] < 80)).sum())

    marked = render(_items(make_crop, doubtful="7"))
    assert red(marked, "7") > 20
    assert red(marked, "8") == 0
    plain = render(_items(make_crop, doubtful="none"))
    assert red(plain, "7") == 0


def test_upright_turns_wide_crops():
    wide = np.zeros((10, 30), np.uint8)
    assert upright(wide).shape == (30, 10)
    tall = np.zeros((30, 10), np.uint8)
    assert upright(tall) is tall


def test_palette_png_decodes_to_the_bgr_karyogram(make_crop, tmp_path):
    """The scorer's palette PNG shows exactly ``render``'s picture, marks included."""
    from PIL import Image

    items = _items(make_crop)
    items[0] = KaryogramItem(np.zeros((90, 20), np.uint8), "1")  # black: not a mark colour
    indices = render_indexed(items, title="cell 1  46,XX")
    png = encode_indexed_png(indices)
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    image = render(items, title="cell 1  46,XX")
    assert np.array_equal(back, image)
    assert {1, 2} <= set(np.unique(indices).tolist())  # red and orange marks present
    # The doubtful "7" gets red only: no orange speck from blended glyph edges.
    x, y, w, h = KaryogramLayout().slot_boxes()["7"]
    mark = indices[y - 20 : y + h, x : x + w]
    assert (mark == 1).sum() > 20 and not (mark == 2).any()
    x, y, w, h = KaryogramLayout().slot_boxes()["1"]
    slot = back[y : y + h, x : x + w].astype(int)
    assert not ((slot[:, :, 2] > 180) & (slot[:, :, 1] < 80)).any()  # black crop stays grey
    path = tmp_path / "k.png"
    path.write_bytes(png)
    with Image.open(path) as im:  # a real palette PNG for other readers too
        assert im.mode == "P" and im.size == KaryogramLayout().size
    assert encode_indexed_png(indices) == png  # deterministic
    assert len(png) < 0.6 * len(cv2.imencode(".png", image)[1])
    assert PALETTE.shape == (256, 3)


def test_grey_png_ancillary_chunks_are_dropped_and_odd_pngs_refused():
    """Another OpenCV build may add chunks (sBIT, gAMA, text): they must not reach the
    palette PNG; a PNG that is not 8-bit grey is refused with a message."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    indices = np.arange(48, dtype=np.uint8).reshape(6, 8)
    grey = cv2.imencode(".png", indices)[1].tobytes()
    extra = chunk(b"sBIT", b"\x08") + chunk(b"tEXt", b"Software\x00test")
    padded = grey[:33] + extra + grey[33:]  # after IHDR, as encoders put them
    png = grey_png_to_palette(padded)
    assert b"sBIT" not in png and b"tEXt" not in png and png == encode_indexed_png(indices)
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(back, PALETTE[indices])  # 1 and 2 are the mark colours
    colour = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    with pytest.raises(ValueError, match="want 8-bit grey"):
        grey_png_to_palette(colour)
    with pytest.raises(ValueError, match="index 200 is outside"):
        encode_indexed_png(np.full((2, 2), 200, np.uint8), PALETTE[:100])


def test_a_long_title_keeps_its_cell_and_backend():
    """A karyotype with many changes used to be cut at 120 characters and still ran past
    the image edge, losing the [backend precision] at its end."""
    import cv2

    from edge_iapp.scoring.karyogram import KaryogramLayout, fit_text

    layout = KaryogramLayout()
    width = layout.size[0] - 2 * layout.margin
    iscn = "46,?," + ",".join(f"+{c},-{c + 1}" for c in range(1, 22))
    title = f"slide_001 / cell_07   {iscn}   [openvino int8]"
    fitted = fit_text(title, width, 0.6)
    assert cv2.getTextSize(fitted, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)[0][0] <= width
    assert fitted.startswith("slide_001 / cell_07") and fitted.endswith("[openvino int8]")
    assert "..." in fitted and len(fitted) < len(title)
    assert fit_text("slide / cell   46,XY   [onnxruntime fp32]", width, 0.6).count("...") == 0
