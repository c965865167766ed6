"""The capture ring: the newest captured frames, shared by the capture thread and the feeder."""

from __future__ import annotations

import threading
import time
from collections import deque

from faceswap_cam.daemon.frames import Frame


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
