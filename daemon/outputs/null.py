"""The ``null`` sink: discards frames."""

from __future__ import annotations

import numpy as np

from faceswap_cam.daemon.outputs.base import Sink, Tick


class NullSink(Sink):
    """Discards frames (benchmarks, and running with only the preview)."""

    inline = True

    def __init__(self) -> None:
        self.frames = 0

    @property
    def description(self) -> str:
        return "null"

    def open(self, size: tuple[int, int], fps: float) -> None:
        pass

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        self.frames += tick.repeat

    def close(self) -> None:
        pass
