"""The ``file:PATH`` source: a video file played at its own frame rate, looping."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import cv2
import numpy as np

from faceswap_cam.daemon.capture.source import FrameSource, Pacer, SourceError

logger = logging.getLogger(__name__)


class FileSource(FrameSource):
    """A video file played at its own frame rate, looping, like a camera that never ends."""

    def __init__(self, path: str, *, size: tuple[int, int], fps: float) -> None:
        super().__init__(size=size, fps=fps)
        self.path = Path(path)
        self._capture: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(f"cannot decode video file {self.path} (is it a video OpenCV reads?)")
        file_fps = capture.get(cv2.CAP_PROP_FPS)
        if not file_fps or not math.isfinite(file_fps) or file_fps <= 0:
            logger.warning("%s does not state its frame rate; playing at %.1f fps",
                           self.path, self.fps)
            file_fps = self.fps
        self.fps = float(file_fps)
        with self._lock:
            self._capture = capture
            self._pacer = Pacer(self.fps)

    def read(self) -> np.ndarray:
        with self._lock:
            capture, pacer = self._capture, self._pacer
        if capture is None or pacer is None:
            raise SourceError(f"{self.description} is not open")
        if not pacer.wait():
            raise SourceError(f"{self.description} closed")
        ok, frame = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = capture.read()
            if not ok:
                raise SourceError(f"{self.description} yields no frames")
        return frame

    def wake(self) -> None:
        with self._lock:
            if self._pacer is not None:
                self._pacer.cancel()

    def close(self) -> None:
        with self._lock:
            if self._pacer is not None:
                self._pacer.cancel()
            if self._capture is not None:
                self._capture.release()
            self._capture = None
