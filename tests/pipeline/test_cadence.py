"""The engine cadence: chosen from measured speed, moved only on evidence."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from faceswap_cam.daemon.config import load_settings
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline import processor as processor_module
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.daemon.pipeline.cadence import (
    HOLD,
    HOLD_FAR,
    MAX_HOLD,
    MAX_HOLD_FAR,
    WINDOW,
    CadenceController,
)
from faceswap_cam.daemon.pipeline.processor import AsyncFaceSwapProcessor
from faceswap_cam.daemon.states import EngineState
from faceswap_cam.models.engine import EngineError, GenerationWindow, SwapResult
from faceswap_cam.models.simple_engines import DebugEngine
from tests.pipeline.test_processor_selection import RecordingEngine, frame

#: The capacity plan's H200 batch for live fp8 in the person window: 0.692 s for 8 new frames.
PLANNED_PER_FRAME = 0.692 / 8
#: A batch of 0.744 s: k = 3 keeps it (5 % to spare) but would not be chosen for it (10 %).
BETWEEN = 0.744 / 8


def warmed(start: int, per_frame_s: float = PLANNED_PER_FRAME) -> CadenceController:
    controller = CadenceController(30, start=start)
    assert not controller.observe(per_frame_s)
    return controller


def test_the_warm_up_batch_is_not_counted() -> None:
    controller = CadenceController(30, start=3)
    # Kernel selection, compilation: the first call is ten times too slow, and so is the
    # second (a continuing call's own shapes). Counted, the two would be the median of three.
    assert not controller.observe(1.0)
    assert not controller.observe(1.0)
    for _ in range(3):
        assert not controller.observe(PLANNED_PER_FRAME)
    assert controller.cadence == 3


def test_one_slow_batch_does_not_move_the_planned_cadence() -> None:
    controller = warmed(3)
    for per_frame in (PLANNED_PER_FRAME, 0.2, PLANNED_PER_FRAME, PLANNED_PER_FRAME, 0.2,
                      PLANNED_PER_FRAME, PLANNED_PER_FRAME, 0.3, PLANNED_PER_FRAME):
        assert not controller.observe(per_frame)
    assert controller.cadence == 3


@pytest.mark.parametrize("batch_s", [0.696, 0.75])
def test_a_speed_at_the_margin_keeps_the_planned_cadence(batch_s: float) -> None:
    # 0.696 s is the plan's batch plus the daemon's few milliseconds; 0.75 s is past the
    # margin a fresh choice leaves, but still keeps up with 6 % to spare (a batch comes every
    # 0.8 s).
    controller = warmed(3)
    for _ in range(40):
        assert not controller.observe(batch_s / 8)
    assert controller.cadence == 3


def test_a_slower_engine_raises_k_after_three_batches() -> None:
    controller = warmed(3)
    assert not controller.observe(0.1)  # 100 ms a frame: 10 fps at most
    assert not controller.observe(0.1)
    assert controller.observe(0.1)
    assert controller.cadence == 4  # 30/4 = 7.5 fps, with margin


def test_an_engine_that_no_longer_keeps_up_with_room_raises_k() -> None:
    controller = warmed(3)
    for _ in range(2):
        controller.observe(0.78 / 8)  # 97.5 % of the time between batches
    assert controller.observe(0.78 / 8)
    assert controller.cadence == 4


def test_a_much_slower_engine_goes_straight_to_its_cadence() -> None:
    controller = warmed(1)
    controller.observe(0.5)
    controller.observe(0.5)
    assert controller.observe(0.5)
    assert controller.cadence == 17  # ceil(30 * 0.5 * 1.10)


def test_k_falls_after_the_hold_when_the_full_margin_fits() -> None:
    controller = warmed(4, BETWEEN)
    # 0.744 s a batch keeps up at 3, but a fresh choice would not take 3 for it: stays at 4.
    for _ in range(30):
        assert not controller.observe(BETWEEN)
    assert controller.cadence == 4
    controller = warmed(4)
    for _ in range(HOLD - 1):
        assert not controller.observe(PLANNED_PER_FRAME)
    assert controller.observe(PLANNED_PER_FRAME)
    assert controller.cadence == 3
    for _ in range(30):  # and at 3 it stays, though 0.744 s would not choose it
        assert not controller.observe(BETWEEN)
    assert controller.cadence == 3


def rise_and_fall(controller: CadenceController, wait: int, *, slow: float = 0.1,
                  high: int = 4) -> None:
    """Three slow batches raise k from 3 to ``high``; it falls back on exactly the wait-th
    fast one."""
    for _ in range(3):
        controller.observe(slow)
    assert controller.cadence == high
    for _ in range(wait - 1):
        assert not controller.observe(PLANNED_PER_FRAME)
    assert controller.observe(PLANNED_PER_FRAME)
    assert controller.cadence == 3


def test_every_reversal_doubles_the_wait_before_k_falls() -> None:
    controller = warmed(3)
    # Each round is two reversals (up after a fall, down after a rise) but the first rise.
    for wait in (HOLD, 4 * HOLD, 16 * HOLD, MAX_HOLD):
        rise_and_fall(controller, wait)


def flapped(controller: CadenceController) -> CadenceController:
    """Up and down twice, as a noisy engine goes: three reversals back the hold off to 96."""
    rise_and_fall(controller, HOLD)
    rise_and_fall(controller, 4 * HOLD)
    return controller


def test_a_far_faster_engine_falls_several_steps_without_the_backed_off_hold() -> None:
    controller = flapped(warmed(3))
    # Another program takes the GPU for three calls, and leaves it.
    rise_and_fall(controller, HOLD_FAR, slow=0.6, high=20)


def test_undoing_a_far_move_backs_the_far_hold_off() -> None:
    controller = warmed(3)
    # A GPU shared in bursts: k must not keep swinging between 3 and 20.
    for wait in (HOLD_FAR, 4 * HOLD_FAR, MAX_HOLD_FAR, MAX_HOLD_FAR):
        rise_and_fall(controller, wait, slow=0.6, high=20)


def test_a_rise_looks_at_the_recent_batches_only() -> None:
    controller = warmed(3)
    for _ in range(100):
        controller.observe(PLANNED_PER_FRAME)
    slow = 0
    while not controller.observe(0.1):  # the engine slows for good
        slow += 1
    assert slow == WINDOW // 2  # the median of the last 12 turned: not of all 100 before
    assert controller.cadence == 4


def test_a_fall_weighs_every_batch_since_the_change() -> None:
    controller = warmed(4, BETWEEN)
    for _ in range(40):  # 0.744 s: keeps 4, would not choose 3 (and 4 is where it started)
        assert not controller.observe(BETWEEN)
    fast = 0
    while not controller.observe(PLANNED_PER_FRAME):
        fast += 1
    # Not after the 7 that turn a 12-batch median: after half of all 80 since the start
    # (their median is then halfway between the two speeds, which fits 3).
    assert fast == 39
    assert controller.cadence == 3


def test_after_a_slow_spell_k_goes_back_to_where_it_was_kept() -> None:
    """0.744 s a batch: k = 3 keeps it, though a fresh choice would take 4. A slow spell
    raises k; once it is over, k goes back to 3 after the hold, not stay at 4 for good."""
    controller = warmed(3, BETWEEN)
    for _ in range(20):
        assert not controller.observe(BETWEEN)
    while not controller.observe(0.1):  # the slow spell: another program on the GPU
        pass
    assert controller.cadence == 4
    back = next((n for n in range(MAX_HOLD) if controller.observe(BETWEEN)), None)
    assert controller.cadence == 3 and back == HOLD - 1
    for _ in range(40):
        assert not controller.observe(BETWEEN)
    # A far rise (a program that took the GPU) falls back to the choice, then to the k kept.
    controller = warmed(3, BETWEEN)
    for _ in range(3):
        controller.observe(0.6)
    assert controller.cadence == 20
    seen = [controller.cadence for _ in range(200) if controller.observe(BETWEEN)]
    assert seen == [4, 3]
    # An engine that stays slower than 3 keeps does not go back.
    controller = warmed(3)
    for _ in range(3):
        controller.observe(0.1)
    for _ in range(100):
        assert not controller.observe(0.78 / 8)
    assert controller.cadence == 4
    # Once only: a rise after going back (an engine that noisy at 3) stays up.
    controller = warmed(3, BETWEEN)
    for _ in range(3):
        controller.observe(0.1)
    assert [controller.cadence for _ in range(MAX_HOLD) if controller.observe(BETWEEN)] == [3]
    while not controller.observe(0.1):  # a second slow spell
        pass
    assert controller.cadence == 4
    for _ in range(4 * MAX_HOLD):
        assert not controller.observe(BETWEEN)


def test_noise_at_the_keep_limit_does_not_keep_moving_k() -> None:
    """0.744 s a batch with 5 % noise each way: k may go back once after a rise, then stays
    (the return and the rise share the keep margin, and would otherwise take turns)."""
    rng = np.random.default_rng(0)
    controller = warmed(3, BETWEEN)
    changes = sum(controller.observe(BETWEEN * float(rng.uniform(0.95, 1.05)))
                  for _ in range(20_000))
    assert changes <= 3


def test_a_new_engine_starts_with_the_short_hold() -> None:
    controller = flapped(warmed(3))
    controller.engine_loaded()
    controller.observe(1.0)  # its warm-up
    rise_and_fall(controller, HOLD)


def test_a_raise_and_a_fall_land_where_the_other_rule_keeps_them() -> None:
    for per_frame in np.linspace(0.02, 0.4, 97):
        controller = warmed(1)
        for _ in range(3):
            controller.observe(float(per_frame))
        raised = controller.cadence
        controller = warmed(30)
        for _ in range(HOLD):
            controller.observe(float(per_frame))
        lowered = controller.cadence
        assert raised == lowered
        for _ in range(40):  # the same speed moves neither again
            assert not controller.observe(float(per_frame))


def test_a_new_engine_warms_up_again_and_forgets_the_old_speed() -> None:
    controller = warmed(3)
    controller.observe(0.1)
    controller.observe(0.1)
    controller.engine_loaded()
    assert not controller.observe(1.0)
    assert not controller.observe(0.1)  # two samples of the new engine: not yet evidence
    assert not controller.observe(0.1)
    assert controller.cadence == 3


class Clock:
    """Stands in for the processor's monotonic clock: time passes only inside the engine."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class CostlyEngine(RecordingEngine):
    """Each call costs ``costs[i]`` seconds per new frame of a continuing call (2 frames); a
    call listed in ``nobody`` finds nobody in view and hands the frames back untouched."""

    def __init__(self, clock: Clock, costs: list[float], nobody: set[int] | None = None) -> None:
        super().__init__(first_batch=3, next_batch=2)
        self.clock = clock
        self.costs = list(costs)
        self.nobody = nobody or set()

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        call = len(self.batches)
        self.clock.now += self.costs.pop(0) * self.next_batch
        result = super().process(frames)
        return SwapResult.untouched(frames) if call in self.nobody else result


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(f"{processor_module.__name__}.time", SimpleNamespace(
        monotonic=clock.monotonic, monotonic_ns=time.monotonic_ns, sleep=time.sleep))
    return clock


def feed(processor: AsyncFaceSwapProcessor, engine: CostlyEngine, start: int,
         sizes: Sequence[int], k: int = 3) -> int:
    """Batches of ``sizes`` frames k apart, each handed over once the last call is done."""
    index = start
    for size in sizes:
        for _ in range(size):
            processor.submit(frame(index))
            index += k
        assert engine.done.acquire(timeout=5)
    return index


def test_the_processor_keeps_its_chain_through_one_slow_batch_and_ends_it_on_a_raise(
        clock: Clock) -> None:
    engine = CostlyEngine(clock, [1.0, PLANNED_PER_FRAME, 0.2, PLANNED_PER_FRAME,
                                  PLANNED_PER_FRAME, 0.1, 0.1, 0.1])
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="costly",
                                       start_cadence=3)
    with processor:
        processor.start()
        index = feed(processor, engine, 0, (3, 2, 2, 2, 2))  # warm-up, a slow batch among
        assert processor.wait_batches(5, timeout=5)
        assert (processor.cadence, processor.resets) == (3, 0)
        feed(processor, engine, index, (2, 2, 2))  # the engine slows for good
        assert processor.wait_batches(8, timeout=5)
        assert (processor.cadence, processor.resets) == (4, 1)


def test_the_warm_up_is_the_first_call_that_swapped(clock: Clock) -> None:
    # Nobody in view at first, then the device's warm-up: two slow calls (the first swap and
    # the first continuing call's own shapes) before the engine's own speed.
    engine = CostlyEngine(clock, [0.001, 1.0, 1.0, PLANNED_PER_FRAME, PLANNED_PER_FRAME],
                          nobody={0})
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="costly",
                                       start_cadence=3)
    with processor:
        processor.start()
        feed(processor, engine, 0, (3, 3, 2, 2, 2))
        assert processor.wait_batches(5, timeout=5)
        assert processor.cadence == 3
        # Smooth playout's delay leaves the warm-up call's frames out as well.
        assert [f.warm_up for f in processor.swapped_frames() if not f.untouched] \
            == [True] * 3 + [False] * 6


def test_calls_at_a_new_generation_size_do_not_count_as_speed(clock: Clock) -> None:
    # The person moves about: three calls in a row each at another window shape, slow from
    # making their streams (and kernels); then the engine's own speed again.
    class Moving(CostlyEngine):
        def __init__(self) -> None:
            super().__init__(clock, [1.0, PLANNED_PER_FRAME, PLANNED_PER_FRAME, 0.3, 0.3, 0.3,
                                     PLANNED_PER_FRAME])

        def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
            size = 32 * (1 + max(0, len(self.batches) - 2))  # calls 3 on: a new size each
            result = super().process(frames)
            self.generation_window = GenerationWindow(0, 0, 64, 64, size, size)
            return result

    engine = Moving()
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="costly",
                                       start_cadence=3)
    with processor:
        processor.start()
        feed(processor, engine, 0, (3, 2, 2, 2, 2, 2, 2))
        assert processor.wait_batches(7, timeout=5)
        assert (processor.cadence, processor.resets) == (3, 0)
        assert processor.generation_window == (0, 0, 64, 64, 160, 160)


def test_a_restarted_engine_has_its_own_warm_up_whatever_the_old_ones_window(
        clock: Clock) -> None:
    class Sized(CostlyEngine):
        def __init__(self, size: int, fail_at: int | None = None) -> None:
            super().__init__(clock, [PLANNED_PER_FRAME] * 4)
            self.size, self.fail_at = size, fail_at

        def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
            if len(self.batches) == self.fail_at:
                self.done.release()
                raise EngineError("lost the GPU")
            result = super().process(frames)
            self.generation_window = GenerationWindow(0, 0, 64, 64, self.size, self.size)
            return result

    old, new = Sized(32, fail_at=2), Sized(48)
    engines = [old, new]
    processor = AsyncFaceSwapProcessor(lambda: engines.pop(0), fps=30, engine_name="costly",
                                       start_cadence=3, backoff_initial_s=0.01)
    with processor:
        processor.start()
        index = feed(processor, old, 0, (3, 2, 2))  # the third call fails
        for _ in range(500):
            if processor.state is EngineState.RUNNING and not engines:
                break
            time.sleep(0.01)
        feed(processor, new, index, (3, 2))
        assert processor.wait_batches(4, timeout=5)
    flags = [f.warm_up for f in processor.swapped_frames() if not f.untouched]
    # The old engine's warm-up and one steady call, the new one's warm-up, then its pace.
    assert flags == [True] * 3 + [False] * 2 + [True] * 3 + [False] * 2


def test_calls_that_found_nobody_do_not_count_as_speed(clock: Clock) -> None:
    # Nobody in view: the engine stops after its detector, far faster than a swap. Counted,
    # twelve of them would drop k to 1 just before the person comes back.
    calls = HOLD + 4
    engine = CostlyEngine(clock, [0.001] * calls, nobody=set(range(calls)))
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="costly",
                                       start_cadence=3)
    with processor:
        processor.start()
        feed(processor, engine, 0, [3] * calls)  # every untouched call ends the chain
        assert processor.wait_batches(calls, timeout=5)
        assert processor.cadence == 3
    assert processor.frames_untouched == 3 * calls


def test_a_chain_start_is_timed_per_frame_of_a_continuing_call(clock: Clock) -> None:
    # An engine that cannot keep up starts a new chain every call (3 frames here, 2 when it
    # continues) for the same work: per frame of its own batch it would look a third faster.
    engine = CostlyEngine(clock, [0.1] * 4)  # 0.2 s a call, a call due every 0.2 s at k = 3
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="costly",
                                       start_cadence=3)
    with processor:
        processor.start()
        index = 0
        for _ in range(4):  # a gap before each batch: each is a chain's first
            index = feed(processor, engine, index, (3,)) + 3
        assert processor.wait_batches(4, timeout=5)
        assert processor.cadence == 4
    assert [len(batch) for batch in engine.batches] == [3, 3, 3, 3]


def test_the_app_starts_an_engine_the_plan_does_not_know_where_asked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    settings = load_settings({"source": "demo", "engine": "debug", "sinks": ["null"],
                              "control_api": False}, config_path=config, environ={})
    app = RealtimeFaceSwapApp(settings, engine_factory=DebugEngine,
                              sinks=[NullSink()], start_cadence=4)
    try:
        assert app.processor.cadence == 4
    finally:
        app.close()
