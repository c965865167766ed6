"""benchmarks/call_time.py: a GPU preset run's time, predicted from the plan, and its budget
(skip what will not fit, stop at the budget as at SIGTERM)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from benchmarks.call_time import (
    ASSUMED_QUANTIZE_S,
    WARMUP_BATCHES,
    Budget,
    planned_runs,
    planned_text,
    stopped_by_signals,
)
from faceswap_cam.models.plan.gpus import GPUS, Efficiency
from faceswap_cam.models.plan.timing import predict_timing
from faceswap_cam.models.plan.work import Shape, Work
from faceswap_cam.models.presets import Preset, PresetName

H200 = GPUS["h200"]
EFFICIENCY = Efficiency(0.5, 0.25, True, "test")
SHAPE = Shape(480, 480, 8, 9)
WORK = Work(10**15, 9 * 10**14, 10**14, "analytic")


def preset(name: PresetName, steps: int, guidance_scale: float = 1.0) -> Preset:
    return Preset(name=name, engine="wan-animate", steps=steps, segment_frames=9, carry=1,
                  gen_short_side=480, guidance_scale=guidance_scale)


def batch_s(steps: int, guidance_scale: float = 1.0, quantize: str = "none") -> float:
    return predict_timing(WORK, steps=steps, guidance_scale=guidance_scale, segment=9, carry=1,
                          gpu=H200, efficiency=EFFICIENCY, quantize=quantize).batch_s


def plan(runs: list[tuple[Preset, str]], quantize: dict[str, str], **kwargs: object
         ) -> dict[str, float]:
    planned = planned_runs([(p, SHAPE, label) for p, label in runs], quantize,
                           work=lambda shape: WORK, gpu=H200, efficiency=EFFICIENCY,
                           **{"iters": 2, "rebuild_s": 40.0, **kwargs})  # type: ignore[arg-type]
    return {run.label: run.seconds for run in planned}


def test_a_run_is_its_warm_ups_at_one_step_and_its_timed_batches() -> None:
    quality = preset(PresetName.QUALITY, 20, guidance_scale=2.0)
    seconds = plan([(quality, "quality")], {"quality": "none"})["quality"]
    assert seconds == pytest.approx(WARMUP_BATCHES * batch_s(1, 2.0) + 2 * batch_s(20, 2.0))
    more = plan([(quality, "quality")], {"quality": "none"}, iters=3)["quality"]
    assert more - seconds == pytest.approx(batch_s(20, 2.0))
    counted = plan([(quality, "quality")], {"quality": "none"}, counts_flops=True)["quality"]
    assert counted - seconds == pytest.approx(batch_s(1))  # one unguided forward's batch
    compiled = plan([(quality, "quality")], {"quality": "none"}, compile_s=30.0)["quality"]
    assert compiled - seconds == pytest.approx(30.0)


def test_quantizing_and_the_fresh_model_after_it_are_counted_where_they_happen() -> None:
    live, balanced = preset(PresetName.LIVE, 4), preset(PresetName.BALANCED, 8)
    seconds = plan([(live, "live-win"), (live, "live"), (balanced, "balanced")],
                   {"live-win": "fp8", "live": "fp8", "balanced": "none"})
    timed = WARMUP_BATCHES * batch_s(1, quantize="fp8") + 2 * batch_s(4, quantize="fp8")
    assert seconds["live-win"] == pytest.approx(timed + ASSUMED_QUANTIZE_S)  # converted once
    assert seconds["live"] == pytest.approx(timed)
    assert seconds["balanced"] == pytest.approx(  # a fresh unquantized model first
        WARMUP_BATCHES * batch_s(1) + 2 * batch_s(8) + 40.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_scales_predictions_by_how_the_runs_so_far_went() -> None:
    clock = FakeClock()
    budget = Budget(300, clock)
    assert budget.left() == 300 and budget.scale() == 1.0
    assert budget.allows(300) and not budget.allows(301)
    clock.now += 50
    budget.record(predicted_s=25, took_s=50)  # the GPU runs at half the assumed speed
    assert budget.left() == 250 and budget.scale() == 2.0
    assert budget.expected(100) == 200 and budget.allows(125) and not budget.allows(126)
    why = budget.why_skipped(200)
    assert "expected 400 s" in why and "x 2.00" in why and "250 s of the 300 s budget" in why
    with pytest.raises(ValueError, match="positive"):
        Budget(0)


def test_the_printed_plan_says_when_the_runs_will_not_all_fit() -> None:
    from benchmarks.call_time import PlannedRun

    budget = Budget(100, FakeClock())
    fits = planned_text([PlannedRun("live", 30), PlannedRun("quality", 60)], budget, "ASSUMED")
    assert fits[0].startswith("Predicted run time (ASSUMED;")
    assert "live 30 s, quality 60 s; 90 s in all, 100 s of the 100 s budget left" in fits[0]
    assert len(fits) == 1
    over = planned_text([PlannedRun("quality", 160)], budget, "ASSUMED")
    assert len(over) == 2 and "over the budget" in over[1]


def busy_until_stopped(limit_s: float = 10.0) -> None:
    """What a GPU batch looks like to the main thread: Python running between waits."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_budget_stops_the_run_as_sigterm_does_and_leaves_the_timers_alone() -> None:
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM))
    timer_before = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, where it runs
    started = time.monotonic()
    with stopped_by_signals(Budget(0.2)) as stop:
        stopped_at_start = stop.stopped
        busy_until_stopped()
    assert not stopped_at_start
    assert stop.stopped and stop.why == "its 0.2 s budget"
    assert time.monotonic() - started < 5
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)) == before
    # The process's interval timer is not the budget's: still armed where it was.
    assert (signal.getitimer(signal.ITIMER_REAL)[0] > 0) == (timer_before[0] > 0)
    with stopped_by_signals(Budget(60)) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a real signal ends the wait at once
    assert stop.stopped and stop.why == "SIGTERM (the call's time limit)"
    with stopped_by_signals() as unbudgeted:  # no budget: SIGTERM only
        pass
    assert not unbudgeted.stopped and signal.getsignal(signal.SIGTERM) == before[0]


def test_a_budget_spent_before_the_block_stops_it_as_it_begins() -> None:
    clock = FakeClock()
    budget = Budget(10, clock)
    clock.now += 11
    with stopped_by_signals(budget) as stop:
        assert stop.stopped and stop.why == "its 10 s budget"
    assert stop.stopped


def test_the_runs_a_budget_lets_through_and_those_it_skips() -> None:
    from benchmarks.call_time import PlannedRun, StopSignal

    budget = Budget(100, FakeClock())
    planned = [PlannedRun("live", 30), PlannedRun("quality", 160), PlannedRun("balanced", 60)]
    skipped: dict[str, str] = {}
    assert list(budget.runnable(planned, StopSignal(), skipped.__setitem__)) == [0, 2]
    assert list(skipped) == ["quality"] and "160 s" in skipped["quality"]
    # Stopped before the first run (a budget already spent): nothing runs, nothing is judged.
    assert list(budget.runnable(planned, StopSignal(stopped=True), skipped.__setitem__)) == []
