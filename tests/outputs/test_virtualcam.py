"""The virtual camera sink against a fake pyvirtualcam backend and a fake sysfs tree.

The fake sits where the kernel/driver would (a registered pyvirtualcam backend), so the real
pyvirtualcam ``Camera`` still checks shapes, encodes the fourcc and flattens the frames.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.camera import BACKENDS
from pyvirtualcam.util import decode_fourcc

from faceswap_cam.daemon.capture.devices import find_loopback_devices
from faceswap_cam.daemon.config import Settings, VirtualCameraFormat
from faceswap_cam.daemon.outputs.base import SinkContext, SinkError, SinkWorker, Tick, create_sink
from faceswap_cam.daemon.outputs.virtualcam import (
    OBS_CAMERA_NAME,
    CameraTarget,
    VirtualCameraError,
    VirtualCameraSink,
    choose_targets,
    find_loopback_device,
    modprobe_command,
)

MODPROBE = 'sudo modprobe v4l2loopback devices=1 card_label="FaceSwap Cam" exclusive_caps=1'
WIDTH, HEIGHT = 16, 8
RED = (0, 0, 255)  # BGR
BLUE = (255, 0, 0)  # BGR
GREEN = (0, 255, 0)  # BGR


class FakeBackend:
    """Stands in for a virtual camera driver; keeps what it was given."""

    opened: ClassVar[list[FakeBackend]]
    failure: ClassVar[str | None] = None
    default_device: ClassVar[str] = "fake-device"

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int,
                 device: str | None, **kw: Any) -> None:
        if self.failure is not None:
            raise RuntimeError(self.failure)
        self.width, self.height, self.fps = width, height, fps
        self.fmt = decode_fourcc(fourcc)
        self._device = device or self.default_device
        self.frames: list[np.ndarray] = []
        self.closed = 0
        self.send_error: str | None = None
        type(self).opened.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.ndim == 1 and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
        if self.send_error is not None:
            raise RuntimeError(self.send_error)
        # pyvirtualcam may hand over a view of the caller's array: keep a snapshot.
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


def fake_backend(failure: str | None = None) -> type[FakeBackend]:
    """A fresh fake class, so each test sees only its own cameras."""
    return type("Fake", (FakeBackend,), {"opened": [], "failure": failure})


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, type[FakeBackend]], None]:
    def _register(name: str, backend: type[FakeBackend]) -> None:
        # setitem first so the registry is restored (or the name removed) after the test.
        monkeypatch.setitem(BACKENDS, name, backend)
        pyvirtualcam.register_backend(name, backend)

    return _register


@pytest.fixture
def fake(register: Callable[[str, type[FakeBackend]], None]) -> type[FakeBackend]:
    backend = fake_backend()
    register("fake", backend)
    return backend


def loopback_caps(path: str) -> tuple[str, bool]:
    """What VIDIOC_QUERYCAP says for a v4l2loopback node with no writer (exclusive_caps)."""
    return ("v4l2 loopback", False)


def video4linux(root: Path, nodes: dict[str, str], bus: str = "virtual") -> Path:
    """/sys/class/video4linux with ``nodes`` (videoN -> card label) under /sys/devices/``bus``."""
    cls = root / "class" / "video4linux"
    cls.mkdir(parents=True, exist_ok=True)
    for node, label in nodes.items():
        real = root / "devices" / bus / "video4linux" / node
        real.mkdir(parents=True)
        (real / "name").write_text(label + "\n")
        (cls / node).symlink_to(real)
    return cls


def labels(sysfs: Path) -> dict[str, str]:
    return {d.path: d.name for d in find_loopback_devices(sysfs, loopback_caps)}


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    return video4linux(tmp_path / "sys", {"video3": "Integrated Camera",
                                          "video7": "FaceSwap Cam"})


@pytest.fixture
def sink_factory(sysfs: Path, fake: type[FakeBackend]
                 ) -> Iterator[Callable[..., VirtualCameraSink]]:
    made: list[VirtualCameraSink] = []

    def _make(**kw: Any) -> VirtualCameraSink:
        kw.setdefault("backend", "fake")
        kw.setdefault("sysfs_root", sysfs)
        kw.setdefault("query", loopback_caps)
        kw.setdefault("platform", "linux")
        sink = VirtualCameraSink(**kw)
        made.append(sink)
        return sink

    yield _make
    for sink in made:
        sink.close()


def red_blue_frame() -> np.ndarray:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    frame[:, : WIDTH // 2] = RED
    frame[:, WIDTH // 2 :] = BLUE
    return frame


def tick(number: int = 1) -> Tick:
    return Tick(number=number, kind="swapped", published_ns=0, latency_ms=None)


# --- device discovery ------------------------------------------------------------------------


def test_discovery_picks_the_device_with_our_label(sysfs: Path) -> None:
    assert labels(sysfs) == {"/dev/video3": "Integrated Camera",
                             "/dev/video7": "FaceSwap Cam"}
    assert find_loopback_device("FaceSwap Cam", sysfs, loopback_caps) == "/dev/video7"


def test_a_real_camera_is_never_the_output(tmp_path: Path) -> None:
    sysfs = video4linux(tmp_path, {"video0": "FaceSwap Cam"}, bus="pci0000:00/usb1/1-1")
    video4linux(tmp_path, {"video5": "FaceSwap Cam"})

    def caps(path: str) -> tuple[str, bool]:
        return ("uvcvideo", True) if path == "/dev/video0" else loopback_caps(path)

    assert find_loopback_device("FaceSwap Cam", sysfs, caps) == "/dev/video5"


def test_discovery_orders_nodes_numerically(tmp_path: Path) -> None:
    sysfs = video4linux(tmp_path, dict.fromkeys(("video10", "video9", "videoX"),
                                                "FaceSwap Cam"))
    assert list(labels(sysfs)) == ["/dev/video9", "/dev/video10"]
    assert find_loopback_device("FaceSwap Cam", sysfs, loopback_caps) == "/dev/video9"


def test_missing_label_says_how_to_create_it_and_lists_others(tmp_path: Path) -> None:
    sysfs = video4linux(tmp_path, {"video3": "Integrated Camera"})
    with pytest.raises(VirtualCameraError) as caught:
        find_loopback_device("FaceSwap Cam", sysfs, loopback_caps)
    message = str(caught.value)
    assert 'no virtual camera device labelled "FaceSwap Cam"' in message
    assert MODPROBE in message
    assert "v4l2loopback-dkms" in message
    assert '/dev/video3 ("Integrated Camera")' in message
    assert isinstance(caught.value, SinkError)


def test_no_video4linux_folder_still_gives_the_command(tmp_path: Path) -> None:
    with pytest.raises(VirtualCameraError) as caught:
        find_loopback_device("FaceSwap Cam", tmp_path / "absent", loopback_caps)
    assert MODPROBE in str(caught.value)
    assert "other labels" not in str(caught.value)


def test_modprobe_command_uses_the_configured_label() -> None:
    assert modprobe_command() == MODPROBE
    assert 'card_label="Studio"' in modprobe_command("Studio")


def test_open_fails_the_start_when_no_device_is_labelled(
        tmp_path: Path, fake: type[FakeBackend]) -> None:
    sink = VirtualCameraSink(backend="fake", sysfs_root=video4linux(tmp_path, {}),
                             query=loopback_caps, platform="linux")
    with pytest.raises(VirtualCameraError, match="modprobe"):
        sink.open((WIDTH, HEIGHT), 30.0)
    assert fake.opened == []
    assert not sink.is_open


# --- colours end to end ----------------------------------------------------------------------


def test_bgr_mode_delivers_the_right_colours(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend],
        caplog: pytest.LogCaptureFixture) -> None:
    sink = sink_factory()
    with caplog.at_level(logging.INFO, logger="faceswap_cam.daemon.outputs.virtualcam"):
        sink.open((WIDTH, HEIGHT), 30.0)
    assert (sink.device, sink.backend) == ("/dev/video7", "fake")
    assert sink.description == "virtualcam:/dev/video7"
    assert "/dev/video7" in caplog.text
    (camera,) = fake.opened
    assert (camera.width, camera.height, camera.fmt) == (WIDTH, HEIGHT, "24BG")

    sink.send(red_blue_frame(), tick())
    (sent,) = camera.frames
    image = sent.reshape(HEIGHT, WIDTH, 3)
    assert tuple(image[HEIGHT // 2, 1]) == RED
    assert tuple(image[HEIGHT // 2, WIDTH - 2]) == BLUE


def test_yuyv_mode_converts_and_keeps_the_colours(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend]) -> None:
    sink = sink_factory(pixel_format="yuyv")
    sink.open((WIDTH, HEIGHT), 30.0)
    (camera,) = fake.opened
    assert camera.fmt == "YUY2"

    sink.send(red_blue_frame(), tick())
    (sent,) = camera.frames
    assert sent.size == WIDTH * HEIGHT * 2
    decoded = cv2.cvtColor(sent.reshape(HEIGHT, WIDTH, 2), cv2.COLOR_YUV2BGR_YUY2)
    left = decoded[HEIGHT // 2, 1].astype(int)
    right = decoded[HEIGHT // 2, WIDTH - 2].astype(int)
    assert np.abs(left - RED).max() <= 8, left
    assert np.abs(right - BLUE).max() <= 8, right


def test_send_rejects_frames_that_do_not_fit(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend]) -> None:
    sink = sink_factory()
    with pytest.raises(VirtualCameraError, match="not open"):
        sink.send(red_blue_frame(), tick())
    sink.open((WIDTH, HEIGHT), 30.0)
    with pytest.raises(VirtualCameraError, match="does not match"):
        sink.send(np.zeros((HEIGHT * 2, WIDTH, 3), np.uint8), tick())
    with pytest.raises(VirtualCameraError, match="uint8"):
        sink.send(np.zeros((HEIGHT, WIDTH, 3), np.float32), tick())
    with pytest.raises(VirtualCameraError, match="BGR"):
        sink.send(np.zeros((HEIGHT, WIDTH, 4), np.uint8), tick())
    assert fake.opened[0].frames == []


def test_backend_errors_are_wrapped_with_their_reason(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend],
        register: Callable[[str, type[FakeBackend]], None]) -> None:
    sink = sink_factory()
    sink.open((WIDTH, HEIGHT), 30.0)
    fake.opened[0].send_error = "device unplugged"
    with pytest.raises(VirtualCameraError, match="device unplugged"):
        sink.send(red_blue_frame(), tick())

    register("busy", fake_backend("Device or resource busy"))
    with pytest.raises(VirtualCameraError) as caught:
        sink_factory(backend="busy").open((WIDTH, HEIGHT), 30.0)
    assert "Device or resource busy" in str(caught.value)
    assert MODPROBE in str(caught.value)

    with pytest.raises(VirtualCameraError, match="'no-such' backend: not available"):
        sink_factory(backend="no-such").open((WIDTH, HEIGHT), 30.0)


def test_close_is_idempotent(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend]) -> None:
    sink = sink_factory()
    sink.close()  # never opened
    sink.open((WIDTH, HEIGHT), 30.0)
    sink.close()
    sink.close()
    assert fake.opened[0].closed == 1
    assert not sink.is_open
    with pytest.raises(VirtualCameraError, match="not open"):
        sink.send(red_blue_frame(), tick())


def test_bad_format_is_refused() -> None:
    with pytest.raises(VirtualCameraError, match=re.escape("'nv12' is not one of i420 | yuyv")):
        VirtualCameraSink(pixel_format="nv12")


# --- platform choice -------------------------------------------------------------------------


def test_choose_targets_per_platform(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert choose_targets("win32") == [CameraTarget("unitycapture", "FaceSwap Cam"),
                                       CameraTarget("obs", OBS_CAMERA_NAME)]
    assert choose_targets("win32", backend="obs") == [CameraTarget("obs", OBS_CAMERA_NAME)]
    with caplog.at_level(logging.INFO, logger="faceswap_cam.daemon.outputs.virtualcam"):
        assert choose_targets("darwin") == [CameraTarget("obs", OBS_CAMERA_NAME)]
    assert OBS_CAMERA_NAME in caplog.text and "cannot be" in caplog.text
    # An explicit device skips discovery: the (absent) sysfs tree is never read.
    assert choose_targets("linux", device="/dev/video9", sysfs_root=tmp_path / "absent") == [
        CameraTarget("v4l2loopback", "/dev/video9")]
    with pytest.raises(VirtualCameraError, match="virtualcam_backend"):
        choose_targets("sunos5")
    assert choose_targets("sunos5", backend="fake") == [CameraTarget("fake", None)]


def test_windows_uses_unity_capture_under_our_name(
        register: Callable[[str, type[FakeBackend]], None]) -> None:
    unity, obs = fake_backend(), fake_backend()
    register("unitycapture", unity)
    register("obs", obs)
    sink = VirtualCameraSink(platform="win32")
    sink.open((WIDTH, HEIGHT), 30.0)
    assert (sink.backend, sink.device) == ("unitycapture", "FaceSwap Cam")
    assert obs.opened == []
    sink.close()


def test_windows_falls_back_to_obs(register: Callable[[str, type[FakeBackend]], None]) -> None:
    obs = fake_backend()
    register("unitycapture", fake_backend("device not found"))
    register("obs", obs)
    sink = VirtualCameraSink(platform="win32")
    sink.open((WIDTH, HEIGHT), 30.0)
    assert (sink.backend, sink.device) == ("obs", OBS_CAMERA_NAME)
    sink.send(red_blue_frame(), tick())
    assert len(obs.opened[0].frames) == 1
    sink.close()


def test_windows_error_explains_both_options(
        register: Callable[[str, type[FakeBackend]], None]) -> None:
    register("unitycapture", fake_backend("Unity device not found"))
    register("obs", fake_backend("OBS camera not installed"))
    with pytest.raises(VirtualCameraError) as caught:
        VirtualCameraSink(platform="win32").open((WIDTH, HEIGHT), 30.0)
    message = str(caught.value)
    for part in ("Unity device not found", "OBS camera not installed", "Unity Capture",
                 "OBS Studio", '"FaceSwap Cam"'):
        assert part in message


def test_macos_uses_obs_and_says_the_name_is_fixed(
        register: Callable[[str, type[FakeBackend]], None],
        caplog: pytest.LogCaptureFixture) -> None:
    obs = fake_backend()
    register("obs", obs)
    sink = VirtualCameraSink(platform="darwin")
    with caplog.at_level(logging.INFO, logger="faceswap_cam.daemon.outputs.virtualcam"):
        sink.open((WIDTH, HEIGHT), 30.0)
    assert (sink.backend, sink.device) == ("obs", OBS_CAMERA_NAME)
    assert 'cannot be "FaceSwap Cam"' in caplog.text
    sink.close()


# --- registry and worker ---------------------------------------------------------------------


def test_create_sink_reads_the_settings(fake: type[FakeBackend]) -> None:
    settings = Settings.model_validate({
        "virtualcam_backend": "fake", "virtualcam_device": "/dev/video2",
        "virtualcam_format": "yuyv", "overlay_output": True,
    })
    context = SinkContext(options=settings.model_dump())
    sink = create_sink("virtualcam", context)
    assert isinstance(sink, VirtualCameraSink)
    assert (sink.device, sink.backend, sink.label) == ("/dev/video2", "fake", "FaceSwap Cam")
    assert sink.pixel_format is VirtualCameraFormat.YUYV
    assert sink.overlay is True

    overridden = create_sink("virtualcam:/dev/video9", context)
    assert isinstance(overridden, VirtualCameraSink)
    overridden.open((WIDTH, HEIGHT), 30.0)
    assert overridden.device == "/dev/video9"
    assert fake.opened[0].device() == "/dev/video9"
    overridden.close()


def test_defaults_never_burn_stats_into_the_camera() -> None:
    sink = create_sink("virtualcam", SinkContext(options=Settings.model_validate({}).model_dump()))
    assert isinstance(sink, VirtualCameraSink)
    assert sink.overlay is False
    assert sink.pixel_format is VirtualCameraFormat.I420
    assert sink.label == "FaceSwap Cam"


def test_worker_draws_the_overlay_and_sends(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend]) -> None:
    sink = sink_factory(overlay=True)
    sink.open((WIDTH, HEIGHT), 30.0)
    drawn: list[int] = []

    def draw_overlay(pixels: np.ndarray, shown: Tick) -> np.ndarray:
        drawn.append(shown.number)
        out = pixels.copy()
        out[:2, :2] = GREEN
        return out

    worker = SinkWorker(sink, draw_overlay)
    worker.start()
    worker.offer(red_blue_frame(), tick(5))
    worker.close()  # sends what is pending, joins the thread, then closes the sink

    assert worker.error == ""
    assert worker.sent == 1
    assert drawn == [5]
    camera = fake.opened[0]
    assert camera.closed == 1
    (sent,) = camera.frames
    image = sent.reshape(HEIGHT, WIDTH, 3)
    assert tuple(image[0, 0]) == GREEN
    assert tuple(image[HEIGHT // 2, 3]) == RED
    assert tuple(image[HEIGHT // 2, WIDTH - 2]) == BLUE


def test_worker_reports_a_failing_camera(
        sink_factory: Callable[..., VirtualCameraSink], fake: type[FakeBackend]) -> None:
    sink = sink_factory()
    sink.open((WIDTH, HEIGHT), 30.0)
    fake.opened[0].send_error = "device unplugged"
    worker = SinkWorker(sink, lambda pixels, shown: pytest.fail("overlay is off"))
    worker.start()
    worker.offer(red_blue_frame(), tick())
    worker.close()
    assert "VirtualCameraError" in worker.error and "device unplugged" in worker.error
    assert fake.opened[0].closed == 1
