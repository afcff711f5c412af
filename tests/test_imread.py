"""Image reading: every format, bit depth and channel layout; malformed TIFFs; bad input."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from edge_iapp.data.imread import ImageReadError, from_array, read_header, read_image
from edge_iapp.preprocess import normalize_polarity, to_grey_u8

PIL = pytest.importorskip("PIL.Image")


def expected_grey(rgb_or_grey: np.ndarray) -> np.ndarray:
    """What read_image must return for pixels given in RGB(A)/grey order."""
    return normalize_polarity(to_grey_u8(rgb_or_grey))[0]


def colour_crop(crop: np.ndarray) -> np.ndarray:
    """An RGB image whose channels differ, so a BGR/RGB mix-up changes the grey."""
    return np.stack([crop, (crop // 2 + 100), 255 - (255 - crop) // 3], axis=2).astype(np.uint8)


def write_cv2(path: Path, rgb_or_grey: np.ndarray) -> None:
    a = rgb_or_grey
    if a.ndim == 3 and a.shape[2] == 3:
        a = a[:, :, ::-1]
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, [2, 1, 0, 3]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(a))


def write_pil(path: Path, a: np.ndarray) -> None:
    extra = {"quality": 95} if path.suffix == ".jpg" else {}
    PIL.fromarray(a).save(path, **extra)


def write_tifffile(path: Path, a: np.ndarray) -> None:
    tifffile.imwrite(path, a, photometric="rgb" if a.ndim == 3 else "minisblack")


def variants(crop: np.ndarray) -> dict[str, np.ndarray]:
    rgb = colour_crop(crop)
    alpha = np.full(crop.shape, 255, np.uint8)
    alpha[:5] = 0  # transparent rows composite to white
    return {
        "grey8": crop,
        "grey16": crop.astype(np.uint16) * 257,  # values above 4095: the 16-bit path
        "rgb": rgb,
        "rgba": np.dstack([rgb, alpha]),
    }


LOSSLESS = [
    ("png", write_cv2, ["grey8", "grey16", "rgb", "rgba"]),
    ("png", write_pil, ["grey8", "rgb", "rgba"]),
    ("bmp", write_cv2, ["grey8", "rgb"]),
    ("bmp", write_pil, ["grey8", "rgb"]),
    ("tif", write_cv2, ["grey8", "grey16", "rgb", "rgba"]),  # OpenCV writes LZW TIFF
    ("tiff", write_tifffile, ["grey8", "grey16", "rgb", "rgba"]),
    ("tif", write_pil, ["grey8", "rgb", "rgba"]),
]


@pytest.mark.parametrize(
    ("suffix", "writer", "kind"),
    [(s, w, k) for s, w, kinds in LOSSLESS for k in kinds],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_lossless_formats_read_exactly(tmp_path, crop, suffix, writer, kind):
    pixels = variants(crop)[kind]
    path = tmp_path / f"img.{suffix}"
    writer(path, pixels)
    image = read_image(path)
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == crop.shape
    np.testing.assert_array_equal(image.pixels, expected_grey(pixels))
    assert image.source == str(path)
    assert image.source_dtype == str(pixels.dtype)
    assert image.polarity.inverted is False


@pytest.mark.parametrize("kind", ["grey8", "rgb"])
@pytest.mark.parametrize("writer", [write_cv2, write_pil])
def test_jpeg_reads_close(tmp_path, crop, kind, writer):
    pixels = variants(crop)[kind]
    path = tmp_path / "img.jpg"
    writer(path, pixels)
    image = read_image(path)
    diff = np.abs(image.pixels.astype(int) - expected_grey(pixels).astype(int))
    assert image.pixels.shape == crop.shape
    assert diff.mean() < 3  # lossy, but the same picture
    if kind == "rgb":  # and the right channel order: swapped channels are much further off
        swapped = expected_grey(pixels[:, :, ::-1]).astype(int)
        assert np.abs(image.pixels.astype(int) - swapped).mean() > 2 * diff.mean() + 3


def test_rgb_channel_order_matters(tmp_path, crop):
    """A BGR/RGB mix-up would change the grey levels: the check above can fail."""
    rgb = colour_crop(crop)
    assert not np.array_equal(to_grey_u8(rgb), to_grey_u8(rgb[:, :, ::-1]))


def test_qband_polarity_is_inverted(tmp_path, crop):
    path = tmp_path / "q.bmp"
    write_cv2(path, 255 - crop)  # bright chromosome on black, as BioImLab
    image = read_image(path)
    assert image.polarity.inverted is True
    np.testing.assert_array_equal(image.pixels, crop)
    assert image.polarity.background >= 240


# --- malformed TIFFs -------------------------------------------------------------------


def patch_tiff_tag(path: Path, code: int, new_type: int) -> None:
    """Change the declared type of one tag of a little-endian classic TIFF in place."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        off = ifd + 2 + 12 * k
        tag, _typ = struct.unpack_from("<HH", data, off)
        if tag == code:
            struct.pack_into("<H", data, off + 2, new_type)
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"tag {code} not found")


def pillow_fails(path: Path) -> bool:
    try:
        with PIL.open(path) as im:
            im.load()
    except Exception:
        return True
    return False


@pytest.mark.parametrize(
    ("tag", "new_type", "why"),
    [
        (256, 1, "ImageWidth typed BYTE: Pillow and tifffile fail, OpenCV reads it"),
        (262, 7, "Photometric typed UNDEFINED: Pillow and OpenCV fail, tifffile reads it"),
    ],
)
def test_malformed_tiff_that_pillow_rejects(tmp_path, crop, tag, new_type, why):
    path = tmp_path / "bad_tag.tiff"
    tifffile.imwrite(path, crop, photometric="minisblack")
    patch_tiff_tag(path, tag, new_type)
    assert pillow_fails(path), f"Pillow read the patched file; the test needs one it rejects: {why}"
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, crop)


# --- bad input ---------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (valid CRC; pixel data absent)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + iend)


def bmp_header_only(path: Path, width: int, height: int) -> None:
    row = (width + 3) // 4 * 4
    size = 54 + 1024 + row * height
    head = b"BM" + struct.pack("<IHHI", size, 0, 0, 54 + 1024)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, row * height, 0, 0, 256, 0)
    path.write_bytes(head + dib + bytes(1024))


def tiff_claiming(path: Path, crop: np.ndarray, width: int, height: int) -> None:
    tifffile.imwrite(path, crop, photometric="minisblack")
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        off = ifd + 2 + 12 * k
        tag, _typ = struct.unpack_from("<HH", data, off)
        if tag in (256, 257):
            struct.pack_into("<HHII", data, off, tag, 4, 1, width if tag == 256 else height)
    path.write_bytes(bytes(data))


def tiff_ifd_at_end(path: Path, pixels: np.ndarray, claim: tuple[int, int] | None = None) -> None:
    """An uncompressed 8-bit grey TIFF whose IFD follows the pixel data (as many writers do)."""
    h, w = pixels.shape
    width, height = claim or (w, h)
    ifd_at = 8 + pixels.size
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, h),
        (279, 4, pixels.size),
    ]
    ifd = struct.pack("<H", len(entries))
    for code, typ, value in entries:
        ifd += struct.pack("<HHII", code, typ, 1, value)
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + pixels.tobytes() + ifd)


def test_tiff_with_ifd_after_64k_of_pixels(tmp_path, make_crop):
    pixels = make_crop(300, 260)  # 78,000 bytes of pixels before the IFD
    path = tmp_path / "late_ifd.tif"
    tiff_ifd_at_end(path, pixels)
    assert (read_header(path).width, read_header(path).height) == (260, 300)
    np.testing.assert_array_equal(read_image(path).pixels, pixels)
    tiff_ifd_at_end(path, pixels, claim=(20000, 20000))
    with pytest.raises(ImageReadError, match="20000 x 20000 px, larger than max_side"):
        read_image(path)


@pytest.mark.parametrize("maker", ["png", "bmp", "tiff"])
def test_huge_image_refused_before_decoding(tmp_path, crop, maker):
    path = tmp_path / f"huge.{maker}"
    if maker == "png":
        png_header_only(path, 20000, 20000)
    elif maker == "bmp":
        bmp_header_only(path, 20000, 20000)
    else:
        tiff_claiming(path, crop, 20000, 20000)
    assert path.stat().st_size < 100_000  # nothing was decoded or allocated at that size
    with pytest.raises(ImageReadError, match=r"20000 x 20000 px, larger than max_side=8192"):
        read_image(path)
    with pytest.raises(ImageReadError, match="larger than max_side"):
        read_header(path, max_side=8192)
    assert read_header(path).width == 20000  # the header alone is fine without a limit


def test_huge_array_refused_without_copy():
    huge = np.broadcast_to(np.uint8(255), (20000, 20000))  # no memory behind it
    with pytest.raises(ImageReadError, match="larger than max_side"):
        from_array(huge, source="camera")


def test_zero_size_header(tmp_path):
    path = tmp_path / "zero.png"
    png_header_only(path, 0, 10)
    with pytest.raises(ImageReadError, match="zero size"):
        read_image(path)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "empty.png", "empty"),
        (b"hello, not an image\n", "text.png", "not a supported image"),
        (b"\x00" * 100, "zeros.tif", "not a supported image"),
    ],
)
def test_not_images(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("suffix", ["png", "jpg", "bmp", "tif"])
def test_truncated_files(tmp_path, make_crop, suffix):
    path = tmp_path / f"cut.{suffix}"
    write_cv2(path, make_crop(200, 120))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("pixels", "flags", "inverted"),
    [
        (np.full((1, 1), 128, np.uint8), ("tiny", "blank"), False),
        (np.full((40, 30), 255, np.uint8), ("blank",), False),
        (np.zeros((40, 30), np.uint8), ("blank",), True),
        (np.full((1, 300), 17, np.uint8), ("blank",), True),
    ],
    ids=["1-pixel", "all-white", "all-black", "1-row"],
)
def test_degenerate_images_are_flagged(tmp_path, pixels, flags, inverted):
    path = tmp_path / "deg.png"
    write_cv2(path, pixels)
    image = read_image(path)
    assert image.flags == flags
    assert image.polarity.inverted is inverted
    assert image.pixels.shape == pixels.shape and image.pixels.dtype == np.uint8


def test_from_array_conversions(crop):
    rgb = colour_crop(crop)
    np.testing.assert_array_equal(from_array(rgb).pixels, expected_grey(rgb))
    np.testing.assert_array_equal(from_array(rgb[:, :, ::-1], bgr=True).pixels, expected_grey(rgb))
    grey_alpha = np.dstack([crop, np.full(crop.shape, 255, np.uint8)])
    np.testing.assert_array_equal(from_array(grey_alpha).pixels, crop)
    floats = crop.astype(np.float32) / 255
    assert np.abs(from_array(floats).pixels.astype(int) - crop).max() <= 1
    image = from_array(crop.astype(np.uint16) * 16, source="cam0")  # 12-bit camera
    assert image.source == "cam0" and image.source_dtype == "uint16"
    assert np.abs(image.pixels.astype(int) - crop).max() <= 1


@pytest.mark.parametrize(
    "array",
    [
        np.full((4, 4), np.nan, np.float32),
        np.zeros((4, 4), np.int32),
        np.zeros((0, 5), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros(7, np.uint8),
    ],
    ids=["nan", "int32", "empty", "5-channels", "1-d"],
)
def test_from_array_rejects(array):
    with pytest.raises(ImageReadError, match="^cam: "):
        from_array(array, source="cam")


def test_reading_does_not_import_torch():
    code = (
        "import sys, edge_iapp.data, edge_iapp.data.imread, edge_iapp.preview; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
