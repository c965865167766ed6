"""The macOS/Windows backend against a fake ``sounddevice`` (the hardware boundary)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from faceswap_cam.daemon.audio.backend import (
    BLOCK_FRAMES,
    SAMPLE_RATE,
    AudioBackend,
    AudioDeviceError,
    InputStream,
    OutputStream,
)
from faceswap_cam.daemon.audio.portable import (
    SoundDeviceBackend,
    loopback_driver_advice,
)


class PortAudioError(Exception):
    pass


class FakeStream:
    def __init__(self, sd: FakeSoundDevice, **kwargs: Any) -> None:
        self.sd = sd
        self.kwargs = kwargs
        self.latency = 0.012
        self.started = False
        self.close_calls = 0
        self.written: list[np.ndarray] = []
        sd.streams.append(self)

    def start(self) -> None:
        if self.sd.refuse_open:
            raise PortAudioError("Device unavailable [PaErrorCode -9985]")
        self.started = True

    def read(self, frames: int) -> tuple[np.ndarray, bool]:
        if self.sd.vanished:
            raise PortAudioError("Unanticipated host error [PaErrorCode -9999]")
        return np.full((frames, self.kwargs["channels"]), 0.25, dtype=np.float32), False

    def write(self, data: np.ndarray) -> bool:
        if self.sd.vanished:
            raise PortAudioError("Unanticipated host error [PaErrorCode -9999]")
        self.written.append(data.copy())
        return False

    def close(self, ignore_errors: bool = True) -> None:
        self.close_calls += 1


class FakeSoundDevice(types.ModuleType):
    """What the backend uses of sounddevice: the device and host API listing, the settings
    check, and the two blocking streams."""

    PortAudioError = PortAudioError

    def __init__(
        self,
        hostapis: list[str],
        devices: list[tuple[str, int, int, int]],
        default_input: int | None = None,
    ) -> None:
        super().__init__("sounddevice")
        self.hostapis = hostapis
        self.devices = [
            {"name": name, "hostapi": api, "max_input_channels": ins, "max_output_channels": outs}
            for name, api, ins, outs in devices
        ]
        self.default_input = default_input
        self.refuses: set[int] = set()  # device indexes that refuse 48 kHz float32
        self.refuse_open = False
        self.vanished = False
        self.streams: list[FakeStream] = []

    def query_hostapis(self) -> tuple[dict[str, Any], ...]:
        return tuple({"name": name} for name in self.hostapis)

    def query_devices(self, kind: str | None = None) -> Any:
        if kind is None:
            return list(self.devices)
        if self.default_input is None:
            raise PortAudioError("Error querying device -1")
        return self.devices[self.default_input]

    def _check(self, device: int, **_: Any) -> None:
        if device in self.refuses:
            raise PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    check_input_settings = _check
    check_output_settings = _check

    def InputStream(self, **kwargs: Any) -> FakeStream:
        return FakeStream(self, **kwargs)

    def OutputStream(self, **kwargs: Any) -> FakeStream:
        return FakeStream(self, **kwargs)


MAC_DEVICES = [
    ("MacBook Pro Microphone", 0, 1, 0),
    ("MacBook Pro Speakers", 0, 0, 2),
    ("BlackHole 2ch", 0, 2, 2),
    ("USB Headset", 0, 1, 2),
]

# Windows lists each device under MME (names cut at 31 characters), DirectSound and WASAPI.
WIN_DEVICES = [
    ("Microphone (Realtek(R) Audio)", 0, 2, 0),
    ("CABLE Output (VB-Audio Virtual ", 0, 2, 0),
    ("CABLE Input (VB-Audio Virtual C", 0, 0, 2),
    ("Speakers (Realtek(R) Audio)", 0, 0, 2),
    ("Microphone (Realtek(R) Audio)", 1, 2, 0),
    ("CABLE Output (VB-Audio Virtual Cable)", 1, 2, 0),
    ("CABLE Input (VB-Audio Virtual Cable)", 1, 0, 8),
    ("Microphone (Realtek(R) Audio)", 2, 2, 0),
    ("CABLE Output (VB-Audio Virtual Cable)", 2, 2, 0),
    ("CABLE Input (VB-Audio Virtual Cable)", 2, 0, 2),
]
WIN_APIS = ["MME", "Windows DirectSound", "Windows WASAPI"]


def install(monkeypatch: pytest.MonkeyPatch, sd: FakeSoundDevice) -> FakeSoundDevice:
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd


@pytest.fixture
def mac(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SoundDeviceBackend, FakeSoundDevice]]:
    sd = install(monkeypatch, FakeSoundDevice(["Core Audio"], MAC_DEVICES, default_input=0))
    with SoundDeviceBackend("darwin") as backend:
        yield backend, sd


@pytest.fixture
def win(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SoundDeviceBackend, FakeSoundDevice]]:
    sd = install(monkeypatch, FakeSoundDevice(WIN_APIS, WIN_DEVICES, default_input=0))
    with SoundDeviceBackend("win32") as backend:
        yield backend, sd


def test_macos_finds_blackhole_and_writes_mono_to_both_channels(
    mac: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = mac
    assert backend.ensure_virtual_mic() == "BlackHole 2ch"
    assert backend.ensure_virtual_mic() == "BlackHole 2ch"  # idempotent
    out = backend.open_output()
    stream = sd.streams[-1]
    assert stream.kwargs == {
        "device": 2,
        "samplerate": SAMPLE_RATE,
        "channels": 2,
        "dtype": "float32",
        "blocksize": BLOCK_FRAMES,
        "latency": "low",
    }
    assert stream.started and out.latency_s == pytest.approx(0.012)
    block = np.linspace(-1, 1, BLOCK_FRAMES, dtype=np.float32)[:, None]
    out.write(block)
    assert stream.written[0].shape == (BLOCK_FRAMES, 2)
    assert np.array_equal(stream.written[0][:, 0], block[:, 0])
    assert np.array_equal(stream.written[0][:, 1], block[:, 0])


def test_windows_finds_vb_cable_under_wasapi_and_names_its_recording_side(
    win: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = win
    assert backend.ensure_virtual_mic() == "CABLE Output (VB-Audio Virtual Cable)"
    backend.open_output()
    assert sd.streams[-1].kwargs["device"] == 9  # WASAPI's "CABLE Input"


def test_windows_falls_back_to_a_host_api_that_takes_48_khz(
    win: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = win
    sd.refuses.add(9)  # WASAPI shared mode at another rate
    backend.open_output()
    stream = sd.streams[-1]
    assert stream.kwargs["device"] == 6  # DirectSound
    assert stream.kwargs["channels"] == 2  # the first two of its eight


MISSING_DRIVER_CASES = [
    ("darwin", ["Core Audio"], MAC_DEVICES[:2], "BlackHole 2ch", "brew install blackhole-2ch"),
    ("win32", WIN_APIS, WIN_DEVICES[:1], "VB-CABLE", "https://vb-audio.com/Cable/"),
]


@pytest.mark.parametrize("case", MISSING_DRIVER_CASES, ids=["macos", "windows"])
def test_missing_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, case: tuple[str, list[str], list[Any], str, str]
) -> None:
    platform, apis, devices, driver, install_hint = case
    install(monkeypatch, FakeSoundDevice(apis, devices))
    backend = SoundDeviceBackend(platform)
    for attempt in (backend.ensure_virtual_mic, backend.open_output):
        with pytest.raises(AudioDeviceError) as error:
            attempt()
        assert driver in str(error.value)
        assert install_hint in error.value.fix
        assert loopback_driver_advice(platform)[1] in error.value.fix  # what to pick


def test_advice_for_doctor() -> None:
    driver, pick = loopback_driver_advice("darwin")
    assert "brew install blackhole-2ch" in driver and pick == "BlackHole 2ch"
    driver, pick = loopback_driver_advice("win32")
    assert "vb-audio.com/Cable" in driver and pick == "CABLE Output (VB-Audio Virtual Cable)"
    driver, pick = loopback_driver_advice("linux")
    assert driver.startswith("none") and pick == "FaceSwap Mic"


def test_input_listing_never_offers_the_loopback_on_macos(
    mac: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    assert mac[0].input_names() == ["MacBook Pro Microphone", "USB Headset"]
    assert mac[0].resolve_input("headset") == "USB Headset"  # part of a name, any case


def test_input_listing_never_offers_the_loopback_on_windows(
    win: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    assert win[0].input_names() == ["Microphone (Realtek(R) Audio)"]  # once, not per host API


def test_opening_the_loopback_as_microphone_is_refused(
    mac: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = mac
    with pytest.raises(AudioDeviceError, match="loopback"):
        backend.open_input("BlackHole 2ch")
    sd.default_input = 2  # the user made BlackHole the system's default input
    with pytest.raises(AudioDeviceError, match="loopback") as error:
        backend.open_input(None)
    assert "real microphone" in error.value.fix
    assert sd.streams == []


def test_default_and_named_inputs(mac: tuple[SoundDeviceBackend, FakeSoundDevice]) -> None:
    backend, sd = mac
    mic = backend.open_input(None)
    default = sd.streams[-1].kwargs
    assert default["device"] is None and default["channels"] == 1  # PortAudio's default
    block = mic.read(BLOCK_FRAMES)
    assert block.shape == (BLOCK_FRAMES, 1) and block.dtype == np.float32
    backend.open_input("usb headset")  # case-insensitive
    assert sd.streams[-1].kwargs["device"] == 3
    with pytest.raises(AudioDeviceError, match="no microphone named") as error:
        backend.open_input("Studio Mic")
    assert "MacBook Pro Microphone" in error.value.fix


def test_no_default_microphone(mac: tuple[SoundDeviceBackend, FakeSoundDevice]) -> None:
    backend, sd = mac
    sd.default_input = None
    with pytest.raises(AudioDeviceError, match="no default microphone"):
        backend.open_input(None)


def test_device_that_vanishes_mid_stream_raises_audio_device_error(
    mac: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = mac
    mic = backend.open_input(None)
    out = backend.open_output()
    mic.read(BLOCK_FRAMES)
    sd.vanished = True
    with pytest.raises(AudioDeviceError, match="Unanticipated host error") as error:
        mic.read(BLOCK_FRAMES)
    assert "connected" in error.value.fix
    with pytest.raises(AudioDeviceError) as error:
        out.write(np.zeros((BLOCK_FRAMES, 1), dtype=np.float32))
    assert "BlackHole 2ch" in error.value.fix


def test_open_failure_becomes_audio_device_error_and_closes_the_stream(
    mac: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = mac
    sd.refuse_open = True
    with pytest.raises(AudioDeviceError, match="cannot be opened"):
        backend.open_input(None)
    assert sd.streams[-1].close_calls == 1


def test_implements_the_backend_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typed: mypy checks these assignments against the contract's protocols."""
    install(monkeypatch, FakeSoundDevice(["Core Audio"], MAC_DEVICES, default_input=0))
    with SoundDeviceBackend("darwin") as concrete:
        backend: AudioBackend = concrete
        mic: InputStream = backend.open_input(None)
        out: OutputStream = backend.open_output()
        assert backend.name == "sounddevice"
        assert mic.latency_s > 0 and out.latency_s > 0


def test_streams_close_idempotently_and_with_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sd = install(monkeypatch, FakeSoundDevice(["Core Audio"], MAC_DEVICES, default_input=0))
    backend = SoundDeviceBackend("darwin")
    mic = backend.open_input(None)
    out = backend.open_output()
    mic.close()
    mic.close()
    assert sd.streams[0].close_calls == 1
    with pytest.raises(AudioDeviceError):
        mic.read(BLOCK_FRAMES)
    backend.close()
    backend.close()
    assert out.closed and sd.streams[1].close_calls == 1
    assert sd.streams[0].close_calls == 1
    with pytest.raises(AudioDeviceError, match="closed"):
        backend.open_output()


def test_nothing_to_remove_on_these_platforms(
    mac: tuple[SoundDeviceBackend, FakeSoundDevice],
) -> None:
    backend, sd = mac
    backend.remove_virtual_mic()
    assert backend.remove_stale() == 0
    assert sd.streams == []


def test_without_sounddevice_the_fix_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import raises ImportError
    backend = SoundDeviceBackend("darwin")  # constructing imports nothing
    with pytest.raises(AudioDeviceError) as error:
        backend.ensure_virtual_mic()
    assert "pip install" in error.value.fix and "sounddevice" in error.value.fix


def test_linux_is_not_this_backends_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeSoundDevice(["ALSA"], MAC_DEVICES))
    with pytest.raises(AudioDeviceError) as error:
        SoundDeviceBackend("linux").ensure_virtual_mic()
    assert "PulseAudio" in error.value.fix
