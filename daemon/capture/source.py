"""The frame-source contract and the registry that maps a spec to a source.

Like pyvirtualcam's backends: each source is a class with ``open``/``read``/``close`` and the
registry maps a spec such as ``webcam:0`` or ``file:clip.mp4`` to one. Tests register fakes the
same way the real sources are registered, at the hardware boundary.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np

logger = logging.getLogger(__name__)


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


# --- registry --------------------------------------------------------------------------------

SourceFactory = Callable[[str, tuple[int, int], float], FrameSource]
_SOURCES: dict[str, SourceFactory] = {}


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Make ``scheme:ARG`` (or bare ``scheme``) create sources with ``factory(arg, size, fps)``."""
    _SOURCES[scheme] = factory


def source_schemes() -> Iterator[str]:
    return iter(sorted(_SOURCES))


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


# The built-in sources import on first use: each module imports this one for the contract.


def _webcam(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    from faceswap_cam.daemon.capture.webcam import webcam_source

    return webcam_source(arg, size, fps)


def _file(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    from faceswap_cam.daemon.capture.file import FileSource

    if not arg:
        raise SourceError("file source needs a path: --source file:PATH")
    return FileSource(arg, size=size, fps=fps)


def _demo(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    from faceswap_cam.daemon.capture.demo import DemoSource

    return DemoSource(size=size, fps=fps)


def _auto(arg: str, size: tuple[int, int], fps: float) -> FrameSource:
    """The first real camera, else the demo scene, so the daemon always has a picture."""
    try:
        return _webcam("auto", size, fps)
    except SourceError as exc:
        logger.warning("%s. Showing the demo scene instead.", exc)
        return _demo("", size, fps)


register_source("webcam", _webcam)
register_source("file", _file)
register_source("demo", _demo)
register_source("auto", _auto)
