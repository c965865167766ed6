"""Real engine host processes for the tests, and waiting on them without fixed sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.control.status import DaemonStatus
from faceswap_cam.daemon.engine_host.address import (
    EngineUrl,
    parse_engine_url,
    parse_pairing_line,
)
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def status_when(app: RealtimeFaceSwapApp, condition: Callable[[DaemonStatus], bool],
                timeout: float, what: str) -> DaemonStatus:
    """The first status that meets ``condition``: states flip while a host is retried, so a
    test checks the very snapshot that showed the state it waited for."""
    seen: list[DaemonStatus] = []

    def met() -> bool:
        status = app.status()
        if condition(status):
            seen.append(status)
            return True
        return False

    wait_for(met, timeout, what)
    return seen[-1]


def gone(pid: int) -> bool:
    """Whether no process ``pid`` exists any more (a zombie still counts as present)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def serving_line(*flags: str, listen: str = "127.0.0.1:0"
                 ) -> Iterator[tuple[EngineUrl, str, subprocess.Popen[str]]]:
    """``faceswap-cam engine serve FLAGS --listen LISTEN`` until the block ends: its URL, the
    pairing line it printed, and the process. A host that ended by itself before the block
    did has its stderr printed (pytest shows it with the failure)."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve", *flags,
             "--listen", listen, "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            url = parse_pairing_line(line)
            assert url is not None, f"no pairing line: {line!r}"
            yield parse_engine_url(url), line, process
        finally:
            if process.poll() is not None:
                errors.seek(0)
                print(f"engine host exited by itself ({process.returncode}):\n{errors.read()}",
                      file=sys.stderr)
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def serving(*flags: str) -> Iterator[tuple[EngineUrl, subprocess.Popen[str]]]:
    """``faceswap-cam engine serve FLAGS --listen 127.0.0.1:0`` until the block ends."""
    with serving_line(*flags) as (url, _, process):
        yield url, process


def daemon(apps: list[RealtimeFaceSwapApp], **settings: object) -> RealtimeFaceSwapApp:
    """A started daemon (demo camera, null output) with these settings, quick to retry."""
    app = RealtimeFaceSwapApp(Settings(source="demo", sinks=["null"], fps=30, size=(320, 240),
                                       control_api=False, **settings),
                              sinks=[NullSink()])
    apps.append(app)
    app.processor.backoff_initial_s = 0.05
    app.start()
    return app
