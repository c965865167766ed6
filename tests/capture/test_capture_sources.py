"""Sources and the capture layer: demo, file pacing and looping, camera discovery, the ring."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from faceswap_cam.daemon.capture.sources import (
    DemoSource,
    FileSource,
    SourceError,
    create_source,
    find_real_cameras,
    list_v4l2_devices,
)
from faceswap_cam.daemon.capture.thread import WebcamCapture, fit_to_size
from faceswap_cam.daemon.frames import Frame, FrameRing
from tests.media import read_frame, write_clip


def test_ring_keeps_the_newest_and_wakes_waiters() -> None:
    ring = FrameRing(3)
    pixels = np.zeros((2, 2, 3), np.uint8)
    got: list[list[int]] = []
    waiting = threading.Event()

    def reader() -> None:
        waiting.set()
        got.append([f.index for f in ring.wait_newer(4, timeout=5)])

    thread = threading.Thread(target=reader)
    for i in range(5):
        ring.push(Frame(pixels, i, 0))
    assert [f.index for f in ring.wait_newer(-1, timeout=0)] == [2, 3, 4]
    assert ring.overwritten == 2
    thread.start()
    waiting.wait()
    ring.push(Frame(pixels, 5, 0))
    thread.join()
    assert got == [[5]]
    ring.close()
    assert ring.wait_newer(5, timeout=None) == []


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


def fake_sysfs(tmp_path: Path) -> Path:
    """/sys/class/video4linux with a USB camera (+ its metadata node) and a loopback device."""
    devices = tmp_path / "devices"
    cls = tmp_path / "class"
    cls.mkdir()
    for node, name, parent in (("video0", "Integrated Camera", "pci0000:00/usb1/1-1"),
                               ("video1", "Integrated Camera", "pci0000:00/usb1/1-1"),
                               ("video2", "FaceSwap Cam", "virtual/video4linux")):
        real = devices / parent / node
        real.mkdir(parents=True)
        (real / "name").write_text(name + "\n")
        (cls / node).symlink_to(real)
    return cls


CAPS = {"/dev/video0": ("uvcvideo", True), "/dev/video1": ("uvcvideo", False),
        "/dev/video2": ("v4l2 loopback", True)}


def test_auto_never_picks_a_loopback_device(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path)
    devices = list_v4l2_devices(sysfs, CAPS.get)
    assert [(d.node, d.is_loopback) for d in devices] == [
        ("video0", False), ("video1", False), ("video2", True)]
    cameras = find_real_cameras(sysfs, CAPS.get)
    assert [c.path for c in cameras] == ["/dev/video0"]  # not the metadata node, not loopback
    # When the driver cannot be queried, a node under /sys/devices/virtual is still loopback.
    unknown = find_real_cameras(sysfs, lambda path: None)
    assert [c.path for c in unknown] == ["/dev/video0", "/dev/video1"]


def test_webcam_that_cannot_open_says_so() -> None:
    source = create_source("webcam:97", size=(320, 240), fps=30)
    with pytest.raises(SourceError, match="camera 97 cannot be opened"):
        source.open()


def test_auto_source_falls_back_to_demo_without_a_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.daemon.capture import sources

    monkeypatch.setattr(sources, "auto_webcam_index", lambda *a, **k: None)
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
