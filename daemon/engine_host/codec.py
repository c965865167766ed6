"""Frames across the process boundary: shared memory locally, JPEG over a network.

Shared memory: the host creates one segment per connection (``first_batch`` slots of
W x H x 3 bytes), the client attaches by the name the host gave it. Per batch the client
copies its frames in; the host hands the engine read-only views of the slots (the engine
contract: inputs are not kept past the call) and writes the results back over them; the client
copies the results out into frames it owns, taken from a pool of its earlier ones. Three copies
of a batch, none of them into freshly faulted memory after the first batches: a copy into new
pages costs several times a copy into mapped ones.

Every block of the segment is reserved when it is made, so a full ``/dev/shm`` is an error at
the start (frames then go as JPEG), never a SIGBUS in either process on a later write. The
client's mapping stays valid after the host dies or unlinks the segment: the pages live until
the last mapping goes, and the client holds no view of them outside a call.

JPEG (quality 90): what a remote host gets. Frames are concatenated, each behind a 4-byte
big-endian length, and coded on several cores at once.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import resource_tracker, shared_memory
from typing import Any, TypeVar

import cv2
import numpy as np

from faceswap_cam.daemon.engine_host.protocol import ProtocolError
from faceswap_cam.models.reference import measure_image

JPEG_QUALITY = 90
#: Frames a client keeps for reuse: more than the daemon holds at once (its output buffer of
#: 60, a held frame, a batch in flight). The pool never holds more than was in use together.
POOL_FRAMES = 128
_LENGTH = struct.Struct(">I")
_T = TypeVar("_T")


def frame_bytes(width: int, height: int) -> int:
    return width * height * 3


class SharedFrames:
    """A shared-memory segment of frame slots (the host creates it, the client attaches)."""

    def __init__(self, segment: shared_memory.SharedMemory, *, owner: bool) -> None:
        self._segment = segment
        self._owner = owner
        self._pool = FramePool(POOL_FRAMES)

    @classmethod
    def create(cls, slots: int, width: int, height: int) -> SharedFrames:
        """A new segment with every block reserved; OSError when there is no room."""
        # The name is random and the segment 0600 (the standard library's default).
        segment = shared_memory.SharedMemory(create=True, size=slots * frame_bytes(width, height))
        try:
            _reserve(segment)
        except BaseException:
            segment.close()
            segment.unlink()
            raise
        return cls(segment, owner=True)

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
        """Copy ``frames`` into the first slots (the client's batch, or the host's results)."""
        height, width = frames[0].shape[:2]
        slots = self._view(len(frames), width, height)
        for slot, frame in zip(slots, frames, strict=True):
            np.copyto(slot, frame)
        del slots

    def slots(self, count: int, width: int, height: int) -> list[np.ndarray]:
        """Read-only views of the first ``count`` slots: valid until the next batch is
        written; whoever holds them keeps the segment mapped."""
        self._check(count, width, height)
        view = self._view(count, width, height)
        view.flags.writeable = False
        return list(view)

    def write_results(self, results: Sequence[np.ndarray]) -> None:
        """The engine's results over the slots its inputs were in. A result that is a view of
        the segment (an input handed back, maybe reordered) is copied out first unless it
        already is its own slot, so no write lands on a frame still to be read."""
        height, width = results[0].shape[:2]
        view = self._view(len(results), width, height)
        start = _address(view)
        end = start + view.nbytes
        staged: list[np.ndarray | None] = []
        for slot, result in zip(view, results, strict=True):
            address = _address(result)
            if not start <= address < end:
                staged.append(result)  # the engine's own memory
            elif address == _address(slot) and result.strides == slot.strides:
                staged.append(None)  # already in place
            else:
                staged.append(result.copy())
        for slot, staged_result in zip(view, staged, strict=True):
            if staged_result is not None:
                np.copyto(slot, staged_result)
        del view, staged

    def read(self, count: int, width: int, height: int) -> list[np.ndarray]:
        """Copies of the first ``count`` frames, which the caller owns."""
        self._check(count, width, height)
        view = self._view(count, width, height)
        frames = [self._pool.take((height, width, 3)) for _ in range(count)]
        for frame, slot in zip(frames, view, strict=True):
            np.copyto(frame, slot)
        del view
        return frames

    def _check(self, count: int, width: int, height: int) -> None:
        if not self.fits(count, width, height):
            raise ProtocolError(f"{count} frames of {width}x{height} do not fit the shared "
                                f"memory of {self._segment.size} bytes")

    def _view(self, count: int, width: int, height: int) -> np.ndarray:
        buffer = self._segment.buf
        if buffer is None:  # closed by another thread (a hung call's proxy being dropped)
            raise ProtocolError("the shared memory is closed")
        return np.ndarray((count, height, width, 3), np.uint8, buffer=buffer)

    def close(self) -> None:
        # BufferError: a view is still alive somewhere; the OS unmaps it at exit.
        with contextlib.suppress(BufferError):
            self._segment.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._segment.unlink()


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


class FramePool:
    """Frame arrays handed out and taken back once nobody refers to them any more.

    A copy into new memory costs several times a copy into pages already mapped (each 4 KiB
    page is faulted in and zeroed first), and the daemon's frames are short-lived: its output
    buffer lets go of them within seconds. Whoever holds a frame, or any view of it, holds a
    reference to the array, so an array whose only references are the pool's is free to
    reuse. Past ``limit`` arrays, new ones are handed out without being kept.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._arrays: list[np.ndarray] = []
        self._next = 0
        # Held by nobody but a list of ours: what a free array's count reads in ``take``
        # (the interpreter's own references, which vary between versions, included).
        self._nobody = [np.empty(0, np.uint8)]

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        arrays = self._arrays
        probe = self._nobody[0]
        free = sys.getrefcount(probe)
        for step in range(len(arrays)):
            index = (self._next + step) % len(arrays)
            array = arrays[index]
            if array.shape == shape and sys.getrefcount(array) == free:
                self._next = index + 1
                return array
        array = np.empty(shape, np.uint8)
        if len(arrays) < self._limit:
            arrays.append(array)
        return array

    def __len__(self) -> int:
        return len(self._arrays)


def _reserve(segment: shared_memory.SharedMemory) -> None:
    """Allocate every block of a new segment now. A tmpfs file is sparse: without this, the
    first write to a page that finds /dev/shm full kills the writer (the daemon) with SIGBUS.
    posix_fallocate turns that into ENOSPC here; elsewhere touching every page does the same
    job in this process (the host), where a failure costs only the host."""
    fd = getattr(segment, "_fd", -1)
    if hasattr(os, "posix_fallocate") and fd >= 0:
        try:
            os.posix_fallocate(fd, 0, segment.size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
                raise
    np.ndarray((segment.size,), np.uint8, buffer=segment.buf)[::mmap.PAGESIZE] = 0


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
    for data in _each(_encode_one, frames):
        parts += [_LENGTH.pack(len(data)), data]
    return b"".join(parts)


def _encode_one(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("a frame could not be encoded as JPEG")
    return bytes(data.tobytes())


def decode_jpeg(payload: memoryview | bytes, count: int, width: int,
                height: int) -> list[np.ndarray]:
    """``count`` frames of exactly ``width`` x ``height``, or ProtocolError."""
    parts = []
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
        parts.append(data)
    if offset != len(view):
        raise ProtocolError("the JPEG payload has bytes after its last frame")
    frames = []
    for frame in _each(_decode_one, parts):
        if frame is None or frame.shape != (height, width, 3):
            got = "nothing" if frame is None else f"{frame.shape[1]}x{frame.shape[0]}"
            raise ProtocolError(f"a frame did not decode to {width}x{height} (got {got})")
        frames.append(frame)
    return frames


def _decode_one(data: memoryview) -> np.ndarray | None:
    frame: np.ndarray | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return frame


def _each(work: Callable[[Any], _T], items: Sequence[Any]) -> list[_T]:
    """``work`` on every item, on several cores at once: OpenCV lets go of the GIL while it
    codes, and a batch's frames are independent (9 frames at 720p take ~25 ms on one core).
    The threads live for one batch: starting them costs well under a millisecond."""
    cores = os.cpu_count() or 1
    if len(items) < 2 or cores < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, cores, len(items)),
                            thread_name_prefix="jpeg") as workers:
        return list(workers.map(work, items))


def jpeg_size(data: memoryview | bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding; None for anything that is
    not a JPEG (the header reader is the one references are measured with)."""
    head = bytes(data[:65536])
    return measure_image(head) if head[:2] == b"\xff\xd8" else None


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("the reference image could not be encoded as PNG")
    return bytes(data.tobytes())
