"""The frame the daemon's threads hand each other, and its pixel check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One video frame: ``HxWx3 uint8`` pixels in OpenCV's **BGR** order.

    ``index`` counts captured frames from 0 and ``captured_ns`` is ``time.monotonic_ns()`` at
    capture. A swapped frame keeps the index and capture time of the frame it was made from,
    so latency is always publish time minus capture time.
    """

    pixels: np.ndarray
    index: int
    captured_ns: int

    def with_pixels(self, pixels: np.ndarray) -> Frame:
        return Frame(pixels=pixels, index=self.index, captured_ns=self.captured_ns)


def check_bgr_frame(pixels: np.ndarray, size: tuple[int, int] | None = None) -> None:
    """Raise a precise error unless ``pixels`` is an ``HxWx3 uint8`` image (of ``size``=(W, H))."""
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype != np.uint8:
        raise TypeError(f"frame dtype must be uint8, got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 (BGR), got shape {pixels.shape}")
    if size is not None and (pixels.shape[1], pixels.shape[0]) != size:
        raise ValueError(
            f"frame size {pixels.shape[1]}x{pixels.shape[0]} does not match {size[0]}x{size[1]}"
        )
