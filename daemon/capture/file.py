"""The ``file:PATH`` source: a video file played at its own frame rate, looping; a still image
(or a one-frame video) is shown as a camera that never moves, at the requested frame rate."""

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
        #: The one picture of a still image, repeated; None for a video.
        self._still: np.ndarray | None = None
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
            capture.release()
            # OpenCV's video readers do not take every image format its image reader does.
            still = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
            if still is None:
                raise SourceError(f"cannot decode video file {self.path} (is it a video or an "
                                  "image OpenCV reads?)")
            self._open_still(still)
            return
        # A file with a single frame (a photo, or a one-frame clip) cannot loop by rewinding:
        # OpenCV's image readers do not seek. It is shown as a still picture instead.
        ok, first = capture.read()
        if not ok:
            capture.release()
            raise SourceError(f"{self.path} has no frame OpenCV can decode")
        if not capture.read()[0]:
            capture.release()
            self._open_still(first)
            return
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        file_fps = capture.get(cv2.CAP_PROP_FPS)
        if not file_fps or not math.isfinite(file_fps) or file_fps <= 0:
            logger.warning("%s does not state its frame rate; playing at %.1f fps",
                           self.path, self.fps)
            file_fps = self.fps
        self.fps = float(file_fps)
        with self._lock:
            self._capture = capture
            self._pacer = Pacer(self.fps)

    def _open_still(self, pixels: np.ndarray) -> None:
        logger.info("%s is a still image: shown unchanged at %g fps", self.path, self.fps)
        pixels.flags.writeable = False
        with self._lock:
            self._still = pixels
            self._pacer = Pacer(self.fps)

    def read(self) -> np.ndarray:
        with self._lock:
            capture, still, pacer = self._capture, self._still, self._pacer
        if (capture is None and still is None) or pacer is None:
            raise SourceError(f"{self.description} is not open")
        if not pacer.wait():
            raise SourceError(f"{self.description} closed")
        if still is not None:
            # Each frame its own array, as a camera gives: nothing downstream shares one.
            return still.copy()
        assert capture is not None
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
            self._still = None
