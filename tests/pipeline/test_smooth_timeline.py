"""``smooth`` playout keeps one timeline: the passthrough fallback plays the camera at the
swapped frames' delay, so the picture never steps back in time when swapped frames take over
from the camera or hand back to it (nobody in view, a slow call), and the camera is live again
once the swap has stopped for good or is turned off.

A simulated camera (frame n captured at n / 30 s) and an engine that takes every 3rd frame, 8 a
batch, each batch back ``BATCH_S`` after its last frame (the plan's live preset on one H200).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from faceswap_cam.daemon.config import Fallback, Playout
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.pipeline.processor import SwappedFrame
from faceswap_cam.daemon.pipeline.selection import (
    MAX_DELAYED_FRAMES,
    RELEASE_S,
    OutputSelector,
)
from faceswap_cam.daemon.states import Showing

FPS = 30
TICK_NS = round(1e9 / FPS)
CADENCE = 3
NEW_FRAMES = 8
BATCH_S = 0.7
PIXELS = np.zeros((2, 2, 3), np.uint8)


def camera(index: int) -> Frame:
    return Frame(PIXELS, index, index * TICK_NS)


@dataclass
class Shown:
    showing: Showing
    index: int  # -1: no camera frame behind it (a card)
    age_ms: float
    delay_ms: float
    camera_frames_held: int


@dataclass
class Run:
    ticks: list[Shown] = field(default_factory=list)
    most_camera_frames_held: int = 0

    def indices(self) -> list[int]:
        return [tick.index for tick in self.ticks if tick.index >= 0]

    def at(self, seconds: float) -> Shown:
        return self.ticks[round(seconds * FPS)]


def simulate(seconds: float, *, nobody: range = range(0), slow: dict[int, float] | None = None,
             warm_up: tuple[int, ...] = (0,), skipped: range = range(0),
             swap_off: range = range(0),
             live_playout: range = range(0), batch_s: float = BATCH_S,
             fallback: Fallback = Fallback.PASSTHROUGH,
             fallback_at: dict[int, Fallback] | None = None) -> Run:
    """Tick the selector for ``seconds``. Batches numbered in ``nobody`` swap nothing, those in
    ``slow`` come back that many seconds later (earlier if negative), those in ``warm_up`` are
    an engine's first call after it loaded, those in ``skipped`` never reach the engine (the
    processor skips ahead after a slow call), and ticks in ``swap_off`` have the swap off
    (the engine is not fed their frames), and in ticks in ``live_playout`` the playout is
    ``live``. Each batch is back ``batch_s`` after its last frame; ``fallback_at`` changes the
    fallback at those ticks."""
    slow = slow or {}
    batch_frames = CADENCE * NEW_FRAMES
    items: list[SwappedFrame] = []
    for batch in range(int(seconds * FPS) // batch_frames + 1):
        indices = [batch * batch_frames + CADENCE * n for n in range(NEW_FRAMES)]
        if batch in skipped or any(index in swap_off for index in indices):
            continue
        if batch in nobody:
            # The detector found nobody: back at once, marked from the batch's first frame.
            items.append(SwappedFrame(camera(indices[0]), indices[-1] * TICK_NS + 50_000_000,
                                      CADENCE, untouched=True))
            continue
        arrived_ns = indices[-1] * TICK_NS + int((batch_s + slow.get(batch, 0.0)) * 1e9)
        items += [SwappedFrame(camera(i), arrived_ns, CADENCE, warm_up=batch in warm_up)
                  for i in indices]
    selector = OutputSelector(fallback=fallback, playout=Playout.SMOOTH, fps=FPS)
    run = Run()
    for tick in range(int(seconds * FPS)):
        now_ns = tick * TICK_NS + 1_000_000  # just after this tick's camera frame
        selector.playout = Playout.LIVE if tick in live_playout else Playout.SMOOTH
        selector.fallback = (fallback_at or {}).get(tick, selector.fallback)
        arrived = [item for item in items if item.arrived_ns <= now_ns][-120:]
        choice = selector.choose(now_ns, camera(tick), arrived, batch_period_s=0.8,
                                 swap_enabled=tick not in swap_off)
        frame = choice.frame
        run.ticks.append(Shown(choice.showing, -1 if frame is None else frame.index,
                               -1.0 if frame is None else (now_ns - frame.captured_ns) / 1e6,
                               selector.playout_delay_ms, selector.delayed_camera_frames))
        run.most_camera_frames_held = max(run.most_camera_frames_held,
                                          selector.delayed_camera_frames)
    return run


def test_the_take_over_holds_the_picture_instead_of_replaying_it() -> None:
    run = simulate(8)
    assert run.indices() == sorted(run.indices())
    first = next(n for n, tick in enumerate(run.ticks) if tick.showing is Showing.SWAPPED)
    # Until then the live camera; then swapped frames only, at the delay the batches need.
    assert all(tick.showing is Showing.PASSTHROUGH and tick.age_ms < 5
               for tick in run.ticks[:first - 50])
    assert all(tick.showing is Showing.SWAPPED for tick in run.ticks[first:])
    assert 1400 < run.ticks[-1].age_ms < 1600
    # The picture stood still while the delay grew, for about as long as the delay.
    held = [n for n in range(1, first) if run.ticks[n].index == run.ticks[n - 1].index]
    assert 1.3 * FPS < len(held) < 1.6 * FPS


def test_nobody_in_view_plays_the_camera_at_the_delay_and_the_swap_resumes_in_order() -> None:
    run = simulate(20, nobody=range(8, 12))  # 3.2 s with nobody: batches 8..11
    indices = run.indices()
    assert indices == sorted(indices)
    gap = [tick for tick in run.ticks[round(8.5 * FPS):round(9.5 * FPS)]]
    assert all(tick.showing is Showing.PASSTHROUGH for tick in gap)
    # The camera at the swapped frames' delay, not live: no skip ahead, no step back after.
    assert all(1400 < tick.age_ms < 1600 for tick in gap)
    assert all(tick.showing is Showing.SWAPPED for tick in run.ticks[round(13 * FPS):])
    # Around the gap the picture moves a camera frame or the swap's cadence a tick: the
    # camera takes over where the engine found nobody, with no hold and no skip.
    around = indices[round(7 * FPS):round(12 * FPS)]
    assert max(b - a for a, b in itertools.pairwise(around)) <= CADENCE
    # Memory: only the camera frames from the one due on are held.
    assert run.most_camera_frames_held <= 1.6 * FPS + 2


def test_a_slow_call_freezes_then_plays_on_without_stepping_back() -> None:
    run = simulate(20, slow={10: 1.0})
    indices = run.indices()
    assert indices == sorted(indices)
    shown = {tick.showing for tick in run.ticks[round(5 * FPS):]}
    assert Showing.SWAPPED in shown


def test_a_late_batch_is_held_for_rather_than_handed_to_the_camera() -> None:
    # Batch 10 comes back 0.3 s late: the last swapped frame is held (the grace) and the
    # delay grows; no camera frame shows, since nothing said nobody was there.
    run = simulate(20, slow={10: 0.3})
    assert all(tick.showing is Showing.SWAPPED for tick in run.ticks[round(4 * FPS):])


def test_the_delay_is_let_go_when_the_swap_has_stopped() -> None:
    run = simulate(8 + RELEASE_S + 4, nobody=range(8, 1000))
    last_arrival_s = 7 * 0.8 + 21 / FPS + BATCH_S
    before = run.at(last_arrival_s + RELEASE_S - 1)
    assert before.showing is Showing.PASSTHROUGH and 1400 < before.age_ms < 1600
    after = run.at(last_arrival_s + RELEASE_S + 1)
    assert after.showing is Showing.PASSTHROUGH and after.age_ms < 5 and after.delay_ms == 0
    assert run.indices() == sorted(run.indices())


def test_swap_off_shows_the_live_camera_and_back_on_does_not_step_back() -> None:
    off = range(6 * FPS, 9 * FPS)
    run = simulate(16, swap_off=off)
    assert all(tick.showing is Showing.PASSTHROUGH and tick.age_ms < 5
               and tick.camera_frames_held == 0 for tick in run.ticks[off.start:off.stop])
    # Turned back on, the camera stays live until new swapped frames set a new delay: the
    # old one went with the swap.
    assert all(tick.showing is Showing.PASSTHROUGH and tick.age_ms < 5
               for tick in run.ticks[off.stop:off.stop + FPS])
    assert run.indices() == sorted(run.indices())
    assert run.ticks[-1].showing is Showing.SWAPPED


@pytest.mark.parametrize("fallback", [Fallback.PLACEHOLDER, Fallback.HOLD])
def test_other_fallbacks_keep_no_camera_frames_and_never_show_the_camera(
        fallback: Fallback) -> None:
    # Off for half a second just after batch 4's frames were taken: it comes back after.
    off = range(118, 135)
    run = simulate(12, nobody=range(6, 8), swap_off=off, fallback=fallback)
    assert run.most_camera_frames_held == 0
    # The camera only while the swap is off; turned on again, what was on screen then is
    # not held while the delay grows.
    assert all(tick.showing is not Showing.PASSTHROUGH
               for n, tick in enumerate(run.ticks) if n not in off)
    assert Showing.SWAPPED in {tick.showing for tick in run.ticks[off.stop:]}
    assert run.indices() == sorted(run.indices())
    # Turned on again, nothing from before it is held: the card until new swapped frames.
    assert run.ticks[off.stop].showing is Showing.PLACEHOLDER


def test_back_from_live_playout_smooth_holds_rather_than_steps_back() -> None:
    live = range(6 * FPS, 8 * FPS)
    run = simulate(14, live_playout=live, nobody=range(9, 11))
    assert all(tick.camera_frames_held == 0 for tick in run.ticks[live.start:live.stop])
    after = [tick.index for tick in run.ticks[live.stop - 1:]]
    assert after == sorted(after)
    assert {tick.showing for tick in run.ticks[live.stop:]} == {Showing.SWAPPED,
                                                                 Showing.PASSTHROUGH}


def test_an_engine_restarted_after_the_delay_was_let_go_does_not_flash_its_warm_up() -> None:
    # The engine failed (no swapped frames for 12 s) and a new one loaded: its first call is
    # quick, back 0.1 s after its last frame; the next batch sets the delay.
    run = simulate(26, nobody=range(8, 25), warm_up=(0, 25), slow={25: 0.1 - BATCH_S},
                   fallback=Fallback.PLACEHOLDER)
    batch_26_arrives_s = (26 * CADENCE * NEW_FRAMES + 21) / FPS + BATCH_S
    after_gap = [n for n, tick in enumerate(run.ticks)
                 if tick.showing is Showing.SWAPPED and n > 12 * FPS]
    assert after_gap and after_gap[0] / FPS >= batch_26_arrives_s


def test_hold_holds_the_last_swapped_frame_while_nobody_is_in_view() -> None:
    # Batches 8 and 9 (frames 192 to 239, 6.4 s to 8 s) find nobody; 1.43 s later on screen.
    run = simulate(12, nobody=range(8, 10), fallback=Fallback.HOLD)
    gap = run.ticks[round(8.0 * FPS):round(9.3 * FPS)]
    assert {tick.showing for tick in gap} == {Showing.HELD}
    assert len({tick.index for tick in gap}) == 1 and gap[0].index == 8 * 24 - CADENCE
    assert run.indices() == sorted(run.indices())


def test_a_delay_of_several_seconds_keeps_one_timeline_within_bounded_memory() -> None:
    # A slow GPU (or whole frames): each batch back 4.5 s after its last frame, nobody in
    # view for batches 14 and 15.
    run = simulate(30, nobody=range(14, 16), batch_s=4.5)
    indices = run.indices()
    assert indices == sorted(indices)
    assert run.most_camera_frames_held <= MAX_DELAYED_FRAMES
    # The delay: a batch's first frame 0.7 s before its last, plus 4.5 s, plus a tick.
    assert all(5200 < tick.delay_ms < 5300 for tick in run.ticks[round(10 * FPS):])
    gap = run.ticks[round(16.7 * FPS):round(17.9 * FPS)]
    assert all(tick.showing is Showing.PASSTHROUGH
               and 0 <= tick.age_ms - tick.delay_ms < 100 for tick in gap)
    # The camera is kept spaced out over the delay, never a frame more than a cadence step.
    around = indices[round(15 * FPS):round(22 * FPS)]
    assert max(b - a for a, b in itertools.pairwise(around)) <= CADENCE


def test_a_short_swap_off_forgets_the_delay() -> None:
    off = range(6 * FPS, 7 * FPS)
    run = simulate(9, swap_off=off)
    assert run.ticks[off.stop].delay_ms == 0 and run.ticks[off.stop].age_ms < 5


def test_switching_the_fallback_to_hold_in_a_gap_does_not_step_back() -> None:
    # The camera shows (nobody in view) when the fallback becomes hold: the last swapped
    # frame is older than the camera frames shown, so the card shows instead.
    switch = round(9 * FPS)
    run = simulate(14, nobody=range(8, 12), fallback_at={switch: Fallback.HOLD})
    assert run.ticks[switch - 1].showing is Showing.PASSTHROUGH
    assert run.indices() == sorted(run.indices())
    assert run.ticks[switch].showing is Showing.PLACEHOLDER
    assert all(tick.camera_frames_held == 0 for tick in run.ticks[switch:])  # none needed


def test_a_delay_that_grows_past_the_frames_kept_spreads_them_rather_than_drops_the_due_one(
        ) -> None:
    # Batch 8 is 3.5 s late (another program took the GPU), the processor skips ahead to
    # the newest frames, and from there on nobody is in view. Batch 8 arrives at 11.3 s and
    # the delay grows from 1.43 s to 4.93 s: the camera shown at the old delay holds until
    # 14.8 s, while the frames kept at the old spacing (every one) and the new fill up. Then
    # the camera plays on from there, at the delay.
    run = simulate(20, slow={8: 3.5}, skipped=range(9, 14), nobody=range(14, 100))
    indices = run.indices()
    assert indices == sorted(indices)
    assert run.most_camera_frames_held <= MAX_DELAYED_FRAMES
    moving = [tick for previous, tick in itertools.pairwise(run.ticks)
              if tick.showing is Showing.PASSTHROUGH and tick.delay_ms > 4000
              and tick.index != previous.index]
    assert len(moving) > FPS
    assert all(0 <= tick.age_ms - tick.delay_ms < 200 for tick in moving)
