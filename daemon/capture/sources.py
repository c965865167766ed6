"""Frame sources behind one small contract, registered by scheme (``webcam:``, ``file:``, ``demo``).

Like pyvirtualcam's backends: each source is a class with ``open``/``read``/``close`` and the
registry maps a spec such as ``webcam:0`` or ``file:clip.mp4`` to one. Tests register fakes the
same way the real sources are registered, at the hardware boundary.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

SYSFS_VIDEO4LINUX = Path("/sys/class/video4linux")
LOOPBACK_DRIVER = "v4l2 loopback"


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames."""


class FrameSource(ABC):
    """A device or stream that yields BGR frames, one blocking ``read()`` at a time."""

    #: Real cameras show sensor noise; a driver that repeats the exact same frame is frozen.
    detects_freeze: bool = False

    def __init__(self, *, size: tuple[int, int], fps: float) -> None:
        self.size = size
        self.fps = fps

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def open(self) -> None:
        """Acquire the device; raise :class:`SourceError` with the reason and fix."""

    @abstractmethod
    def read(self) -> np.ndarray:
        """Block until the next frame; raise :class:`SourceError` when the stream is lost."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; idempotent, and wakes a ``read`` blocked in pacing."""

    def wake(self) -> None:  # noqa: B027 (a no-op is right for sources that do not pace)
        """Make a ``read`` waiting for its next slot return now (shutdown), without releasing
        the device under it: OpenCV captures must not be released while another thread
        reads them."""


class Pacer:
    """Waits for an absolute schedule (``start + n/fps``); ``cancel()`` wakes it for shutdown."""

    def __init__(self, fps: float) -> None:
        self.period_ns = int(1e9 / fps)
        self._next_ns: int | None = None
        self._cancel = threading.Event()

    def wait(self) -> bool:
        """Sleep to the next slot; False once cancelled. A late caller skips missed slots."""
        now = time.monotonic_ns()
        if self._next_ns is None:
            self._next_ns = now
        elif now - self._next_ns > self.period_ns:
            missed = (now - self._next_ns) // self.period_ns
            self._next_ns += missed * self.period_ns
        delay = (self._next_ns - now) / 1e9
        if delay > 0 and self._cancel.wait(delay):
            return False
        self._next_ns += self.period_ns
        return not self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def reset(self) -> None:
        self._cancel.clear()
        self._next_ns = None


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


def _platform() -> str:
    # A plain str, so type checkers keep every platform's branch.
    return sys.platform


def _capture_backend() -> int:
    platform = _platform()
    if platform.startswith("linux"):
        return int(cv2.CAP_V4L2)
    if platform == "darwin":
        return int(cv2.CAP_AVFOUNDATION)
    if platform == "win32":
        return int(cv2.CAP_MSMF)
    return int(cv2.CAP_ANY)


class WebcamSource(FrameSource):
    """A physical camera through OpenCV: MJPG, a 1-frame driver buffer, the requested size/fps."""

    detects_freeze = True

    def __init__(self, device: int | str, *, size: tuple[int, int], fps: float) -> None:
        super().__init__(size=size, fps=fps)
        self.device = device
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"webcam:{self.device}"

    def open(self) -> None:
        capture = cv2.VideoCapture(self.device, _capture_backend())
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
        granted_fps = capture.get(cv2.CAP_PROP_FPS)
        if granted != self.size or abs(granted_fps - self.fps) > 0.5:
            logger.warning("camera %s gives %dx%d@%.1f instead of %dx%d@%.1f; frames are scaled",
                           self.device, *granted, granted_fps, width, height, self.fps)
        with self._lock:
            self._capture = capture

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


# --- finding cameras -------------------------------------------------------------------------

_VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
_V4L2_CAP_VIDEO_CAPTURE = 0x00000001
_V4L2_CAP_DEVICE_CAPS = 0x80000000


@dataclass(frozen=True)
class V4L2Device:
    node: str  # "video0"
    name: str  # card label from sysfs
    driver: str  # from VIDIOC_QUERYCAP, "" when unknown
    is_virtual: bool  # lives under /sys/devices/virtual (v4l2loopback does)
    can_capture: bool

    @property
    def path(self) -> str:
        return f"/dev/{self.node}"

    @property
    def index(self) -> int:
        return int(self.node.removeprefix("video"))

    @property
    def is_loopback(self) -> bool:
        return self.driver == LOOPBACK_DRIVER or (self.is_virtual and not self.driver)


def query_v4l2_caps(device_path: str) -> tuple[str, bool] | None:
    """(driver name, can capture video) from VIDIOC_QUERYCAP, or None if the node won't say."""
    import fcntl  # POSIX only; this module must import on Windows too

    try:
        fd = os.open(device_path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(104)
        fcntl.ioctl(fd, _VIDIOC_QUERYCAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    driver = bytes(buf[:16]).split(b"\0", 1)[0].decode(errors="replace")
    capabilities, device_caps = struct.unpack_from("=II", buf, 84)
    caps = device_caps if capabilities & _V4L2_CAP_DEVICE_CAPS else capabilities
    return driver, bool(caps & _V4L2_CAP_VIDEO_CAPTURE)


def list_v4l2_devices(
    sysfs: Path = SYSFS_VIDEO4LINUX,
    query: Callable[[str], tuple[str, bool] | None] = query_v4l2_caps,
) -> list[V4L2Device]:
    """Every ``/dev/videoN`` node the kernel lists, in index order."""
    if not sysfs.is_dir():
        return []
    devices = []
    for entry in sysfs.glob("video*"):
        if not entry.name.removeprefix("video").isdigit():
            continue
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            name = ""
        resolved = str(entry.resolve())
        is_virtual = "/devices/virtual/" in resolved
        caps = query(f"/dev/{entry.name}")
        driver, can_capture = caps if caps is not None else ("", True)
        devices.append(V4L2Device(entry.name, name, driver, is_virtual, can_capture))
    return sorted(devices, key=lambda d: d.index)


def find_real_cameras(sysfs: Path = SYSFS_VIDEO4LINUX,
                      query: Callable[[str], tuple[str, bool] | None] = query_v4l2_caps,
                      ) -> list[V4L2Device]:
    """Capture devices that are not v4l2loopback: capturing our own output would loop."""
    cameras = []
    for device in list_v4l2_devices(sysfs, query):
        if device.is_loopback:
            logger.debug("skipping %s (%s): a v4l2loopback device", device.path, device.name)
        elif device.can_capture:
            cameras.append(device)
    return cameras


def auto_webcam_index(sysfs: Path = SYSFS_VIDEO4LINUX,
                      query: Callable[[str], tuple[str, bool] | None] = query_v4l2_caps,
                      ) -> int | None:
    """The first real camera's index, or None when there is none."""
    if _platform().startswith("linux"):
        cameras = find_real_cameras(sysfs, query)
        return cameras[0].index if cameras else None
    # Elsewhere OpenCV cannot name devices; the first index that opens is the usual camera.
    capture = cv2.VideoCapture(0, _capture_backend())
    try:
        return 0 if capture.isOpened() else None
    finally:
        capture.release()


# --- registry --------------------------------------------------------------------------------

SourceFactory = Callable[[str, tuple[int, int], float], FrameSource]
_SOURCES: dict[str, SourceFactory] = {}


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Make ``scheme:ARG`` (or bare ``scheme``) create sources with ``factory(arg, size, fps)``."""
    _SOURCES[scheme] = factory


def source_schemes() -> Iterator[str]:
    return iter(sorted(_SOURCES))


def _webcam(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    if arg in ("", "auto"):
        index = auto_webcam_index()
        if index is None:
            raise SourceError(
                "no camera found (v4l2loopback devices are never used as input); connect one, "
                "or use --source demo / --source file:PATH"
            )
        logger.info("webcam:auto picked camera %d", index)
        return WebcamSource(index, size=size, fps=fps)
    if arg.isdigit():
        return WebcamSource(int(arg), size=size, fps=fps)
    return WebcamSource(arg, size=size, fps=fps)


def _file(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    if not arg:
        raise SourceError("file source needs a path: --source file:PATH")
    return FileSource(arg, size=size, fps=fps)


def _demo(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    return DemoSource(size=size, fps=fps)


def _auto(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    try:
        return _webcam("auto", size, fps)
    except SourceError as exc:
        logger.warning("%s. Showing the demo scene instead.", exc)
        return DemoSource(size=size, fps=fps)


register_source("webcam", _webcam)
register_source("file", _file)
register_source("demo", _demo)
register_source("auto", _auto)


def split_spec(spec: str) -> tuple[str, str]:
    scheme, _, arg = spec.partition(":")
    return scheme, arg


def create_source(spec: str, *, size: tuple[int, int], fps: float) -> FrameSource:
    scheme, arg = split_spec(spec)
    factory = _SOURCES.get(scheme)
    if factory is None:
        raise SourceError(
            f"unknown source {spec!r}; use one of: "
            + ", ".join(f"{s}:…" if s in ("webcam", "file") else s for s in source_schemes())
        )
    return factory(arg, size, fps)
