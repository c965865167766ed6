"""The ``demo`` source: a moving test scene, for machines with no camera."""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceswap_cam.daemon.capture.source import FrameSource, Pacer, SourceError


class DemoSource(FrameSource):
    """A moving test scene, so the daemon has something to show on a machine with no camera."""

    def __init__(self, *, size: tuple[int, int], fps: float) -> None:
        super().__init__(size=size, fps=fps)
        self._pacer = Pacer(fps)
        self._background: np.ndarray | None = None
        self._count = 0

    @property
    def description(self) -> str:
        return "demo"

    def open(self) -> None:
        width, height = self.size
        ramp_x = np.linspace(40, 140, width, dtype=np.float32)
        ramp_y = np.linspace(60, 120, height, dtype=np.float32)
        background = np.empty((height, width, 3), np.uint8)
        background[..., 0] = (ramp_x[None, :] + ramp_y[:, None] * 0.5).astype(np.uint8)
        background[..., 1] = ramp_y[:, None].astype(np.uint8)
        background[..., 2] = (ramp_x[None, :] * 0.6).astype(np.uint8)
        self._background = background
        self._pacer.reset()

    def read(self) -> np.ndarray:
        if self._background is None:
            raise SourceError("demo source is not open")
        if not self._pacer.wait():
            raise SourceError("demo source closed")
        width, height = self.size
        frame = self._background.copy()
        t = self._count / self.fps
        self._count += 1
        radius = max(8, min(width, height) // 6)
        cx = int(width / 2 + (width / 2 - radius) * 0.8 * math.sin(t * 0.9))
        cy = int(height / 2 + (height / 2 - radius) * 0.5 * math.sin(t * 1.7))
        cv2.circle(frame, (cx, cy), radius, (90, 170, 230), -1, cv2.LINE_AA)
        eye = max(2, radius // 7)
        for dx in (-radius // 3, radius // 3):
            cv2.circle(frame, (cx + dx, cy - radius // 5), eye, (40, 40, 40), -1, cv2.LINE_AA)
        scale = max(0.4, height / 720)
        origin = (int(20 * scale), height - int(24 * scale))  # the stats overlay is at the top
        cv2.putText(frame, f"FaceSwap Cam demo  #{self._count}", origin, cv2.FONT_HERSHEY_SIMPLEX,
                    1.2 * scale, (255, 255, 255), 2, cv2.LINE_AA)
        return frame

    def close(self) -> None:
        self._pacer.cancel()

    def wake(self) -> None:
        self._pacer.cancel()
