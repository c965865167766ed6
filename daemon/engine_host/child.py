"""The local engine host: a child process the daemon starts, talks to, and replaces.

:meth:`ChildEngineHost.connect` is the processor's engine factory: each call starts a fresh
host (``faceswap-cam engine serve --listen unix:...`` with a new token in its environment),
waits for its pairing line and returns a connected proxy. The processor stays the supervisor:
its timeout and restart-with-backoff decide when; closing the proxy stops the process (at once
when a call hung, politely otherwise, with SIGKILL after a grace period) and reaps it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from faceswap_cam.daemon.control.status import EngineHostState, EngineHostStatus
from faceswap_cam.daemon.engine_host.address import parse_engine_url, parse_pairing_line
from faceswap_cam.daemon.engine_host.proxy import EngineHostError, EngineHostProxy

logger = logging.getLogger(__name__)

#: The daemon hands its child the token and the exact engine options through these, never argv
#: (argv is visible to every user of the machine).
TOKEN_ENV = "FACESWAP_CAM_ENGINE_HOST_TOKEN"
OPTIONS_ENV = "FACESWAP_CAM_ENGINE_HOST_OPTIONS"
#: Loading Wan-Animate-14B takes minutes; a host that prints nothing for this long is stuck.
START_TIMEOUT_S = 900.0
#: How long a host may take to stop after being asked before it is killed.
GRACE_S = 3.0
#: How long a host whose connection broke is given to be seen exiting (it died, or not).
LOST_EXIT_WAIT_S = 1.0
_DIAGNOSIS_LINES = 20


class ChildEngineHost:
    """Starts, connects and stops the local engine host; says what happened to it."""

    def __init__(self, engine: str, options: dict[str, Any], *,
                 frame_size: tuple[int, int] | None, call_timeout_s: float,
                 start_timeout_s: float = START_TIMEOUT_S, grace_s: float = GRACE_S,
                 log_level: str = "INFO", gpus: int = 1) -> None:
        self.engine = engine
        self.gpus = gpus
        self._options_json = json.dumps(options)
        self._frame_size = frame_size
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = start_timeout_s
        self._grace_s = grace_s
        self._log_level = log_level
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._starts = 0
        #: monotonic times of every start (the pauses between them show the backoff).
        self.start_times: list[float] = []
        self._state = EngineHostState.STARTING
        self._error = ""
        self._fix = ""

    # --- the engine factory ----------------------------------------------------------------

    def connect(self) -> EngineHostProxy:
        """Start a host process and return a proxy connected to it."""
        if self._closed.is_set():
            raise EngineHostError("the daemon is stopping")
        process, token, path, log = self._spawn()
        try:
            url = self._wait_for_pairing(process, log)
            proxy = EngineHostProxy.connect(
                parse_engine_url(url), token, frame_size=self._frame_size,
                call_timeout_s=self._call_timeout_s,
                on_close=lambda hung, failure: self._proxy_closed(process, path, hung,
                                                                  failure))
        except EngineHostError as exc:
            self._stop(process, kill=True)
            self._remove(path)
            self._set(EngineHostState.FAILED, str(exc), exc.fix or (
                "fix what the error says (`faceswap-cam doctor` checks the set-up); the camera "
                "shows the fallback meanwhile and the daemon starts the host again by itself"))
            raise
        with self._lock:
            self._url = url
            self._state = EngineHostState.RUNNING
        logger.info("engine host %s running (pid %d, %s)", self.engine, process.pid, url)
        return proxy

    def _spawn(self) -> tuple[subprocess.Popen[bytes], str, Path, _HostLog]:
        with self._lock:
            if self._folder is None:
                # Private (0700) and short: a Unix socket path has a ~100-byte limit.
                self._folder = Path(tempfile.mkdtemp(prefix="fscam-engine-"))
            self._starts += 1
            path = self._folder / f"engine-{os.getpid()}-{self._starts}.sock"
            self._state = EngineHostState.STARTING
            self.start_times.append(time.monotonic())
        token = secrets.token_urlsafe(32)
        command = self.command(path)
        environment = {**os.environ, TOKEN_ENV: token, OPTIONS_ENV: self._options_json}
        # Its own session: a Ctrl-C in the terminal reaches the daemon, which stops the host
        # in order, rather than both at once.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=environment,
                                   start_new_session=True)
        with self._lock:
            self._process = process
        assert process.stderr is not None
        log = _HostLog(process.stderr, process.pid)
        logger.info("starting engine host %s (pid %d)", self.engine, process.pid)
        return process, token, path, log

    def command(self, path: Path) -> list[str]:
        """The host's command line for a socket at ``path`` (the options go by environment)."""
        command = [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve",
                   "--engine", self.engine, "--listen", f"unix:{path}",
                   "--log-level", self._log_level, "--exit-with-parent", str(os.getpid())]
        if self.gpus > 1:
            command += ["--gpus", str(self.gpus)]
        return command

    def _wait_for_pairing(self, process: subprocess.Popen[bytes], log: _HostLog) -> str:
        lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        assert process.stdout is not None
        threading.Thread(target=_read_lines, args=(process.stdout, lines),
                         name=f"engine-host-{process.pid}-out", daemon=True).start()
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            if self._closed.is_set():
                raise EngineHostError("the daemon is stopping")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineHostError(f"the engine host printed no pairing line within "
                                      f"{self._start_timeout_s:.0f} s",
                                      "see the engine host's log above")
            try:
                line = lines.get(timeout=min(0.2, remaining))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the host has exited or is exiting
                code = _wait(process, 5.0)
                reason = log.reason()
                raise EngineHostError(f"the engine host exited at start ({_describe(code)})"
                                      + (f": {reason}" if reason else ""))
            url = parse_pairing_line(line)
            if url is not None:
                return url

    # --- stopping --------------------------------------------------------------------------

    def _proxy_closed(self, process: subprocess.Popen[bytes], path: Path, hung: bool,
                      failure: str) -> None:
        # A host that died closes its connection as it goes, a moment before its exit status
        # can be read: wait for it briefly, so the error says how it ended.
        died = _wait(process, LOST_EXIT_WAIT_S) if failure and not hung else process.poll()
        self._stop(process, kill=hung)
        self._remove(path)
        if self._closed.is_set():
            return
        if hung:
            error = (f"the engine host (pid {process.pid}) did not answer in time and was "
                     "killed")
            fix = ("the daemon starts a new host by itself; if this repeats, raise "
                   "--engine-timeout-s or use lighter settings (fewer steps, a smaller "
                   "--gen-size)")
        elif died is not None:
            error = f"the engine host (pid {process.pid}) died: {_describe(died)}"
            fix = ("the daemon starts a new host by itself; if this repeats, check the host's "
                   "log above (out of memory? a driver error?)")
        elif failure:
            error = f"the engine host (pid {process.pid}) was stopped after: {failure}"
            fix = "the daemon starts a new host by itself"
        else:
            self._set(EngineHostState.STOPPED, "", "")  # an orderly stop
            return
        self._set(EngineHostState.RESTARTING, error, fix)
        logger.warning("%s", error)

    def _stop(self, process: subprocess.Popen[bytes], *, kill: bool) -> None:
        """Stop and reap ``process``: SIGKILL at once if ``kill``, else SIGTERM first."""
        if process.poll() is None:
            if not kill:
                process.send_signal(signal.SIGTERM)
                if _wait(process, self._grace_s) is None:
                    logger.warning("engine host (pid %d) did not stop within %.0f s: "
                                   "killing it", process.pid, self._grace_s)
                    kill = True
            if kill:
                process.kill()
        _wait(process, 10.0)

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def close(self) -> None:
        """Stop any host still running (also one that is still starting); idempotent."""
        self._closed.set()
        with self._lock:
            process, folder = self._process, self._folder
            self._folder = None
            self._state = EngineHostState.STOPPED
        if process is not None:
            self._stop(process, kill=False)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    # --- what the status shows -------------------------------------------------------------

    def _set(self, state: EngineHostState, error: str, fix: str) -> None:
        with self._lock:
            if self._state is not EngineHostState.STOPPED:
                self._state = state
            self._error, self._fix = error, fix

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def report(self) -> EngineHostStatus:
        with self._lock:
            return EngineHostStatus(pid=self.pid, url=self._url, state=self._state,
                                    restarts=max(0, self._starts - 1), error=self._error,
                                    fix=self._fix)


class _HostLog:
    """The host's stderr into the daemon's log (which also keeps the pipe from filling up),
    with the last lines kept to say why a host exited."""

    def __init__(self, stream: IO[bytes], pid: int) -> None:
        self._tail: collections.deque[str] = collections.deque(maxlen=_DIAGNOSIS_LINES)
        self._thread = threading.Thread(target=self._forward, args=(stream, pid),
                                        name=f"engine-host-{pid}-log", daemon=True)
        self._thread.start()

    def _forward(self, stream: IO[bytes], pid: int) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                logger.info("[engine host %d] %s", pid, line)
        stream.close()

    def reason(self) -> str:
        """The host's own explanation, if it gave one (its last 'cannot start' line)."""
        self._thread.join(2.0)  # the last lines, written just before it exited
        marker = "engine host cannot start: "
        tail = list(self._tail)
        for index in range(len(tail) - 1, -1, -1):
            if marker in tail[index]:
                # A reason can span lines (one per missing file): keep them all.
                return " ".join([tail[index].split(marker, 1)[1],
                                 *(line.strip() for line in tail[index + 1:])])
        return tail[-1] if tail else ""


def _read_lines(stream: IO[bytes], lines: queue.SimpleQueue[str | None]) -> None:
    for raw in stream:
        lines.put(raw.decode(errors="replace"))
    lines.put(None)
    stream.close()


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
