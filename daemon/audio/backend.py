"""The contract between the FaceSwap Mic's delay thread and a platform's sound system.

Linux talks to the desktop's sound server (PulseAudio, or PipeWire through its PulseAudio
interface) and makes the virtual microphone itself; macOS and Windows write into a loopback
driver the user installed (BlackHole, VB-CABLE). The delay thread sees only this contract, so
the delay logic is the same everywhere and is tested once.

Samples are float32 in [-1, 1], shaped (frames, channels). Standard library and numpy only:
the audio libraries are imported by the backends, lazily, so the daemon runs without them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

SAMPLE_RATE = 48_000  # what call apps and sound servers use natively: no resampling anywhere
CHANNELS = 1  # a microphone is mono; call apps downmix anyway
BLOCK_FRAMES = 480  # 10 ms: small enough for smooth delay changes, large enough to be cheap
VIRTUAL_MIC_NAME = "FaceSwap Mic"


class AudioDeviceError(RuntimeError):
    """A device or the sound server is missing or failed. ``fix`` says what the user can do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class SoundServerGone(AudioDeviceError):
    """The sound server itself is unreachable (not running, or restarting): retry later."""


class InputStream(Protocol):
    def read(self, frames: int) -> np.ndarray:
        """Blocks until ``frames`` samples were captured; raises AudioDeviceError when the
        device went away."""

    @property
    def latency_s(self) -> float:
        """How long ago the newest sample returned by read() reached the device."""

    def close(self) -> None: ...


class OutputStream(Protocol):
    def write(self, block: np.ndarray) -> None:
        """Blocks while the device's buffer is full, which paces the caller."""

    @property
    def latency_s(self) -> float:
        """How long a sample written now waits before the call app can read it."""

    def close(self) -> None: ...


class AudioBackend(Protocol):
    """One platform's sound system. All methods may raise AudioDeviceError."""

    name: str

    def ensure_virtual_mic(self) -> str:
        """Makes (Linux) or finds (macOS, Windows) the device call apps pick as the microphone,
        and returns its name as they list it. Idempotent."""

    def remove_virtual_mic(self) -> None:
        """Undoes ensure_virtual_mic (Linux: unloads our modules); idempotent."""

    def remove_stale(self) -> int:
        """Removes what an earlier run that crashed left behind; returns how many things."""

    def input_names(self) -> list[str]:
        """The real microphones the user can choose (never our own virtual device)."""

    def resolve_input(self, name: str) -> str:
        """The microphone ``--mic name`` opens, as ``input_names`` lists it: by any name the
        sound system accepts (PulseAudio: its description too; elsewhere part of a name)."""

    def open_input(self, name: str | None) -> InputStream:
        """``None`` is the system's default microphone."""

    def open_output(self) -> OutputStream:
        """A stream into the virtual microphone."""

    def close(self) -> None: ...
