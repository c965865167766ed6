"""Frames across the process boundary: shared memory locally, JPEG over a network.

Shared memory: the host creates one segment per connection, input slots then result slots of
W x H x 3 bytes (``SharedFrames``), and the client attaches by the name the host gave it. The
client copies each frame into an input slot as it is fed; the host hands the engine read-only
views of the slots (the engine contract: inputs are not kept past the call) and its results
go into result slots the client named, which the client then hands out as its frames. One
copy of a batch on its way (none for an engine that writes into lent outputs), none of them
into freshly faulted memory after the first batches: a copy into new pages costs several
times a copy into mapped ones.

Every block of the segment is reserved when it is made, so a full ``/dev/shm`` is an error at
the start (frames then go as JPEG), never a SIGBUS in either process on a later write. The
client removes the segment's name once it has attached, so the memory goes with the last
mapping however either process ends. The client's mapping stays valid after the host dies:
the pages live until the last array over them goes (arrays are made with ``np.frombuffer``,
which holds an export of the mapping, so closing cannot unmap a frame still shown).

JPEG (quality 85, 4:2:0, through libjpeg-turbo's ``simplejpeg`` binding, decoded with the
fast DCT): what a remote host gets, coded on every core (a ``Coder``'s threads, which live
as long as the connection). Frames are concatenated, each behind a 4-byte big-endian length.
Results come back as the JPEGs of only the boxes the engine changed (``encode_boxes``), pasted
into copies of the client's own frames (``decode_boxes``), made in frames the daemon has let
go of (a copy into new pages costs several times a copy into mapped ones).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import resource_tracker, shared_memory
from typing import Any, TypeVar

import cv2
import numpy as np
import simplejpeg

from faceswap_cam.daemon.engine_host.protocol import ProtocolError
from faceswap_cam.models.engine import Box, check_box
from faceswap_cam.models.reference import jpeg_header

#: libjpeg's and simplejpeg's own default "high quality": 85 codes in ~15 % less time than
#: 90, at 131 KB instead of 200 KB per noisy 720p frame, for 0.2-0.9 dB of PSNR (benchmarks/
#: engine_host.py prints it), far above what a video call's own encoder then keeps.
JPEG_QUALITY = 85
#: Frames a client keeps for reuse: more than the daemon holds at once (its output buffer of
#: 60, a held frame, a batch in flight). The pool never holds more than was in use together.
POOL_FRAMES = 128
#: Result slots a local host makes when /dev/shm has room: what the daemon holds at once
#: (its output buffer of 60, a batch in flight, the frame shown and the sinks' pending ones).
#: With fewer, results are copied out of the input slots into pooled frames instead.
RESULT_SLOTS = 72
_LENGTH = struct.Struct(">I")
_T = TypeVar("_T")


def frame_bytes(width: int, height: int) -> int:
    return width * height * 3


class SharedFrames:
    """A shared-memory segment of frame slots (the host creates it, the client attaches).

    Layout: ``inputs`` slots, then ``results`` slots, each W x H x 3 bytes, for the frame size
    the client announced. The client writes each frame into a free input slot as it is fed
    (``stage``, off the batch's critical path), so a complete batch is already in place when
    it is sent; frames not staged are copied in at ``slots_for``. The host writes results
    into the result slots the client names, and the client hands those slots out as the
    daemon's frames: no copy back. A result slot is free again once nothing refers to its
    array, which the array's reference count tells (as ``FramePool`` does). Without free
    result slots the results go over the input slots and are copied out into pooled frames.

    The client's bookkeeping is guarded by one lock: the feeder stages while the engine
    worker sends a batch.
    """

    def __init__(self, segment: shared_memory.SharedMemory, *, owner: bool, width: int,
                 height: int, inputs: int, results: int) -> None:
        self._segment = segment
        self._owner = owner
        self.width, self.height = width, height
        self.inputs, self.results = inputs, results
        self._pool = FramePool(POOL_FRAMES)
        self._lock = threading.Lock()
        # Client side: which frame each input slot holds, the slots a batch in flight uses,
        # and the result slots' buffers.
        self._holder: list[np.ndarray | None] = [None] * inputs
        self._pinned: set[int] = set()
        self._next_input = 0
        self._next_result = 0
        self._result_arrays: list[np.ndarray] = []

    @classmethod
    def create(cls, width: int, height: int, inputs: int, results: int = 0) -> SharedFrames:
        """A new segment with every block reserved; OSError when there is no room."""
        size = (inputs + results) * frame_bytes(width, height)
        # The name is random and the segment 0600 (the standard library's default).
        segment = shared_memory.SharedMemory(create=True, size=size)
        try:
            _reserve(segment)
        except BaseException:
            segment.close()
            segment.unlink()
            raise
        return cls(segment, owner=True, width=width, height=height, inputs=inputs,
                   results=results)

    @staticmethod
    def room_for(width: int, height: int, inputs: int, results: int) -> int | None:
        """How many result slots fit beside ``inputs`` input slots (at most ``results``), or
        None when not even the inputs fit. /dev/shm (Linux) takes a segment larger than its
        free space without complaint, and the first write past it kills the writer with
        SIGBUS, so ask first; a tenth is kept free for everyone else."""
        try:
            stats = os.statvfs("/dev/shm")
        except OSError:
            return results  # no such filesystem (macOS): the kernel's own limits apply
        frames = int(stats.f_bavail * stats.f_frsize / 1.1) // frame_bytes(width, height)
        return None if frames < inputs else min(results, frames - inputs)

    @classmethod
    def attach(cls, name: str, width: int, height: int, inputs: int,
               results: int) -> SharedFrames:
        segment = shared_memory.SharedMemory(name=name)
        # Both sides have it mapped now: its name can go. The memory then lives exactly as
        # long as a mapping does, so no way either process dies (a kill -9 of the host's whole
        # process group, its resource tracker included; a service manager's SIGKILL) leaves
        # hundreds of MB in /dev/shm until the next boot. (unlink also takes it off the
        # resource tracker that Python < 3.13 registers an attached segment with.)
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()
        if segment.size < (inputs + results) * frame_bytes(width, height):
            segment.close()
            raise ProtocolError(f"the shared memory of {segment.size} bytes is smaller than "
                                f"{inputs + results} frames of {width}x{height}")
        shared = cls(segment, owner=False, width=width, height=height, inputs=inputs,
                     results=results)
        buffer = segment.buf
        assert buffer is not None
        size = frame_bytes(width, height)
        # np.frombuffer holds an export of the mapping (np.ndarray(buffer=...) does not), so
        # closing the segment cannot unmap a frame the daemon still shows.
        shared._result_arrays = [
            np.frombuffer(buffer, np.uint8, count=size, offset=(inputs + slot) * size)
            for slot in range(results)]
        return shared

    @property
    def name(self) -> str:
        return self._segment.name

    def fits(self, count: int, width: int, height: int) -> bool:
        return (width, height) == (self.width, self.height) and count <= self.inputs

    # --- the client (daemon) side ----------------------------------------------------------

    def stage(self, pixels: np.ndarray) -> bool:
        """Copy a frame that a batch will probably use into a free input slot now; False when
        it cannot be (another size, every slot in a batch in flight)."""
        if pixels.shape != (self.height, self.width, 3) or pixels.dtype != np.uint8:
            return False
        with self._lock:
            slot = self._free_input(exclude=())
            if slot is None:
                return False
            self._fill(slot, pixels)
            return True

    def slots_for(self, frames: Sequence[np.ndarray]) -> list[int]:
        """The input slots holding ``frames``, copying in those not staged; the slots stay
        pinned (not restaged) until ``release``."""
        with self._lock:
            chosen: list[int] = []
            for frame in frames:
                slot = next((held for held, staged in enumerate(self._holder)
                             if staged is frame and held not in chosen), None)
                if slot is None:
                    slot = self._free_input(exclude=chosen)
                    if slot is None:
                        raise ProtocolError(f"{len(frames)} frames do not fit "
                                            f"{self.inputs} input slots")
                    self._fill(slot, frame)
                chosen.append(slot)
            self._pinned = set(chosen)
            return chosen

    def release(self) -> None:
        with self._lock:
            self._pinned = set()

    def free_results(self, count: int) -> list[int] | None:
        """``count`` result slots nobody refers to any more, or None (then the results come
        back over the input slots and are copied out)."""
        chosen = list(itertools.islice(_unreferenced(self._result_arrays, self._next_result),
                                       count))
        if len(chosen) < count:
            return None
        self._next_result = chosen[-1] + 1
        return chosen

    def result_frames(self, slots: Sequence[int]) -> list[np.ndarray]:
        """The results in ``slots`` as frames the caller may keep: each is a view of the
        slot's own array, which stays busy for as long as any view of it lives (NumPy makes
        a view's base the first array that is not itself a view of an array)."""
        shape = (self.height, self.width, 3)
        return [self._result_arrays[slot].reshape(shape) for slot in slots]

    def read(self, slots: Sequence[int]) -> list[np.ndarray]:
        """Copies of the frames in input ``slots``, which the caller owns."""
        view = self._input_view()
        frames = [self._pool.take((self.height, self.width, 3)) for _ in slots]
        for frame, slot in zip(frames, slots, strict=True):
            np.copyto(frame, view[slot])
        del view
        return frames

    def _free_input(self, exclude: Sequence[int]) -> int | None:
        for step in range(self.inputs):
            slot = (self._next_input + step) % self.inputs
            if slot not in self._pinned and slot not in exclude:
                self._next_input = slot + 1
                return slot
        return None

    def _fill(self, slot: int, frame: np.ndarray) -> None:
        view = self._input_view()
        np.copyto(view[slot], frame)
        del view
        self._holder[slot] = frame

    # --- the host side ---------------------------------------------------------------------

    def input_views(self, slots: Sequence[int]) -> list[np.ndarray]:
        """Read-only views of the input ``slots``: valid until the next batch is written;
        whoever holds them keeps the segment mapped."""
        self._check_slots(slots, self.inputs, "input")
        view = self._input_view()
        view.flags.writeable = False
        return [view[slot] for slot in slots]

    def write_results(self, results: Sequence[np.ndarray], inputs: Sequence[int],
                      into: Sequence[int] | None) -> None:
        """The engine's results into the result slots ``into``, or (None) over the input
        slots its inputs were in. A result that is a view of the segment (an input handed
        back, maybe reordered) is copied out first unless it already is its destination, so
        no write lands on a frame still to be read."""
        if into is None:
            self._check_slots(inputs, self.inputs, "input")
            view = self._input_view()
            destinations = [view[slot] for slot in inputs]
            del view
        else:
            destinations = self.result_views(into)
        whole = self._whole()
        start = _address(whole)
        end = start + whole.nbytes
        del whole
        staged: list[np.ndarray | None] = []
        for destination, result in zip(destinations, results, strict=True):
            address = _address(result)
            if not start <= address < end:
                staged.append(result)  # the engine's own memory
            elif address == _address(destination) and result.strides == destination.strides:
                staged.append(None)  # already in place
            else:
                staged.append(result.copy())
        for destination, staged_result in zip(destinations, staged, strict=True):
            if staged_result is not None:
                np.copyto(destination, staged_result)
        del destinations, staged

    def result_views(self, slots: Sequence[int]) -> list[np.ndarray]:
        """Writable views of the result ``slots`` (an engine may write its results there)."""
        self._check_slots(slots, self.results, "result")
        size = frame_bytes(self.width, self.height)
        whole = self._whole()
        return [whole[(self.inputs + slot) * size:(self.inputs + slot + 1) * size]
                .reshape(self.height, self.width, 3) for slot in slots]

    @staticmethod
    def _check_slots(slots: Sequence[int], limit: int, kind: str) -> None:
        if len(set(slots)) != len(slots) or any(not 0 <= slot < limit for slot in slots):
            raise ProtocolError(f"{kind} slots {list(slots)[:8]} are not distinct slots below "
                                f"{limit}")

    def _input_view(self) -> np.ndarray:
        size = frame_bytes(self.width, self.height)
        return self._whole()[:self.inputs * size].reshape(
            self.inputs, self.height, self.width, 3)

    def _whole(self) -> np.ndarray:
        buffer = self._segment.buf
        if buffer is None:  # closed by another thread (a hung call's proxy being dropped)
            raise ProtocolError("the shared memory is closed")
        # An export of the mapping (see ``attach``): closing cannot pull it from under a view.
        return np.frombuffer(buffer, np.uint8)

    def close(self) -> None:
        with self._lock:
            self._holder = [None] * self.inputs
            self._result_arrays = []
        try:
            self._segment.close()
        except BufferError:
            # Frames the daemon still shows (or views an engine kept) hold the mapping: it
            # is unmapped when the last of them goes. Let go of it here, so that the segment
            # object's own finaliser does not try (and complain) again.
            self._segment._mmap = None  # type: ignore[attr-defined]
            fd = getattr(self._segment, "_fd", -1)
            if fd >= 0:
                os.close(fd)
                self._segment._fd = -1  # type: ignore[attr-defined]
        if self._owner:
            try:
                self._segment.unlink()
            except FileNotFoundError:
                # The client unlinked it when it attached; our resource tracker still
                # lists it, and would warn at exit.
                resource_tracker.unregister(self._segment._name,  # type: ignore[attr-defined]
                                            "shared_memory")


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

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        arrays = self._arrays
        for index in _unreferenced(arrays, self._next):
            if arrays[index].shape == shape:
                self._next = index + 1
                return arrays[index]
        array = np.empty(shape, np.uint8)
        if len(arrays) < self._limit:
            arrays.append(array)
        return array

    def __len__(self) -> int:
        return len(self._arrays)


#: Held by nobody but this list: what a free array's count reads in ``_unreferenced`` (the
#: interpreter's own references, which vary between versions, included).
_NOBODY = [np.empty(0, np.uint8)]


def _unreferenced(arrays: Sequence[np.ndarray], start: int) -> Iterator[int]:
    """The indices of ``arrays`` (a list of ours) whose array nobody else refers to, in ring
    order from ``start``: whoever holds an array or any view of it holds a reference."""
    free = sys.getrefcount(_NOBODY[0])
    for step in range(len(arrays)):
        index = (start + step) % len(arrays)
        if sys.getrefcount(arrays[index]) == free:
            yield index


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


class Coder:
    """The threads JPEG is coded on: one per core (at most 8), or none on one core.

    simplejpeg lets go of the GIL while it codes and a batch's frames are independent, so
    they code on every core at once (9 frames at 720p take ~20 ms on one core). The threads
    live as long as their owner (the proxy, the host's server), which closes them; a closed
    coder codes inline.
    """

    def __init__(self, threads: int | None = None) -> None:
        threads = min(8, os.cpu_count() or 1) if threads is None else threads
        self._workers = None if threads < 2 else ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="jpeg")

    def map(self, work: Callable[[Any], _T], items: Sequence[Any]) -> list[_T]:
        workers = self._workers
        if workers is not None and len(items) > 1:
            try:
                results = workers.map(work, items)  # every item handed over now
            except RuntimeError:  # closed meanwhile: code them here
                pass
            else:
                return list(results)
        return [work(item) for item in items]

    def close(self) -> None:
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Coder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Coding in the caller's thread, for one frame now and then (tests, the benchmark's cost).
INLINE = Coder(threads=1)


def encode_jpeg(frames: Sequence[np.ndarray], coder: Coder = INLINE) -> bytes:
    """Frames to a host (a staged frame, a batch not staged): each JPEG behind a 4-byte
    big-endian length, in order."""
    parts = []
    for data in coder.map(_encode_one, frames):
        parts += [_LENGTH.pack(len(data)), data]
    return b"".join(parts)


def _encode_one(image: np.ndarray) -> bytes:
    # libjpeg-turbo reads rows at any positive stride, so a box of a frame is coded in
    # place (the same bytes as from a packed copy, ~6 % less time).
    in_place = image.strides[1:] == (3, 1) and image.strides[0] > 0
    packed = image if in_place else np.ascontiguousarray(image)
    data: bytes = simplejpeg.encode_jpeg(packed, quality=JPEG_QUALITY, colorspace="BGR",
                                         colorsubsampling="420")
    return data


def decode_jpeg(payload: memoryview | bytes, sizes: Sequence[tuple[int, int]],
                coder: Coder = INLINE) -> list[np.ndarray]:
    """One frame per ``(width, height)`` in ``sizes`` from ``encode_jpeg``'s payload, each
    exactly that size, or ProtocolError."""
    frames = [np.empty((height, width, 3), np.uint8) for width, height in sizes]
    work = [(data, frame, (0, 0, width, height)) for data, frame, (width, height)
            in zip(split_jpeg(payload, sizes), frames, sizes, strict=True)]
    coder.map(_decode_into, work)
    return frames


def split_jpeg(payload: memoryview | bytes,
               sizes: Sequence[tuple[int, int]]) -> list[memoryview]:
    """The payload's JPEGs, each checked to be the next of ``sizes`` by its header."""
    parts = []
    offset = 0
    view = memoryview(payload)
    for size in sizes:
        if offset + _LENGTH.size > len(view):
            raise ProtocolError("the JPEG payload ends early")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise ProtocolError("the JPEG payload ends early")
        data = view[offset:offset + length]
        offset += length
        # Read the size from the header first: a forged one must not make us allocate.
        if jpeg_size(data) != size:
            raise ProtocolError(f"a frame is not a {size[0]}x{size[1]} JPEG as encode_jpeg "
                                "writes them (sequential, one scan)")
        parts.append(data)
    if offset != len(view):
        raise ProtocolError("the JPEG payload has bytes after its last frame")
    return parts


def _decode_into(work: tuple[memoryview | bytes, np.ndarray, Box]) -> None:
    """A JPEG (its size already checked) into its box of ``frame``: straight into the frame
    when the box is the whole frame, else through a crop pasted in."""
    data, frame, (x, y, width, height) = work
    whole = (width, height) == (frame.shape[1], frame.shape[0]) and frame.flags.c_contiguous
    target = frame if whole else np.empty((height, width, 3), np.uint8)
    try:
        # The fast inverse DCT and chroma upsampling: ~30 % less time for ~1 dB of PSNR
        # (benchmarks/engine_host.py prints both), on the batch's critical path.
        simplejpeg.decode_jpeg(data, colorspace="BGR", fastdct=True, fastupsample=True,
                               buffer=target)
    except ValueError as exc:
        raise ProtocolError(f"a {width}x{height} JPEG did not decode: {exc}") from None
    if not whole:
        frame[y:y + height, x:x + width] = target


def encode_boxes(frames: Sequence[np.ndarray], boxes: Sequence[Box],
                 coder: Coder = INLINE) -> bytes:
    """What changed in each frame: the JPEG of each non-empty box, in order."""
    return encode_jpeg([frame[y:y + box_h, x:x + box_w]
                        for frame, (x, y, box_w, box_h) in zip(frames, boxes, strict=True)
                        if box_w and box_h], coder)


def decode_boxes(payload: memoryview | bytes, originals: Sequence[np.ndarray],
                 boxes: Sequence[Box], coder: Coder = INLINE,
                 pool: FramePool | None = None) -> list[np.ndarray]:
    """Each of ``originals`` with its box replaced by the payload's next JPEG (the frame
    itself when its box is empty), or ProtocolError. Outside the boxes the frames are the
    originals exactly: no JPEG loss where nothing changed. The changed frames are new
    arrays (from ``pool`` when given: frames the daemon has let go of)."""
    if len(boxes) != len(originals):
        raise ProtocolError(f"{len(boxes)} changed boxes for {len(originals)} frames")
    height, width = originals[0].shape[:2]
    for box in boxes:
        try:
            check_box(box, width, height)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
    changed = [index for index, (_, _, box_w, box_h) in enumerate(boxes) if box_w and box_h]
    parts = split_jpeg(payload, [(boxes[index][2], boxes[index][3]) for index in changed])
    frames = list(originals)
    for index in changed:
        shape = originals[index].shape
        frames[index] = np.empty(shape, np.uint8) if pool is None else pool.take(shape)
    coder.map(_decode_pasted, [(data, frames[index], originals[index], boxes[index])
                               for data, index in zip(parts, changed, strict=True)])
    return frames


def _decode_pasted(work: tuple[memoryview, np.ndarray, np.ndarray, Box]) -> None:
    data, frame, original, box = work
    if box[2:] != (frame.shape[1], frame.shape[0]):
        # The rest of the frame is the client's own: copied on the worker too (numpy copies
        # without the GIL), beside the other frames' decoding.
        np.copyto(frame, original)
    _decode_into((data, frame, box))


#: Baseline and extended sequential Huffman: libjpeg-turbo's (and so simplejpeg's) default.
_SEQUENTIAL_SOF = (0xC0, 0xC1)


def jpeg_size(data: memoryview | bytes) -> tuple[int, int] | None:
    """(width, height) of a sequential JPEG whose first scan holds every component (what
    ``encode_jpeg`` writes), from its headers without decoding; None for anything else.

    libjpeg-turbo refuses a second scan after such a scan, so decoding it takes time bounded
    by its pixels. A progressive JPEG may hold any number of scans, each a pass over the whole
    image: 3 MB of them decode for over a minute, and a frame comes from the other side of a
    connection."""
    head = bytes(data[:65536])
    try:
        header = jpeg_header(head) if head[:2] == b"\xff\xd8" else None
    except struct.error:  # cut off inside a header
        return None
    if header is None or header.sof not in _SEQUENTIAL_SOF \
            or header.first_scan != header.components:
        return None
    return header.width, header.height


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("the reference image could not be encoded as PNG")
    return bytes(data.tobytes())
