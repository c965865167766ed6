"""The FaceSwap Mic on macOS and Windows: PortAudio (``sounddevice``) into a loopback driver.

Neither system lets an app make a microphone, so the user installs a loopback driver once:
whatever is played into its output comes out of its input, which the call app picks as the
microphone.

* macOS: BlackHole 2ch (https://github.com/ExistentialAudio/BlackHole). We play to the output
  "BlackHole 2ch"; the call app's microphone is "BlackHole 2ch".
* Windows: VB-CABLE (https://vb-audio.com/Cable/). We play to "CABLE Input (VB-Audio Virtual
  Cable)"; the call app's microphone is "CABLE Output (VB-Audio Virtual Cable)".

Devices are found by name (case-insensitive substring; Windows' MME lists names cut at 31
characters). The loopback's recording side is never offered or opened as the user's
microphone: that would play our own output back into it. Windows lists each device once per
host API; we prefer WASAPI, then DirectSound, then MME, taking the first that accepts 48 kHz
float32. The output is opened with the driver's first two channels and the mono signal is
written to both, so a call app that mixes stereo down or reads the left channel hears it at
full level.

``sounddevice`` is imported on first use, so the daemon runs without it.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceswap_cam.daemon.audio.backend import (
    BLOCK_FRAMES,
    CHANNELS,
    SAMPLE_RATE,
    VIRTUAL_MIC_NAME,
    AudioDeviceError,
)

logger = logging.getLogger(__name__)

#: The requirement to install it with (the daemon's pyproject marks it for macOS and Windows).
SOUNDDEVICE_REQUIREMENT = "sounddevice>=0.4.6"

#: Host APIs in order of preference, per platform; others come after, in PortAudio's order.
HOSTAPI_PREFERENCE = {
    "win32": ("Windows WASAPI", "Windows DirectSound", "MME"),
    "darwin": ("Core Audio",),
}

#: Substrings of input names that are a loopback's recording side (ours or the user's).
LOOPBACK_INPUTS = ("blackhole", "cable output")


@dataclass(frozen=True, slots=True)
class LoopbackDriver:
    driver: str  # what the user installs
    install: str  # how, in one sentence
    playback: tuple[str, ...]  # substrings of the output we write into, best first
    recording: str  # substring of its recording side
    microphone: str  # what the user picks in the call app (when we cannot read the listing)


BLACKHOLE = LoopbackDriver(
    driver="BlackHole 2ch",
    install=(
        "run `brew install blackhole-2ch` (or the installer from "
        "https://existential.audio/blackhole/), then restart FaceSwap Cam"
    ),
    playback=("blackhole 2ch", "blackhole"),
    recording="blackhole",
    microphone="BlackHole 2ch",
)

VB_CABLE = LoopbackDriver(
    driver="VB-CABLE (VB-Audio Virtual Cable)",
    install=(
        "download VB-CABLE from https://vb-audio.com/Cable/, unzip it, run "
        "VBCABLE_Setup_x64.exe as administrator, choose Install Driver, restart Windows"
    ),
    playback=("cable input",),
    recording="cable output",
    microphone="CABLE Output (VB-Audio Virtual Cable)",
)

LOOPBACK_DRIVERS = {"darwin": BLACKHOLE, "win32": VB_CABLE}


def loopback_driver_advice(platform: str = sys.platform) -> tuple[str, str]:
    """(the driver to install and how, the microphone to pick in the call app), for doctor."""
    driver = LOOPBACK_DRIVERS.get(platform)
    if driver is None:
        return (
            "none: FaceSwap Cam makes the microphone itself through PulseAudio or PipeWire",
            VIRTUAL_MIC_NAME,
        )
    return f"{driver.driver}: {driver.install}", driver.microphone


def _names_once(inputs: list[dict[str, Any]]) -> list[str]:
    """Each device's name once, from the host API of the first (the most preferred)."""
    if not inputs:
        return []
    best = inputs[0]["hostapi_name"]
    names: list[str] = []
    for device in inputs:
        if device["hostapi_name"] == best and device["name"] not in names:
            names.append(str(device["name"]))
    return names


def _is_loopback_input(name: str) -> bool:
    lowered = name.lower()
    return any(pattern in lowered for pattern in LOOPBACK_INPUTS)


def _load_sounddevice() -> Any:
    try:
        return importlib.import_module("sounddevice")
    except ImportError as exc:
        raise AudioDeviceError(
            "the sounddevice package is not installed",
            fix=f"install it into FaceSwap Cam's environment: "
            f"pip install '{SOUNDDEVICE_REQUIREMENT}'",
        ) from exc
    except OSError as exc:  # sounddevice found no PortAudio library
        raise AudioDeviceError(
            f"PortAudio could not be loaded: {exc}",
            fix=f"reinstall sounddevice: pip install --force-reinstall '{SOUNDDEVICE_REQUIREMENT}'",
        ) from exc


class _Stream:
    """The part both directions share: a started PortAudio stream, closed once."""

    def __init__(self, sd: Any, stream: Any, device: str) -> None:
        self._sd = sd
        self._stream = stream
        self._device = device
        self._close_lock = threading.Lock()
        self._closed = False
        self.xruns = 0  # overflows (input) or underflows (output) PortAudio reported

    @property
    def latency_s(self) -> float:
        return float(self._stream.latency)

    @property
    def closed(self) -> bool:
        return self._closed

    def _gone(self, exc: BaseException, what: str, fix: str) -> AudioDeviceError:
        return AudioDeviceError(f"{what} {self._device!r} failed: {exc}", fix=fix)

    def close(self) -> None:
        """Idempotent. Discards what was not played yet (a stop must not wait for it)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._stream.close(ignore_errors=True)
        except Exception:
            logger.warning("closing the audio stream of %r failed", self._device, exc_info=True)


class SoundDeviceInput(_Stream):
    """backend.InputStream over a blocking ``sounddevice.InputStream``."""

    def read(self, frames: int) -> np.ndarray:
        if self._closed:
            raise AudioDeviceError(
                f"microphone {self._device!r} is closed", fix="reopen the microphone"
            )
        try:
            data, overflowed = self._stream.read(frames)
        except self._sd.PortAudioError as exc:
            raise self._gone(
                exc, "microphone", "check that it is still connected, or pick another one"
            ) from exc
        if overflowed:
            self.xruns += 1
            logger.debug("microphone %r overflowed (%d so far)", self._device, self.xruns)
        return np.asarray(data, dtype=np.float32).reshape(frames, CHANNELS)


class SoundDeviceOutput(_Stream):
    """backend.OutputStream over a blocking ``sounddevice.OutputStream`` into the loopback;
    mono blocks are written to every channel the stream has."""

    def __init__(self, sd: Any, stream: Any, device: str, channels: int, fix: str) -> None:
        super().__init__(sd, stream, device)
        self._channels = channels
        self._fix = fix

    def write(self, block: np.ndarray) -> None:
        if self._closed:
            raise AudioDeviceError(f"output {self._device!r} is closed", fix=self._fix)
        data = np.asarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != CHANNELS:
            raise ValueError(f"expected a (frames, {CHANNELS}) block, got {data.shape}")
        if self._channels != CHANNELS:
            data = np.ascontiguousarray(np.broadcast_to(data, (data.shape[0], self._channels)))
        try:
            underflowed = self._stream.write(data)
        except self._sd.PortAudioError as exc:
            raise self._gone(exc, "virtual microphone output", self._fix) from exc
        if underflowed:
            self.xruns += 1
            logger.debug("output %r underflowed (%d so far)", self._device, self.xruns)


class SoundDeviceBackend:
    """backend.AudioBackend for macOS (BlackHole) and Windows (VB-CABLE) through PortAudio.

    PortAudio lists devices once, when it starts: a driver installed while FaceSwap Cam runs
    is seen after a restart (the install advice says so).
    """

    name = "sounddevice"

    def __init__(self, platform: str = sys.platform) -> None:
        self._platform = platform
        self._driver = LOOPBACK_DRIVERS.get(platform)
        self._sd_module: Any = None
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []
        self._closed = False

    # ---- devices ----------------------------------------------------------------------------

    @property
    def _sd(self) -> Any:
        if self._sd_module is None:
            self._sd_module = _load_sounddevice()
        return self._sd_module

    def _devices(self) -> list[dict[str, Any]]:
        """Every device as PortAudio lists it, with its index and host API name, ordered by
        host API preference (stable: PortAudio's order within one)."""
        sd = self._sd
        try:
            hostapis = [str(api["name"]) for api in sd.query_hostapis()]
            listed = list(sd.query_devices())
        except sd.PortAudioError as exc:
            raise AudioDeviceError(
                f"the sound devices cannot be listed: {exc}",
                fix="check the system's sound settings, then restart FaceSwap Cam",
            ) from exc
        preference = HOSTAPI_PREFERENCE.get(self._platform, ())
        devices = []
        for index, info in enumerate(listed):
            api = hostapis[info["hostapi"]] if 0 <= info["hostapi"] < len(hostapis) else ""
            devices.append({**info, "index": index, "hostapi_name": api})

        def rank(device: dict[str, Any]) -> int:
            api = device["hostapi_name"]
            return preference.index(api) if api in preference else len(preference)

        return sorted(devices, key=rank)

    def _usable(self, device: dict[str, Any], kind: str, channels: int) -> bool:
        check = self._sd.check_input_settings if kind == "input" else self._sd.check_output_settings
        try:
            check(
                device=device["index"], channels=channels, dtype="float32", samplerate=SAMPLE_RATE
            )
        except (self._sd.PortAudioError, ValueError) as exc:
            logger.debug(
                "%s %r via %s refuses 48 kHz float32: %s",
                kind,
                device["name"],
                device["hostapi_name"],
                exc,
            )
            return False
        return True

    def _require_driver(self) -> LoopbackDriver:
        if self._driver is None:
            raise AudioDeviceError(
                f"no loopback driver is known for {self._platform}",
                fix="on Linux FaceSwap Cam makes the microphone itself (the PulseAudio backend)",
            )
        return self._driver

    def _missing_driver(self, driver: LoopbackDriver) -> AudioDeviceError:
        return AudioDeviceError(
            f"{driver.driver} is not installed: no output device named like {driver.playback[0]!r}",
            fix=f"install {driver.driver}: {driver.install}; then pick the microphone "
            f"{driver.microphone!r} in the call app",
        )

    def _playback_device(self, driver: LoopbackDriver) -> dict[str, Any]:
        outputs = [d for d in self._devices() if d["max_output_channels"] > 0]
        for pattern in driver.playback:
            matches = [d for d in outputs if pattern in str(d["name"]).lower()]
            for device in matches:
                if self._usable(device, "output", self._output_channels(device)):
                    return device
            if matches:
                raise AudioDeviceError(
                    f"{matches[0]['name']!r} refuses {SAMPLE_RATE} Hz float32 audio",
                    fix=f"set {matches[0]['name']!r} to {SAMPLE_RATE} Hz in the system's sound "
                    "settings (macOS: Audio MIDI Setup), then restart FaceSwap Cam",
                )
        raise self._missing_driver(driver)

    @staticmethod
    def _output_channels(device: dict[str, Any]) -> int:
        return max(1, min(2, int(device["max_output_channels"])))

    def ensure_virtual_mic(self) -> str:
        """Finds the loopback and returns the microphone name the call app lists for it.
        Nothing is made or loaded, so this is idempotent by nature."""
        driver = self._require_driver()
        self._playback_device(driver)
        recording = [
            str(d["name"])
            for d in self._devices()
            if d["max_input_channels"] > 0 and driver.recording in str(d["name"]).lower()
        ]
        # The longest: MME's copy of a name is cut at 31 characters.
        return max(recording, key=len) if recording else driver.microphone

    def remove_virtual_mic(self) -> None:
        """Nothing to undo: the loopback is the user's installed driver, not ours to remove."""

    def remove_stale(self) -> int:
        """Nothing is loaded into the system by us, so a crash leaves nothing behind."""
        return 0

    def input_names(self) -> list[str]:
        """The microphones, without loopbacks, each once: from the most preferred host API
        that has any (Windows lists every device under up to four of them)."""
        return _names_once(self._microphones())

    def _microphones(self) -> list[dict[str, Any]]:
        """Every input device that is not a loopback, under every host API."""
        return [
            d
            for d in self._devices()
            if d["max_input_channels"] > 0 and not _is_loopback_input(str(d["name"]))
        ]

    def resolve_input(self, name: str) -> str:
        return str(self._input_device(name)["name"])

    def _input_device(self, name: str) -> dict[str, Any]:
        if _is_loopback_input(name):
            raise AudioDeviceError(
                f"{name!r} is a loopback (the virtual microphone's own side), not a microphone",
                fix="pick your real microphone",
            )
        inputs = self._microphones()
        wanted = name.lower()
        exact = [d for d in inputs if str(d["name"]).lower() == wanted]
        partial = [d for d in inputs if wanted in str(d["name"]).lower()]
        for device in exact + partial:
            if self._usable(device, "input", CHANNELS):
                return device
        if exact or partial:
            raise AudioDeviceError(
                f"microphone {name!r} refuses {SAMPLE_RATE} Hz float32 audio",
                fix="pick another microphone, or set this one to 48 kHz in the sound settings",
            )
        raise AudioDeviceError(
            f"no microphone named {name!r}",
            fix="pick one of: " + (", ".join(_names_once(inputs)) or "(none found)"),
        )

    # ---- streams ----------------------------------------------------------------------------

    def open_input(self, name: str | None) -> SoundDeviceInput:
        sd = self._sd
        if name is None:
            try:
                default = sd.query_devices(kind="input")
            except (sd.PortAudioError, ValueError) as exc:
                raise AudioDeviceError(
                    f"there is no default microphone: {exc}",
                    fix="connect a microphone, or pick one",
                ) from exc
            label = str(default["name"])
            if _is_loopback_input(label):
                raise AudioDeviceError(
                    f"the system's default microphone is {label!r}, the virtual microphone's "
                    "loopback: its sound would be played back into itself",
                    fix="pick your real microphone, or make it the system's default input",
                )
            device: int | None = None
        else:
            info = self._input_device(name)
            label, device = str(info["name"]), int(info["index"])
        stream = self._open(
            "InputStream",
            device,
            CHANNELS,
            label,
            fix="check that the microphone is connected and that FaceSwap Cam may use it "
            "(macOS: System Settings > Privacy & Security > Microphone)",
        )
        wrapper = SoundDeviceInput(sd, stream, label)
        self._track(wrapper)
        return wrapper

    def open_output(self) -> SoundDeviceOutput:
        driver = self._require_driver()
        info = self._playback_device(driver)
        channels = self._output_channels(info)
        label = str(info["name"])
        fix = f"check that {driver.driver} is still installed ({driver.install})"
        stream = self._open("OutputStream", int(info["index"]), channels, label, fix)
        wrapper = SoundDeviceOutput(self._sd, stream, label, channels, fix)
        self._track(wrapper)
        return wrapper

    def _open(self, kind: str, device: int | None, channels: int, label: str, fix: str) -> Any:
        sd = self._sd
        if self._closed:
            raise AudioDeviceError("the audio backend is closed", fix="restart the FaceSwap Mic")
        stream = None
        try:
            stream = getattr(sd, kind)(
                device=device,
                samplerate=SAMPLE_RATE,
                channels=channels,
                dtype="float32",
                blocksize=BLOCK_FRAMES,
                latency="low",
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            if stream is not None:
                stream.close(ignore_errors=True)
            raise AudioDeviceError(f"{label!r} cannot be opened: {exc}", fix=fix) from exc
        logger.info("opened %s %r (latency %.0f ms)", kind, label, stream.latency * 1000)
        return stream

    def _track(self, stream: _Stream) -> None:
        with self._lock:
            self._streams = [s for s in self._streams if not s.closed]
            self._streams.append(stream)

    def close(self) -> None:
        """Closes every stream this backend opened that is still open; idempotent. Call it
        after the thread that reads and writes them stopped (PortAudio does not allow closing a
        stream under a blocked read)."""
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    def __enter__(self) -> SoundDeviceBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
