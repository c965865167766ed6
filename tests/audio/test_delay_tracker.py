"""The audio delay follows the swapped video's age, steadily: no sleeps, time is injected."""

from __future__ import annotations

import threading

import pytest

from faceswap_cam.daemon.audio.delay_tracker import AudioDelayTracker

FRAME_NS = 33_333_333  # 30 fps
MS = 1_000_000


class Clock:
    """Publishes frames into a tracker at 30 fps of injected time."""

    def __init__(self, tracker: AudioDelayTracker) -> None:
        self.tracker = tracker
        self.now = 10_000_000_000

    def frames(self, count: int, age_ms: float | None, swapped: bool = True) -> None:
        for _ in range(count):
            self.now += FRAME_NS
            age = None if age_ms is None else round(age_ms * MS)
            self.tracker.observe(self.now, age, swapped)

    def seconds(self, s: float, age_ms: float | None, swapped: bool = True) -> None:
        self.frames(round(s * 1e9 / FRAME_NS), age_ms, swapped)

    def target_ms(self) -> float:
        return self.tracker.target_delay_s(self.now) * 1000


def test_nothing_observed_is_no_delay() -> None:
    tracker = AudioDelayTracker()
    assert tracker.target_delay_s(0) == 0.0
    assert tracker.snapshot(0) == {
        "target_ms": 0.0,
        "video_age_ms": None,
        "showing": "none",
        "following": "none",
    }


def test_constant_age_is_the_target() -> None:
    clock = Clock(AudioDelayTracker())
    clock.seconds(1.0, 2300)
    assert clock.target_ms() == pytest.approx(2300)
    snap = clock.tracker.snapshot(clock.now)
    assert snap["target_ms"] == 2300.0
    assert snap["video_age_ms"] == 2300.0
    assert snap["showing"] == "swapped" and snap["following"] == "swapped"


def test_jitter_within_the_deadband_does_not_move_the_target() -> None:
    clock = Clock(AudioDelayTracker())
    clock.seconds(1.0, 2000)
    assert clock.target_ms() == pytest.approx(2000)
    seen = set()
    for i in range(300):
        clock.frames(1, 2000 + (15 if i % 3 else -12))  # batches arrive a little early or late
        seen.add(clock.target_ms())
    assert seen == {2000.0}
    # Without the deadband the same jitter would move it (the centre is 2015 ms).
    clock = Clock(AudioDelayTracker(deadband_s=0.0))
    clock.seconds(1.0, 2000)
    clock.seconds(1.5, 2015)
    assert clock.target_ms() == pytest.approx(2015)


def test_one_late_batch_does_not_move_the_target() -> None:
    clock = Clock(AudioDelayTracker())
    clock.seconds(1.0, 2000)
    clock.frames(4, 3500)  # a few frames of one slow batch: the median ignores them
    clock.frames(20, 2000)
    assert clock.target_ms() == pytest.approx(2000)


def test_a_step_change_is_followed_in_two_moves_within_the_window() -> None:
    clock = Clock(AudioDelayTracker())
    clock.seconds(1.5, 2000)
    assert clock.target_ms() == pytest.approx(2000)
    targets = []
    for _ in range(60):
        clock.frames(1, 3000)
        targets.append(clock.target_ms())
    moves = [t for t, before in zip(targets, [2000.0, *targets[:-1]], strict=True)
             if t != before]
    # Halfway within a tenth of the window (the voice starts to follow at once), all the
    # way once most of the window is new: two fades for one step, not a fade per frame.
    assert moves == [pytest.approx(2500, abs=60), pytest.approx(3000)]
    assert targets.index(moves[0]) < 10 and targets[44] == pytest.approx(3000)
    # A small step beyond the deadband is followed too.
    clock.seconds(1.5, 3040)
    assert clock.target_ms() == pytest.approx(3040)


def test_a_live_playout_saw_tooth_gives_a_steady_centre() -> None:
    """``live`` holds each batch's newest frame until the next batch: its age climbs from
    300 ms by a frame per tick, for 12 ticks, then drops back. The delay is the middle of
    that, and stays put instead of swinging with the window's phase."""
    clock = Clock(AudioDelayTracker())
    targets = set()
    for tick in range(30 * 20):
        clock.frames(1, 300 + (tick % 12) * 1000 / 30)
        if tick > 60:
            targets.add(clock.target_ms())
    assert len(targets) == 1
    (centre,) = targets
    assert centre == pytest.approx(300 + 11 * 1000 / 30 / 2, abs=25)


def test_short_passthrough_gap_keeps_the_swapped_delay() -> None:
    clock = Clock(AudioDelayTracker())
    clock.seconds(1.0, 2500)
    clock.seconds(0.8, 40, swapped=False)  # the gap between two batches
    assert clock.target_ms() == pytest.approx(2500)
    snap = clock.tracker.snapshot(clock.now)
    assert snap["showing"] == "passthrough" and snap["video_age_ms"] == 40.0
    clock.seconds(1.0, 2500)
    assert clock.target_ms() == pytest.approx(2500)


def test_long_passthrough_drops_to_the_passthrough_age_then_rises_promptly() -> None:
    tracker = AudioDelayTracker()
    clock = Clock(tracker)
    clock.seconds(1.0, 2500)
    clock.seconds(0.9, 40, swapped=False)
    assert clock.target_ms() == pytest.approx(2500)
    clock.seconds(0.2, 40, swapped=False)  # now 1.1 s of passthrough
    assert clock.target_ms() == pytest.approx(40)
    assert tracker.snapshot(clock.now)["following"] == "passthrough"
    # Swapped frames again, now with a different age: up after three of them.
    clock.frames(2, 3100)
    assert clock.target_ms() == pytest.approx(40)
    clock.frames(1, 3100)
    assert clock.target_ms() == pytest.approx(3100)


def test_a_lone_swapped_frame_in_passthrough_changes_nothing() -> None:
    clock = Clock(AudioDelayTracker())
    clock.seconds(2.0, 30, swapped=False)
    clock.frames(1, 2000)
    clock.frames(5, 30, swapped=False)
    assert clock.target_ms() == pytest.approx(30)


def test_cards_without_a_camera_frame_are_ignored() -> None:
    tracker = AudioDelayTracker()
    clock = Clock(tracker)
    clock.seconds(1.0, 1800)
    clock.seconds(3.0, None, swapped=False)  # placeholder cards
    assert clock.target_ms() == pytest.approx(1800)
    snap = tracker.snapshot(clock.now)
    assert snap["showing"] == "none" and snap["video_age_ms"] is None
    clock.frames(10, 1800)
    assert tracker.snapshot(clock.now)["showing"] == "swapped"


def test_nothing_published_for_a_while_shows_none_and_keeps_the_delay() -> None:
    tracker = AudioDelayTracker()
    clock = Clock(tracker)
    clock.seconds(1.0, 1800)
    later = clock.now + 5_000_000_000
    assert tracker.target_delay_s(later) == pytest.approx(1.8)
    assert tracker.snapshot(later)["showing"] == "none"


def test_target_is_clamped_to_the_maximum() -> None:
    clock = Clock(AudioDelayTracker(max_delay_s=8.0))
    clock.seconds(1.0, 9500)
    assert clock.target_ms() == pytest.approx(8000)
    clock.seconds(1.0, -5, swapped=False)  # a clock oddity never makes a negative delay
    clock.seconds(1.0, -5, swapped=False)
    assert clock.target_ms() == 0.0


def test_two_threads_at_once_no_errors_and_bounded_memory() -> None:
    tracker = AudioDelayTracker()
    errors: list[BaseException] = []
    stop = threading.Event()
    start_ns = 1_000_000_000

    def publisher() -> None:
        try:
            for i in range(20_000):
                # A frame every 10 us of injected time: many more than any window holds.
                tracker.observe(start_ns + i * 10_000, 2_000 * MS, i % 50 != 0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def mic() -> None:
        try:
            while not stop.is_set():
                value = tracker.target_delay_s(start_ns + 200_000_000)
                assert 0.0 <= value <= 8.0
                tracker.snapshot(start_ns + 200_000_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher), threading.Thread(target=mic)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(tracker._swapped._frames) <= 256 and len(tracker._passthrough._frames) <= 256
    assert tracker.target_delay_s(start_ns + 200_000_000) == pytest.approx(2.0)


def test_a_smooth_playout_delay_falling_slowly_is_followed_closely() -> None:
    """``smooth`` playout lowers its delay by 1 ms a tick once the engine is faster: the
    ages are steady over half a second, so the voice follows within about a deadband rather
    than the whole window's lag."""
    clock = Clock(AudioDelayTracker())
    clock.seconds(1.5, 800)
    lags = []
    for tick in range(300):
        age = 800 - tick
        clock.frames(1, age)
        lags.append(clock.target_ms() - age)
    assert max(lags) <= 40, max(lags)
