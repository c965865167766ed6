"""Real engine host processes for the tests, and waiting on them without fixed sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from faceswap_cam.daemon.engine_host.address import (
    EngineUrl,
    parse_engine_url,
    parse_pairing_line,
)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """Whether no process ``pid`` exists any more (a zombie still counts as present)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def serving(*flags: str) -> Iterator[tuple[EngineUrl, subprocess.Popen[str]]]:
    """``faceswap-cam engine serve FLAGS --listen 127.0.0.1:0`` until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve", *flags,
         "--listen", "127.0.0.1:0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = parse_pairing_line(line)
        assert url is not None, f"no pairing line: {line!r}"
        yield parse_engine_url(url), process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
