"""Sources and the capture thread: demo, file pacing and looping, the registry, the rate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from faceswap_cam.daemon.capture.demo import DemoSource
from faceswap_cam.daemon.capture.file import FileSource
from faceswap_cam.daemon.capture.source import SourceError, create_source
from faceswap_cam.daemon.capture.thread import WebcamCapture, fit_to_size
from tests.media import read_frame, write_clip


def test_demo_source_moves() -> None:
    source = DemoSource(size=(320, 240), fps=200)
    source.open()
    first, second = source.read(), source.read()
    source.close()
    assert first.shape == (240, 320, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    with pytest.raises(SourceError):
        source.read()  # closed: pacing is cancelled


def test_file_source_paces_at_file_fps_and_loops(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "short.mp4", frames=6, fps=30)
    source = FileSource(str(clip), size=(320, 240), fps=10)
    source.open()
    assert source.fps == 30
    started = time.monotonic()
    indices = [read_frame(source.read())[0] for _ in range(14)]
    elapsed = time.monotonic() - started
    source.close()
    assert indices == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1]
    assert elapsed >= 13 / 30 * 0.9  # paced, not as fast as decoding


def test_file_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        FileSource(str(tmp_path / "none.mp4"), size=(320, 240), fps=30).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot decode"):
        FileSource(str(junk), size=(320, 240), fps=30).open()


def test_unknown_source_lists_the_known_ones() -> None:
    with pytest.raises(SourceError, match=r"unknown source 'cam'.*demo.*file:"):
        create_source("cam", size=(320, 240), fps=30)


def test_webcam_that_cannot_open_says_so() -> None:
    source = create_source("webcam:97", size=(320, 240), fps=30)
    with pytest.raises(SourceError, match="camera 97 cannot be opened"):
        source.open()


def test_auto_source_falls_back_to_demo_without_a_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.daemon.capture import webcam

    monkeypatch.setattr(webcam, "auto_webcam_index", lambda *a, **k: None)
    assert isinstance(create_source("auto", size=(320, 240), fps=30), DemoSource)
    with pytest.raises(SourceError, match="no camera found"):
        create_source("webcam:auto", size=(320, 240), fps=30)


def test_frames_are_fitted_without_stretching() -> None:
    tall = np.full((480, 200, 3), 200, np.uint8)
    fitted = fit_to_size(tall, (320, 240))
    assert fitted.shape == (240, 320, 3)
    assert fitted[:, :50].max() == 0 and fitted[120, 160, 0] == 200  # black bars, centred


def test_capture_measures_its_rate(tmp_path: Path) -> None:
    source = DemoSource(size=(160, 120), fps=60)
    got_frames = threading.Event()

    with WebcamCapture(source) as capture:
        capture.open()
        capture.start()
        while capture.ring.wait_newer(-1, timeout=5) and capture.frames_captured < 20:
            capture.ring.wait_newer(capture.frames_captured - 1, timeout=5)
        got_frames.set()
        rate = capture.rate.rate()
    assert got_frames.is_set()
    assert 40 < rate < 80
