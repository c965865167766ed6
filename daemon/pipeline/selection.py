"""What the publisher shows at each tick: a swapped frame that is due, or the fallback."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from faceswap_cam.daemon.config import Fallback, Playout
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.pipeline.processor import SwappedFrame
from faceswap_cam.daemon.states import Showing

logger = logging.getLogger(__name__)

#: ``smooth`` playout lowers its delay 1 ms a tick (playing 3 % fast), which nobody notices;
#: a delay this much above what the engine has needed for ``SNAP_MEMORY_S`` (after a stall)
#: would take minutes that way, so it drops at once and the picture skips ahead. The long
#: memory keeps a slow call that recurs (a chain restart every few seconds) from making the
#: delay jump up and down with it. (The engine's warm-up call is left out from the start:
#: ``SwappedFrame.warm_up``.)
SNAP_DOWN_S = 0.3
SNAP_MEMORY_S = 20.0
#: ``smooth`` playout shows the passthrough fallback at its delay too, so the picture never
#: jumps in time when swapped frames take over or hand back (nobody in view, a slow call): it
#: freezes while the delay grows and skips while it shrinks. After this long without a swapped
#: frame (the person gone, the engine failing) the delay is let go and the camera is live again.
RELEASE_S = 10.0
#: The camera frames kept for the delayed passthrough are those from the one due now on, and
#: never more than this many (about 165 MB at 720p): at 30 fps that is 2 s of every frame; a
#: longer delay (a slow GPU, whole frames, the lateness a stall leaves for a while) keeps
#: them spaced out over it, the camera then playing at fewer frames a second.
MAX_DELAYED_FRAMES = 60


@dataclass(frozen=True, slots=True)
class Choice:
    showing: Showing
    frame: Frame | None  # None only for PLACEHOLDER


class OutputSelector:
    """Chooses the frame for each tick. Used by the publisher thread only.

    ``live``: the newest swapped frame that has arrived, valid until the next batch is
    expected (one batch period) plus ``grace_s``; the passthrough fallback is the live camera.
    ``smooth``: each swapped frame is due at its capture time plus a playout delay, so the
    frames play at the cadence they were captured; the delay adapts to the worst recent
    lateness (rising at once, falling slowly, or at once to the worst lateness of the last
    ``SNAP_MEMORY_S`` when it is ``SNAP_DOWN_S`` above that) and is reported. The passthrough
    fallback plays the camera at the same delay, so the picture is one timeline: a frame shown
    is never older than any frame shown before it. The delay is let go (the camera live again)
    after ``RELEASE_S`` without a swapped frame, and when the swap is turned off.
    In ``live`` a swapped frame shown is never older than the swapped one before it. When no
    swapped frame is valid the fallback decides.
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
        self.release_ns = int(RELEASE_S * 1e9)
        self.playout_delay_ns = 0
        # (arrived_ns, lateness_ns) of each swapped frame over SNAP_MEMORY_S, at up to 60 fps.
        self._lateness: deque[tuple[int, int]] = deque(maxlen=int(60 * SNAP_MEMORY_S))
        self._newest_seen = -1
        self._newest_arrived_ns = 0
        #: When the swap was last turned on: frames that arrived before (a call that was
        #: under way as it was turned off) say nothing of the delay now.
        self._on_since_ns: int | None = 0
        #: Whether a batch that was not the engine's warm-up has set the delay yet.
        self._paced = False
        #: The last swapped frame shown (``hold``, and ``live``'s order).
        self._shown: SwappedFrame | None = None
        #: The last choice that showed a frame, and the newest frame index shown (``smooth``).
        self._last: Choice | None = None
        self._shown_index = -1
        #: Camera frames as the ticks saw them, from the one the delayed passthrough shows on.
        self._camera: deque[Frame] = deque()

    @property
    def playout_delay_ms(self) -> float:
        return self.playout_delay_ns / 1e6

    @property
    def delayed_camera_frames(self) -> int:
        """Camera frames held for the delayed passthrough (what it costs in memory)."""
        return len(self._camera)

    def choose(self, now_ns: int, live: Frame | None, swapped: Sequence[SwappedFrame],
               *, batch_period_s: float, swap_enabled: bool = True) -> Choice:
        # Read once: the control thread may change it during a tick.
        fallback = self.fallback
        if not swap_enabled:
            self._shown = None
            self._let_go()
            self._on_since_ns = None
            return self._record(self._passthrough(live))
        if self._on_since_ns is None:
            self._on_since_ns = now_ns
        if self.playout is Playout.SMOOTH:
            return self._smooth(now_ns, live, swapped, fallback)
        self._camera.clear()
        candidate = self._choose_live(now_ns, swapped, batch_period_s)
        if candidate is not None:
            self._shown = candidate
            return self._record(Choice(Showing.SWAPPED, candidate.frame))
        if fallback is Fallback.PASSTHROUGH:
            return self._record(self._passthrough(live))
        return self._no_frame(fallback)

    def _smooth(self, now_ns: int, live: Frame | None, swapped: Sequence[SwappedFrame],
                fallback: Fallback) -> Choice:
        self._update_delay(now_ns, swapped)
        # Kept for the passthrough fallback alone: a switch to it from another fallback (or
        # from live playout) starts from the live camera, which then holds for the delay.
        self._keep_camera(now_ns, live if fallback is Fallback.PASSTHROUGH else None)
        candidate = self._choose_smooth(now_ns, swapped)
        if candidate is not None:
            choice = Choice(Showing.SWAPPED, candidate.frame)
        elif fallback is Fallback.PASSTHROUGH:
            # The camera frame captured a playout delay ago (the live one while there is no
            # delay).
            choice = self._passthrough(self._camera[0] if self._camera else live)
        else:
            choice = self._no_frame(fallback)
        if choice.frame is not None and choice.frame.index < self._shown_index \
                and self._last is not None:
            # The delay grew (or the fallback changed to hold): hold what is on screen rather
            # than step back in time, unless that is the camera and the fallback hides it.
            if self._last.showing is Showing.PASSTHROUGH \
                    and fallback is not Fallback.PASSTHROUGH:
                return Choice(Showing.PLACEHOLDER, None)
            return self._last
        if candidate is not None:
            self._shown = candidate
        return self._record(choice)

    def _no_frame(self, fallback: Fallback) -> Choice:
        if fallback is Fallback.HOLD and self._shown is not None:
            return Choice(Showing.HELD, self._shown.frame)
        # PLACEHOLDER, or HOLD before any swapped frame: never reveal the real face.
        return Choice(Showing.PLACEHOLDER, None)

    @staticmethod
    def _passthrough(live: Frame | None) -> Choice:
        return Choice(Showing.PASSTHROUGH, live) if live is not None \
            else Choice(Showing.PLACEHOLDER, None)

    def _record(self, choice: Choice) -> Choice:
        if choice.frame is not None:
            self._last = choice
            self._shown_index = max(self._shown_index, choice.frame.index)
        return choice

    def _keep_camera(self, now_ns: int, live: Frame | None) -> None:
        """Keep the camera frames from the one due now (captured a playout delay ago) on: the
        older ones are never needed again. At most :data:`MAX_DELAYED_FRAMES`, spread over
        the delay. ``live`` None: keep none."""
        if live is None:
            self._camera.clear()
            return
        if not self._camera or (live.index > self._camera[-1].index and (
                live.captured_ns - self._camera[-1].captured_ns
                >= self.playout_delay_ns // MAX_DELAYED_FRAMES)):
            self._camera.append(live)
        if len(self._camera) > MAX_DELAYED_FRAMES:
            # The delay grew past what was kept at its old spacing: halve the frames rather
            # than drop the oldest, which the delay may reach back to.
            self._camera = deque(itertools.islice(self._camera, 0, None, 2))
        due_by = now_ns - self.playout_delay_ns
        while len(self._camera) > 1 and self._camera[1].captured_ns <= due_by:
            self._camera.popleft()

    def _let_go(self) -> None:
        """No delay: the camera is shown live, and the next swapped frames set a new one."""
        self.playout_delay_ns = 0
        self._lateness.clear()
        self._paced = False
        self._camera.clear()

    def _not_older(self, candidate: SwappedFrame) -> bool:
        return self._shown is None or candidate.frame.index >= self._shown.frame.index

    def _choose_live(self, now_ns: int, swapped: Sequence[SwappedFrame],
                     batch_period_s: float) -> SwappedFrame | None:
        if not swapped:
            return None
        newest = swapped[-1]
        valid_for = int(batch_period_s * 1e9) + self.grace_ns
        if newest.untouched or now_ns - newest.arrived_ns > valid_for \
                or not self._not_older(newest):
            return None
        return newest

    def _choose_smooth(self, now_ns: int, swapped: Sequence[SwappedFrame]) -> SwappedFrame | None:
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
        if due is None or due.untouched:
            return None  # an untouched batch: nothing to hold out for
        # The next frame should become due one cadence step later; past that (plus grace)
        # the engine has stalled and this frame is stale.
        step_ns = int(due.cadence * 1e9 / self.fps)
        if now_ns - (due.frame.captured_ns + delay) > step_ns + self.grace_ns:
            return None
        return due

    def _update_delay(self, now_ns: int, swapped: Sequence[SwappedFrame]) -> None:
        for item in swapped:
            if item.frame.index > self._newest_seen:
                self._newest_seen = item.frame.index
                if item.untouched or item.arrived_ns < (self._on_since_ns or 0):
                    continue
                self._newest_arrived_ns = item.arrived_ns
                if not item.warm_up:
                    self._paced = True
                    self._lateness.append((item.arrived_ns,
                                           item.arrived_ns - item.frame.captured_ns))
        if self.playout_delay_ns and now_ns - self._newest_arrived_ns > self.release_ns:
            logger.debug("no swapped frame for %.0f s: the camera is shown live again",
                         RELEASE_S)
            self._let_go()
            return
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
