"""The states the daemon's parts are in, as the status reports them.

One definition each, shared by the threads that own the states (capture, processor, publisher)
and by the typed status that the tray and CLI read; standard library only, so clients stay light.
"""

from __future__ import annotations

from enum import StrEnum


class DaemonState(StrEnum):
    STARTING = "starting"  # no frame published yet
    RUNNING = "running"
    PAUSED = "paused"  # the privacy card instead of the camera
    ERROR = "error"  # the engine failed or hung; the camera shows the fallback meanwhile
    STOPPING = "stopping"


class CaptureState(StrEnum):
    STARTING = "starting"
    LIVE = "live"
    LOST = "lost"
    STOPPED = "stopped"


class EngineState(StrEnum):
    LOADING = "loading"
    RUNNING = "running"
    FAILED = "failed"
    HUNG = "hung"
    STOPPED = "stopped"


class Showing(StrEnum):
    SWAPPED = "swapped"
    PASSTHROUGH = "passthrough"
    HELD = "held"
    PLACEHOLDER = "placeholder"
    PAUSED = "paused"


class MicState(StrEnum):
    """FaceSwap Mic (``--mic``): the user's microphone, delayed to match the video."""

    STARTING = "starting"
    RUNNING = "running"
    NO_INPUT = "no_input"  # the virtual mic plays silence until the microphone is back
    NO_SERVER = "no_server"  # the sound server is away; retried with backoff
    STOPPED = "stopped"
