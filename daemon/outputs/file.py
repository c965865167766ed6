"""The ``file:PATH`` sink: records the output to a video file."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from faceswap_cam.daemon.outputs.base import Sink, SinkError, Tick

logger = logging.getLogger(__name__)

_FILE_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class FileSink(Sink):
    """Records the output to a video file at the output's fixed frame rate.

    A recording wants every frame, so it queues more than one and writes a frame again for
    each tick the clock missed, keeping the file's timeline equal to wall time.
    """

    slots = 60

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FILE_FOURCC:
            raise SinkError(f"cannot record to {path!r}: use one of "
                            f"{', '.join(sorted(_FILE_FOURCC))}")
        self._fourcc = _FILE_FOURCC[suffix]
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def open(self, size: tuple[int, int], fps: float) -> None:
        if not self.path.parent.is_dir():
            raise SinkError(f"cannot record to {self.path}: folder {self.path.parent} "
                            "does not exist")
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self._fourcc), fps,
                                 size)
        if not writer.isOpened():
            raise SinkError(f"cannot record to {self.path} with codec {self._fourcc}")
        self._writer, self._size = writer, size

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        if self._writer is None:
            return
        for _ in range(tick.repeat):
            self._writer.write(pixels)
            self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            # release() writes the index: without it the file does not play.
            self._writer.release()
            self._writer = None
            logger.info("recorded %d frames to %s", self.frames, self.path)
