"""What the publisher shows at each tick: a swapped frame that is due, or the fallback."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from faceswap_cam.daemon.config import Fallback, Playout
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.pipeline.processor import SwappedFrame
from faceswap_cam.daemon.states import Showing

#: ``smooth`` playout lowers its delay 1 ms a tick (playing 3 % fast), which nobody notices;
#: a delay this much above what the engine has needed for ``SNAP_MEMORY_S`` (after a stall)
#: would take minutes that way, so it drops at once and the picture skips ahead. The long
#: memory keeps a slow call that recurs (a chain restart every few seconds) from making the
#: delay jump up and down with it. (The engine's warm-up call is left out from the start:
#: ``SwappedFrame.warm_up``.)
SNAP_DOWN_S = 0.3
SNAP_MEMORY_S = 20.0


@dataclass(frozen=True, slots=True)
class Choice:
    showing: Showing
    frame: Frame | None  # None only for PLACEHOLDER


class OutputSelector:
    """Chooses the frame for each tick. Used by the publisher thread only.

    ``live``: the newest swapped frame that has arrived, valid until the next batch is
    expected (one batch period) plus ``grace_s``.
    ``smooth``: each swapped frame is due at its capture time plus a playout delay, so the
    frames play at the cadence they were captured; the delay adapts to the worst recent
    lateness (rising at once, falling slowly, or at once to the worst lateness of the last
    ``SNAP_MEMORY_S`` when it is ``SNAP_DOWN_S`` above that) and is reported.
    Either way, a frame shown is never older than the one shown before it, and when no swapped
    frame is valid the fallback decides.
    """

    def __init__(self, *, fallback: Fallback, playout: Playout, fps: float, grace_s: float = 0.5,
                 delay_window_s: float = 3.0) -> None:
        self.fallback = fallback
        self.playout = playout
        self.fps = fps
        self.grace_ns = int(grace_s * 1e9)
        self.delay_window_ns = int(delay_window_s * 1e9)
        self.snap_down_ns = int(SNAP_DOWN_S * 1e9)
        self.snap_memory_ns = int(SNAP_MEMORY_S * 1e9)
        self.playout_delay_ns = 0
        # (arrived_ns, lateness_ns) of each swapped frame over SNAP_MEMORY_S, at up to 60 fps.
        self._lateness: deque[tuple[int, int]] = deque(maxlen=int(60 * SNAP_MEMORY_S))
        self._newest_seen = -1
        #: Whether a batch that was not the engine's warm-up has set the delay yet.
        self._paced = False
        self._shown: SwappedFrame | None = None

    @property
    def playout_delay_ms(self) -> float:
        return self.playout_delay_ns / 1e6

    def choose(self, now_ns: int, live: Frame | None, swapped: Sequence[SwappedFrame],
               *, batch_period_s: float, swap_enabled: bool = True) -> Choice:
        if not swap_enabled:
            self._shown = None
            return self._passthrough(live)
        candidate = (self._choose_live(now_ns, swapped, batch_period_s)
                     if self.playout is Playout.LIVE else self._choose_smooth(now_ns, swapped))
        if candidate is not None:
            self._shown = candidate
            return Choice(Showing.SWAPPED, candidate.frame)
        if self.fallback is Fallback.PASSTHROUGH:
            return self._passthrough(live)
        if self.fallback is Fallback.HOLD and self._shown is not None:
            return Choice(Showing.HELD, self._shown.frame)
        # PLACEHOLDER, or HOLD before any swapped frame: never reveal the real face.
        return Choice(Showing.PLACEHOLDER, None)

    @staticmethod
    def _passthrough(live: Frame | None) -> Choice:
        return Choice(Showing.PASSTHROUGH, live) if live is not None \
            else Choice(Showing.PLACEHOLDER, None)

    def _not_older(self, candidate: SwappedFrame) -> bool:
        return self._shown is None or candidate.frame.index >= self._shown.frame.index

    def _choose_live(self, now_ns: int, swapped: Sequence[SwappedFrame],
                     batch_period_s: float) -> SwappedFrame | None:
        if not swapped:
            return None
        newest = swapped[-1]
        valid_for = int(batch_period_s * 1e9) + self.grace_ns
        if now_ns - newest.arrived_ns > valid_for or not self._not_older(newest):
            return None
        return newest

    def _choose_smooth(self, now_ns: int, swapped: Sequence[SwappedFrame]) -> SwappedFrame | None:
        self._update_delay(now_ns, swapped)
        delay = self.playout_delay_ns
        due = None
        for item in reversed(swapped):
            if item.warm_up and not self._paced:
                # No delay yet to play it at: shown now, it would be followed by the camera
                # and then by itself again once the next batch sets the delay.
                continue
            if item.frame.captured_ns + delay <= now_ns and item.arrived_ns <= now_ns:
                due = item
                break
        if due is None:
            return None
        # The next frame should become due one cadence step later; past that (plus grace)
        # the engine has stalled and this frame is stale.
        step_ns = int(due.cadence * 1e9 / self.fps)
        if now_ns - (due.frame.captured_ns + delay) > step_ns + self.grace_ns:
            return None
        if not self._not_older(due):
            return self._shown  # the delay grew: hold rather than step back in time
        return due

    def _update_delay(self, now_ns: int, swapped: Sequence[SwappedFrame]) -> None:
        for item in swapped:
            if item.frame.index > self._newest_seen:
                self._newest_seen = item.frame.index
                if not item.warm_up:
                    self._paced = True
                    self._lateness.append((item.arrived_ns,
                                           item.arrived_ns - item.frame.captured_ns))
        while self._lateness and now_ns - self._lateness[0][0] > self.snap_memory_ns:
            self._lateness.popleft()
        recent = [late for arrived, late in self._lateness
                  if now_ns - arrived <= self.delay_window_ns]
        if not recent:
            return
        tick_ns = int(1e9 / self.fps)
        target = max(recent) + tick_ns
        floor = max(late for _, late in self._lateness) + tick_ns
        if target > self.playout_delay_ns:
            self.playout_delay_ns = target
        elif self.playout_delay_ns - floor > self.snap_down_ns:
            self.playout_delay_ns = floor
        else:
            # Fall slowly (1 ms per tick) so the delay does not saw-tooth with each batch.
            self.playout_delay_ns = max(target, self.playout_delay_ns - 1_000_000)
