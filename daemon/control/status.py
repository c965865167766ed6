"""What the daemon reports about itself, as one typed document.

:class:`LiveStats` is the small snapshot the preview page and the frame overlay show many times a
second; :class:`DaemonStatus` is ``GET /status``: the live stats plus what a user acts on (the
state, the reference, errors and their fixes, where the preview and the API are). The daemon
builds these models, the API sends ``model_dump(mode="json")``, and the tray and the CLI
validate what they receive back into them, so a renamed field fails in one place.

pydantic and the standard library only: the tray imports this.

``python -m faceswap_cam.daemon.control.status`` prints the JSON schema committed next to this
file as ``status.schema.json`` (a test fails when the two differ).
"""

from __future__ import annotations

import json
import math
import sys
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from faceswap_cam.daemon.config import Fallback, Playout
from faceswap_cam.daemon.states import CaptureState, DaemonState, EngineState, MicState, Showing

__all__ = [
    "CaptureState",
    "DaemonState",
    "DaemonStatus",
    "Devices",
    "EngineHostState",
    "EngineHostStatus",
    "EngineState",
    "Fallback",
    "LiveStats",
    "MicState",
    "MicStatus",
    "OutputError",
    "Playout",
    "Showing",
    "StatusError",
    "parse_status",
    "schema_text",
]


def _finite_or_none(value: float | None) -> float | None:
    # JSON has no NaN or infinity: a figure that is not a number is "not measured".
    return value if value is None or math.isfinite(value) else None


#: A measured figure (fps, milliseconds); None when there is none yet.
Figure = Annotated[float | None, AfterValidator(_finite_or_none)]


class _Report(BaseModel):
    # Frozen: a status is a snapshot. Unknown fields are ignored, so a tray keeps working
    # against a newer daemon that reports more.
    model_config = ConfigDict(frozen=True, extra="ignore")


class LiveStats(_Report):
    """The live figures: the preview page's ``/stats.json`` and the frame overlay."""

    capture_fps: Figure
    capture_state: CaptureState
    process_fps: Figure
    publish_fps: Figure
    #: Camera-to-output latency of the last published frame.
    latency_ms: Figure
    #: What the last published frame was; None before the first one.
    showing: Showing | None
    #: The engine's name ("passthrough" when none swaps faces).
    engine: str
    engine_state: EngineState
    engine_error: str
    #: The engine sees every k-th camera frame.
    cadence: int
    playout: Playout
    playout_delay_ms: Figure
    fallback: Fallback
    swap: bool
    frames_published: int


class Devices(_Report):
    source: str
    outputs: list[str]


class EngineHostState(StrEnum):
    STARTING = "starting"  # the host process is starting (loading its engine) or dialled
    RUNNING = "running"  # a local child host serves this daemon
    CONNECTED = "connected"  # a host on another machine (--engine-url) serves this daemon
    RESTARTING = "restarting"  # the host died or hung: a new one starts after a pause
    FAILED = "failed"  # the host did not start or cannot be reached: retried after a pause
    STOPPED = "stopped"


class EngineHostStatus(_Report):
    """The engine's own process (``--engine-host child`` or ``--engine-url``)."""

    #: The local child's process id (None for a remote host, or before the first start).
    pid: int | None
    #: Where the host listens (without its token).
    url: str | None
    state: EngineHostState
    #: How many times the host was started again (or re-dialled) after the first.
    restarts: int
    #: What last went wrong with the host ("" when nothing did).
    error: str
    fix: str


class GenerationStatus(_Report):
    """Where the engine generated its last swapped batch: a window of the camera frame around
    the person, or the whole frame, and the size the model made it at (its cost)."""

    #: ``(x, y, width, height)`` in camera pixels.
    window: tuple[int, int, int, int]
    #: ``(width, height)`` the model generated it at.
    size: tuple[int, int]


class MicStatus(_Report):
    """FaceSwap Mic (``--mic``): the user's microphone, late by the video's delay."""

    state: MicState
    #: The microphone to pick in the call app ("FaceSwap Mic", or the loopback driver's).
    device: str | None
    #: The real microphone it carries ("default": the system's).
    input: str
    #: The delay applied now, and the video delay it follows, in milliseconds.
    delay_ms: float
    target_ms: float
    #: Voice minus video as the call gets them (positive: the voice is late); None while
    #: no camera frame is shown.
    av_offset_ms: Figure
    detail: str
    fix: str


class OutputError(_Report):
    """An output that stopped (a recording on a full disk): what happened and what to do."""

    #: The output as in ``devices.outputs`` ("file:/home/me/call.mp4").
    output: str
    error: str
    fix: str


class DaemonStatus(LiveStats):
    """``GET /status``, ``faceswap-cam status --json`` and what the tray shows."""

    state: DaemonState
    paused: bool
    #: The selected reference face's name.
    reference: str | None
    #: Why the last reference was refused ("" when it was not).
    reference_error: str
    camera_error: str
    camera_fix: str
    engine_fix: str
    devices: Devices
    #: The outputs that stopped; the others go on. Empty when all run.
    output_errors: list[OutputError] = []
    preview_url: str | None
    api_url: str | None
    #: None when the engine runs inside the daemon.
    engine_host: EngineHostStatus | None = None
    #: The virtual camera's swapped frames carry the "AI-altered" badge (a daemon from before
    #: the badge reports none).
    ai_badge: bool = False
    #: The engine preset asked for (quality, balanced, live); None: the settings as they are.
    preset: str | None = None
    #: None until a model engine has swapped a batch (and for engines that do not say).
    generation: GenerationStatus | None = None
    #: None while FaceSwap Mic is off.
    mic: MicStatus | None = None


class StatusError(ValueError):
    """A status document that is not a :class:`DaemonStatus`; the message says where."""


def parse_status(document: object) -> DaemonStatus:
    """``GET /status``'s answer as a :class:`DaemonStatus`, or StatusError (a daemon from
    another version, or not a daemon at all)."""
    try:
        return DaemonStatus.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        more = exc.error_count() - 1
        raise StatusError(f"the daemon's status is not understood: {where}: {first['msg']}"
                          + (f" (and {more} more)" if more else "")) from None


def schema() -> dict[str, Any]:
    return DaemonStatus.model_json_schema(mode="serialization")


def schema_text() -> str:
    """The schema as committed in status.schema.json."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
