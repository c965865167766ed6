"""Frames and the capture ring buffer shared by the daemon's threads."""

from __future__ import annotations

import threading
import time
from collections import deque
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


class FrameRing:
    """The newest ``capacity`` captured frames; pushing onto a full ring overwrites the oldest.

    Readers wait on a condition instead of polling, so the feeder wakes exactly when the
    capture thread delivers a frame.
    """

    def __init__(self, capacity: int = 30) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._frames: deque[Frame] = deque(maxlen=capacity)
        self._cond = threading.Condition()
        self._closed = False
        self.overwritten = 0

    @property
    def capacity(self) -> int:
        maxlen = self._frames.maxlen
        assert maxlen is not None
        return maxlen

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def push(self, frame: Frame) -> None:
        with self._cond:
            if len(self._frames) == self.capacity:
                self.overwritten += 1
            self._frames.append(frame)
            self._cond.notify_all()

    def latest(self) -> Frame | None:
        with self._cond:
            return self._frames[-1] if self._frames else None

    def wait_newer(self, after_index: int, timeout: float | None = None) -> list[Frame]:
        """Frames with ``index > after_index``, oldest first; waits until one exists.

        Returns an empty list on timeout or once the ring is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                if self._frames and self._frames[-1].index > after_index:
                    return [f for f in self._frames if f.index > after_index]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return []

    def close(self) -> None:
        """Wake every waiter; later waits return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
