"""Which pool images are held-out images: links, copies, and the same pixels re-encoded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_iapp.data.dataset import Sample
from edge_iapp.data.held_out import SAME_PIXELS_LEVELS, held_out_images, same_pixels
from edge_iapp.data.synth import synth_cell


def _sample(path: Path) -> Sample:
    return Sample(path, 0, "1", "s", path.name)


def _found(pool: list[Path], held_out: list[Path]) -> dict[str, str]:
    """Pool file name -> how it was found."""
    matches = held_out_images([_sample(p) for p in pool], [_sample(p) for p in held_out])
    return {Path(m.path).name: m.how for m in matches}


def test_links_and_byte_copies_are_found(tmp_path) -> None:
    a, b, c = (tmp_path / f"{n}.png" for n in "abc")
    a.write_bytes(b"held-out image")
    b.write_bytes(b"another image!")  # same size as a, other bytes
    c.write_bytes(b"a third one")
    (tmp_path / "link.png").symlink_to(a)
    (tmp_path / "copy.png").write_bytes(a.read_bytes())
    pool = [tmp_path / n for n in ("b.png", "c.png", "link.png", "copy.png")]
    assert _found(pool, [a]) == {"link.png": "same file", "copy.png": "same bytes"}
    assert _found(pool, []) == {}


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Two chromosomes of one synthetic cell, padded to one size."""
    cell = synth_cell(np.random.default_rng(3), classes=["1", "1", "2"])
    images = [image for _, image in cell]
    h = max(i.shape[0] for i in images) + 4
    w = max(i.shape[1] for i in images) + 4
    padded = []
    for image in images:
        canvas = np.full((h, w), 255, np.uint8)
        canvas[2 : 2 + image.shape[0], 2 : 2 + image.shape[1]] = image
        padded.append(canvas)
    return padded


def test_the_same_crop_saved_again_is_found_by_its_pixels(tmp_path, crops) -> None:
    held = tmp_path / "held.png"
    cv2.imwrite(str(held), crops[0])
    pool = {
        "q30.jpg": (crops[0], [cv2.IMWRITE_JPEG_QUALITY, 30]),
        "q90.jpg": (crops[0], [cv2.IMWRITE_JPEG_QUALITY, 90]),
        "saved.tif": (crops[0], []),
        "saved.bmp": (crops[0], []),
        "inverted.png": (255 - crops[0], []),  # white on dark: read_image turns it back
        "16bit.tif": (crops[0].astype(np.uint16) * 257, []),
        "other_1.png": (crops[1], []),  # the cell's other chromosome 1, same size
        "chromosome_2.jpg": (crops[2], [cv2.IMWRITE_JPEG_QUALITY, 30]),
        "blank.png": (np.full_like(crops[0], 255), []),
        "smaller.png": (crops[0][1:, 1:], []),  # re-cropped: not looked for
    }
    for name, (pixels, params) in pool.items():
        assert cv2.imwrite(str(tmp_path / name), pixels, params)
    found = _found([tmp_path / n for n in pool], [held])
    copies = ("q30.jpg", "q90.jpg", "saved.tif", "saved.bmp", "inverted.png", "16bit.tif")
    assert found == dict.fromkeys(copies, "same pixels")


def test_same_pixels_has_a_margin_on_both_sides(crops) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(-6, 7, crops[0].shape)  # more than a re-encoding, blurred away
    noisy = np.clip(crops[0].astype(int) + noise, 0, 255).astype(np.uint8)
    assert same_pixels(crops[0], noisy)
    darker = np.clip(crops[0].astype(int) - 2 * int(SAME_PIXELS_LEVELS), 0, 255).astype(np.uint8)
    assert not same_pixels(crops[0], darker)  # one image, but stained or scanned again
    assert not same_pixels(crops[0], crops[1]) and not same_pixels(crops[0], crops[0][1:])
    blank = np.full_like(crops[0], 255)
    assert not same_pixels(blank, blank)
