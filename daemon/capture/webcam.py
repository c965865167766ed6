"""The ``webcam:N`` source: a physical camera through OpenCV, with the platform's backend."""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np

from faceswap_cam.daemon.capture.devices import auto_webcam_index, current_platform
from faceswap_cam.daemon.capture.source import FrameSource, SourceError

logger = logging.getLogger(__name__)


def capture_backend() -> int:
    """The OpenCV capture API for this platform's cameras."""
    platform = current_platform()
    if platform.startswith("linux"):
        return int(cv2.CAP_V4L2)
    if platform == "darwin":
        return int(cv2.CAP_AVFOUNDATION)
    if platform == "win32":
        return int(cv2.CAP_MSMF)
    return int(cv2.CAP_ANY)


def camera_opens(device: int | str) -> bool:
    """Whether OpenCV can open ``device`` at all (released again at once)."""
    capture = cv2.VideoCapture(device, capture_backend())
    try:
        return bool(capture.isOpened())
    finally:
        capture.release()


class WebcamSource(FrameSource):
    """A physical camera through OpenCV: MJPG, a 1-frame driver buffer, the requested size/fps."""

    detects_freeze = True

    def __init__(self, device: int | str, *, size: tuple[int, int], fps: float) -> None:
        super().__init__(size=size, fps=fps)
        self.device = device
        #: What the driver granted once open (it may refuse the request): (width, height), fps.
        self.granted_size: tuple[int, int] | None = None
        self.granted_fps: float | None = None
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"webcam:{self.device}"

    def open(self) -> None:
        capture = cv2.VideoCapture(self.device, capture_backend())
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                f"camera {self.device} cannot be opened: check it is connected and not in use "
                "by another app (run `faceswap-cam run --source demo` to test without one)"
            )
        width, height = self.size
        # Each request may be refused by the driver; what it granted is read back below.
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        granted = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                   int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        granted_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if granted != self.size or abs(granted_fps - self.fps) > 0.5:
            logger.warning("camera %s gives %dx%d@%.1f instead of %dx%d@%.1f; frames are scaled",
                           self.device, *granted, granted_fps, width, height, self.fps)
        with self._lock:
            self._capture = capture
            self.granted_size, self.granted_fps = granted, granted_fps

    def read(self) -> np.ndarray:
        with self._lock:
            capture = self._capture
        if capture is None:
            raise SourceError(f"{self.description} is not open")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise SourceError(f"{self.description} stopped delivering frames")
        return frame

    def close(self) -> None:
        with self._lock:
            if self._capture is not None:
                self._capture.release()
            self._capture = None


def webcam_device(arg: str) -> int | str | None:
    """What ``webcam:ARG`` names: a camera index, a device path or name, or None for ``auto``
    (the first real camera)."""
    if arg in ("", "auto"):
        return None
    return int(arg) if arg.isdigit() else arg


def webcam_source(arg: str, size: tuple[int, int], fps: float) -> WebcamSource:
    """The source for ``webcam:ARG``: an index, a device path, or ``auto`` (the first real
    camera; v4l2loopback devices never count)."""
    device = webcam_device(arg)
    if device is None:
        index = auto_webcam_index()
        if index is None:
            raise SourceError(
                "no camera found (v4l2loopback devices are never used as input); connect one, "
                "or use --source demo / --source file:PATH"
            )
        logger.info("webcam:auto picked camera %d", index)
        return WebcamSource(index, size=size, fps=fps)
    return WebcamSource(device, size=size, fps=fps)
