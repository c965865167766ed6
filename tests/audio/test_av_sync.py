"""Lips and words together: the whole daemon with FaceSwap Mic on a real sound server.

A ``file:`` clip shows a white flash now and then; at the moment the daemon captures a flash,
the test says "click" into a test microphone. The ``debug`` engine swaps the video late (a
batch, its delay, the smooth playout), and FaceSwap Mic delays the voice to match. The two
recordings, the file sink's video and FaceSwap Mic's audio, must put the flash and the click
within one frame period of each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from faceswap_cam.daemon.audio.backend import SAMPLE_RATE
from faceswap_cam.daemon.audio.pulse import SOURCE_NAME
from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.outputs.base import Tick
from faceswap_cam.daemon.outputs.file import FileSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.daemon.states import MicState
from tests.audio.conftest import TEST_MIC, Player, PulseServer, Recorder, wait_for
from tests.audio.test_mic import _click_onsets

FPS = 30
SIZE = (320, 240)
FLASH_EVERY = 40  # frames: 1.33 s, so each click pairs with its own flash
FLASH_FRAMES = 2
FRAME_PERIOD_MS = 1000 / FPS


def write_flashing_clip(path: Path, frames: int) -> Path:
    """Mid-grey with a white flash every FLASH_EVERY frames (H.264, as cameras record)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            value = 255 if index % FLASH_EVERY < FLASH_FRAMES else 128
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
                now_bright = float(frame.pixels[::8, ::8].mean()) > 200
                if now_bright and not bright and self.armed.is_set():
                    self._player.click()
                    self.flashes_ns.append(frame.captured_ns)
                bright = now_bright

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def closing() -> Iterator[list[object]]:
    things: list[object] = []
    yield things
    for thing in reversed(things):
        thing.close()  # type: ignore[attr-defined]


def recorded_flashes(path: Path) -> list[int]:
    """Recorded frame numbers where a swapped flash starts (the debug engine inverts colours:
    the swapped flash is black among dark-grey frames; passthrough frames are never black)."""
    with av.open(str(path)) as container:
        means = [float(frame.to_ndarray(format="gray")[::8, ::8].mean())
                 for frame in container.decode(video=0)]
    dark = [mean < 40 for mean in means]
    return [index for index, is_dark in enumerate(dark) if is_dark and not dark[index - 1]]


def test_the_voice_and_the_swapped_video_stay_together(
        pulse_server: PulseServer, tmp_path: Path, closing: list[object]) -> None:
    pulse_server.load_test_mic()
    clip = write_flashing_clip(tmp_path / "flashes.mp4", FLASH_EVERY * 3)
    sink = LoggedFileSink(tmp_path / "call.mkv")
    app = RealtimeFaceSwapApp(
        Settings(source=f"file:{clip}", engine="debug", engine_delay_ms=60, fps=FPS, size=SIZE,
                 playout="smooth", mic=TEST_MIC, control_api=False),
        sinks=[sink])
    player = Player()
    closing.append(player)
    app.start()
    closing.append(app)
    watcher = FlashWatcher(app, player)
    closing.append(watcher)

    def settled() -> bool:
        mic = app.status().mic
        return (mic is not None and mic.state is MicState.RUNNING
                and mic.av_offset_ms is not None and abs(mic.av_offset_ms) < 15
                and mic.target_ms > 100)

    wait_for(settled, 15, "the mic to follow the swapped video")
    direct = Recorder(TEST_MIC)  # the click as spoken, on the monotonic clock
    closing.append(direct)
    heard = Recorder(SOURCE_NAME)  # what the call app hears from "FaceSwap Mic"
    closing.append(heard)
    wait_for(lambda: min(direct.frames(), heard.frames()) > SAMPLE_RATE // 2, 10, "recordings")
    watcher.armed.set()
    wait_for(lambda: len(watcher.flashes_ns) >= 3, 10, "three flashes")
    mic_status = app.status().mic
    # The last delayed click is out once the voice delay has passed.
    time.sleep(mic_status.delay_ms / 1000 + 0.3 if mic_status else 1.0)
    direct.close()
    heard.close()
    app.close()

    direct_t0, direct_samples = direct.sample_times()
    heard_t0, heard_samples = heard.sample_times()
    spoken = [direct_t0 + n / SAMPLE_RATE for n in _click_onsets(direct_samples)]
    voiced = [heard_t0 + n / SAMPLE_RATE for n in _click_onsets(heard_samples)]
    captured = [ns / 1e9 for ns in watcher.flashes_ns[:3]]
    # The flashes shown after arming: those captured at or after the first armed one.
    shown = [sink.publish_time_ns(frame) / 1e9 for frame in recorded_flashes(sink.path)]
    shown = [t for t in shown if t >= captured[0]][:3]
    assert len(spoken) >= 3 and len(voiced) >= 3 and len(shown) == 3, \
        (spoken, voiced, shown, captured)
    offsets_ms = [((v - s) - (p - c)) * 1e3 for s, v, p, c
                  in zip(spoken[:3], voiced[:3], shown, captured, strict=True)]
    video_delays_ms = [(p - c) * 1e3 for p, c in zip(shown, captured, strict=True)]
    print(f"video delay {[round(d) for d in video_delays_ms]} ms; voice minus video "
          f"{[round(o, 1) for o in offsets_ms]} ms; mic {mic_status}")
    assert all(d > 150 for d in video_delays_ms)  # the video really is late
    assert all(abs(offset) <= FRAME_PERIOD_MS for offset in offsets_ms), offsets_ms
