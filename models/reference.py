"""Checking reference images before any model sees them (no torch here).

A bad reference must never take the camera down: these checks give a clear reason, and the
callers keep the reference already in use.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MIN_SIDE = 64  # smaller than this holds no usable face
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000  # ~40 MP: larger only costs memory, the model sees ~0.4 MP
MAX_FILE_BYTES = 50 * 1024 * 1024


class ReferenceError(ValueError):
    """The reference image is unusable; the message says why and what would do."""


def decode_reference(source: Path | bytes) -> np.ndarray:
    """Decode a reference (a file or its bytes) to BGR pixels, checking size limits."""
    if isinstance(source, Path):
        if not source.is_file():
            raise ReferenceError(f"reference image not found: {source}")
        if source.stat().st_size > MAX_FILE_BYTES:
            raise ReferenceError(f"reference {source} is over {MAX_FILE_BYTES // 2**20} MB")
        data = source.read_bytes()
        name = str(source)
    else:
        if len(source) > MAX_FILE_BYTES:
            raise ReferenceError(f"reference image is over {MAX_FILE_BYTES // 2**20} MB")
        data, name = source, "reference image"
    buffer = np.frombuffer(data, np.uint8)
    # Read the header first: a decompression bomb is refused before it is decoded.
    header = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8) if buffer.size else None
    if header is None:
        raise ReferenceError(f"{name} cannot be decoded as an image (use a PNG or JPEG)")
    if header.size * 64 > MAX_PIXELS * 1.05:
        raise ReferenceError(f"{name} is too large (about {header.size * 64 / 1e6:.0f} MP; "
                             f"at most {MAX_PIXELS / 1e6:.0f} MP)")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise ReferenceError(f"{name} cannot be decoded as an image (use a PNG or JPEG)")
    check_reference(image, name)
    return image


def check_reference(image: np.ndarray, name: str = "reference image") -> None:
    """Size limits for decoded BGR pixels."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ReferenceError(f"{name} must be a colour image (got shape {image.shape})")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ReferenceError(f"{name} is too small ({width}x{height}): use at least "
                             f"{MIN_SIDE} px on each side, ideally a clear portrait")
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        raise ReferenceError(f"{name} is too large ({width}x{height}): at most {MAX_SIDE} px "
                             f"a side and {MAX_PIXELS / 1e6:.0f} MP")
