"""The daemon with its engine in a real child process: the host is killed, hangs, or cannot
start, and the camera keeps publishing while the host is replaced."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.capture.source import register_source
from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.control.status import EngineHostState
from faceswap_cam.daemon.engine_host.child import ChildEngineHost
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from tests.conftest import faceswap_cam_exe
from tests.engine_host.helpers import gone, status_when, wait_for
from tests.fakes import NumberedSource

FPS = 30


@pytest.fixture
def daemon_factory() -> Iterator[list[RealtimeFaceSwapApp]]:
    apps: list[RealtimeFaceSwapApp] = []
    yield apps
    for app in apps:
        app.close()


def start(apps: list[RealtimeFaceSwapApp], *, engine: str = "debug", delay_ms: float = 0,
          timeout_s: float = 10.0, backoff_s: float = 0.05,
          **engine_settings: Any) -> RealtimeFaceSwapApp:
    register_source("numbered-host-test", lambda arg, size, fps: NumberedSource(fps=FPS))
    settings = Settings(source="numbered-host-test", sinks=["null"], engine=engine,
                        engine_host="child", engine_delay_ms=delay_ms,
                        engine_timeout_s=timeout_s, fps=FPS, size=(320, 240),
                        control_api=False, stale_after_ms=100, **engine_settings)
    app = RealtimeFaceSwapApp(settings, sinks=[NullSink()])
    apps.append(app)
    app.processor.backoff_initial_s = backoff_s
    app.start()
    return app


def host(app: RealtimeFaceSwapApp) -> ChildEngineHost:
    assert isinstance(app.engine_host, ChildEngineHost)
    return app.engine_host


def publishing(app: RealtimeFaceSwapApp, seconds: float) -> None:
    """The clock went on: about ``seconds`` worth of ticks were published meanwhile."""
    before = app.ticks
    time.sleep(seconds)
    assert app.ticks - before >= 0.8 * seconds * FPS


def test_a_killed_host_is_replaced_and_swapping_resumes(
        daemon_factory: list[RealtimeFaceSwapApp]) -> None:
    app = start(daemon_factory, delay_ms=150)
    wait_for(lambda: app.processor.frames_swapped >= 10, 20, "the first swapped frames")
    first = host(app).pid
    assert first is not None
    swapped = app.processor.frames_swapped
    os.kill(first, signal.SIGKILL)  # batches run back to back: this lands mid-batch

    wait_for(lambda: host(app).pid != first, 20, "a new host process")
    publishing(app, 0.3)
    wait_for(lambda: app.processor.frames_swapped >= swapped + 10, 20,
             "swapped frames from the new host")
    assert gone(first)  # killed and reaped, not a zombie
    status = app.status().engine_host
    assert status is not None and status.pid == host(app).pid
    assert status.restarts >= 1 and status.state is EngineHostState.RUNNING
    assert f"pid {first}" in status.error and "SIGKILL" in status.error
    assert app.stats()["engine_host_restarts"] >= 1
    assert app.shown["passthrough"] > 0  # the fallback filled the gap
    last = host(app).pid
    app.close()
    assert last is not None and gone(last)


@pytest.mark.parametrize("hang", ["long-call", "frozen-process"])
def test_a_hung_host_is_killed_and_replaced(daemon_factory: list[RealtimeFaceSwapApp],
                                           hang: str) -> None:
    if hang == "long-call":
        # Every call outlasts the timeout: the host never answers in time.
        app = start(daemon_factory, delay_ms=30_000, timeout_s=1.0)
        wait_for(lambda: host(app).pid is not None and app.processor.state.value == "running",
                 20, "the host to be up")
    else:
        # A wedged process (a driver hang): it cannot even read the interrupt.
        app = start(daemon_factory, delay_ms=50, timeout_s=1.0)
        wait_for(lambda: app.processor.frames_swapped >= 5, 20, "the first swapped frames")
    first = host(app).pid
    assert first is not None
    if hang == "frozen-process":
        os.kill(first, signal.SIGSTOP)
    wait_for(lambda: gone(first), 20, f"the hung host {first} to be killed")
    wait_for(lambda: host(app).pid not in (None, first), 20, "a new host")
    assert app.processor.engine_timeouts >= 1
    assert host(app).report().restarts >= 1
    publishing(app, 0.3)
    if hang == "frozen-process":
        status = app.status().engine_host
        assert status is not None and "did not answer in time and was killed" in status.error
        wait_for(lambda: app.processor.frames_swapped > 5 + app.processor.engine_timeouts, 20,
                 "swapped frames from the new host")


def test_a_host_that_cannot_start_leaves_the_camera_running(
        daemon_factory: list[RealtimeFaceSwapApp], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="faceswap_cam.daemon.pipeline.processor")
    # A real failure only the host finds: a Wan-Animate weights folder that is there but
    # holds nothing loadable (what a half-copied or corrupt download looks like).
    weights = tmp_path / "wan-animate"
    (weights / "transformer").mkdir(parents=True)
    (weights / "model_index.json").write_text("{}")
    reference = tmp_path / "face.png"
    cv2.imwrite(str(reference), np.full((256, 256, 3), 128, np.uint8))
    app = start(daemon_factory, engine="wan-animate", backoff_s=0.4, wan_model=str(weights),
                preprocessor="stand-in", mode="animate", reference=reference)
    launcher = host(app)
    wait_for(lambda: len(launcher.start_times) >= 4, 30, "the host to be started 4 times")
    publishing(app, 0.3)
    # Between tries (the processor loads a new host meanwhile, and says so) the daemon
    # reports the error and the fix; the host's own block keeps them through a retry.
    status = status_when(app, lambda s: s.state.value == "error" and s.engine_host is not None
                         and s.engine_host.state is EngineHostState.FAILED, 10,
                         "a pause between tries")
    assert status.engine_host is not None
    assert status.engine_host.state is EngineHostState.FAILED
    assert status.engine_host.restarts >= 3
    assert "exited at start (exit code 1)" in status.engine_host.error
    assert "model_index.json" in status.engine_host.error  # the host's reason, passed on
    assert status.engine_host.fix and status.engine_fix
    assert "exited at start" in status.engine_error
    assert app.shown["passthrough"] > 0
    # The pauses between starts grow (0.4 s, 0.8 s, 1.6 s ...): read from the processor's own
    # announcements, since each start's cost on a loaded machine would blur measured gaps.
    waits = [float(m.group(1)) for m in (
        re.search(r"restarting engine wan-animate in ([0-9.]+) s", record.getMessage())
        for record in caplog.records) if m]
    assert waits[:3] == [0.4, 0.8, 1.6], waits
    # and each start really waited at least its pause after the one before
    gaps = [b - a for a, b in zip(launcher.start_times, launcher.start_times[1:], strict=False)]
    assert all(gap >= wait for gap, wait in zip(gaps, waits, strict=False)), (gaps, waits)


def test_the_cli_runs_the_debug_engine_in_a_child(cli_env: dict[str, str], clip: Path) -> None:
    result = subprocess.run(
        [faceswap_cam_exe(), "run", "--engine", "debug", "--engine-host", "child",
         "--source", f"file:{clip}", "--sink", "null", "--size", "320x240", "--duration", "3"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["engine_host_restarts"] == 0
    assert stats["engine_frames"] > 0 and stats["frames_swapped"] > 0
    assert "starting engine host debug" in result.stderr


class _DyingProcess:
    """A host process that closed its connection as it died, a moment before its exit status
    can be read (what a SIGKILL mid-batch looks like to the daemon)."""

    pid = 4242

    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        self.code = -signal.SIGKILL
        return self.code


def test_a_host_lost_mid_call_is_reported_by_how_it_ended(tmp_path: Path) -> None:
    child = ChildEngineHost("debug", {}, frame_size=None, call_timeout_s=1.0)
    child._proxy_closed(_DyingProcess(), tmp_path / "gone.sock",  # type: ignore[arg-type]
                        hung=False, failure="the engine host closed the connection")
    status = child.report()
    assert status.state is EngineHostState.RESTARTING
    assert "(pid 4242) died: killed by SIGKILL" in status.error
    child.close()
