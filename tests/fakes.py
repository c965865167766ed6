"""Fakes at the hardware boundary: sources and engines registered like the real ones."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from faceswap_cam.daemon.capture.source import FrameSource, Pacer, SourceError
from faceswap_cam.models.engine import SwapResult
from faceswap_cam.models.simple_engines import DebugEngine
from tests.media import make_frame


class NumberedSource(FrameSource):
    """Numbered frames (see tests.media) paced at ``fps``, like a camera.

    ``fail_after`` frames into the run, the device disappears: reads fail and reopening fails
    ``down_opens`` times before the device comes back.
    """

    def __init__(self, *, size: tuple[int, int] = (320, 240), fps: float = 30,
                 fail_after: int | None = None, down_opens: int = 2,
                 freeze_after: int | None = None) -> None:
        super().__init__(size=size, fps=fps)
        self.detects_freeze = freeze_after is not None
        self._pacer = Pacer(fps)
        self._fail_after = fail_after
        self._down_opens = down_opens
        self._freeze_after = freeze_after
        self.count = 0
        self.opens = 0
        self.closes = 0
        self.failed_opens = 0
        self.recovered = threading.Event()
        self._failed = False

    @property
    def description(self) -> str:
        return "numbered"

    def open(self) -> None:
        if self._failed and self.failed_opens < self._down_opens:
            self.failed_opens += 1
            raise SourceError("device unplugged")
        if self._failed:
            self.recovered.set()
        self.opens += 1
        self._pacer.reset()

    def read(self) -> np.ndarray:
        if not self._pacer.wait():
            raise SourceError("closed")
        if self._fail_after is not None and not self._failed and self.count >= self._fail_after:
            self._failed = True
            raise SourceError("device unplugged")
        if self._freeze_after is not None and self.count >= self._freeze_after:
            return make_frame(self._freeze_after, self.size)
        frame = make_frame(self.count, self.size)
        self.count += 1
        return frame

    def close(self) -> None:
        self.closes += 1
        self._pacer.cancel()


class FlakyEngine(DebugEngine):
    """A debug engine whose ``fail_on``-th call raises, or ``hang_on``-th call blocks until
    ``release`` is set (like a wedged GPU driver)."""

    instances: list[FlakyEngine] = []

    def __init__(self, *, fail_on: int | None = None, hang_on: int | None = None,
                 release: threading.Event | None = None, first_batch: int = 2,
                 next_batch: int = 2) -> None:
        super().__init__(delay_ms=0, first_batch=first_batch, next_batch=next_batch)
        self.fail_on = fail_on
        self.hang_on = hang_on
        self.release = release or threading.Event()
        self.closed = False
        FlakyEngine.instances.append(self)

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        call = self.calls + 1
        if call == self.fail_on:
            self.calls += 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if call == self.hang_on:
            self.calls += 1
            self.release.wait()
        return super().process(frames)

    def close(self) -> None:
        self.closed = True
        super().close()
