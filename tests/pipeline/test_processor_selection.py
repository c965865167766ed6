"""Batching rules of the processor and the publisher's output selection."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from faceswap_cam.daemon.config import Fallback, Playout
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.pipeline.processor import AsyncFaceSwapProcessor, SwappedFrame
from faceswap_cam.daemon.pipeline.selection import OutputSelector
from faceswap_cam.daemon.states import EngineState, Showing
from faceswap_cam.models.engine import EngineLost, SwapResult
from faceswap_cam.models.simple_engines import DebugEngine

MS = 1_000_000


def frame(index: int, captured_ns: int | None = None) -> Frame:
    pixels = np.full((4, 4, 3), index % 256, np.uint8)
    return Frame(pixels, index, index * 33 * MS if captured_ns is None else captured_ns)


class RecordingEngine(DebugEngine):
    """Records every batch's frame values; ``gate`` holds each call until released."""

    def __init__(self, first_batch: int = 3, next_batch: int = 2) -> None:
        super().__init__(first_batch=first_batch, next_batch=next_batch)
        self.batches: list[list[int]] = []
        self.references = 0
        self.done = threading.Semaphore(0)
        self.gate: threading.Semaphore | None = None

    def set_reference(self, image: np.ndarray) -> None:
        self.references += 1

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if self.gate is not None:
            self.gate.acquire()
        self.batches.append([int(f[0, 0, 0]) for f in frames])
        out = super().process(frames)
        self.done.release()
        return out


def start(engine: RecordingEngine) -> AsyncFaceSwapProcessor:
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="rec",
                                       cadence_margin=0.0)  # keep k = 1 for these tests
    processor.start()
    return processor


def wait_running(processor: AsyncFaceSwapProcessor) -> None:
    """Until the engine is up: frames fed before it are not staged."""
    for _ in range(500):
        if processor.state is EngineState.RUNNING:
            return
        time.sleep(0.01)
    raise AssertionError("the engine did not start")


def test_first_then_next_batches_are_contiguous_and_stamped() -> None:
    engine = RecordingEngine(first_batch=3, next_batch=2)
    with start(engine) as processor:
        for chunk in ([0, 1, 2], [3, 4], [5, 6]):  # frames arrive while the engine keeps up
            for i in chunk:
                processor.submit(frame(i))
            assert engine.done.acquire(timeout=5)
        assert processor.wait_swapped(7, timeout=5)
        swapped = processor.swapped_frames()
        assert processor.state is EngineState.RUNNING
    assert engine.batches == [[0, 1, 2], [3, 4], [5, 6]]
    assert [s.frame.index for s in swapped] == list(range(7))
    assert all(s.frame.captured_ns == s.frame.index * 33 * MS for s in swapped)
    assert all(int(s.frame.pixels[0, 0, 0]) == 255 - s.frame.index for s in swapped)
    assert engine.resets == 0


def test_a_backlog_is_skipped_whole_and_resets_the_engine() -> None:
    engine = RecordingEngine(first_batch=3, next_batch=2)
    engine.gate = threading.Semaphore(1)  # the first batch runs, the rest waits
    with start(engine) as processor:
        for i in range(3):
            processor.submit(frame(i))
        assert engine.done.acquire(timeout=5)
        for i in range(3, 13):  # five batches' worth arrive while the engine is busy
            processor.submit(frame(i))
        engine.gate.release()
        assert engine.done.acquire(timeout=5)
        skipped = processor.skipped
    # Not 3,4 (that would add latency): the newest contiguous first batch, after a reset.
    assert engine.batches == [[0, 1, 2], [10, 11, 12]]
    assert skipped == 7
    assert engine.resets == 1


def test_a_gap_breaks_continuity() -> None:
    engine = RecordingEngine(first_batch=2, next_batch=2)
    with start(engine) as processor:
        for i in (0, 1):
            processor.submit(frame(i))
        assert engine.done.acquire(timeout=5)
        for i in (5, 6):  # frames 2-4 never came
            processor.submit(frame(i))
        assert engine.done.acquire(timeout=5)
    assert engine.batches == [[0, 1], [5, 6]]
    assert engine.resets == 1


def test_reference_change_applies_at_next_batch_and_resets() -> None:
    engine = RecordingEngine(first_batch=1, next_batch=1)
    with start(engine) as processor:
        processor.submit(frame(0))
        assert engine.done.acquire(timeout=5)
        processor.set_reference(np.zeros((8, 8, 3), np.uint8))
        processor.submit(frame(1))
        assert engine.done.acquire(timeout=5)
    assert engine.references == 1
    assert engine.resets == 1


def test_input_queue_is_bounded_and_counts_drops() -> None:
    engine = RecordingEngine(first_batch=200, next_batch=1)
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, input_capacity=10)
    for i in range(25):
        processor.submit(frame(i))
    assert processor.input_depth() == 10
    assert processor.dropped_input == 15
    processor.close()


def test_a_batch_longer_than_the_input_grows_the_input() -> None:
    # As --segment-frames 161 does (160 new frames a call, against an input of 60): without
    # room for a whole batch none ever formed, and the camera showed passthrough for good.
    engine = RecordingEngine(first_batch=12, next_batch=2)
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, input_capacity=8,
                                       cadence_margin=0.0)
    processor.start()
    wait_running(processor)
    for i in range(12):
        processor.submit(frame(i))
    assert engine.done.acquire(timeout=5)
    assert engine.batches[0] == list(range(12))
    assert processor.dropped_input == 0
    processor.close()


def test_wrong_engine_output_is_a_failure() -> None:
    class Shrinking(RecordingEngine):
        def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
            self.done.release()
            return SwapResult([f[:2] for f in frames])

    engine = Shrinking(first_batch=1, next_batch=1)
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, backoff_initial_s=30)
    processor.start()
    processor.submit(frame(0))
    assert engine.done.acquire(timeout=5)
    processor.close()
    assert processor.engine_failures == 1
    assert "engine returned (2, 4, 3)" in processor.last_error


# --- selection -------------------------------------------------------------------------------

def swapped(index: int, arrived_ms: float, cadence: int = 1) -> SwappedFrame:
    return SwappedFrame(frame(index), int(arrived_ms * MS), cadence)


def test_live_shows_newest_arrived_until_stale() -> None:
    selector = OutputSelector(fallback=Fallback.PASSTHROUGH, playout=Playout.LIVE, fps=30,
                              grace_s=0.1)
    live = frame(20)
    out = [swapped(5, 200), swapped(6, 200)]
    choice = selector.choose(210 * MS, live, out, batch_period_s=0.066)
    assert (choice.showing, choice.frame) == (Showing.SWAPPED, out[1].frame)
    # Past one batch period plus grace with nothing new: the engine stalled.
    choice = selector.choose(400 * MS, live, out, batch_period_s=0.066)
    assert (choice.showing, choice.frame) == (Showing.PASSTHROUGH, live)


def test_live_hands_over_to_the_camera_as_soon_as_the_engine_finds_nobody() -> None:
    selector = OutputSelector(fallback=Fallback.PASSTHROUGH, playout=Playout.LIVE, fps=30)
    out = [swapped(5, 200), swapped(6, 200),
           SwappedFrame(frame(7), 260 * MS, 1, untouched=True)]
    live = frame(9)
    assert selector.choose(250 * MS, live, out[:2], batch_period_s=0.066).showing \
        is Showing.SWAPPED
    choice = selector.choose(270 * MS, live, out, batch_period_s=0.066)
    assert (choice.showing, choice.frame) == (Showing.PASSTHROUGH, live)


@pytest.mark.parametrize(("fallback", "before", "after"), [
    (Fallback.PASSTHROUGH, Showing.PASSTHROUGH, Showing.PASSTHROUGH),
    (Fallback.HOLD, Showing.PLACEHOLDER, Showing.HELD),
    (Fallback.PLACEHOLDER, Showing.PLACEHOLDER, Showing.PLACEHOLDER),
])
def test_fallbacks(fallback: Fallback, before: Showing, after: Showing) -> None:
    selector = OutputSelector(fallback=fallback, playout=Playout.LIVE, fps=30, grace_s=0.1)
    live = frame(30)
    assert selector.choose(0, live, [], batch_period_s=0.1).showing is before
    out = [swapped(3, 10)]
    assert selector.choose(20 * MS, live, out, batch_period_s=0.1).showing is Showing.SWAPPED
    choice = selector.choose(900 * MS, live, out, batch_period_s=0.1)
    assert choice.showing is after
    if after is Showing.HELD:
        assert choice.frame is out[0].frame


def test_swap_off_shows_the_camera() -> None:
    selector = OutputSelector(fallback=Fallback.PLACEHOLDER, playout=Playout.LIVE, fps=30)
    choice = selector.choose(20 * MS, frame(9), [swapped(3, 10)], batch_period_s=0.1,
                             swap_enabled=False)
    assert choice.showing is Showing.PASSTHROUGH


def test_smooth_plays_frames_at_capture_cadence_behind_a_delay() -> None:
    selector = OutputSelector(fallback=Fallback.PASSTHROUGH, playout=Playout.SMOOTH, fps=30,
                              grace_s=0.05)
    # A batch of frames 0..3 (captured 0, 33, 66, 99 ms) arrives at 300 ms. No camera frame
    # to fall back on (a camera frame would hold the picture at the take-over: see
    # test_smooth_timeline.py), so the placeholder shows around them.
    batch = [swapped(i, 300) for i in range(4)]
    live = None
    shown = []
    for tick in range(9, 20):
        now = tick * 33 * MS + 1
        choice = selector.choose(now, live, batch, batch_period_s=0.133)
        swapped_now = choice.showing is Showing.SWAPPED and choice.frame is not None
        shown.append(choice.frame.index if swapped_now and choice.frame else None)
    delay_ms = selector.playout_delay_ms
    assert 300 <= delay_ms <= 340  # worst lateness (300 ms for frame 0) plus one tick
    swapped_shown = [i for i in shown if i is not None]
    # Every frame of the batch is shown, in order, about one tick each; then the fallback.
    assert swapped_shown == sorted(swapped_shown)
    assert set(swapped_shown) == {0, 1, 2, 3}
    assert shown[-1] is None


def smooth_delays(first_late_ms: float, later_late_ms: list[float], until_ms: float, *,
                  warm_up: bool = False) -> dict[int, float]:
    """Smooth playout's delay at each tick (ms -> ms) for batches of 8 frames taken every 3rd
    camera frame: the first batch arrives ``first_late_ms`` after its first frame was captured,
    the later ones (the newest frames when the first is back) each ``later_late_ms[i]`` after."""
    selector = OutputSelector(fallback=Fallback.PASSTHROUGH, playout=Playout.SMOOTH, fps=30,
                              grace_s=0.5)
    items = [swapped(i, first_late_ms, cadence=3) for i in range(0, 24, 3)]
    for i, item in enumerate(items):
        items[i] = SwappedFrame(frame(item.frame.index, i * 100 * MS), item.arrived_ns, 3,
                                warm_up)
    start_ms = first_late_ms - 700  # the engine takes the newest frames next
    for batch, late in enumerate(later_late_ms):
        first_ms = start_ms + 800 * batch
        for n in range(8):
            index = 10_000 + 3 * (8 * batch + n)
            items.append(SwappedFrame(frame(index, int((first_ms + 100 * n) * MS)),
                                      int((first_ms + late) * MS), 3))
    delays = {}
    tick_ms = 1000 / 30
    now_ms = first_late_ms
    live = frame(99_999)
    while now_ms < until_ms:
        arrived = [item for item in items if item.arrived_ns <= now_ms * MS]
        selector.choose(int(now_ms * MS), live, arrived[-60:], batch_period_s=0.8)
        delays[int(now_ms)] = selector.playout_delay_ms
        now_ms += tick_ms
    return delays


def at(delays: dict[int, float], ms: float) -> float:
    return delays[min(delays, key=lambda t: abs(t - ms))]


@pytest.mark.parametrize("first_late_ms", [5000, 2800])
def test_smooth_delay_drops_at_once_after_a_stall(first_late_ms: float) -> None:
    # One call stalled for seconds (the GPU taken by another program, say); the engine then
    # returns each batch 1.4 s after its first frame, as the plan's live preset would.
    delays = smooth_delays(first_late_ms, [1400] * 40, until_ms=first_late_ms + 30_000)
    assert at(delays, first_late_ms + 100) > first_late_ms  # played late, not dropped
    # Falling 1 ms a tick while the slow call is remembered...
    assert at(delays, first_late_ms + 15_000) > first_late_ms - 500
    # ...then at once to what the engine needs: not minutes more of falling.
    settled = at(delays, first_late_ms + 21_000)
    assert 1400 < settled < 1500
    assert 1400 < at(delays, first_late_ms + 29_000) < 1500


def test_smooth_delay_leaves_the_engines_warm_up_call_out() -> None:
    delays = smooth_delays(5000, [1400] * 10, until_ms=9000, warm_up=True)
    # Its frames came 5 s late: too late to play (the camera shows meanwhile); the next
    # batch, back 5.7 s after the start, sets the delay.
    assert at(delays, 5100) < 100
    assert 1400 < at(delays, 5800) < 1500
    assert 1400 < at(delays, 8900) < 1500


@pytest.mark.parametrize("fallback", [Fallback.PASSTHROUGH, Fallback.PLACEHOLDER])
def test_smooth_playout_does_not_flash_a_quick_warm_up_call(fallback: Fallback) -> None:
    # The engine's first call was quick (a warm engine host, the debug engine): its frames
    # wait for the delay the next batch sets rather than show at once, fall stale, and show
    # again behind the fallback. Camera frame n is captured at n / 30 s; the engine takes every
    # 3rd, 8 a batch, each batch back 0.1 s after its last frame.
    selector = OutputSelector(fallback=fallback, playout=Playout.SMOOTH, fps=30, grace_s=0.5)
    items = [SwappedFrame(frame(3 * i, i * 100 * MS), (i // 8 + 1) * 800 * MS, 3,
                          warm_up=i < 8)
             for i in range(48)]
    shown: list[tuple[Showing, int]] = []
    for tick in range(150):
        now = int(tick * 1e9 / 30)
        arrived = [item for item in items if item.arrived_ns <= now]
        choice = selector.choose(now, frame(tick, now), arrived, batch_period_s=0.8)
        shown.append((choice.showing, choice.frame.index if choice.frame else -1))
    swapped_at = [n for n, (showing, _) in enumerate(shown) if showing is Showing.SWAPPED]
    assert swapped_at and swapped_at[0] * 1000 / 30 >= 1600  # nothing before the delay
    # From then on only swapped frames, forward in time, until they run out.
    run = shown[swapped_at[0]:swapped_at[-1] + 1]
    assert all(showing is Showing.SWAPPED for showing, _ in run)
    indices = [index for _, index in shown if index >= 0]
    assert indices == sorted(indices)
    if fallback is Fallback.PLACEHOLDER:
        assert run[0][1] < 24  # the warm-up's frames play too
    else:
        # The camera was on screen up to the take-over: the picture holds there while the
        # delay grows, and the warm-up's older frames never show.
        assert run[0][1] >= 48


def test_smooth_delay_does_not_jump_with_a_slow_call_that_recurs() -> None:
    # Every 4th call 0.4 s slower (a chain restart's longer segment, say): the delay rises
    # with each and glides down between them, never snapping down to rise again.
    lateness = [1800.0 if n % 4 == 3 else 1400.0 for n in range(60)]
    delays = smooth_delays(1400, lateness, until_ms=45_000)
    steps = [b - a for a, b in itertools.pairwise(delays.values())]
    assert min(steps) >= -1.0001
    assert max(steps) > 300  # it did rise with the slow calls


def test_smooth_delay_glides_down_after_a_small_hiccup() -> None:
    lateness = [1400.0] * 14
    lateness[2] = 1600  # one call 0.2 s slower
    delays = smooth_delays(1400, lateness, until_ms=9000)
    peak = at(delays, 4200)  # the slow batch is back at 3.9 s
    assert 1600 < peak < 1700
    # Out of the window it falls 1 ms a tick, the picture playing 3 % fast: no skip.
    later = at(delays, 7500)
    assert 1450 < later < peak
    steps = [b - a for a, b in itertools.pairwise(delays.values())]
    assert min(steps) >= -1.0001


def test_close_interrupts_and_waits_for_the_call_in_progress() -> None:
    class Interruptible(RecordingEngine):
        def __init__(self) -> None:
            super().__init__(first_batch=1, next_batch=1)
            self.started = threading.Event()
            self.stop = threading.Event()
            self.finished = False
            self.closed_while_running = False

        def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
            self.started.set()
            self.stop.wait(10)
            self.finished = True
            return SwapResult.untouched(frames)

        def interrupt(self) -> None:
            self.stop.set()

        def close(self) -> None:
            self.closed_while_running = not self.finished

    engine = Interruptible()
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30)
    processor.start()
    processor.submit(frame(0))
    assert engine.started.wait(5)
    processor.close()
    assert engine.finished
    assert not engine.closed_while_running


def test_a_refused_reference_keeps_the_previous_one() -> None:
    class Picky(RecordingEngine):
        def set_reference(self, image: np.ndarray) -> None:
            if image.shape[0] < 16:
                raise ValueError("reference is too small (8x8): use an image of at least 16 px")
            super().set_reference(image)

    engine = Picky(first_batch=1, next_batch=1)
    with start(engine) as processor:
        processor.set_reference(np.zeros((32, 32, 3), np.uint8))
        processor.submit(frame(0))
        assert engine.done.acquire(timeout=5)
        processor.set_reference(np.zeros((8, 8, 3), np.uint8))
        processor.submit(frame(1))
        assert engine.done.acquire(timeout=5)
        error = processor.reference_error
        state = processor.state
    assert "too small" in error
    assert state is EngineState.RUNNING  # no restart for a bad image
    assert processor.engine_failures == 0
    assert engine.references == 1


def test_an_engine_lost_while_taking_a_reference_hands_it_to_the_next_engine() -> None:
    """A host that dies as the reference goes over has not refused it: the engine is
    restarted and the new one gets the new reference, not the one in use before."""
    given: list[tuple[int, int]] = []

    class DiesOnSecondReference(RecordingEngine):
        def set_reference(self, image: np.ndarray) -> None:
            if image.shape[0] == 64 and len(engines) == 1:
                raise EngineLost("the engine host closed the connection")
            given.append((len(engines), image.shape[0]))
            super().set_reference(image)

    engines: list[DiesOnSecondReference] = []

    def factory() -> DiesOnSecondReference:
        engines.append(DiesOnSecondReference(first_batch=1, next_batch=1))
        return engines[-1]

    processor = AsyncFaceSwapProcessor(factory, fps=30, engine_name="rec", cadence_margin=0.0)
    processor.backoff_initial_s = 0.01
    processor.start()
    with processor:
        processor.set_reference(np.zeros((32, 32, 3), np.uint8))
        processor.submit(frame(0))
        assert processor.wait_swapped(1, timeout=5)
        processor.set_reference(np.zeros((64, 64, 3), np.uint8))
        index = 1
        while len(engines) < 2 or not engines[1].batches:
            processor.submit(frame(index))  # the camera goes on meanwhile
            index += 1
            assert index < 500, "the engine was not restarted"
            time.sleep(0.01)
        error, failures = processor.reference_error, processor.engine_failures
    assert given == [(1, 32), (2, 64)]  # the second engine got the new reference only
    assert error == ""  # not reported as a refused image
    assert failures == 1


def test_every_frame_of_a_batch_is_staged_before_the_batch_runs() -> None:
    """An engine host takes each frame as it is fed (``stage``); a batch that ran before its
    last frame was staged would go whole over the wire instead."""

    class Staging(RecordingEngine):
        def __init__(self) -> None:
            super().__init__(first_batch=3, next_batch=3)
            self.staged: set[int] = set()
            self.unstaged_in_batches = 0

        def stage(self, pixels: np.ndarray) -> None:
            time.sleep(0.02)  # encoding a 720p frame takes a few ms; widen the window
            self.staged.add(id(pixels))

        def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
            self.unstaged_in_batches += sum(id(f) not in self.staged for f in frames)
            return super().process(frames)

    engine = Staging()
    frames = [frame(i) for i in range(6)]
    with start(engine) as processor:
        wait_running(processor)
        for item in frames:
            processor.submit(item)
        assert processor.wait_swapped(6, timeout=5)
    assert engine.batches == [[0, 1, 2], [3, 4, 5]]
    assert engine.unstaged_in_batches == 0


def test_a_frame_that_fails_to_stage_still_reaches_its_batch() -> None:
    class FailingStage(RecordingEngine):
        def stage(self, pixels: np.ndarray) -> None:
            if int(pixels[0, 0, 0]) == 1:
                raise OSError("the host went away")

    engine = FailingStage(first_batch=3, next_batch=3)
    with start(engine) as processor:
        wait_running(processor)
        for index in range(3):
            processor.submit(frame(index))
        assert processor.wait_swapped(3, timeout=5)
    assert engine.batches == [[0, 1, 2]]


def test_untouched_frames_are_passthrough_and_restart_the_chain() -> None:
    class NobodyThere(RecordingEngine):
        def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
            self.batches.append([int(f[0, 0, 0]) for f in frames])
            self.done.release()
            return SwapResult.untouched(frames)  # nothing to swap

    engine = NobodyThere(first_batch=2, next_batch=1)
    with start(engine) as processor:
        for i in (0, 1):
            processor.submit(frame(i))
        assert engine.done.acquire(timeout=5)
        for i in (2, 3):
            processor.submit(frame(i))
        assert processor.wait_swapped(4, timeout=5, untouched_too=True)
        untouched, swapped = processor.frames_untouched, processor.swapped_frames()
    assert engine.batches == [[0, 1], [2, 3]]  # a first batch again, not a continuation
    assert untouched == 4
    # No swapped frame: a mark from each batch's first frame that the engine found nobody.
    assert [(item.untouched, item.frame.index) for item in swapped] == [(True, 0), (True, 2)]
    assert engine.resets == 1  # the processor reset the engine before the second batch


def test_a_new_reference_never_gets_a_continuation_batch() -> None:
    engine = RecordingEngine(first_batch=3, next_batch=2)
    with start(engine) as processor:
        for i in range(3):
            processor.submit(frame(i))
        assert engine.done.acquire(timeout=5)
        processor.set_reference(np.zeros((32, 32, 3), np.uint8))
        for i in range(3, 8):
            processor.submit(frame(i))
        assert engine.done.acquire(timeout=5)
    # After the change the engine starts a new chain with a full first batch.
    assert engine.batches[0] == [0, 1, 2]
    assert len(engine.batches[1]) == 3
    assert engine.resets == 1 and processor.engine_failures == 0


def test_debug_engine_delay_is_interruptible() -> None:
    engine = DebugEngine(delay_ms=30_000, first_batch=1, next_batch=1)
    errors: list[Exception] = []

    def call() -> None:
        try:
            engine.process([np.zeros((2, 2, 3), np.uint8)])
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    engine.interrupt()
    worker.join(timeout=5)  # not the 30 s delay
    assert not worker.is_alive()
    assert len(errors) == 1 and "interrupted" in str(errors[0])
    engine.delay_s = 0
    engine.reset()  # clears the interrupt
    assert engine.process([np.zeros((2, 2, 3), np.uint8)]).swapped
    engine.close()
    engine.interrupt()  # harmless after close
