"""An in-memory daemon behind the control API (tests/control/test_control.py) and the tray
(tests/control/test_tray.py): a DaemonControl with switches, a reference library and a status
that tests set field by field."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faceswap_cam.daemon.control.status import DaemonStatus, Devices, MicStatus

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLAYOUTS = ("live", "smooth")
FALLBACKS = ("passthrough", "hold", "placeholder")
PREVIEW_URL = "http://127.0.0.1:8765/"
#: anyio's pooled threads, which run the control API's blocking routes and outlive a request.
WORKER_THREAD = "AnyIO worker thread"


def threads_stop_but_workers() -> Iterator[None]:
    """conftest's ``no_thread_leaks`` check, less a control server's pooled worker threads
    (``yield from`` it in a fixture of that name)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate()
              if t not in before and t.is_alive() and t.name != WORKER_THREAD]
    for thread in leaked:
        thread.join(timeout=2.0)
    assert not [t.name for t in leaked if t.is_alive()]


def write_png(path: Path, padding: int) -> Path:
    """An image file as far as the fake daemon is concerned: the PNG signature, then
    ``padding`` zero bytes."""
    path.write_bytes(PNG_MAGIC + b"\0" * padding)
    return path


class InMemoryDaemon:
    """A DaemonControl in memory. Images are "valid" when they start with the PNG signature.
    The status fields below are plain attributes: a test sets them to play a daemon's state."""

    def __init__(self, reference: str = "alice") -> None:
        self._lock = threading.Lock()
        self.swap = True
        self.paused = False
        self.playout = "smooth"
        self.fallback = "passthrough"
        self.library: dict[str, dict[str, Any]] = {
            reference: {"name": reference, "width": 512, "height": 640,
                        "added": "2024-01-01T00:00:00"}}
        self.selected: str | None = reference
        self.stopping = threading.Event()
        self.shutdowns = 0
        self.calls: list[str] = []
        self.state = "running"
        self.engine_state = "running"
        self.engine_error = ""
        self.engine_fix = ""
        self.capture_state = "live"
        self.camera_error = ""
        self.showing = "swapped"
        self.publish_fps: float | None = 30.0
        self.latency_ms: float | None = 80.0
        self.preview_url: str | None = PREVIEW_URL
        self.ai_badge = False
        #: FaceSwap Mic: None while off, else the status it reports.
        self.mic: MicStatus | None = None
        #: Why new references are not checked for one person ("" when they are).
        self.person_check_skipped = ""

    def status(self) -> DaemonStatus:
        """What the real daemon would report in this state."""
        with self._lock:
            return DaemonStatus(
                capture_fps=30.0, capture_state=self.capture_state, process_fps=30.0,
                publish_fps=self.publish_fps, latency_ms=self.latency_ms,
                showing="paused" if self.paused else self.showing,
                engine="debug", engine_state=self.engine_state, engine_error=self.engine_error,
                cadence=1, playout=self.playout, playout_delay_ms=0.0, fallback=self.fallback,
                swap=self.swap, frames_published=100,
                state="paused" if self.paused and self.state == "running" else self.state,
                paused=self.paused, reference=self.selected, reference_error="",
                camera_error=self.camera_error, camera_fix="", engine_fix=self.engine_fix,
                devices=Devices(source="demo", outputs=["null"]),
                preview_url=self.preview_url, api_url=None, ai_badge=self.ai_badge,
                mic=self.mic)

    def snapshot(self) -> dict[str, Any]:
        """What the control calls can change, copied."""
        with self._lock:
            return copy.deepcopy({k: v for k, v in vars(self).items()
                                  if k in ("swap", "paused", "ai_badge", "mic", "playout",
                                           "fallback",
                                           "library", "selected")})

    def set_swap(self, enabled: bool) -> None:
        with self._lock:
            self.calls.append("set_swap")
            self.swap = enabled

    def set_playout(self, mode: str) -> None:
        if mode not in PLAYOUTS:
            raise ValueError(f"unknown playout {mode!r}: allowed {', '.join(PLAYOUTS)}")
        with self._lock:
            self.playout = mode

    def set_fallback(self, mode: str) -> None:
        if mode not in FALLBACKS:
            raise ValueError(f"unknown fallback {mode!r}: allowed {', '.join(FALLBACKS)}")
        with self._lock:
            self.fallback = mode

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self.paused = paused

    def set_mic(self, enabled: bool) -> None:
        with self._lock:
            self.mic = MicStatus(state="running", device="FaceSwap Mic", input="default",
                                 delay_ms=0.0, target_ms=0.0, av_offset_ms=None, detail="",
                                 fix="") if enabled else None

    def set_ai_badge(self, enabled: bool) -> None:
        with self._lock:
            self.ai_badge = enabled

    def list_references(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry, selected=name == self.selected)
                    for name, entry in sorted(self.library.items())]

    def add_reference(self, name: str | None, data: bytes) -> dict[str, Any]:
        if not data.startswith(PNG_MAGIC):
            raise ValueError("not a PNG or JPEG image")
        with self._lock:
            name = name or f"reference-{len(self.library) + 1}"
            if name in self.library:
                raise ValueError(f"a reference named {name!r} exists already")
            entry = {"name": name, "width": 64, "height": 64, "added": "2024-02-02T00:00:00"}
            self.library[name] = entry
            return dict(entry, selected=False, person_check_skipped=self.person_check_skipped)

    def select_reference(self, name: str) -> None:
        with self._lock:
            if name not in self.library:
                raise KeyError(f"no reference named {name!r}")
            self.selected = name

    def remove_reference(self, name: str) -> None:
        with self._lock:
            if name not in self.library:
                raise KeyError(f"no reference named {name!r}")
            del self.library[name]
            if self.selected == name:
                self.selected = None

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.stopping.set()
