"""The FaceSwap Mic service against a real (headless) PulseAudio server: the delay heard, a
microphone that vanishes mid-call, a sound server restart, and the cleanup."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from faceswap_cam.daemon.audio.backend import BLOCK_FRAMES, SAMPLE_RATE
from faceswap_cam.daemon.audio.mic import THREAD_NAME, FaceSwapMic
from faceswap_cam.daemon.audio.pulse import SOURCE_NAME, PulseBackend
from tests.audio.conftest import TEST_MIC, Player, PulseServer, Recorder, wait_for


class FixedDelay:
    """The video's delay as the AudioDelayTracker would report it, held still."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def target_delay_s(self, now_ns: int | None = None) -> float:
        return self.delay_s

    def video_age_s(self, now_ns: int | None = None) -> float | None:
        return self.delay_s


@pytest.fixture
def closing() -> Iterator[list[Player | Recorder | FaceSwapMic]]:
    """Closes what a test opened, in reverse, even when it fails."""
    things: list[Player | Recorder | FaceSwapMic] = []
    yield things
    for thing in reversed(things):
        thing.close()


def _mic_thread_alive() -> bool:
    return any(t.name == THREAD_NAME and t.is_alive() for t in threading.enumerate())


def _click_onsets(samples: np.ndarray) -> list[int]:
    loud = np.flatnonzero(np.abs(samples) > 0.4)
    onsets = [int(i) for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > SAMPLE_RATE // 10]
    return onsets


def test_the_delay_is_the_delay_heard(pulse_server: PulseServer,
                                      closing: list[Player | Recorder | FaceSwapMic]) -> None:
    pulse_server.load_test_mic()
    player = Player()
    closing.append(player)
    mic = FaceSwapMic(PulseBackend, FixedDelay(0.3), TEST_MIC, max_delay_s=1.0,
                      retry_max_s=0.5)
    closing.append(mic)
    mic.start()
    wait_for(lambda: mic.status()["state"] == "running", 10, "the mic to run")
    direct = Recorder(TEST_MIC)  # the click as it was spoken, on the same clock
    closing.append(direct)
    heard = Recorder(SOURCE_NAME)  # what a call app records from "FaceSwap Mic"
    closing.append(heard)
    # Past the streams' start-up (the first timing figures, the first null-sink render).
    wait_for(lambda: min(direct.frames(), heard.frames()) > SAMPLE_RATE, 10, "recordings")
    clicks = 4
    for k in range(clicks):
        player.click()
        wait_for(functools.partial(lambda k: len(_click_onsets(direct.samples())) > k, k), 2,
                 "a click")
        # Half a second apart: each click pairs with its own delayed copy.
        gap_end = direct.frames() + SAMPLE_RATE // 2
        wait_for(functools.partial(lambda end: direct.frames() > end, gap_end), 2, "a gap")
    wait_for(lambda: len(_click_onsets(heard.samples())) >= clicks, 3, "the delayed clicks")
    direct_t0, direct_samples = direct.sample_times()
    heard_t0, heard_samples = heard.sample_times()
    spoken = [direct_t0 + n / SAMPLE_RATE for n in _click_onsets(direct_samples)]
    delayed = [heard_t0 + n / SAMPLE_RATE for n in _click_onsets(heard_samples)]
    assert len(spoken) == len(delayed) == clicks
    errors_ms = [(b - a - 0.3) * 1e3 for a, b in zip(spoken, delayed, strict=True)]
    print(f"delay error per click (ms): {[round(e, 1) for e in errors_ms]}; "
          f"status: {mic.status()}")
    # Within one frame period at 30 fps, the bar the lips are held to (issue 13). Runs differ
    # by up to ~20 ms (constant within a run): where each recording's blocks fall against
    # the null sinks' render cycles, which neither recorder can see.
    assert all(abs(e) <= 1000 / 30 for e in errors_ms), errors_ms
    status = mic.status()
    assert status["state"] == "running" and status["device"] == "FaceSwap Mic"
    assert status["target_ms"] == 300.0
    # The delay line gives the rest of the 300 ms the streams do not already take.
    assert 200 <= status["delay_ms"] < 300
    assert abs(status["av_offset_ms"]) <= 15


def test_a_vanished_microphone_leaves_silence_and_comes_back(
        pulse_server: PulseServer, closing: list[Player | Recorder | FaceSwapMic]) -> None:
    pulse_server.load_test_mic()
    player = Player(tone=0.5)
    closing.append(player)
    mic = FaceSwapMic(PulseBackend, FixedDelay(0.05), TEST_MIC, retry_max_s=0.3)
    closing.append(mic)
    mic.start()
    wait_for(lambda: mic.status()["state"] == "running", 10, "the mic to run")
    heard = Recorder(SOURCE_NAME)
    closing.append(heard)
    wait_for(lambda: np.abs(heard.samples()[-BLOCK_FRAMES:]).max(initial=0) > 0.4, 5,
             "the tone through FaceSwap Mic")

    pulse_server.unload_test_mic()  # unplugged mid-call
    wait_for(lambda: mic.status()["state"] == "no_input", 5, "no_input")
    status = mic.status()
    assert "--mic" in status["fix"] and status["detail"]
    start = heard.frames()
    wait_for(lambda: heard.frames() > start + SAMPLE_RATE // 2, 3, "0.5 s more audio")
    # The virtual mic stays, paced as before, and plays true silence (not stale or garbage
    # samples) once the delayed tail has played out (50 ms + stream latencies).
    tail = heard.samples()[start + SAMPLE_RATE // 4:]
    assert tail.size >= SAMPLE_RATE // 5 and np.all(tail == 0.0)
    assert _mic_thread_alive() and heard.error is None

    player.close()
    pulse_server.load_test_mic()  # plugged back in
    player = Player(tone=0.5)
    closing.append(player)
    wait_for(lambda: mic.status()["state"] == "running", 5, "running again")
    assert mic.status()["fix"] is None
    wait_for(lambda: np.abs(heard.samples()[-BLOCK_FRAMES:]).max(initial=0) > 0.4, 5,
             "the tone again")


def test_a_sound_server_restart_is_survived(
        pulse_server: PulseServer, closing: list[Player | Recorder | FaceSwapMic]) -> None:
    mic = FaceSwapMic(PulseBackend, FixedDelay(0.0), None, retry_max_s=0.3)
    closing.append(mic)
    mic.start()
    # No microphone at all: the virtual mic is still there, silent, and says why.
    wait_for(lambda: mic.status()["state"] == "no_input", 10, "no_input")
    assert SOURCE_NAME in pulse_server.sources()
    assert "microphone" in mic.status()["detail"]

    pulse_server.kill()
    wait_for(lambda: mic.status()["state"] == "no_server", 5, "no_server")
    assert "systemctl --user start pipewire-pulse" in mic.status()["fix"]
    pulse_server.start()
    pulse_server.load_test_mic()
    wait_for(lambda: mic.status()["state"] == "running", 10, "running after the restart")
    assert SOURCE_NAME in pulse_server.sources()  # made again on the new server
    assert mic.status()["restarts"] >= 1 and _mic_thread_alive()


def test_close_unloads_everything_and_is_idempotent(pulse_server: PulseServer) -> None:
    pulse_server.load_test_mic()
    before = pulse_server.modules()
    with FaceSwapMic(PulseBackend, FixedDelay(0.1), TEST_MIC) as mic:
        wait_for(lambda: mic.status()["state"] == "running", 10, "the mic to run")
        assert len(pulse_server.modules()) == len(before) + 2
    assert not _mic_thread_alive()
    assert pulse_server.modules() == before
    assert mic.status()["state"] == "stopped"
    mic.close()
    assert pulse_server.modules() == before


def test_start_cleans_up_after_a_crashed_run(pulse_server: PulseServer) -> None:
    before = pulse_server.modules()
    crashed = PulseBackend()
    crashed.ensure_virtual_mic()
    crashed._pulse.close()  # died without cleaning up
    with FaceSwapMic(PulseBackend, FixedDelay(0.0), None, retry_max_s=0.3) as mic:
        wait_for(lambda: mic.status()["state"] == "no_input", 10, "started")
        assert len(pulse_server.modules()) == len(before) + 2  # one mic, not two
    assert pulse_server.modules() == before
