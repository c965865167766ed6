"""Layer 1: the capture thread: reads the source into the ring (ring.py), measures, reconnects."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from faceswap_cam.daemon.capture.ring import FrameRing
from faceswap_cam.daemon.capture.source import FrameSource, SourceError
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.states import CaptureState
from faceswap_cam.daemon.stats import RateMeter

logger = logging.getLogger(__name__)


def fit_to_size(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to ``size`` keeping the aspect ratio; the rest is black bars (never a stretch)."""
    width, height = size
    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_AREA)
    if (new_w, new_h) == (width, height):
        return scaled
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y:y + new_h, x:x + new_w] = scaled
    return canvas


def as_bgr(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    return pixels


class WebcamCapture:
    """Owns one source and the thread that reads it into a ring of the newest frames.

    A source that fails, or freezes (the same frame for ``freeze_after_s``), is closed and
    reopened with exponential backoff; meanwhile the ring keeps its last frame and ``state``
    says LOST, so the publisher can keep the output running with a "camera lost" card.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        ring_size: int = 30,
        freeze_after_s: float = 2.0,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 5.0,
        on_state: Callable[[CaptureState, str], None] | None = None,
    ) -> None:
        self.source = source
        self.ring = FrameRing(ring_size)
        self.freeze_after_s = freeze_after_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._on_state = on_state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = CaptureState.STARTING
        self.last_error = ""
        self.rate = RateMeter(window=30)
        self.frames_captured = 0
        #: Frames the device should have delivered but did not (gaps over 1.5 periods).
        self.frames_missed = 0
        self.read_errors = 0
        self.freezes = 0
        self.reconnects = 0
        self._closed = False

    @property
    def requested_fps(self) -> float:
        return self.source.fps

    @property
    def state(self) -> CaptureState:
        with self._lock:
            return self._state

    def _set_state(self, state: CaptureState, reason: str = "") -> None:
        with self._lock:
            if self._state is state:
                return
            self._state = state
            if reason:
                self.last_error = reason
        level = logging.WARNING if state is CaptureState.LOST else logging.INFO
        logger.log(level, "capture %s: %s%s", self.source.description, state.value,
                   f" ({reason})" if reason else "")
        if self._on_state is not None:
            self._on_state(state, reason)

    def open(self) -> None:
        """Open the source in the caller's thread, so a bad source fails the start."""
        self.source.open()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture already started")
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = self.backoff_initial_s
        is_open = True
        while not self._stop.is_set():
            if not is_open:
                try:
                    self.source.open()
                except SourceError as exc:
                    self.last_error = str(exc)
                    if self._stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, self.backoff_max_s)
                    continue
                is_open = True
                self.reconnects += 1
            try:
                self._read_until_lost()
                reason = ""
            except SourceError as exc:
                reason = str(exc)
            if self._stop.is_set():
                break
            self.read_errors += 1
            self._set_state(CaptureState.LOST, reason or "source stopped")
            self.source.close()
            is_open = False
            backoff = self.backoff_initial_s
            if self._stop.wait(backoff):
                break
        self._set_state(CaptureState.STOPPED)

    def _read_until_lost(self) -> None:
        same_since: float | None = None
        previous: np.ndarray | None = None
        last_ns: int | None = None
        while not self._stop.is_set():
            pixels = self.source.read()
            captured_ns = time.monotonic_ns()
            if last_ns is not None:
                periods = (captured_ns - last_ns) * self.source.fps / 1e9
                if periods > 1.5:
                    self.frames_missed += round(periods) - 1
            last_ns = captured_ns
            if self.source.detects_freeze:
                # A strided sample is enough: real sensors never repeat it exactly.
                sample = pixels[::16, ::16]
                if previous is not None and np.array_equal(sample, previous):
                    same_since = same_since or time.monotonic()
                    if time.monotonic() - same_since > self.freeze_after_s:
                        self.freezes += 1
                        raise SourceError(f"camera frozen (same frame for {self.freeze_after_s}s)")
                    continue
                same_since = None
                previous = sample.copy()
            pixels = fit_to_size(as_bgr(pixels), self.source.size)
            self.ring.push(Frame(pixels=pixels, index=self.frames_captured,
                                 captured_ns=captured_ns))
            self.frames_captured += 1
            self.rate.tick(captured_ns)
            self._set_state(CaptureState.LIVE)

    def close(self) -> None:
        """Stop the thread and release the camera; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.source.wake()  # a read waiting for its slot returns; the device stays open
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                # Releasing is the only way to unblock a driver stuck in read.
                logger.warning("capture thread did not stop within 5 s (driver blocked in read)")
        self.source.close()
        self.ring.close()

    def __enter__(self) -> WebcamCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
