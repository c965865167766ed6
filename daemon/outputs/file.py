"""The ``file:PATH`` sink: records the output to a video file that survives a crash or a full
disk.

What it writes, and why:

- **PyAV** (FFmpeg's libraries, with libx264 in its wheels) rather than ``cv2.VideoWriter``:
  OpenCV's writer neither reports a failed write (a full disk went unnoticed) nor lets the
  muxer be told to fragment.
- **H.264** (libx264, ``yuv420p``: plays everywhere), preset ``superfast`` with
  ``zerolatency`` (no B-frames, no lookahead: a frame reaches the file's next fragment instead
  of waiting in the encoder), CRF 20, and **a keyframe every second**. A recording shares the
  CPU with the live output: ``superfast`` cost about 6.5 ms of CPU per 1280x720 frame here
  (``veryfast`` 7.7 ms for files 10 % smaller; OpenCV's MPEG-4 Part 2 writer 2.8 ms).
- ``.mp4`` / ``.m4v`` / ``.mov``: **fragmented MP4** (``movflags
  frag_keyframe+empty_moov+default_base_moof``). The index (``moov``) is written first, empty,
  and each second becomes a self-contained ``moof``+``mdat`` fragment. A plain MP4 writes its
  index at the end, so ``kill -9`` or a full disk left nothing playable; here a file cut
  anywhere plays up to its last whole fragment. ``default_base_moof`` makes each fragment's
  offsets relative to its own ``moof`` (ISO 14496-12:2012), so a fragment parses on its own.
- ``.mkv``: **Matroska** with a cluster every second (``cluster_time_limit``); the muxer writes
  each cluster whole, so a cut file plays up to its last cluster.
- ``.avi``: Motion JPEG as before, kept for compatibility (every frame is a picture of its own
  and FFmpeg plays an AVI without its closing index).

The sink opens the file itself and hands FFmpeg a file object: an unwritable folder is reported
at start, naming the folder (not blamed on the codec); a failed write arrives as an ``OSError``
with its errno; and the sink knows where the last whole fragment ends, so after a failed write
it cuts the file back there and stops writing: what was recorded stays playable, the error and
its fix go to the status, and the other outputs go on.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from faceswap_cam.daemon.outputs.base import Sink, SinkError, Tick

logger = logging.getLogger(__name__)

#: Seconds between keyframes, and so the most a crash or a full disk can take from the end.
KEYFRAME_INTERVAL_S = 1.0


@dataclass(frozen=True)
class _Format:
    muxer: str
    codec: str
    pix_fmt: str
    muxer_options: dict[str, str] = field(default_factory=dict)
    codec_options: dict[str, str] = field(default_factory=dict)


_H264 = {"preset": "superfast", "tune": "zerolatency", "crf": "20"}
_FRAGMENTED_MP4 = _Format("mp4", "libx264", "yuv420p",
                          {"movflags": "frag_keyframe+empty_moov+default_base_moof"}, _H264)
_FORMATS = {
    ".mp4": _FRAGMENTED_MP4,
    ".m4v": _FRAGMENTED_MP4,
    ".mov": _Format("mov", "libx264", "yuv420p", _FRAGMENTED_MP4.muxer_options, _H264),
    ".mkv": _Format("matroska", "libx264", "yuv420p",
                    {"cluster_time_limit": str(round(KEYFRAME_INTERVAL_S * 1000))}, _H264),
    ".avi": _Format("avi", "mjpeg", "yuvj420p", {}, {"q:v": "3"}),
}

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class RecordingFile:
    """The file FFmpeg writes through: every write whole, and the end of what was written.

    ``os.write`` may write part of a buffer (a nearly full disk does), and FFmpeg's callback
    cannot say so: this loops until all is written or the write fails.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.end = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = self._raw.write(view)
            if not written:
                raise OSError(errno.EIO, "the file took no bytes")
            view = view[written:]
            self.end = max(self.end, self._raw.tell())
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def truncate(self, size: int) -> None:
        self._raw.truncate(size)

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed


def open_for_recording(path: Path) -> BinaryIO:
    # Unbuffered: what FFmpeg hands over is in the kernel at once, and a kill -9 loses only
    # the fragment still being built.
    return open(path, "wb", buffering=0)


Opener = Callable[[Path], BinaryIO]


class RecordingError(SinkError):
    """The recording stopped (a full disk); what was written before stays playable."""


class FileSink(Sink):
    """Records the output to a video file at the output's fixed frame rate.

    A recording wants every frame, so it queues more than one and writes a frame again for
    each tick the clock missed, keeping the file's timeline equal to wall time.
    ``opener`` opens the file (tests pass one that fails like a full disk).
    """

    slots = 60

    def __init__(self, path: str, opener: Opener = open_for_recording) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FORMATS:
            raise SinkError(f"cannot record to {path!r}: use one of "
                            f"{', '.join(sorted(_FORMATS))}")
        self._format = _FORMATS[suffix]
        self._opener = opener
        self._file: RecordingFile | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._fps = 0.0
        #: Where the last whole fragment ends: the file is cut back here after a failed write.
        self._whole = 0
        self.frames = 0
        self.failed = ""

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def open(self, size: tuple[int, int], fps: float) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise SinkError(f"cannot record to {self.path}: folder {folder} does not exist",
                            fix=f"create {folder}, or record to another folder with "
                                "--sink file:OTHER" + self.path.suffix)
        try:
            raw = self._opener(self.path)
        except OSError as exc:
            raise _open_error(self.path, exc) from None
        self._file = RecordingFile(raw)
        fmt = self._format
        try:
            container = av.open(self._file, mode="w", format=fmt.muxer,
                                options=fmt.muxer_options)
            stream = container.add_stream(fmt.codec, rate=Fraction(fps).limit_denominator(1001))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = size
            stream.pix_fmt = fmt.pix_fmt
            stream.codec_context.gop_size = max(1, round(fps * KEYFRAME_INTERVAL_S))
            stream.codec_context.options = dict(fmt.codec_options)
            stream.codec_context.open()
        except (av.FFmpegError, ValueError) as exc:
            self._file.close()
            self.path.unlink(missing_ok=True)  # empty: nothing was recorded
            raise SinkError(f"cannot record to {self.path}: the {fmt.codec} encoder or "
                            f"{fmt.muxer} muxer refused: {exc}",
                            fix="record to .mp4 or .mkv; `faceswap-cam doctor` checks the "
                                "set-up") from exc
        self._container, self._stream, self._fps = container, stream, fps

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        if self._stream is None or self.failed:
            return
        frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
        try:
            for _ in range(tick.repeat):
                frame.pts = self.frames
                self._mux(self._stream.encode(frame))
                self.frames += 1
        except OSError as exc:
            raise self._fail(exc) from exc

    def _mux(self, packets: list[av.Packet[av.VideoStream]]) -> None:
        assert self._container is not None and self._file is not None
        if packets:
            self._container.mux(packets)
        # Each muxer here writes whole units only (an MP4 fragment or a Matroska cluster when
        # the next one starts, an AVI chunk per frame), and FFmpeg flushes its buffer after
        # every packet: after a mux that succeeded, the file ends on a whole unit.
        self._whole = self._file.end

    def _fail(self, exc: OSError) -> RecordingError:
        """Cut the file back to its last whole fragment, stop writing, and say what to do."""
        seconds = self.frames / self._fps if self._fps else 0.0
        kept = "what was recorded up to the last whole second stays playable"
        cut = ""
        if self._file is not None:
            try:
                self._file.truncate(self._whole)
            except OSError as cut_exc:
                cut = f"; cutting the file back to its last whole part failed: {cut_exc}"
            # Closing the file first makes PyAV skip the trailer: nothing more is written.
            self._file.close()
        if exc.errno in _FULL:
            where = _mount_point(self.path)
            error = RecordingError(f"recording to {self.path} stopped after {seconds:.1f} s: the "
                                   f"disk at {where} is full ({kept}){cut}",
                                   fix=f"free space on {where}, or record to another folder "
                                       "with --sink file:OTHER" + self.path.suffix)
        else:
            error = RecordingError(f"recording to {self.path} stopped after {seconds:.1f} s: "
                                   f"{exc.strerror or exc} ({kept}){cut}",
                                   fix="record to another folder with --sink file:OTHER"
                                       + self.path.suffix)
        self.failed = str(error)
        return error

    def close(self) -> None:
        container, stream = self._container, self._stream
        if container is None or stream is None:
            return
        self._stream = None  # send() writes no more
        try:
            if not self.failed:
                try:
                    self._mux(stream.encode(None))
                except OSError as exc:
                    raise self._fail(exc) from exc
            try:
                container.close()  # the closing index; skipped when the file already failed
            except OSError as exc:
                if not self.failed:
                    raise self._fail(exc) from exc
        finally:
            self._container = None
            if self._file is not None and not self._file.closed:
                self._file.close()
            if self.failed:
                logger.warning("recorded %d frames to %s before it failed", self.frames,
                               self.path)
            else:
                logger.info("recorded %d frames to %s", self.frames, self.path)


def _open_error(path: Path, exc: OSError) -> SinkError:
    folder = path.parent
    other = "--sink file:OTHER" + path.suffix
    if exc.errno == errno.EROFS:
        reason = f"folder {folder} is on a read-only file system"
        fix = f"record to a writable folder with {other}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        target = path if path.exists() else folder
        reason = f"{target} is not writable by this user (permission denied)"
        fix = f"record to a folder you can write to with {other}, or change its permissions"
    elif exc.errno == errno.EISDIR:
        reason = f"{path} is a folder"
        fix = f"name a file in it: --sink file:{path / ('recording' + path.suffix)}"
    elif exc.errno in _FULL:
        reason = f"the disk at {_mount_point(path)} is full"
        fix = f"free space on {_mount_point(path)}, or record to another folder with {other}"
    else:
        reason = exc.strerror or str(exc)
        fix = f"record to another folder with {other}"
    # The start error prints only the message: it carries the fix too.
    return SinkError(f"cannot record to {path}: {reason}; {fix}", fix=fix)


def _mount_point(path: Path) -> Path:
    """The mount point of the disk holding ``path``: the place to free space on."""
    here = path.resolve().parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here
