"""The sink contract, the per-sink worker thread and the registry that creates sinks by scheme.

The publisher never calls a sink directly. Each sink has a :class:`SinkWorker` with its own
thread and a small bounded slot queue: the publisher drops its frame there and moves on, and a
slow sink loses its oldest pending frame (counted) instead of delaying the clock.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

StatsProvider = Callable[[], dict[str, Any]]


class SinkError(RuntimeError):
    """A sink cannot be opened or written. The message says what happened; ``fix`` says what
    the user can do (the status shows the two apart)."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Tick:
    """What the publisher showed at one clock tick, handed to every sink with the pixels."""

    number: int
    kind: str  # "swapped" | "passthrough" | "held" | "placeholder"
    published_ns: int
    latency_ms: float | None
    repeat: int = 1  # >1 when the clock missed ticks: a recording writes the frame again
    stats: dict[str, Any] = field(default_factory=dict)


class Sink(ABC):
    """One output. ``open`` runs in the starting thread (so failures stop the start);
    ``send`` runs only in the sink's worker thread; ``close`` is idempotent."""

    #: How many frames may wait for this sink; 1 = always the newest (live outputs).
    slots: int = 1
    #: Draw the stats overlay on frames for this sink.
    overlay: bool = False
    #: Sent from the publisher's own thread, with no worker: only for a ``send`` that can
    #: never block or take time (``null``), so a thread hop would be pure overhead.
    inline: bool = False

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def open(self, size: tuple[int, int], fps: float) -> None: ...

    @abstractmethod
    def send(self, pixels: np.ndarray, tick: Tick) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class SinkWorker:
    """The thread and bounded queue in front of one sink.

    Drop policy: when ``sink.slots`` frames are already waiting, the oldest is dropped and
    counted. A sink that raises is closed and marked failed (``error``, and ``fix`` when it
    said one: the status and the stats line report both); the other outputs go on.
    """

    def __init__(self, sink: Sink, draw_overlay: Callable[[np.ndarray, Tick], np.ndarray]
                 ) -> None:
        self.sink = sink
        self._draw_overlay = draw_overlay
        self._pending: deque[tuple[np.ndarray, Tick]] = deque(maxlen=max(1, sink.slots))
        self._cond = threading.Condition()
        self._stopping = False
        self.dropped = 0
        self.sent = 0
        self.error = ""
        self.fix = ""
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.description}",
                                        daemon=True)

    def start(self) -> None:
        if not self.sink.inline:
            self._thread.start()

    def offer(self, pixels: np.ndarray, tick: Tick) -> None:
        if self.sink.inline:
            self._send(pixels, tick)
            return
        with self._cond:
            if self.error or self._stopping:
                return
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append((pixels, tick))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return  # stopping, and everything offered has been sent
                pixels, tick = self._pending.popleft()
            if not self._send(pixels, tick):
                return

    def _send(self, pixels: np.ndarray, tick: Tick) -> bool:
        if self.error:
            return False
        try:
            if self.sink.overlay:
                pixels = self._draw_overlay(pixels, tick)
            self.sink.send(pixels, tick)
            self.sent += 1
        except Exception as exc:
            self._failed(exc)
            with self._cond:
                self._pending.clear()
            return False
        return True

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, SinkError):
            # The sink said what happened and what to do: no traceback to add.
            logger.error("output %s failed; the other outputs go on: %s%s",
                         self.sink.description, exc, f" (fix: {exc.fix})" if exc.fix else "")
        else:
            logger.exception("output %s failed; the other outputs go on", self.sink.description)
        with self._cond:
            if not self.error:
                self.error = f"{type(exc).__name__}: {exc}"
                self.fix = exc.fix if isinstance(exc, SinkError) else ""

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending (bounded by ``timeout``), then close the sink; idempotent."""
        with self._cond:
            already = self._stopping
            self._stopping = True
            self._cond.notify()
        if already:
            return
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Closing a device while its thread still writes to it can crash native code.
                logger.warning("output %s did not finish within %.0f s; left open",
                               self.sink.description, timeout)
                return
        try:
            self.sink.close()
        except Exception as exc:
            # Closing can be the write that fails (a recording's last fragment): reported too.
            self._failed(exc)


# --- registry --------------------------------------------------------------------------------

SinkFactory = Callable[[str, "SinkContext"], Sink]


@dataclass
class SinkContext:
    """What a sink factory may need from the configuration."""

    options: dict[str, Any] = field(default_factory=dict)
    stats: StatsProvider = dict


_SINKS: dict[str, SinkFactory] = {}


def register_sink(scheme: str, factory: SinkFactory) -> None:
    """Make ``scheme[:ARG]`` create sinks with ``factory(arg, context)``."""
    _SINKS[scheme] = factory


def sink_schemes() -> Iterator[str]:
    return iter(sorted(_SINKS))


def create_sink(spec: str, context: SinkContext) -> Sink:
    scheme, _, arg = spec.partition(":")
    factory = _SINKS.get(scheme)
    if factory is None:
        raise SinkError(f"unknown sink {spec!r}; use one of: "
                        + ", ".join("file:PATH" if s == "file" else s for s in sink_schemes()))
    return factory(arg, context)


# The built-in sinks import on first use: each module imports this one for the contract.


def _null(arg: str, context: SinkContext) -> Sink:
    from faceswap_cam.daemon.outputs.null import NullSink

    return NullSink()


def _file(arg: str, context: SinkContext) -> Sink:
    from faceswap_cam.daemon.outputs.file import FileSink

    if not arg:
        raise SinkError("file sink needs a path: --sink file:PATH.mp4")
    return FileSink(arg)


def _virtualcam(arg: str, context: SinkContext) -> Sink:
    from faceswap_cam.daemon.outputs.virtualcam import VirtualCameraSink

    return VirtualCameraSink.from_context(arg, context)


def _preview(arg: str, context: SinkContext) -> Sink:
    from faceswap_cam.daemon.outputs.preview import PreviewSink

    return PreviewSink.from_context(arg, context)


register_sink("null", _null)
register_sink("file", _file)
register_sink("virtualcam", _virtualcam)
register_sink("preview", _preview)
