"""The engine cadence: chosen from measured speed, moved only on evidence."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from faceswap_cam.daemon.pipeline import processor as processor_module
from faceswap_cam.daemon.pipeline.cadence import CadenceController
from faceswap_cam.daemon.pipeline.processor import AsyncFaceSwapProcessor
from faceswap_cam.models.engine import SwapResult
from tests.pipeline.test_processor_selection import RecordingEngine, frame

#: The capacity plan's H200 batch for live fp8 in the person window: 0.692 s for 8 new frames.
PLANNED_PER_FRAME = 0.692 / 8


def warmed(start: int, per_frame_s: float = PLANNED_PER_FRAME) -> CadenceController:
    controller = CadenceController(30, start=start)
    assert not controller.observe(per_frame_s)
    return controller


def test_the_warm_up_batch_is_not_counted() -> None:
    controller = CadenceController(30, start=3)
    assert not controller.observe(1.0)  # kernel selection, compilation: ten times too slow
    assert not controller.observe(PLANNED_PER_FRAME)
    assert not controller.observe(PLANNED_PER_FRAME)
    assert controller.cadence == 3


def test_one_slow_batch_does_not_move_the_planned_cadence() -> None:
    controller = warmed(3)
    for per_frame in (PLANNED_PER_FRAME, 0.2, PLANNED_PER_FRAME, PLANNED_PER_FRAME, 0.2,
                      PLANNED_PER_FRAME, PLANNED_PER_FRAME):
        assert not controller.observe(per_frame)
    assert controller.cadence == 3


@pytest.mark.parametrize("batch_s", [0.696, 0.75])
def test_a_speed_at_the_margin_keeps_the_planned_cadence(batch_s: float) -> None:
    # 0.696 s is the plan's batch plus the daemon's few milliseconds, just past the margin a
    # fresh choice leaves; 0.75 s still keeps up with 6 % to spare (a batch comes every 0.8 s).
    controller = warmed(3)
    for _ in range(12):
        assert not controller.observe(batch_s / 8)
    assert controller.cadence == 3


def test_a_slower_engine_raises_k_after_two_batches() -> None:
    controller = warmed(3)
    assert not controller.observe(0.1)  # 100 ms a frame: 10 fps at most
    assert controller.observe(0.1)
    assert controller.cadence == 4  # 30/4 = 7.5 fps, with margin


def test_an_engine_that_no_longer_keeps_up_with_room_raises_k() -> None:
    controller = warmed(3)
    controller.observe(0.78 / 8)  # 97.5 % of the time between batches
    assert controller.observe(0.78 / 8)
    assert controller.cadence == 4


def test_a_much_slower_engine_goes_straight_to_its_cadence() -> None:
    controller = warmed(1)
    controller.observe(0.5)
    assert controller.observe(0.5)
    assert controller.cadence == 18  # ceil(30 * 0.5 * 1.15)


def test_k_falls_when_most_batches_fit_a_lower_one_with_the_full_margin() -> None:
    controller = warmed(4, 0.0875)
    # 0.70 s a batch keeps up at 3, but a fresh choice would not take 3 for it: stays at 4.
    for _ in range(8):
        assert not controller.observe(0.0875)
    assert controller.cadence == 4
    for _ in range(3):
        assert not controller.observe(PLANNED_PER_FRAME)
    assert controller.observe(PLANNED_PER_FRAME)  # of the last five, all but the slowest
    assert controller.cadence == 3
    for _ in range(8):  # and at 3 it stays, though 0.70 s would not choose it
        assert not controller.observe(0.0875)
    assert controller.cadence == 3


def test_a_raise_and_a_fall_land_where_the_other_rule_keeps_them() -> None:
    for per_frame in np.linspace(0.02, 0.4, 97):
        controller = warmed(1)
        controller.observe(float(per_frame))
        controller.observe(float(per_frame))
        raised = controller.cadence
        controller = warmed(30)
        for _ in range(5):
            controller.observe(float(per_frame))
        lowered = controller.cadence
        assert raised == lowered
        for _ in range(10):  # the same speed moves neither again
            assert not controller.observe(float(per_frame))


def test_one_slow_batch_among_fast_ones_does_not_stop_a_fall() -> None:
    controller = warmed(4, 0.07)
    for per_frame in (0.07, 0.07, 0.3, 0.07):
        assert not controller.observe(per_frame)
    assert controller.observe(0.07)
    assert controller.cadence == 3


def test_a_new_engine_warms_up_again_and_forgets_the_old_speed() -> None:
    controller = warmed(3)
    controller.observe(0.1)
    controller.engine_loaded()
    assert not controller.observe(1.0)
    assert not controller.observe(0.1)  # one sample of the new engine: not yet evidence
    assert controller.cadence == 3


class Clock:
    """Stands in for the processor's monotonic clock: time passes only inside the engine."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class CostlyEngine(RecordingEngine):
    def __init__(self, clock: Clock, per_frame_costs: list[float]) -> None:
        super().__init__(first_batch=3, next_batch=2)
        self.clock = clock
        self.costs = list(per_frame_costs)

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        self.clock.now += self.costs.pop(0) * len(frames)
        return super().process(frames)


def test_the_processor_keeps_its_chain_through_one_slow_batch_and_ends_it_on_a_raise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(f"{processor_module.__name__}.time", SimpleNamespace(
        monotonic=clock.monotonic, monotonic_ns=time.monotonic_ns, sleep=time.sleep))
    engine = CostlyEngine(clock, [1.0, PLANNED_PER_FRAME, 0.2, PLANNED_PER_FRAME,
                                  PLANNED_PER_FRAME, 0.1, 0.1])
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="costly",
                                       start_cadence=3)
    with processor:
        processor.start()
        index = 0
        for size in (3, 2, 2, 2, 2):  # warm-up, then a slow batch inside the chain
            for _ in range(size):
                processor.submit(frame(index))
                index += 3
            assert engine.done.acquire(timeout=5)
        assert (processor.cadence, processor.resets) == (3, 0)
        for _ in range(2):  # the engine slows for good
            for _ in range(2):
                processor.submit(frame(index))
                index += 3
            assert engine.done.acquire(timeout=5)
        assert processor.wait_swapped(15, timeout=5)
        assert (processor.cadence, processor.resets) == (4, 1)
    assert len(engine.batches) == 7
