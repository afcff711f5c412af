"""Read one chromosome image (file or camera array) as dark-on-white 8-bit grey.

Supported: TIFF, BMP, PNG, JPEG; 8- and 16-bit; grey, grey+alpha, RGB, RGBA. TIFFs
with tags that Pillow rejects are read by OpenCV or tifffile: the decoders are tried
in the order OpenCV (``IMREAD_UNCHANGED``), tifffile (TIFF only), Pillow (when
installed), and the first that gives pixels wins.

The image size is read from the file header *before* decoding, so a 20000 x 20000
file is refused with a clear error instead of filling memory. Every failure is an
:class:`ImageReadError` whose message names the file and says what is wrong.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_iapp.preprocess import Polarity, UnsupportedImageError, normalize_polarity, to_grey_u8

IMAGE_SUFFIXES: frozenset[str] = frozenset({".tif", ".tiff", ".bmp", ".png", ".jpg", ".jpeg"})
"""File suffixes (lower case) treated as images by the folder scan."""

DEFAULT_MAX_SIDE = 8192
TINY_SIDE = 16
"""Images whose longest side is below this many pixels are flagged ``tiny``."""
BLANK_RANGE = 8
"""Images whose grey levels span at most this many levels are flagged ``blank``."""


class ImageReadError(Exception):
    """A file or array cannot be read as a chromosome image.

    Attributes:
        source: the file path (or array name) that failed.
        reason: what is wrong, in words.
    """

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class ImageHeader:
    """What the first bytes of a file say.

    Attributes:
        format: ``"tiff"``, ``"bmp"``, ``"png"`` or ``"jpeg"``.
        width, height: pixels; None when the header could not be parsed far enough
            (some malformed TIFFs), in which case the decoders decide.
    """

    format: str
    width: int | None
    height: int | None


@dataclass
class ChromosomeImage:
    """One chromosome image, ready for :mod:`edge_iapp.preprocess`.

    Attributes:
        pixels: ``(H, W)`` uint8, dark chromosome on a light background.
        polarity: whether the source was inverted, and its background level.
        source: file path or array name.
        source_dtype: dtype of the decoded pixels (``"uint8"``, ``"uint16"``, ...).
        source_shape: shape of the decoded pixels, e.g. ``(61, 21)`` or ``(61, 21, 4)``.
        flags: quality warnings, a subset of ``("tiny", "blank")``: ``tiny`` = longest
            side below :data:`TINY_SIDE`; ``blank`` = grey levels span at most
            :data:`BLANK_RANGE` levels (all white, all black, or empty crop). Flagged
            images still go through the preprocessing (its empty-mask fall-backs).
        cell: ID of the metaphase (cell) the chromosome belongs to, or None. In the
            cell-relative size mode (``PreprocessConfig.size_mode == "cell"``) the images
            of one cell, classified in one call, are scaled by their cell's median
            chromosome length; an image without a cell uses the documented fall-back.
    """

    pixels: np.ndarray
    polarity: Polarity
    source: str
    source_dtype: str
    source_shape: tuple[int, ...]
    flags: tuple[str, ...] = ()
    cell: str | None = None


def from_array(
    array: np.ndarray,
    source: str = "array",
    *,
    bgr: bool = False,
    max_side: int = DEFAULT_MAX_SIDE,
    cell: str | None = None,
) -> ChromosomeImage:
    """Turn pixels (a camera frame, a decoded file) into a :class:`ChromosomeImage`.

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)`` (grey + alpha), ``(H, W, 3)`` or
            ``(H, W, 4)``; bool, uint8, uint16 or float (see ``to_grey_u8``).
        source: name used in messages and kept in the result.
        bgr: the colour channels are in OpenCV's BGR(A) order.
        max_side: refuse arrays longer than this on either side.
        cell: the cell (metaphase) ID, see :class:`ChromosomeImage`.

    Raises:
        ImageReadError: unsupported shape or dtype, empty, too large, NaN values.
    """
    a = np.asarray(array)
    source_dtype, source_shape = str(a.dtype), tuple(int(d) for d in a.shape)
    if a.ndim >= 2 and max(a.shape[:2]) > max_side:
        raise ImageReadError(
            source, f"image is {a.shape[1]} x {a.shape[0]} px, larger than max_side={max_side}"
        )
    a = _standard_channels(a, bgr=bgr)
    try:
        grey = to_grey_u8(a)
    except UnsupportedImageError as exc:
        raise ImageReadError(source, str(exc)) from exc
    pixels, polarity = normalize_polarity(grey)
    return ChromosomeImage(
        pixels=np.ascontiguousarray(pixels),
        polarity=polarity,
        source=source,
        source_dtype=source_dtype,
        source_shape=source_shape,
        flags=quality_flags(pixels),
        cell=None if cell is None else str(cell),
    )


def quality_flags(pixels: np.ndarray) -> tuple[str, ...]:
    """Warnings for an ``(H, W)`` uint8 image: ``tiny`` and/or ``blank`` (see ChromosomeImage)."""
    flags = []
    if max(pixels.shape) < TINY_SIDE:
        flags.append("tiny")
    if int(pixels.max()) - int(pixels.min()) <= BLANK_RANGE:
        flags.append("blank")
    return tuple(flags)


def read_image(
    path: str | Path, max_side: int = DEFAULT_MAX_SIDE, cell: str | None = None
) -> ChromosomeImage:
    """Read a chromosome image file.

    Args:
        path: a TIFF, BMP, PNG or JPEG file (the format is taken from its bytes, not
            its name).
        max_side: refuse images longer than this on either side (checked from the
            header before decoding when the header tells the size).
        cell: the cell (metaphase) ID, see :class:`ChromosomeImage`.

    Returns:
        The image as dark-on-white ``(H, W)`` uint8 with its polarity.

    Raises:
        ImageReadError: missing, empty, not an image, truncated, too large, or no
            decoder could read it; the message names the file.
    """
    path = Path(path)
    header = read_header(path, max_side)  # before reading a possibly huge file
    data = _read_bytes(path)
    _check_complete(data, header, path)
    pixels = _decode(data, header, path)
    if min(pixels.shape[:2]) == 0:
        raise ImageReadError(path, f"image has no pixels (shape {pixels.shape})")
    return from_array(pixels, source=str(path), max_side=max_side, cell=cell)


def read_header(path: str | Path, max_side: int | None = None) -> ImageHeader:
    """Read only the header of an image file (cheap; used by the folder scan).

    Raises:
        ImageReadError: missing, empty, not a supported image, zero-size, or (when
            ``max_side`` is given) larger than ``max_side``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)

            def read_at(offset: int, size: int) -> bytes:
                # A TIFF's first IFD may sit anywhere in the file: fetch just that.
                if offset + size <= len(head):
                    return head[offset : offset + size]
                fh.seek(offset)
                return fh.read(size)

            header = parse_header(head, path, read_at)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if max_side is not None:
        _check_size(header, path, max_side)
    return header


_HEAD_BYTES = 65536


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def parse_header(
    data: bytes, path: str | Path = "<bytes>", read_at: Callable[[int, int], bytes] | None = None
) -> ImageHeader:
    """Format and size from the leading bytes of an image file.

    Args:
        data: the first bytes of the file (64 KiB is plenty, except for TIFF).
        path: for messages.
        read_at: ``read_at(offset, size)`` fetches more of the file (a TIFF's first
            IFD may be anywhere); by default ``data`` is all there is.

    Raises:
        ImageReadError: empty data, or not a TIFF, BMP, PNG or JPEG.
    """
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png_header(data, path)
        if data.startswith(b"BM"):
            return _bmp_header(data, path)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_header(data, path)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_header(read_at or (lambda offset, size: data[offset : offset + size]))
    except struct.error:
        raise ImageReadError(path, "image header is truncated") from None
    raise ImageReadError(
        path, f"not a supported image (TIFF, BMP, PNG, JPEG); file starts with {data[:8]!r}"
    )


def _png_header(data: bytes, path: str | Path) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise ImageReadError(path, "PNG without an IHDR chunk")
    width, height = struct.unpack_from(">II", data, 16)
    return ImageHeader("png", width, height)


def _bmp_header(data: bytes, path: str | Path) -> ImageHeader:
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib_size >= 40:
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise ImageReadError(path, f"BMP with an unknown header size {dib_size}")
    return ImageHeader("bmp", abs(width), abs(height))  # negative height: top-down rows


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes, path: str | Path) -> ImageHeader:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageReadError(path, f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return ImageHeader("jpeg", width, height)
        if marker in (0xDA, 0xD9):  # start of scan / end of image before any frame header
            break
        pos += 2 + length
    raise ImageReadError(path, "JPEG without a frame header (truncated or damaged)")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8


def _tiff_header(read_at: Callable[[int, int], bytes]) -> ImageHeader:
    """ImageWidth/ImageLength of the first IFD; None when the IFD cannot be parsed.

    Tolerant on purpose (wrong tag types are common in microscope TIFFs): a tag is
    read with whatever integer type it declares.
    """
    head = read_at(0, 16)
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            (ifd,) = struct.unpack_from(order + "Q", head, 8)
            (count,) = struct.unpack_from(order + "Q", read_at(ifd, 8))
            entry, first, value_at = 20, ifd + 8, 12
        else:
            (ifd,) = struct.unpack_from(order + "I", head, 4)
            (count,) = struct.unpack_from(order + "H", read_at(ifd, 2))
            entry, first, value_at = 12, ifd + 2, 8
        entries = read_at(first, min(count, 4096) * entry)
        dims: dict[int, int] = {}
        for k in range(len(entries) // entry):
            off = k * entry
            code, typ = struct.unpack_from(order + "HH", entries, off)
            if code in (256, 257) and typ in _TIFF_TYPES:
                fmt = order + _TIFF_TYPES[typ]
                (dims[code],) = struct.unpack_from(fmt, entries, off + value_at)
        return ImageHeader("tiff", dims.get(256), dims.get(257))
    except struct.error:
        return ImageHeader("tiff", None, None)


def _check_size(header: ImageHeader, path: str | Path, max_side: int) -> None:
    if header.width is None or header.height is None:
        return
    if header.width == 0 or header.height == 0:
        raise ImageReadError(path, f"image has zero size ({header.width} x {header.height} px)")
    if max(header.width, header.height) > max_side:
        raise ImageReadError(
            path,
            f"image is {header.width} x {header.height} px, larger than max_side={max_side}; "
            "a single-chromosome crop should be far smaller",
        )


def _check_complete(data: bytes, header: ImageHeader, path: Path) -> None:
    """Catch truncation that some decoders hide by returning a partly grey image."""
    if header.format == "png" and b"IEND" not in data[-64:]:
        raise ImageReadError(path, "PNG is truncated (no IEND chunk at the end)")
    if header.format == "jpeg" and b"\xff\xd9" not in data[-1024:]:
        raise ImageReadError(path, "JPEG is truncated (no end-of-image marker)")
    if header.format == "bmp":
        (declared,) = struct.unpack_from("<I", data, 2)
        if 0 < len(data) < declared:
            raise ImageReadError(path, f"BMP is truncated ({len(data)} of {declared} bytes)")


def _decode(data: bytes, header: ImageHeader, path: Path) -> np.ndarray:
    failures: list[str] = []
    decoders = [_decode_opencv]
    if header.format == "tiff":
        decoders.append(_decode_tifffile)
    decoders.append(_decode_pillow)
    for decoder in decoders:
        try:
            pixels = decoder(data)
        except ImportError:
            continue
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "try the next"
            text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the data", str(exc))
            failures.append(f"{decoder.__name__[8:]}: {type(exc).__name__}: {text}"[:200])
            continue
        if pixels is not None and pixels.size > 0:
            return pixels
        failures.append(f"{decoder.__name__[8:]}: no pixels")
    raise ImageReadError(
        path, f"cannot decode {header.format.upper()} (damaged?); " + "; ".join(failures)
    )


def _decode_opencv(data: bytes) -> np.ndarray | None:
    import cv2

    level = cv2.utils.logging.getLogLevel()
    # libtiff/libjpeg print their complaints to stderr; the failure is reported here instead.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if pixels is None:
        return None
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]  # BGR -> RGB
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    return pixels


def _decode_tifffile(data: bytes) -> np.ndarray:
    import tifffile

    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its complaints end up in our error message instead
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            pixels = page.asarray()
            planar = getattr(page, "planarconfig", 1) == 2
    finally:
        log.setLevel(level)
    if planar and pixels.ndim == 3 and pixels.shape[0] in (2, 3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # samples first -> samples last
    return pixels


def _decode_pillow(data: bytes) -> np.ndarray:
    from PIL import Image  # optional: Pillow is not a core dependency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about what it then fails on
        im = Image.open(io.BytesIO(data))
        im.load()
    if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGBA")
    elif im.mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    return np.asarray(im)


def _standard_channels(a: np.ndarray, bgr: bool) -> np.ndarray:
    """Squeeze singleton page axes, expand grey+alpha, reorder BGR(A)."""
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 1 and a.shape[2] not in (1, 2, 3, 4):
        a = a[0]
    if a.ndim == 3 and a.shape[2] == 2:  # grey + alpha -> RGBA
        a = np.concatenate([a[:, :, :1]] * 3 + [a[:, :, 1:]], axis=2)
    if bgr and a.ndim == 3 and a.shape[2] == 3:
        a = a[:, :, ::-1]
    elif bgr and a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, [2, 1, 0, 3]]
    return a
