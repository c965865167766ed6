"""The "AI altered" badge: on the virtual camera's swapped frames when switched on, nowhere else.

The virtual camera is the real sink over a fake pyvirtualcam backend (tests/outputs/
test_virtualcam.py); the daemon runs for real with the demo camera and the debug engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.camera import BACKENDS

from faceswap_cam.daemon.config import Settings, load_settings
from faceswap_cam.daemon.outputs.base import Sink, SinkContext, Tick, create_sink
from faceswap_cam.daemon.outputs.virtualcam import VirtualCameraSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.daemon.pipeline.overlay import draw_ai_badge
from tests.outputs.test_virtualcam import FakeBackend, fake_backend

SIZE = (320, 240)
TIMEOUT_S = 10.0


def has_badge(pixels: np.ndarray) -> bool:
    # The badge is opaque: drawing it again changes nothing exactly when it is there already.
    return bool(np.array_equal(draw_ai_badge(pixels), pixels))


def frame(colour: tuple[int, int, int] = (40, 120, 200)) -> np.ndarray:
    return np.full((SIZE[1], SIZE[0], 3), colour, np.uint8)


def tick(kind: str, number: int = 1) -> Tick:
    return Tick(number=number, kind=kind, published_ns=0, latency_ms=None)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeBackend]:
    backend = fake_backend()
    monkeypatch.setitem(BACKENDS, "fake", backend)
    pyvirtualcam.register_backend("fake", backend)
    return backend


@pytest.fixture
def open_sink(fake: type[FakeBackend]) -> Iterator[Callable[..., VirtualCameraSink]]:
    made: list[VirtualCameraSink] = []

    def _open(**kw: Any) -> VirtualCameraSink:
        sink = VirtualCameraSink(backend="fake", device="/dev/video7", platform="linux", **kw)
        sink.open(SIZE, 30.0)
        made.append(sink)
        return sink

    yield _open
    for sink in made:
        sink.close()


def sent_frames(camera: FakeBackend) -> list[np.ndarray]:
    return [data.reshape(SIZE[1], SIZE[0], 3) for data in camera.frames]


def test_the_badge_is_small_and_in_a_corner() -> None:
    original = frame()
    marked = draw_ai_badge(original)
    changed = np.argwhere((marked != original).any(axis=2))
    (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
    assert top < SIZE[1] // 8 and right > SIZE[0] * 7 // 8  # top-right
    assert (bottom - top + 1) * (right - left + 1) < SIZE[0] * SIZE[1] / 20
    assert np.array_equal(original, frame()), "the shared frame is never drawn on"
    assert has_badge(marked) and not has_badge(original)


def test_marks_swapped_and_held_frames_only_when_on(
        open_sink: Callable[..., VirtualCameraSink], fake: type[FakeBackend]) -> None:
    sink = open_sink(ai_badge=True)
    kinds = ("swapped", "held", "passthrough", "placeholder", "paused")
    for number, kind in enumerate(kinds):
        sink.send(frame(), tick(kind, number))
    marked = [has_badge(image) for image in sent_frames(fake.opened[0])]
    assert marked == [True, True, False, False, False]

    sink.ai_badge = False  # switched off while running
    sink.send(frame(), tick("swapped", 9))
    assert not has_badge(sent_frames(fake.opened[0])[-1])


def test_off_by_default(open_sink: Callable[..., VirtualCameraSink],
                        fake: type[FakeBackend]) -> None:
    sink = open_sink()
    sink.send(frame(), tick("swapped"))
    (image,) = sent_frames(fake.opened[0])
    assert np.array_equal(image, frame())
    assert Settings().ai_badge is False


def test_the_setting_reaches_the_sink(fake: type[FakeBackend]) -> None:
    for value in (True, False):
        settings = Settings.model_validate({"ai_badge": value, "virtualcam_backend": "fake"})
        sink = create_sink("virtualcam", SinkContext(options=settings.model_dump(mode="json")))
        assert isinstance(sink, VirtualCameraSink) and sink.ai_badge is value


class Recorder(Sink):
    """Another output (the preview's place), with the stats overlay on, keeping every frame."""

    overlay = True

    def __init__(self) -> None:
        self.frames: list[tuple[str, np.ndarray]] = []
        self.lock = threading.Lock()

    @property
    def description(self) -> str:
        return "recorder"

    def open(self, size: tuple[int, int], fps: float) -> None:
        pass

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        with self.lock:
            self.frames.append((tick.kind, pixels.copy()))

    def close(self) -> None:
        pass


def wait_for(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(int(TIMEOUT_S / 0.02)):
        if condition():
            return
        event.wait(0.02)
    raise AssertionError("timed out")


def test_the_daemon_marks_the_virtual_camera_and_never_the_other_outputs(
        fake: type[FakeBackend]) -> None:
    settings = load_settings({"source": "demo", "size": "320x240", "engine": "debug",
                              "sinks": ["null"], "control_api": False, "ai_badge": True,
                              "virtualcam_backend": "fake", "virtualcam_device": "/dev/video7"},
                             environ={})
    camera = create_sink("virtualcam", SinkContext(options=settings.model_dump(mode="json")))
    recorder = Recorder()
    app = RealtimeFaceSwapApp(settings, sinks=[camera, recorder])
    try:
        app.start()
        assert app.status().ai_badge is True

        def swapped_seen(count: int) -> Callable[[], bool]:
            def enough() -> bool:
                with recorder.lock:
                    return sum(kind == "swapped" for kind, _ in recorder.frames) >= count
            return enough

        wait_for(swapped_seen(5))
        backend = fake.opened[0]
        wait_for(lambda: any(has_badge(image) for image in sent_frames(backend)))
        with recorder.lock:
            assert not any(has_badge(pixels) for _, pixels in recorder.frames)

        app.set_ai_badge(False)
        assert app.status().ai_badge is False
        already = len(backend.frames)
        with recorder.lock:
            swapped_so_far = sum(kind == "swapped" for kind, _ in recorder.frames)
        wait_for(swapped_seen(swapped_so_far + 5))
        wait_for(lambda: len(backend.frames) > already + 5)
        # Frames queued before the switch may still carry it; the newest never do.
        assert not any(has_badge(image) for image in sent_frames(backend)[already + 2:])
    finally:
        app.close()

