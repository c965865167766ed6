"""The daemon's side of FaceSwap Mic: one owner for the delay tracker and the mic service.

The publisher reports every frame it shows (``observe``: cheap, every tick, whether or not
the mic is on, so the delay is right the moment it is switched on); the control API and the
tray switch the mic on and off while the daemon runs. ``--mic off`` (the default) loads
nothing: the sound libraries are imported only when the mic starts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from faceswap_cam.daemon.audio.delay_tracker import AudioDelayTracker

logger = logging.getLogger(__name__)

OFF = "off"
AUTO = "auto"


class MicController:
    """``choice``: ``off``, ``auto`` (the system's default microphone) or a device name."""

    def __init__(self, choice: str, max_delay_s: float) -> None:
        self.tracker = AudioDelayTracker(max_delay_s)
        self.max_delay_s = max_delay_s
        # What "on" means when the tray switches a mic that started off.
        self.input_name: str | None = None if choice in (OFF, AUTO) else choice
        self._wanted_at_start = choice != OFF
        self._mic: Any = None  # a FaceSwapMic while on
        self._lock = threading.Lock()
        self._closed = False

    def observe(self, now_ns: int, age_ns: int | None, swapped: bool) -> None:
        self.tracker.observe(now_ns, age_ns, swapped)

    def start(self) -> None:
        """Start the mic if it was asked for; a failure to start is a status, not an error
        (the camera never waits for the sound system)."""
        if self._wanted_at_start:
            self.set_enabled(True)

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            if self._closed:
                return
            if enabled and self._mic is None:
                from faceswap_cam.daemon.audio.mic import FaceSwapMic, default_backend

                self._mic = FaceSwapMic(default_backend, self.tracker, self.input_name,
                                        self.max_delay_s)
                self._mic.start()
                logger.info("FaceSwap Mic on (input: %s)", self.input_name or "default")
                return
            if enabled:
                return
            mic, self._mic = self._mic, None
        if mic is not None:
            mic.close()  # outside the lock: it joins the mic's thread
            logger.info("FaceSwap Mic off")

    def status(self) -> dict[str, Any] | None:
        """The mic's status (see ``FaceSwapMic.status``), None while it is off."""
        mic = self._mic
        return None if mic is None else mic.status()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            mic, self._mic = self._mic, None
        if mic is not None:
            mic.close()

