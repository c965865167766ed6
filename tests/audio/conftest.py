"""A real, headless PulseAudio server for the audio tests, started and stopped by the tests.

Debian's ``pulseaudio`` runs as root too (CI does): ``-n`` skips the desktop's default.pa, and
the only module loaded is the native protocol on a socket in a temporary folder, so the server
has no devices but the ones a test makes, and nothing reaches the real desktop's sound. The code
under test finds it through PULSE_SERVER, as it would find the desktop's server.

``test_mic`` is a microphone the tests control: a null sink we play into, and a remap source on
its monitor named ``test_mic`` (a remap source, so it lists as a real microphone, not a
monitor).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap_cam.daemon.audio.backend import BLOCK_FRAMES, SAMPLE_RATE
from faceswap_cam.daemon.audio.pulse import PulseInput, PulseOutput, _BufferAttr

TEST_MIC = "test_mic"
TEST_MIC_SINK = "test_mic_sink"
_READY_S = 10.0
_BLOCK_BYTES = BLOCK_FRAMES * 4
_INVALID = 0xFFFFFFFF


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls a condition the code under test reaches on its own thread (10 ms steps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class PulseServer:
    """One pulseaudio process on a private socket; restart() keeps the socket's address."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "native"
        self.address = f"unix:{self.socket}"
        (base / "home").mkdir()
        (base / "runtime").mkdir(mode=0o700)
        self._env = {
            **os.environ,
            "HOME": str(base / "home"),
            "XDG_RUNTIME_DIR": str(base / "runtime"),
            "XDG_CONFIG_HOME": str(base / "home" / ".config"),
        }
        self._env.pop("PULSE_SERVER", None)
        self._process: subprocess.Popen[bytes] | None = None
        self._log = base / "pulseaudio.log"

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        command = [
            "pulseaudio", "-n", "--daemonize=no", "--use-pid-file=no", "--exit-idle-time=-1",
            "--system=false", "--disallow-module-loading=no", "--log-target=stderr",
            "--log-level=warning",
            "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
        ]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(command, env=self._env, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _READY_S
        while True:  # ready when a client can connect, not after a guessed sleep
            if self._process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {self._log.read_text()[-2000:]}")
            try:
                with self.control():
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(5)

    def restart(self) -> None:
        self.kill()
        self.start()

    def control(self) -> Any:
        import pulsectl

        return pulsectl.Pulse("faceswap-cam-tests", server=self.address)

    def modules(self) -> list[tuple[str, str]]:
        with self.control() as pulse:
            return [(m.name, m.argument or "") for m in pulse.module_list()]

    def sources(self) -> dict[str, Any]:
        with self.control() as pulse:
            return {s.name: s for s in pulse.source_list()}

    def load_test_mic(self) -> None:
        with self.control() as pulse:
            pulse.module_load("module-null-sink",
                              f"sink_name={TEST_MIC_SINK} rate={SAMPLE_RATE} channels=1")
            pulse.module_load("module-remap-source",
                              f"source_name={TEST_MIC} master={TEST_MIC_SINK}.monitor channels=1 "
                              "source_properties='device.description=\"Test Mic\"'")

    def unload_test_mic(self) -> None:
        with self.control() as pulse:
            for module in pulse.module_list():
                if module.name == "module-null-sink" and TEST_MIC_SINK in (module.argument or ""):
                    pulse.module_unload(module.index)  # takes the remap source with it

    def reset(self) -> None:
        """Back to a bare server: the protocol module and speakers."""
        with self.control() as pulse:
            for module in reversed(pulse.module_list()):
                if module.name != "module-native-protocol-unix":
                    with contextlib.suppress(Exception):  # went with its master
                        pulse.module_unload(module.index)
            # Speakers, as on a desktop: the server moves the streams of a vanished sink to
            # the default one, and that must not be our virtual mic's sink.
            speakers = pulse.module_load("module-null-sink",
                                         "sink_name=test_speakers channels=2")
            # By the sink its module made: a busy server may still be tearing down an older
            # "test_speakers" (then the new one is named "test_speakers.2").
            sink = next(sink for sink in pulse.sink_list() if sink.owner_module == speakers)
            pulse.sink_default_set(sink.name)

    def stop(self) -> None:
        self.kill()


@pytest.fixture(scope="session")
def _pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    if shutil.which("pulseaudio") is None:
        pytest.skip("needs the pulseaudio binary (apt-get install pulseaudio; tests/run.sh "
                    "installs it)")
    # A short path: a unix socket's address must fit in 108 bytes.
    base = Path(tmp_path_factory.getbasetemp()) / "pa"
    base.mkdir()
    server = PulseServer(base)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pulse_server(_pulse_server: PulseServer, monkeypatch: pytest.MonkeyPatch) -> PulseServer:
    """The server, reachable through PULSE_SERVER, bare at the start of each test."""
    if _pulse_server._process is None or _pulse_server._process.poll() is not None:
        _pulse_server.start()  # a test that killed it and failed before restarting
    _pulse_server.reset()
    monkeypatch.setenv("PULSE_SERVER", _pulse_server.address)
    return _pulse_server


def _no_probe(stream_name: str) -> float | None:
    return None


def open_player(device: str) -> PulseOutput:
    attr = _BufferAttr(16 * _BLOCK_BYTES, 4 * _BLOCK_BYTES, _BLOCK_BYTES, _BLOCK_BYTES,
                       _INVALID)
    return PulseOutput(1, device, "test player", attr, fix="", probe=_no_probe)


class _WholeInput(PulseInput):
    max_backlog_s = float("inf")  # a recording for measurements keeps every sample


def open_recorder(device: str) -> PulseInput:
    attr = _BufferAttr(SAMPLE_RATE * 4, _INVALID, _INVALID, _INVALID, _BLOCK_BYTES)
    return _WholeInput(2, device, "test recorder", attr, fix="", probe=_no_probe)


class Player:
    """Plays into the test microphone from its own thread: a tone, or clicks on request."""

    def __init__(self, device: str = TEST_MIC_SINK, tone: float = 0.0) -> None:
        self._stream = open_player(device)
        self._tone = tone
        self._clicks = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-player")
        self._thread.start()

    def click(self) -> None:
        with self._lock:
            self._clicks += 1

    def _run(self) -> None:
        phase = np.arange(BLOCK_FRAMES) * (2 * np.pi * 1000 / SAMPLE_RATE)  # 1 kHz: whole cycles
        tone = (self._tone * np.sin(phase)).astype(np.float32)[:, None]
        click = np.zeros((BLOCK_FRAMES, 1), np.float32)
        click[100:148] = 0.8
        try:
            while not self._stop.is_set():
                with self._lock:
                    clicking, self._clicks = self._clicks > 0, max(0, self._clicks - 1)
                self._stream.write(click if clicking else tone)
        except Exception as exc:  # the test mic was unloaded under us
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._stream.close()


class Recorder:
    """Records a source from its own thread, with each block's read time and latency."""

    def __init__(self, device: str) -> None:
        self._stream = open_recorder(device)
        self._lock = threading.Lock()
        self._blocks: list[tuple[float, float, np.ndarray]] = []
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"test-recorder-{device}")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._stream.read(BLOCK_FRAMES)
                entry = (time.monotonic(), self._stream.latency_s, block[:, 0].copy())
                with self._lock:
                    self._blocks.append(entry)
        except Exception as exc:
            self.error = exc

    def blocks(self) -> list[tuple[float, float, np.ndarray]]:
        with self._lock:
            return list(self._blocks)

    def samples(self) -> np.ndarray:
        blocks = self.blocks()
        return np.concatenate([b for _, _, b in blocks]) if blocks else np.zeros(0, np.float32)

    def frames(self) -> int:
        with self._lock:
            return len(self._blocks) * BLOCK_FRAMES

    def sample_times(self) -> tuple[float, np.ndarray]:
        """(t0, samples): sample n reached the source at t0 + n / rate, from the median of
        every block's (read time - latency - its end's sample count), on the monotonic clock.
        """
        blocks = self.blocks()
        ends = np.arange(1, len(blocks) + 1) * BLOCK_FRAMES
        starts = [t - latency - end / SAMPLE_RATE
                  for (t, latency, _), end in zip(blocks, ends, strict=True)]
        # Skip the first blocks: the stream's timing information is not there yet.
        t0 = float(np.median(starts[20:] if len(starts) > 40 else starts))
        return t0, np.concatenate([b for _, _, b in blocks])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._stream.close()
