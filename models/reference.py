"""Checking reference images before any model sees them (no torch here).

A bad reference must never take the camera down: these checks give a clear reason, and the
callers keep the reference already in use.

Images are measured before they are decoded: the dimensions come from the file's header
(:func:`measure_image`), and one past the limits is refused without a pixel being allocated, so
a small file that claims 30000x30000 (a "decompression bomb") costs nothing. Decoding itself
is limited to ``DECODE_SLOTS`` images at a time, so parallel uploads cannot add up either.
"""

from __future__ import annotations

import re
import struct
import threading
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

MIN_SIDE = 64  # smaller than this holds no usable face
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000  # ~40 MP: larger only costs memory, the model sees ~0.4 MP
MAX_FILE_BYTES = 50 * 1024 * 1024
#: Images decoded at once, whoever asks (uploads, --reference, the library at start).
DECODE_SLOTS = 2
FORMATS = "PNG, JPEG, WebP or BMP"

_decoding = threading.BoundedSemaphore(DECODE_SLOTS)
#: Scans a reference JPEG may have. A progressive JPEG is a series of scans, each a pass over
#: the whole image, and nothing bounds how many: 1,000 scans of a few bytes each (a 270 kB
#: file) take 18 s to decode at 36 MP, and 50 MB of them hours. Encoders write about 10
#: (libjpeg's and mozjpeg's progressive scripts), a sequential image 1 to 4.
MAX_JPEG_SCANS = 100

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (every coding but DHT 0xC4, JPG 0xC8 and DAC 0xCC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers that stand alone, without a length.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class ReferenceError(ValueError):
    """The reference image is unusable; the message says why and what would do."""


def measure_image(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, WebP or BMP, without decoding it; None
    for anything else, or a header too damaged to say."""
    try:
        if data.startswith(PNG_MAGIC):
            if data[12:16] != b"IHDR":
                return None
            width, height = struct.unpack_from(">II", data, 16)
            return width, height
        if data.startswith(b"\xff\xd8"):
            header = jpeg_header(data)
            return None if header is None else (header.width, header.height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"BM":
            header_size = struct.unpack_from("<I", data, 14)[0]
            if header_size == 12:  # the old OS/2 header: 16-bit sides
                width, height = struct.unpack_from("<HH", data, 18)
                return width, height
            width, height = struct.unpack_from("<ii", data, 18)
            return abs(width), abs(height)  # a negative height means top-down rows
    except struct.error:
        return None  # cut off inside the header
    return None


class JpegHeader(NamedTuple):
    """What a JPEG's headers say, read without decoding."""

    #: The start-of-frame marker: 0xC0 baseline, 0xC2 progressive, and so on.
    sof: int
    width: int
    height: int
    components: int
    #: Components in the first scan; None when the data ends before it. All of them: one
    #: interleaved scan holds the whole image (libjpeg-turbo's default).
    first_scan: int | None


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header and the first scan's (None when the data ends first), or None when
    no frame header comes before the first scan, the end, or :data:`_MAX_MARKERS` markers.
    ``struct.error`` when cut off inside the frame header."""
    frame = None
    position = 2
    for _ in range(_MAX_MARKERS):
        if position + 4 > len(data) or data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill bytes: a run of them is skipped at once
            fill = _FILL.match(data, position)
            assert fill is not None
            position = fill.end() - 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker == 0xD9:  # end of image
            break
        if marker == 0xDA:  # start of scan: the coded data follows
            if frame is None or position + 4 >= len(data):
                break
            return frame._replace(first_scan=data[position + 4])
        length = struct.unpack_from(">H", data, position + 2)[0]
        if marker in _JPEG_SOF and frame is None:
            height, width, components = struct.unpack_from(">HHB", data, position + 5)
            frame = JpegHeader(marker, width, height, components, None)
        position += 2 + length
    return frame


_FILL = re.compile(rb"\xff+")
#: The next marker after damage, as libjpeg finds it: FFs, then a byte that is not 00.
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xff]")
#: The marker that ends a scan's coded data: FF followed by anything but a stuffed 00, a
#: restart marker (inside the scan) or another FF (fill).
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: Markers walked before the image's end is taken to be the file's: no camera or editor
#: writes this many outside the coded data, and a walk of millions costs seconds.
_MAX_MARKERS = 10_000


def jpeg_scans(data: bytes) -> int:
    """At most how many scans a decoder can find in the JPEG ``data``: every scan starts with
    the bytes FF DA, which coded data never holds (an FF there is followed by 00 or a
    restart marker), so the pairs up to where libjpeg stops decoding are counted. What
    follows the image (a motion photo's video, an MPO's other pictures) is not decoded."""
    return data.count(b"\xff\xda", 0, _jpeg_end(data))


def _jpeg_end(data: bytes) -> int:
    """Where libjpeg stops reading the JPEG ``data``: after its end-of-image marker, found
    as libjpeg walks (segment lengths honoured, scans' coded data skipped, damage skipped
    on to the next marker); the whole file where that is not clear."""
    position = 2
    for _ in range(_MAX_MARKERS):
        if position + 2 > len(data):
            break
        if data[position] != 0xFF or data[position + 1] == 0x00:  # damage
            found = _NEXT_MARKER.search(data, position)
            if found is None:
                break
            position = found.end() - 2
            continue
        marker = data[position + 1]
        if marker == 0xFF:
            fill = _FILL.match(data, position)
            assert fill is not None
            position = fill.end() - 1
            continue
        if marker == 0xD9:
            return position + 2
        if marker in _JPEG_STANDALONE or marker == 0xD8:
            position += 2
            continue
        if position + 4 > len(data):
            break
        # libjpeg skips length - 2 bytes, none for a length under 2.
        position += 2 + max(2, struct.unpack_from(">H", data, position + 2)[0])
        if marker == 0xDA:
            found = _SCAN_END.search(data, position)
            if found is None:
                break
            position = found.start()
    return len(data)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas size, 24 bits each, minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height) if len(data) >= 30 else None
    if chunk == b"VP8 ":  # lossy: after the frame tag and its start code, 14 bits each
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: a signature byte, then 14 bits each, minus one
        if data[20:21] != b"\x2f":
            return None
        bits = struct.unpack_from("<I", data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def decode_reference(source: Path | bytes, name: str | None = None) -> np.ndarray:
    """Decode a reference (a file or its bytes) to BGR pixels, checking size limits: from the
    header before decoding, and again on the pixels. ``name`` says what it is in messages."""
    if isinstance(source, Path):
        if not source.is_file():
            raise ReferenceError(f"reference image not found: {source}")
        if source.stat().st_size > MAX_FILE_BYTES:
            raise ReferenceError(f"reference {source} is over {MAX_FILE_BYTES // 2**20} MB")
        data = source.read_bytes()
        name = name or str(source)
    else:
        if len(source) > MAX_FILE_BYTES:
            raise ReferenceError(f"reference image is over {MAX_FILE_BYTES // 2**20} MB")
        data, name = source, name or "reference image"
    size = measure_image(data)
    if size is None:
        raise ReferenceError(f"{name} cannot be decoded as an image (use a {FORMATS} file)")
    check_size(*size, name)
    if data.startswith(b"\xff\xd8") and jpeg_scans(data) > MAX_JPEG_SCANS:
        raise ReferenceError(f"{name} is a JPEG of over {MAX_JPEG_SCANS} scans, which would "
                             "take minutes to decode: save it again (any image editor), or "
                             "use a PNG")
    with _decoding:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ReferenceError(f"{name} cannot be decoded as an image (use a {FORMATS} file)")
    check_reference(image, name)
    return image


def check_size(width: int, height: int, name: str = "reference image") -> None:
    """The size limits, on dimensions alone."""
    if min(height, width) < MIN_SIDE:
        raise ReferenceError(f"{name} is too small ({width}x{height}): use at least "
                             f"{MIN_SIDE} px on each side, ideally a clear portrait")
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        raise ReferenceError(f"{name} is too large ({width}x{height}): at most {MAX_SIDE} px "
                             f"a side and {MAX_PIXELS / 1e6:.0f} MP")


def check_reference(image: np.ndarray, name: str = "reference image") -> None:
    """Size limits for decoded BGR pixels."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ReferenceError(f"{name} must be a colour image (got shape {image.shape})")
    height, width = image.shape[:2]
    check_size(width, height, name)
