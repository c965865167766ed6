"""What the A/V sync test and benchmark share: a flashing clip, the test's eyes and ears.

The clip is mid-grey with a white flash now and then. :class:`FlashWatcher` watches the
daemon's camera frames and, at the moment a flash is captured, says "click" into the test
microphone. The ``debug`` engine inverts colours, so a swapped flash is black among dark-grey
frames (passthrough frames are never black): :func:`recorded_flashes` finds it in the file
sink's recording (the test), :class:`FlashSink` on the published output as it goes (the
benchmark, whose memory must stay bounded over minutes). The click is found in recordings of
the test microphone (as spoken) and of "FaceSwap Mic" (as a call app hears it): the test uses
:class:`~tests.audio.conftest.Recorder`, which keeps every sample; :class:`ClickRecorder` keeps
only the clicks' times. :func:`voice_minus_video_ms` turns one flash's four times into the
offset a viewer perceives.

Every time here is on the monotonic clock, in the unit its name says.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from pathlib import Path

import av
import numpy as np

from faceswap_cam.daemon.audio.backend import BLOCK_FRAMES, SAMPLE_RATE
from faceswap_cam.daemon.outputs.base import Sink, Tick
from faceswap_cam.daemon.outputs.file import FileSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from tests.audio.conftest import Player, open_recorder

FPS = 30
SIZE = (320, 240)
FLASH_EVERY = 40  # frames: 1.33 s, so each click pairs with its own flash
FLASH_FRAMES = 2
FRAME_PERIOD_MS = 1000 / FPS
#: A camera frame this bright (mean of every 8th pixel) is a flash.
BRIGHT_MEAN = 200
#: An output frame this dark is a swapped (inverted) flash.
DARK_MEAN = 40
#: Like tests.audio.test_mic's click onsets: a sample this loud, 0.1 s after the last loud one.
CLICK_LEVEL = 0.4
CLICK_GAP_FRAMES = SAMPLE_RATE // 10


def write_flashing_clip(path: Path, frames: int, *, flash_frames: int = FLASH_FRAMES,
                        flash_every: int = FLASH_EVERY) -> Path:
    """Mid-grey with a white flash of ``flash_frames`` every ``flash_every`` frames (H.264,
    as cameras record)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            value = 255 if index % flash_every < flash_frames else 128
            image = np.full((SIZE[1], SIZE[0], 3), value, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class LoggedFileSink(FileSink):
    """The real recorder, noting when each recorded frame was published."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.published: list[tuple[int, int, int]] = []  # (first frame, repeat, published_ns)

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        self.published.append((self.frames, tick.repeat, tick.published_ns))
        super().send(pixels, tick)

    def publish_time_ns(self, frame: int) -> int:
        for first, repeat, published_ns in self.published:
            if first <= frame < first + repeat:
                return published_ns + round((frame - first) * 1e9 / FPS)
        raise AssertionError(f"recorded frame {frame} was never published")


def recorded_flashes(path: Path) -> list[int]:
    """Recorded frame numbers where a swapped flash starts (the debug engine inverts colours:
    the swapped flash is black among dark-grey frames; passthrough frames are never black)."""
    with av.open(str(path)) as container:
        means = [float(frame.to_ndarray(format="gray")[::8, ::8].mean())
                 for frame in container.decode(video=0)]
    dark = [mean < DARK_MEAN for mean in means]
    return [index for index, is_dark in enumerate(dark) if is_dark and not dark[index - 1]]


class FlashSink(Sink):
    """Notes when a swapped flash starts on the published output, and how old the camera frame
    shown then was; keeps nothing else (a flash every second or so: a few bytes a second).

    Inline, on the publisher's thread: a worker could drop the flash's first frame under load
    (its slot keeps the newest), and the test of one frame is a mean over 1/64 of its pixels.
    """

    inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._onsets: list[tuple[int, float | None]] = []  # (published_ns, age_ms)
        self._dark = False

    @property
    def description(self) -> str:
        return "flash detector"

    def open(self, size: tuple[int, int], fps: float) -> None:
        pass

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        dark = float(pixels[::8, ::8].mean()) < DARK_MEAN
        if dark and not self._dark:
            with self._lock:
                self._onsets.append((tick.published_ns, tick.latency_ms))
        self._dark = dark

    def onsets(self) -> list[tuple[int, float | None]]:
        """(published_ns, age of the frame shown in ms) of each swapped flash's first tick."""
        with self._lock:
            return list(self._onsets)

    def close(self) -> None:
        pass


class FlashWatcher:
    """Watches the daemon's camera frames; at each flash, the test microphone clicks."""

    def __init__(self, app: RealtimeFaceSwapApp, player: Player) -> None:
        self._app, self._player = app, player
        self.flashes_ns: list[int] = []
        self.armed = threading.Event()  # clicks only once the recordings run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flash-watcher")
        self._thread.start()

    def _run(self) -> None:
        ring, last, bright = self._app.capture.ring, -1, False
        while not self._stop.is_set():
            for frame in ring.wait_newer(last, timeout=0.1):
                last = frame.index
                now_bright = float(frame.pixels[::8, ::8].mean()) > BRIGHT_MEAN
                if now_bright and not bright and self.armed.is_set():
                    self._player.click()
                    self.flashes_ns.append(frame.captured_ns)
                bright = now_bright

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class ClickRecorder:
    """Records a source from its own thread and keeps only when each click reached it.

    A sample's time is the block's start estimate (read time - the stream's latency - the
    samples before the block's end) over the last 5 s of blocks, median, plus its position:
    :meth:`tests.audio.conftest.Recorder.sample_times`'s rule, with a sliding window so that
    memory stays bounded and the sample clock may drift from the monotonic one.
    """

    _WINDOW_BLOCKS = 500  # 5 s of 10 ms blocks
    _UNSETTLED_BLOCKS = 20  # the stream's timing information is not there yet

    def __init__(self, device: str) -> None:
        self._stream = open_recorder(device)
        self._lock = threading.Lock()
        self._starts: deque[float] = deque(maxlen=self._WINDOW_BLOCKS)
        self._onsets_s: list[float] = []
        self._frames = 0
        self._last_loud = -CLICK_GAP_FRAMES - 1
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"click-recorder-{device}")
        self._thread.start()

    def _run(self) -> None:
        blocks = 0
        try:
            while not self._stop.is_set():
                block = self._stream.read(BLOCK_FRAMES)[:, 0]
                read_s, latency_s = time.monotonic(), self._stream.latency_s
                first, blocks = self._frames, blocks + 1
                self._frames += len(block)
                start_s = read_s - latency_s - self._frames / SAMPLE_RATE
                if blocks > self._UNSETTLED_BLOCKS or not self._starts:
                    if blocks == self._UNSETTLED_BLOCKS + 1:
                        self._starts.clear()
                    self._starts.append(start_s)
                onsets = []
                for offset in np.flatnonzero(np.abs(block) > CLICK_LEVEL):
                    loud = first + int(offset)
                    if loud - self._last_loud > CLICK_GAP_FRAMES:
                        onsets.append(loud)
                    self._last_loud = loud
                if onsets:
                    t0 = statistics.median(self._starts)
                    with self._lock:
                        self._onsets_s.extend(t0 + n / SAMPLE_RATE for n in onsets)
        except Exception as exc:
            self.error = exc

    def frames(self) -> int:
        return self._frames

    def onsets_s(self) -> list[float]:
        with self._lock:
            return list(self._onsets_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._stream.close()


def voice_minus_video_ms(spoken_s: float, voiced_s: float, shown_s: float,
                         captured_s: float) -> float:
    """One flash's A/V offset as a viewer perceives it: how much later the voice comes than
    it should, given the lips. The click was spoken ``spoken_s - captured_s`` after the flash
    was captured; the call shows the flash at ``shown_s`` and plays the click at ``voiced_s``.
    Positive: the voice comes after the lips."""
    return ((voiced_s - spoken_s) - (shown_s - captured_s)) * 1e3
