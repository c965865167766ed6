"""Engine failures, engine hangs, camera loss: the output never stops."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from faceswap_cam.daemon.capture.source import register_source
from faceswap_cam.daemon.capture.thread import WebcamCapture
from faceswap_cam.daemon.config import Fallback, Playout, Settings
from faceswap_cam.daemon.outputs.base import Sink, Tick
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.daemon.states import CaptureState
from faceswap_cam.models.engine import SwapEngine
from tests.fakes import FlakyEngine, NumberedSource
from tests.media import read_frame


class RecordingSink(Sink):
    """Keeps what it was sent: (tick kind, decoded frame index, inverted)."""

    def __init__(self) -> None:
        self.ticks: list[tuple[str, int, bool]] = []

    @property
    def description(self) -> str:
        return "recording"

    def open(self, size: tuple[int, int], fps: float) -> None:
        pass

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        index, inverted = read_frame(pixels)
        self.ticks.extend([(tick.kind, index, inverted)] * tick.repeat)

    def close(self) -> None:
        pass


def make_app(source: NumberedSource, engine_factory: object, *, seconds: float,
             timeout_s: float = 60.0, playout: Playout = Playout.SMOOTH
             ) -> tuple[RealtimeFaceSwapApp, RecordingSink]:
    register_source("numbered-test", lambda arg, size, fps: source)
    settings = Settings(source="numbered-test", sinks=["null"], engine="flaky", fps=30,
                        size=(320, 240), duration=seconds, engine_timeout_s=timeout_s,
                        stale_after_ms=100, playout=playout)
    sink = RecordingSink()
    app = RealtimeFaceSwapApp(settings, engine_factory=engine_factory,  # type: ignore[arg-type]
                              sinks=[sink])
    app.processor.backoff_initial_s = 0.05
    return app, sink


def test_engine_failure_is_reported_and_restarted() -> None:
    FlakyEngine.instances.clear()

    def factory() -> SwapEngine:
        # Only the first engine fails; the restarted one works.
        return FlakyEngine(fail_on=3 if not FlakyEngine.instances else None)

    app, sink = make_app(NumberedSource(), factory, seconds=2.0)
    stats = app.run(2.0)
    assert stats["frames_published"] == 60  # the clock never stopped
    assert len(sink.ticks) == 60
    assert stats["engine_failures"] == 1
    assert stats["engine_restarts"] == 1
    assert "illegal memory access" in stats["engine_error"]
    assert FlakyEngine.instances[0].closed
    # Swapping resumed after the restart.
    failed_at = next(i for i, (kind, _, _) in enumerate(sink.ticks) if kind == "swapped")
    assert any(kind == "swapped" for kind, _, _ in sink.ticks[failed_at + 20:])


@pytest.mark.parametrize("playout", [Playout.LIVE, Playout.SMOOTH])
def test_hung_engine_times_out_and_is_replaced(playout: Playout) -> None:
    FlakyEngine.instances.clear()
    release = threading.Event()

    def factory() -> SwapEngine:
        return FlakyEngine(hang_on=2 if not FlakyEngine.instances else None, release=release)

    app, sink = make_app(NumberedSource(), factory, seconds=2.0, timeout_s=0.3,
                         playout=playout)
    try:
        stats = app.run(2.0)
    finally:
        release.set()  # let the abandoned call return so its thread ends
    assert stats["frames_published"] == 60
    assert stats["engine_timeouts"] == 1
    assert stats["engine_restarts"] == 1
    assert "hung" in stats["engine_error"]
    kinds = [kind for kind, _, _ in sink.ticks]
    assert set(kinds) <= {"swapped", "passthrough"}
    first = kinds.index("swapped")
    if playout is Playout.LIVE:
        # Passthrough covered the hang, and swapped frames came back after it.
        hang_start = kinds.index("passthrough", first)
        assert "swapped" in kinds[hang_start:]
    else:
        # The frames made before the hang played on behind the delay, and may have bridged
        # it: swapped frames came back either way, and in capture order.
        assert kinds[-10:].count("swapped") > 0
        swapped = [index for kind, index, _ in sink.ticks if kind == "swapped"]
        assert swapped == sorted(swapped)


def test_camera_loss_keeps_output_and_recovers() -> None:
    source = NumberedSource(fail_after=15, down_opens=2)

    app, sink = make_app(source, FlakyEngine, seconds=2.0)
    app.capture.backoff_initial_s = 0.05
    stats = app.run(2.0)
    assert stats["frames_published"] == 60
    assert source.recovered.is_set()
    assert stats["camera_losses"] == 1
    assert stats["camera_reconnects"] == 1
    # Frames after the loss come from the reopened device (the numbering went on).
    indices = [index for _, index, _ in sink.ticks]
    assert max(indices) > 20


def test_frozen_camera_is_detected_and_reopened() -> None:
    source = NumberedSource(freeze_after=5)
    lost = threading.Event()

    def on_state(state: CaptureState, reason: str) -> None:
        if state is CaptureState.LOST:
            lost.set()

    capture = WebcamCapture(source, freeze_after_s=0.2, on_state=on_state)
    with capture:
        capture.open()
        capture.start()
        assert lost.wait(5.0), "a frozen stream was not detected"
    assert capture.freezes >= 1
    assert "frozen" in capture.last_error
    assert capture.frames_captured == 6  # the repeats were never pushed as new frames


@pytest.mark.parametrize("playout", [Playout.LIVE, Playout.SMOOTH])
def test_latency_stays_bounded_with_a_slow_engine(playout: Playout) -> None:
    """Frames the engine cannot keep up with are skipped whole: latency does not grow."""

    def factory() -> SwapEngine:
        from faceswap_cam.models.simple_engines import DebugEngine
        return DebugEngine(delay_ms=250, first_batch=5, next_batch=4)

    app, _sink = make_app(NumberedSource(), factory, seconds=5.0, playout=playout)
    latencies: list[float] = []
    original = app._tick

    def spy(number: int, now_ns: int, repeat: int) -> None:
        original(number, now_ns, repeat)
        if app._last_showing == "swapped" and app._last_latency is not None:
            latencies.append(app._last_latency)

    app._tick = spy  # type: ignore[method-assign]
    stats = app.run(5.0)
    assert len(latencies) > 40
    half = len(latencies) // 2
    early, late = sorted(latencies[:half]), sorted(latencies[half:])
    # The second half is no slower than the first (allowing for cadence settling).
    assert late[int(len(late) * 0.9)] <= early[int(len(early) * 0.9)] * 1.5 + 100
    assert stats["max_input_depth"] <= 60
    assert stats["cadence"] >= 2  # 250 ms per 4 frames cannot keep up with 30 fps at k=1


@pytest.mark.parametrize("playout", [Playout.LIVE, Playout.SMOOTH])
@pytest.mark.parametrize("fallback,expected", [("hold", {"held", "swapped"}),
                                                ("placeholder", {"placeholder", "swapped"})])
def test_fallback_modes_never_show_the_live_face(fallback: str, expected: set[str],
                                                 playout: Playout) -> None:
    from faceswap_cam.models.simple_engines import DebugEngine

    register_source("numbered-test", lambda arg, size, fps: NumberedSource())
    settings = Settings(source="numbered-test", sinks=["null"], fps=30, size=(320, 240),
                        fallback=Fallback(fallback), playout=playout)
    sink = RecordingSink()
    app = RealtimeFaceSwapApp(settings, engine_factory=lambda: DebugEngine(delay_ms=300),
                              sinks=[sink, NullSink()])
    stats = app.run(2.0)
    kinds = {kind for kind, _, _ in sink.ticks}
    assert "passthrough" not in kinds
    assert expected - {"held"} <= kinds
    assert stats["frames_passthrough"] == 0
    for kind, _, inverted in sink.ticks:
        if kind in ("swapped", "held"):
            assert inverted


def test_smooth_playout_plays_swapped_frames_in_capture_order() -> None:
    from faceswap_cam.models.simple_engines import DebugEngine

    register_source("numbered-test", lambda arg, size, fps: NumberedSource())
    settings = Settings(source="numbered-test", sinks=["null"], fps=30, size=(320, 240),
                        playout=Playout.SMOOTH)
    sink = RecordingSink()
    app = RealtimeFaceSwapApp(settings, engine_factory=lambda: DebugEngine(delay_ms=120),
                              sinks=[sink])
    stats = app.run(3.0)
    swapped = [index for kind, index, inverted in sink.ticks if kind == "swapped"]
    assert len(swapped) > 30
    assert swapped == sorted(swapped)
    # Fluid motion once the cadence settled: consecutive swapped frames step by the cadence,
    # where live playout would jump a whole batch at a time.
    settled = swapped[len(swapped) // 2:]
    steps = [b - a for a, b in itertools.pairwise(settled) if b != a]
    assert steps and max(steps) <= 2 * stats["cadence"], (steps, stats["cadence"])
    assert isinstance(stats["playout_delay_ms"], float) and stats["playout_delay_ms"] > 120


def test_capture_counts_frames_the_device_missed() -> None:
    class Stuttering(NumberedSource):
        def read(self) -> np.ndarray:
            if self.count == 5:
                self._pacer.wait()  # the device skips two frame slots once
                self._pacer.wait()
            return super().read()

    source = Stuttering(fps=60)
    with WebcamCapture(source) as capture:
        capture.open()
        capture.start()
        capture.ring.wait_newer(9, timeout=5)
    assert capture.frames_missed == 2


class CountingSink(RecordingSink):
    """A RecordingSink whose test can wait for the n-th tick."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        with self.cond:
            super().send(pixels, tick)
            self.cond.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.ticks) >= count, timeout=10)


def test_pause_resume_and_live_mode_changes() -> None:
    from faceswap_cam.models.simple_engines import DebugEngine

    register_source("numbered-test", lambda arg, size, fps: NumberedSource())
    settings = Settings(source="numbered-test", sinks=["null"], fps=30, size=(320, 240))
    sink = CountingSink()
    app = RealtimeFaceSwapApp(settings, engine_factory=DebugEngine, sinks=[sink])
    with app:
        assert sink.wait_for(10)
        app.set_paused(True)
        paused_from = len(sink.ticks)
        assert sink.wait_for(paused_from + 10)
        app.set_paused(False)
        resumed_from = len(sink.ticks)
        assert sink.wait_for(resumed_from + 15)
        app.set_playout("live")
        app.set_fallback("placeholder")
        with pytest.raises(ValueError, match="'fast' is not one of: live, smooth"):
            app.set_playout("fast")
        assert app.selector.playout is Playout.LIVE
        assert app.selector.fallback is Fallback.PLACEHOLDER
    kinds = [kind for kind, _, _ in sink.ticks]
    # Every tick after the pause took effect is the privacy card, until resumed.
    assert set(kinds[paused_from + 1:resumed_from]) == {"paused"}
    assert "swapped" in kinds[resumed_from + 1:]
    assert app.stats()["frames_paused"] >= 9


def test_a_failing_tick_does_not_stop_the_camera() -> None:
    register_source("numbered-test", lambda arg, size, fps: NumberedSource())
    settings = Settings(source="numbered-test", sinks=["null"], fps=30, size=(320, 240),
                        engine="passthrough")
    sink = CountingSink()
    app = RealtimeFaceSwapApp(settings, sinks=[sink])
    original = app.selector.choose
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("bug in one tick")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    app.selector.choose = flaky  # type: ignore[method-assign,assignment]
    stats = app.run(1.0)
    assert stats["tick_errors"] == 1
    assert len(sink.ticks) == 29  # every other tick still went out
