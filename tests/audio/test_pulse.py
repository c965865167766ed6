"""The Linux backend against a real (headless) PulseAudio server."""

from __future__ import annotations

import numpy as np
import pytest

from faceswap_cam.daemon.audio.backend import (
    BLOCK_FRAMES,
    VIRTUAL_MIC_NAME,
    AudioDeviceError,
    SoundServerGone,
)
from faceswap_cam.daemon.audio.pulse import SOURCE_NAME, PulseBackend
from tests.audio.conftest import TEST_MIC, TEST_MIC_SINK, Player, PulseServer


def _ours(server: PulseServer) -> list[tuple[str, str]]:
    return [m for m in server.modules() if "faceswap_cam_mic" in m[1]]


def test_virtual_mic_is_listed_as_a_microphone_and_removed(pulse_server: PulseServer) -> None:
    before = pulse_server.modules()
    backend = PulseBackend()
    try:
        assert backend.ensure_virtual_mic() == VIRTUAL_MIC_NAME
        assert backend.ensure_virtual_mic() == VIRTUAL_MIC_NAME  # idempotent: nothing more
        assert len(_ours(pulse_server)) == 2
        source = pulse_server.sources()[SOURCE_NAME]
        assert source.description == "FaceSwap Mic"
        # Not a monitor: call apps list it as an ordinary microphone.
        assert source.monitor_of_sink == 0xFFFFFFFF
        backend.remove_virtual_mic()
        backend.remove_virtual_mic()
        assert SOURCE_NAME not in pulse_server.sources()
        assert pulse_server.modules() == before
    finally:
        backend.close()


def test_remove_stale_unloads_what_a_crashed_run_left(pulse_server: PulseServer) -> None:
    before = pulse_server.modules()
    crashed = PulseBackend()
    crashed.ensure_virtual_mic()
    crashed._pulse.close()  # the process died: its modules stay on the server
    assert len(_ours(pulse_server)) == 2
    with_mic = PulseBackend()
    try:
        assert with_mic.remove_stale() == 2
        assert pulse_server.modules() == before
        assert with_mic.remove_stale() == 0
        # A new mic after the cleanup is not counted as stale by its own backend.
        with_mic.ensure_virtual_mic()
        assert with_mic.remove_stale() == 0
    finally:
        with_mic.close()
    assert pulse_server.modules() == before


def test_inputs_are_real_microphones_only(pulse_server: PulseServer) -> None:
    pulse_server.load_test_mic()
    backend = PulseBackend()
    try:
        backend.ensure_virtual_mic()
        # Neither monitors (test_mic_sink.monitor, ours) nor FaceSwap Mic itself.
        assert backend.input_names() == [TEST_MIC]
        # --mic takes the description the sound settings show, as well as the name.
        assert backend.resolve_input("Test Mic") == backend.resolve_input(TEST_MIC) == TEST_MIC
        with pytest.raises(AudioDeviceError, match="no microphone named 'Headset'"):
            backend.resolve_input("Headset")
    finally:
        backend.close()


def test_default_input_never_records_our_own_mic(pulse_server: PulseServer) -> None:
    pulse_server.load_test_mic()
    backend = PulseBackend()
    try:
        backend.ensure_virtual_mic()
        with pulse_server.control() as pulse:
            pulse.source_default_set(SOURCE_NAME)
        with pytest.raises(AudioDeviceError, match="FaceSwap Mic itself") as caught:
            backend.open_input(None)
        assert "--mic" in caught.value.fix and TEST_MIC in caught.value.fix
        with pytest.raises(AudioDeviceError, match="itself"):
            backend.open_input("FaceSwap Mic")
        with pulse_server.control() as pulse:
            pulse.source_default_set(f"{TEST_MIC_SINK}.monitor")
        with pytest.raises(AudioDeviceError, match="not a microphone"):
            backend.open_input(None)
        with pulse_server.control() as pulse:
            pulse.source_default_set(TEST_MIC)
        stream = backend.open_input(None)
        stream.close()
        stream = backend.open_input("Test Mic")  # the description the user sees works too
        stream.close()
        with pytest.raises(AudioDeviceError, match="no microphone named") as caught:
            backend.open_input("nope")
        assert TEST_MIC in caught.value.fix
    finally:
        backend.close()


def test_streams_carry_float_audio_with_small_latency(pulse_server: PulseServer) -> None:
    pulse_server.load_test_mic()
    backend = PulseBackend()
    player = Player(tone=0.5)
    try:
        backend.ensure_virtual_mic()
        inp = backend.open_input(TEST_MIC)
        out = backend.open_output()
        try:
            for _ in range(100):  # 1 s: past the server's start-up
                block = inp.read(BLOCK_FRAMES)
                out.write(block)
            assert block.shape == (BLOCK_FRAMES, 1) and block.dtype == np.float32
            assert 0.4 < float(np.abs(block).max()) <= 0.5 + 1e-6
            assert 0.0 <= inp.latency_s < 0.1
            assert 0.0 < out.latency_s < 0.1
        finally:
            inp.close()
            out.close()
    finally:
        player.close()
        backend.close()


def test_a_vanished_input_and_server_raise_the_right_errors(pulse_server: PulseServer) -> None:
    pulse_server.load_test_mic()
    backend = PulseBackend()
    inp = backend.open_input(TEST_MIC)
    try:
        inp.read(BLOCK_FRAMES)
        pulse_server.unload_test_mic()
        with pytest.raises(AudioDeviceError) as lost:
            for _ in range(200):  # the server's buffered blocks first
                inp.read(BLOCK_FRAMES)
        assert not isinstance(lost.value, SoundServerGone)
        assert "--mic" in lost.value.fix
    finally:
        inp.close()
    backend.ensure_virtual_mic()
    out = backend.open_output()
    try:
        pulse_server.kill()
        with pytest.raises(SoundServerGone) as gone:
            for _ in range(50):
                out.write(np.zeros((BLOCK_FRAMES, 1), np.float32))
        assert "systemctl --user start pipewire-pulse" in gone.value.fix
        with pytest.raises(SoundServerGone):
            backend.ensure_virtual_mic()
        with pytest.raises(SoundServerGone):
            PulseBackend()
    finally:
        out.close()
        backend.close()  # with the server gone: nothing to unload, and no error
        pulse_server.start()
