"""Frames across the process boundary: shared memory locally, JPEG over a network.

Shared memory: the host creates one segment per connection (``first_batch`` slots of
W x H x 3 bytes), the client attaches by the name the host gave it; a batch is written in, the
host writes its results back into the same slots, and each side copies out what it keeps, so
no frame ever lives in a buffer the other side will overwrite.

JPEG (quality 90): what a remote host gets. Frames are concatenated, each behind a 4-byte
big-endian length.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Sequence
from multiprocessing import resource_tracker, shared_memory

import cv2
import numpy as np

from faceswap_cam.daemon.engine_host.protocol import ProtocolError

JPEG_QUALITY = 90
_LENGTH = struct.Struct(">I")


def frame_bytes(width: int, height: int) -> int:
    return width * height * 3


class SharedFrames:
    """A shared-memory segment of frame slots (the host creates it, the client attaches)."""

    def __init__(self, segment: shared_memory.SharedMemory, *, owner: bool) -> None:
        self._segment = segment
        self._owner = owner

    @classmethod
    def create(cls, slots: int, width: int, height: int) -> SharedFrames:
        # The name is random and the segment 0600 (the standard library's default).
        return cls(shared_memory.SharedMemory(create=True, size=slots * frame_bytes(width,
                                                                                     height)),
                   owner=True)

    @staticmethod
    def room_for(slots: int, width: int, height: int) -> bool:
        """Whether /dev/shm (Linux) has room: a segment larger than the free space is made
        without complaint, and the first write past it kills the writer with SIGBUS."""
        try:
            stats = os.statvfs("/dev/shm")
        except OSError:
            return True  # no such filesystem (macOS): the kernel's own limits apply
        return slots * frame_bytes(width, height) * 1.1 <= stats.f_bavail * stats.f_frsize

    @classmethod
    def attach(cls, name: str) -> SharedFrames:
        segment = shared_memory.SharedMemory(name=name)
        # Python < 3.13 registers an attached segment with this process's resource tracker,
        # which would unlink it when this process exits: the host owns it, so let go.
        resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
        return cls(segment, owner=False)

    @property
    def name(self) -> str:
        return self._segment.name

    @property
    def size(self) -> int:
        return self._segment.size

    def fits(self, count: int, width: int, height: int) -> bool:
        return count * frame_bytes(width, height) <= self._segment.size

    def write(self, frames: Sequence[np.ndarray]) -> None:
        height, width = frames[0].shape[:2]
        slots = self._view(len(frames), width, height)
        for slot, frame in zip(slots, frames, strict=True):
            np.copyto(slot, frame)
        del slots

    def read(self, count: int, width: int, height: int) -> list[np.ndarray]:
        """Copies of the first ``count`` frames."""
        if not self.fits(count, width, height):
            raise ProtocolError(f"{count} frames of {width}x{height} do not fit the shared "
                                f"memory of {self._segment.size} bytes")
        slots = self._view(count, width, height)
        frames = [slot.copy() for slot in slots]
        del slots
        return frames

    def _view(self, count: int, width: int, height: int) -> np.ndarray:
        return np.ndarray((count, height, width, 3), np.uint8, buffer=self._segment.buf)

    def close(self) -> None:
        # BufferError: a view is still alive somewhere; the OS unmaps it at exit.
        with contextlib.suppress(BufferError):
            self._segment.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._segment.unlink()


def check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    """The (width, height) of a batch of equal BGR uint8 frames, or ValueError."""
    if not frames:
        raise ValueError("an empty batch")
    shape = frames[0].shape
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 \
                or frame.shape != shape:
            raise ValueError(f"frames must be equal HxWx3 uint8 arrays, got {frame.shape} "
                             f"{frame.dtype} beside {shape}")
    return shape[1], shape[0]


def encode_jpeg(frames: Sequence[np.ndarray]) -> bytes:
    parts = []
    for frame in frames:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("a frame could not be encoded as JPEG")
        parts += [_LENGTH.pack(len(data)), data.tobytes()]
    return b"".join(parts)


def decode_jpeg(payload: memoryview | bytes, count: int, width: int,
                height: int) -> list[np.ndarray]:
    """``count`` frames of exactly ``width`` x ``height``, or ProtocolError."""
    frames = []
    offset = 0
    view = memoryview(payload)
    for _ in range(count):
        if offset + _LENGTH.size > len(view):
            raise ProtocolError("the JPEG payload ends early")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise ProtocolError("the JPEG payload ends early")
        data = view[offset:offset + length]
        offset += length
        # Read the size from the header first: a forged one must not make us allocate.
        if jpeg_size(data) != (width, height):
            raise ProtocolError(f"a frame is not a {width}x{height} JPEG")
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None or frame.shape != (height, width, 3):
            got = "nothing" if frame is None else f"{frame.shape[1]}x{frame.shape[0]}"
            raise ProtocolError(f"a frame did not decode to {width}x{height} (got {got})")
        frames.append(frame)
    if offset != len(view):
        raise ProtocolError("the JPEG payload has bytes after its last frame")
    return frames


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: memoryview | bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding; None if there is none."""
    view = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    if view[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(view):
        if view[offset] != 0xFF:
            return None
        marker = view[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _SOF_MARKERS:
            height, width = struct.unpack_from(">HH", view, offset + 5)
            return width, height
        (length,) = struct.unpack_from(">H", view, offset + 2)
        offset += 2 + length
    return None


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("the reference image could not be encoded as PNG")
    return bytes(data.tobytes())
