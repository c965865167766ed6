"""How late the FaceSwap Mic should be: the age of the video the camera shows, smoothed.

The publisher thread reports every frame it publishes (``observe``, 30 times a second); the
mic thread asks for the delay to apply (``target_delay_s``, every 10 ms block). The answer is
steadier than the video so that the delay line is not re-faded constantly:

* swapped frames: the centre of their ages over the last 1.5 s (the last 0.5 s while those
  are steady), halfway between the 10th and the 90th percentile, moved only when it differs
  by more than the 25 ms deadband (8 ms while the ages are steady). In ``live``
  playout the age is a saw-tooth (a batch's newest frame is held, ageing, until the next
  batch): its centre is where the lips are on average, and it does not swing with the phase
  of the window as a short median does (which re-faded the voice several times a second). In
  ``smooth`` playout the age is nearly constant and the centre is that age. One late batch
  (under a tenth of the window) does not count;
* passthrough frames (the camera, shown when no swapped frame is due): the delay drops to
  their age (near zero live; ``smooth`` playout shows them at its delay until it lets go of
  it) only after passthrough lasted 1 s, because the gap between two batches must not make
  the audio skip back and forth;
* swapped frames after passthrough: the delay rises to their age after 3 of them in a row.

Cards with no camera frame behind them (``age_ns is None``) change nothing. Times are
``time.monotonic_ns()``; every method takes ``now_ns`` so tests need no sleeps. Thread-safe,
one short lock; ``observe`` is O(1), the readers sort a bounded window (at most 256
frames) only when a frame came since they last asked.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

WINDOW_S = 1.5
#: While the ages of the last half second stay within two deadbands, they alone decide, and
#: the voice is held closer to them: a steady video delay (``smooth`` playout) rarely moves,
#: so a small deadband costs few fades there, and a wide one would be a lasting offset.
STEADY_WINDOW_S = 0.5
STEADY_DEADBAND_S = 0.008
DEADBAND_S = 0.025
#: The centre of the ages: halfway between these percentiles (robust to a late batch).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 0.9
PASSTHROUGH_HOLD_S = 1.0
RISE_FRAMES = 3
#: Bound on each window whatever the frame rate (1.5 s at 30 fps is 45 frames).
MAX_WINDOW_FRAMES = 256

_SWAPPED = "swapped"
_PASSTHROUGH = "passthrough"
_NONE = "none"


class _AgeWindow:
    """The ages of the last ``WINDOW_S`` of one kind of frame, and their centre: over the
    last ``STEADY_WINDOW_S`` alone while the ages there are steady (within ``steady_ns``:
    ``smooth`` playout, whose delay then follows a changing engine without a long lag), over
    the whole window otherwise (``live`` playout's saw-tooth)."""

    def __init__(self, window_ns: int, steady_ns: int) -> None:
        self._window_ns = window_ns
        self._steady_ns = steady_ns
        self._frames: deque[tuple[int, int]] = deque(maxlen=MAX_WINDOW_FRAMES)
        # Worked out when asked (the mic thread), not on every frame the publisher adds: the
        # publisher's tick stays O(1), and with the mic off nothing is sorted at all.
        self._centre: tuple[float, bool] | None = None

    def clear(self) -> None:
        self._frames.clear()
        self._centre = None

    def add(self, now_ns: int, age_ns: int) -> None:
        frames = self._frames
        frames.append((now_ns, age_ns))
        # Relative to the newest frame of this kind, so the window keeps the last ages seen
        # while the other kind is shown.
        while now_ns - frames[0][0] > self._window_ns:
            frames.popleft()
        self._centre = None

    def centre(self) -> tuple[float, bool] | None:
        """(the centre of the ages in ns, whether the last half second alone decided it
        because the ages there are steady); None before any frame."""
        frames = self._frames
        if self._centre is None and frames:
            steady_since = frames[-1][0] - round(STEADY_WINDOW_S * 1e9)
            recent = sorted(age for when, age in frames if when >= steady_since)
            low = _percentile(recent, LOW_PERCENTILE)
            high = _percentile(recent, HIGH_PERCENTILE)
            steady = high - low <= self._steady_ns
            if not steady:
                ages = sorted(age for _, age in frames)
                low = _percentile(ages, LOW_PERCENTILE)
                high = _percentile(ages, HIGH_PERCENTILE)
            self._centre = ((low + high) / 2, steady)
        return self._centre


def _percentile(ordered: list[int], fraction: float) -> int:
    """The nearest-rank percentile of a sorted, non-empty list: a step in the ages moves it
    once, where interpolating between ranks would walk it over in several fades."""
    return ordered[round(fraction * (len(ordered) - 1))]


class AudioDelayTracker:
    def __init__(
        self,
        max_delay_s: float = 8.0,
        *,
        window_s: float = WINDOW_S,
        deadband_s: float = DEADBAND_S,
        passthrough_hold_s: float = PASSTHROUGH_HOLD_S,
        rise_frames: int = RISE_FRAMES,
    ) -> None:
        if max_delay_s < 0 or rise_frames < 1:
            raise ValueError("max_delay_s must be >= 0 and rise_frames >= 1")
        self._max_s = max_delay_s
        self._deadband_s = deadband_s
        self._hold_ns = round(passthrough_hold_s * 1e9)
        self._rise_frames = rise_frames
        self._lock = threading.Lock()
        steady_ns = round(2 * deadband_s * 1e9)
        self._swapped = _AgeWindow(round(window_s * 1e9), steady_ns)
        self._passthrough = _AgeWindow(round(window_s * 1e9), steady_ns)
        self._following = _NONE  # which kind of frame the audio follows
        self._showing = _NONE  # what the last published frame was
        self._last_observed_ns: int | None = None
        self._swapped_run = 0
        self._passthrough_since_ns: int | None = None
        self._target_s = 0.0
        self._target_follows = _NONE

    def observe(self, now_ns: int, age_ns: int | None, swapped: bool) -> None:
        """One published frame: ``age_ns`` is how old its camera frame is (None: a card)."""
        with self._lock:
            self._last_observed_ns = now_ns
            if age_ns is None:
                self._showing = _NONE
                return
            if swapped:
                self._showing = _SWAPPED
                if self._following != _SWAPPED and self._swapped_run == 0:
                    # Swapped again after the audio went back to the camera: the ages from
                    # before are stale, the delay rises to the new ones.
                    self._swapped.clear()
                self._swapped.add(now_ns, age_ns)
                self._swapped_run += 1
                self._passthrough_since_ns = None
                if self._following != _SWAPPED and self._swapped_run >= self._rise_frames:
                    self._following = _SWAPPED
            else:
                self._showing = _PASSTHROUGH
                self._passthrough.add(now_ns, age_ns)
                self._swapped_run = 0
                if self._passthrough_since_ns is None:
                    self._passthrough_since_ns = now_ns
                if self._following == _NONE:
                    self._following = _PASSTHROUGH  # nothing to hold on to yet

    def target_delay_s(self, now_ns: int | None = None) -> float:
        """The delay the audio should have now, in seconds, within [0, max_delay_s]."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            since = self._passthrough_since_ns
            if self._following == _SWAPPED and since is not None and now - since >= self._hold_ns:
                self._following = _PASSTHROUGH
            window = self._swapped if self._following == _SWAPPED else self._passthrough
            centre = window.centre()
            if centre is None:
                return self._target_s
            centre_ns, steady = centre
            wanted = min(max(centre_ns / 1e9, 0.0), self._max_s)
            if (
                self._following != self._target_follows
                or abs(wanted - self._target_s) >= (
                    STEADY_DEADBAND_S if steady else self._deadband_s)
            ):
                self._target_s = wanted
                self._target_follows = self._following
            return self._target_s

    def video_age_s(self, now_ns: int | None = None) -> float | None:
        """The smoothed age of what the camera shows now (None: a card, or nothing yet, or
        nothing published for over a second)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            return self._video_age_locked(now)

    def _video_age_locked(self, now: int) -> float | None:
        last = self._last_observed_ns
        if last is None or now - last > self._hold_ns:
            return None
        if self._showing == _SWAPPED:
            centre = self._swapped.centre()
        elif self._showing == _PASSTHROUGH:
            centre = self._passthrough.centre()
        else:
            return None
        return None if centre is None else centre[0] / 1e9

    def showing(self, now_ns: int | None = None) -> str:
        """What the camera shows: "swapped", "passthrough" or "none" (a card, or nothing
        published for a second)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            last = self._last_observed_ns
            if last is None or now - last > self._hold_ns:
                return _NONE
            return self._showing

    def snapshot(self, now_ns: int | None = None) -> dict[str, Any]:
        """For the status: ``target_ms``, ``video_age_ms`` (None when no camera frame is
        shown), ``showing`` and ``following`` (which kind of frame the audio follows)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        target = self.target_delay_s(now)
        age = self.video_age_s(now)
        with self._lock:
            following = self._following
        return {
            "target_ms": round(target * 1000, 1),
            "video_age_ms": None if age is None else round(age * 1000, 1),
            "showing": self.showing(now),
            "following": following,
        }
