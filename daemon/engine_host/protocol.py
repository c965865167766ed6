"""The engine host's messages: one WebSocket binary message each.

Layout: a 4-byte big-endian header length, a JSON header validated by the models below
(``extra="forbid"``: anything unexpected is refused), then a payload whose meaning the header
gives (frames for ``process``/``result``, PNG bytes for ``reference``, nothing otherwise).

One request is in flight at a time (the daemon never queues a second batch behind the first);
``interrupt`` is the exception: it may arrive while ``process`` runs and has no answer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from faceswap_cam.daemon.engine_host.address import MAX_TOKEN_CHARS

#: Bumped on any change to the messages; both sides refuse another number.
PROTOCOL_VERSION = 4
#: Bounds every message. A batch of 17 frames at 1920x1080 as JPEG (at most ~1.5 MB each for
#: a noisy frame) fits, and so does the largest reference image the daemon accepts (50 MB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
#: More frames than any engine's batch (Wan's longest segment is 161 frames at most).
MAX_BATCH = 161
#: The daemon's largest output (``--size``, 8K UHD): with the batch sizes the engine states
#: in its welcome, this bounds the memory one batch takes on either side.
MAX_SIDE = 7680
MAX_HEIGHT = 4320

_LENGTH = struct.Struct(">I")


def package_version() -> str:
    try:
        return metadata.version("faceswap-cam")
    except metadata.PackageNotFoundError:
        return "unknown"


class ProtocolError(ValueError):
    """A message that is not one of ours; the connection that sent it is closed."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Codec = Literal["shm", "jpeg"]
Count = Annotated[int, Field(ge=1, le=MAX_BATCH)]
Slots = Annotated[list[Annotated[int, Field(ge=0, le=1024)]], Field(max_length=MAX_BATCH)]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Height = Annotated[int, Field(ge=1, le=MAX_HEIGHT)]
_Offset = Annotated[int, Field(ge=0, le=MAX_SIDE)]
Boxes = Annotated[list[tuple[_Offset, _Offset, _Offset, _Offset]], Field(max_length=MAX_BATCH)]
#: A generation window: x, y, width, height in the frame, then the generation's size.
Window = tuple[_Offset, _Offset, Side, Height, Side, Height]
_WINDOW = TypeAdapter(Window)


def window_or_none(values: Sequence[int]) -> Window | None:
    """``values`` as a :data:`Window`, or None where a result cannot carry them."""
    try:
        return _WINDOW.validate_python(tuple(values))
    except ValidationError:
        return None


class Hello(_Header):
    """The client's first message. ``width``/``height``: the frame size it will send, so a
    local host can size its shared memory (without them frames go as JPEG)."""

    type: Literal["hello"] = "hello"
    protocol: int
    version: str = Field(max_length=128)
    token: str = Field(max_length=MAX_TOKEN_CHARS)
    width: Side | None = None
    height: Height | None = None


class Welcome(_Header):
    type: Literal["welcome"] = "welcome"
    protocol: int
    version: str
    engine: str
    first_batch: Count
    next_batch: Count
    #: The shared-memory segment the host made for this client (None: frames go as JPEG):
    #: ``shm_inputs`` slots of WxHx3 bytes for frames, then ``shm_results`` for results.
    shm: str | None
    shm_inputs: Annotated[int, Field(ge=0, le=4 * MAX_BATCH)] = 0
    shm_results: Annotated[int, Field(ge=0, le=1024)] = 0
    #: JPEG: how many staged frames the host keeps (the newest; see ``Stage``).
    staged: Annotated[int, Field(ge=0, le=4 * MAX_BATCH)] = 0
    codec: Codec


class Reference(_Header):
    """Payload: the reference image as PNG bytes."""

    type: Literal["reference"] = "reference"


class Stage(_Header):
    """A frame sent ahead, as it is fed, so a batch's frames are on the host before the
    batch is (JPEG only; locally the client writes them into input slots). Payload: one
    JPEG. No answer; it may arrive while ``process`` runs. The host keeps the newest
    ``Welcome.staged`` and decodes each on arrival."""

    type: Literal["stage"] = "stage"
    id: Annotated[int, Field(ge=0)]
    width: Side
    height: Height


class Process(_Header):
    """``shm``: the frames are in the input ``slots``; the results go into the result slots
    ``results``, or over the input slots when None. ``jpeg``: the frames are the staged
    ``staged`` ids, or the payload's JPEGs when None."""

    type: Literal["process"] = "process"
    count: Count
    width: Side
    height: Height
    codec: Codec
    slots: Slots | None = None
    results: Slots | None = None
    staged: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_BATCH)] | None \
        = None


class Result(_Header):
    """``shm``: the results are in the slots the batch named. ``jpeg``: per frame, the box
    ``(x, y, width, height)`` where it differs from the frame sent, and the payload holds the
    JPEG of each non-empty box in order (a whole-frame box is the whole frame); the client
    pastes them into its own frames. With ``swapped`` False there is no payload (the frames
    are the inputs unchanged)."""

    type: Literal["result"] = "result"
    swapped: bool
    count: Count
    codec: Codec
    boxes: Boxes | None = None
    #: Where the engine generated the batch, where it says: x, y, width, height in the
    #: frame, then the generation's width and height.
    window: Window | None = None


class Reset(_Header):
    type: Literal["reset"] = "reset"


class Interrupt(_Header):
    type: Literal["interrupt"] = "interrupt"


class Ok(_Header):
    type: Literal["ok"] = "ok"


class Error(_Header):
    """A refusal or a failure: what happened and what to do."""

    type: Literal["error"] = "error"
    message: str
    fix: str = ""
    #: The call was interrupted (its result no longer wanted), not failed.
    interrupted: bool = False


Message = Hello | Welcome | Reference | Stage | Process | Result | Reset | Interrupt | Ok | Error
_ADAPTER: TypeAdapter[Message] = TypeAdapter(
    Annotated[Message, Field(discriminator="type")])


def encode(header: Message, payload: bytes | bytearray | memoryview = b"") -> bytes:
    head = header.model_dump_json().encode()
    return b"".join((_LENGTH.pack(len(head)), head, payload))


def decode(data: bytes | bytearray | memoryview) -> tuple[Message, memoryview]:
    """The header and a view of the payload, or ProtocolError saying what is wrong."""
    view = memoryview(data)
    if len(view) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(view)} bytes is over {MAX_MESSAGE_BYTES}")
    if len(view) < _LENGTH.size:
        raise ProtocolError("message too short for its header length")
    (length,) = _LENGTH.unpack_from(view)
    if length > MAX_HEADER_BYTES or _LENGTH.size + length > len(view):
        raise ProtocolError(f"header length {length} does not fit the message")
    raw = bytes(view[_LENGTH.size:_LENGTH.size + length])
    try:
        # pydantic's own JSON parser, not json.loads: it bounds nesting (json.loads raises
        # RecursionError on "[[[[...") and refuses lone surrogates, which no reply could echo.
        header = _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"][1:])  # [0] is the type's tag
        raise ProtocolError(f"malformed header: {where + ': ' if where else ''}"
                            f"{error['msg']}") from None
    return header, view[_LENGTH.size + length:]


def version_mismatch(theirs: int, their_version: str, *, ours_are: str) -> str:
    """The refusal for another protocol version, naming both sides'."""
    return (f"protocol version mismatch: the {ours_are} speaks protocol {PROTOCOL_VERSION} "
            f"(faceswap-cam {package_version()}), the other side protocol {theirs} "
            f"(faceswap-cam {their_version}); install the same faceswap-cam on both machines")
