"""Lips and words together: the whole daemon with FaceSwap Mic on a real sound server.

A ``file:`` clip shows a white flash now and then; at the moment the daemon captures a flash,
the test says "click" into a test microphone. The ``debug`` engine swaps the video late (a
batch, its delay, the smooth playout), and FaceSwap Mic delays the voice to match. The two
recordings, the file sink's video and FaceSwap Mic's audio, must put the flash and the click
within one frame period of each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faceswap_cam.daemon.audio.backend import SAMPLE_RATE
from faceswap_cam.daemon.audio.delay_tracker import WINDOW_S
from faceswap_cam.daemon.audio.pulse import SOURCE_NAME
from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.daemon.states import MicState
from tests.audio.av_harness import (
    FLASH_EVERY,
    FPS,
    FRAME_PERIOD_MS,
    SIZE,
    FlashWatcher,
    LoggedFileSink,
    recorded_flashes,
    voice_minus_video_ms,
    write_flashing_clip,
)
from tests.audio.conftest import TEST_MIC, Player, PulseServer, Recorder, wait_for
from tests.audio.test_mic import _click_onsets


@pytest.fixture
def closing() -> Iterator[list[object]]:
    things: list[object] = []
    yield things
    for thing in reversed(things):
        thing.close()  # type: ignore[attr-defined]


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

    targets: list[tuple[float, float]] = []  # (when, the voice delay's target)

    def settled() -> bool:
        """Running, and the voice delay has not moved for the tracker's whole window: the
        clicks are not spoken into a fade (a delay change pauses or cross-fades the voice)."""
        mic = app.status().mic
        if mic is None or mic.state is not MicState.RUNNING or mic.av_offset_ms is None \
                or mic.target_ms < 100:
            return False
        now = time.monotonic()
        targets.append((now, mic.target_ms))
        recent = [target for when, target in targets if now - when <= WINDOW_S]
        return targets[0][0] <= now - WINDOW_S and len(set(recent)) == 1

    wait_for(settled, 20, "the mic to follow the swapped video")
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
    offsets_ms = [voice_minus_video_ms(s, v, p, c) for s, v, p, c
                  in zip(spoken[:3], voiced[:3], shown, captured, strict=True)]
    video_delays_ms = [(p - c) * 1e3 for p, c in zip(shown, captured, strict=True)]
    print(f"video delay {[round(d) for d in video_delays_ms]} ms; voice minus video "
          f"{[round(o, 1) for o in offsets_ms]} ms; mic {mic_status}")
    assert all(d > 150 for d in video_delays_ms)  # the video really is late
    assert all(abs(offset) <= FRAME_PERIOD_MS for offset in offsets_ms), offsets_ms
