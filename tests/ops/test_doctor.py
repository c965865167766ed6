"""``faceswap-cam doctor`` against a fake machine: a sysfs tree, a /proc tree and fake probes
built in tmp_path, plus one run against this machine as it is, in a subprocess."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
import pyvirtualcam.camera

from faceswap_cam.daemon.audio.backend import AudioDeviceError
from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.control.client import ControlError
from faceswap_cam.daemon.ops import doctor
from faceswap_cam.daemon.ops.doctor import (
    DAEMON_FIX,
    MODELS_EXTRA_FIX,
    NO_CAMERA,
    SERVICE_FIX,
    SERVICE_UNAVAILABLE,
    Check,
    GpuInfo,
    ServiceState,
    add_doctor_parser,
    exit_code,
    model_requirements,
    render_json,
    render_text,
    run_checks,
    unmet_requirements,
    upgrade_command,
)
from faceswap_cam.daemon.paths import config_file, models_dir
from faceswap_cam.daemon.pipeline.app import engine_options
from faceswap_cam.models.wan.requirements import required_weights
from faceswap_cam.models.weights import fix_command, model_names
from tests.fake_daemon import InMemoryDaemon

REPO = Path(__file__).resolve().parents[2]
MODPROBE = 'sudo modprobe v4l2loopback devices=1 card_label="FaceSwap Cam" exclusive_caps=1'
GIB = 1024**3
HD = (True, 1280, 720, 30.0)
VGA = (True, 640, 480, 30.0)
CLOSED = (False, 0, 0, 0.0)


def status_document(**changes: Any) -> dict[str, Any]:
    """What a running daemon's ``GET /status`` answers, with ``changes``."""
    return {**InMemoryDaemon().status().model_dump(mode="json"), **changes}


class FakeClient:
    url = "http://127.0.0.1:40123"

    def __init__(self, status: dict[str, Any] | Exception) -> None:
        self._status = status

    def status(self) -> dict[str, Any]:
        if isinstance(self._status, Exception):
            raise self._status
        return self._status


class FakeSoundSystem:
    """The sound system at its boundary: the microphones it lists, or its failure."""

    name = "fake"

    def __init__(self, microphones: list[str] | AudioDeviceError,
                 loopback: str = "BlackHole 2ch") -> None:
        self._microphones = microphones
        self._loopback = loopback
        self.closed = False

    def input_names(self) -> list[str]:
        if isinstance(self._microphones, AudioDeviceError):
            raise self._microphones
        return list(self._microphones)

    def resolve_input(self, name: str) -> str:
        """Like the real backends: a listed name, else a name the system knows the device by
        (here: the part after the last dot, as a description stands in for a PulseAudio
        name)."""
        for listed in self.input_names():
            if name in (listed, listed.rsplit(".", 1)[-1]):
                return listed
        raise AudioDeviceError(f"no microphone named {name!r}", fix="pick another")

    def ensure_virtual_mic(self) -> str:
        return self._loopback

    def close(self) -> None:
        self.closed = True


class FakeMachine:
    """A Linux box in a folder: sysfs, /proc, and what each probe answers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = root / "sys" / "devices"
        self.loopback_root = self.devices / "virtual" / "video4linux"
        self.class_root = root / "sys" / "class" / "video4linux"
        self.parameters = root / "sys" / "module" / "v4l2loopback" / "parameters"
        self.proc = root / "proc"
        self.class_root.mkdir(parents=True)
        self.proc.mkdir()
        self.caps: dict[str, tuple[str, bool]] = {}
        self.modes: dict[int, tuple[bool, int, int, float]] = {}
        self.opened: list[int | str] = []
        self.asked: list[tuple[tuple[int, int], float]] = []  # what each open asked for
        self.gpus: list[GpuInfo] | None = [GpuInfo("cuda:0", "NVIDIA H100 80GB HBM3", 80 * GIB)]
        self.client: FakeClient | Exception = FakeClient(status_document(engine="wan-animate"))
        self.service: ServiceState | Exception = ServiceState(True, True, "active: active")
        #: The sound system FaceSwap Mic would use: its microphones, or why it cannot run.
        self.microphones: list[str] | AudioDeviceError = ["alsa_input.usb-mic"]

    def add_loopback(self, number: int, label: str, exclusive_caps: str | None = "Y") -> None:
        self._add_node(self.loopback_root / f"video{number}", label)
        self.caps[f"/dev/video{number}"] = ("v4l2 loopback", True)
        if exclusive_caps is not None:
            self.parameters.mkdir(parents=True, exist_ok=True)
            (self.parameters / "exclusive_caps").write_text(exclusive_caps + "\n")

    def add_camera(self, number: int, name: str, mode: tuple[bool, int, int, float]) -> None:
        usb = self.devices / "pci0000:00" / "0000:00:14.0" / f"usb1-{number}" / "video4linux"
        self._add_node(usb / f"video{number}", name)
        self.caps[f"/dev/video{number}"] = ("uvcvideo", True)
        self.modes[number] = mode

    def add_process(self, pid: int, command: str, *paths: str) -> None:
        fds = self.proc / str(pid) / "fd"
        fds.mkdir(parents=True)
        (self.proc / str(pid) / "comm").write_text(command + "\n")
        for number, path in enumerate(paths, start=3):
            (fds / str(number)).symlink_to(path)

    def _add_node(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
        (self.class_root / folder.name).symlink_to(folder)

    # the probes

    def query(self, path: str) -> tuple[str, bool] | None:
        return self.caps.get(path)

    def open_camera(self, index: int | str, size: tuple[int, int], fps: float
                    ) -> tuple[bool, int, int, float]:
        self.opened.append(index)
        self.asked.append((size, fps))
        return self.modes.get(index, CLOSED) if isinstance(index, int) else CLOSED

    def gpu_probe(self) -> list[GpuInfo]:
        if self.gpus is None:
            raise ImportError("No module named 'torch'")
        return self.gpus

    def client_factory(self) -> FakeClient:
        if isinstance(self.client, Exception):
            raise self.client
        return self.client

    def service_probe(self) -> ServiceState:
        if isinstance(self.service, Exception):
            raise self.service
        return self.service

    def mic_backend(self) -> FakeSoundSystem:
        return FakeSoundSystem(self.microphones)

    def run(self, **overrides: Any) -> list[Check]:
        options: dict[str, Any] = {
            "mic_backend": self.mic_backend,
            "video4linux_root": self.class_root,
            "loopback_parameters": self.parameters, "proc_root": self.proc,
            "query": self.query, "open_camera": self.open_camera, "gpu_probe": self.gpu_probe,
            "control_client_factory": self.client_factory, "service_probe": self.service_probe,
            "platform": "linux",
            # The machine's own install is not what a test is about.
            "requirements_lookup": dict,
        }
        options.update(overrides)
        return run_checks(**options)


def find(checks: list[Check], name: str) -> Check:
    matches = [check for check in checks if check.name == name]
    assert len(matches) == 1, f"{name!r} in {[c.name for c in checks]}"
    return matches[0]


def isolated_environment(tmp_path: Path) -> dict[str, str]:
    """HOME, XDG folders and every FACESWAP_CAM_* path inside tmp_path; no settings leak in."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FACESWAP_CAM_")}
    env.update({
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "runtime"),
        "FACESWAP_CAM_MODELS_DIR": str(tmp_path / "models"),
        "FACESWAP_CAM_REFERENCES_DIR": str(tmp_path / "references"),
        "FACESWAP_CAM_CONTROL_FILE": str(tmp_path / "control.json"),
    })
    return env


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FACESWAP_CAM_"):
            monkeypatch.delenv(key)
    for key, value in isolated_environment(tmp_path / "user").items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    machine = FakeMachine(tmp_path / "machine")
    machine.add_camera(0, "Integrated Camera", HD)
    machine.add_loopback(10, "FaceSwap Cam")
    return machine


# --- virtual camera ---------------------------------------------------------------------------


def test_labelled_device_passes(machine: FakeMachine) -> None:
    checks = machine.run()
    camera = find(checks, "virtual camera")
    assert camera.status == "PASS"
    assert camera.detail == '/dev/video10 labelled "FaceSwap Cam"'
    assert camera.fix is None
    assert find(checks, "exclusive_caps").status == "PASS"


def test_no_loopback_device_fails_with_the_modprobe_command(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    checks = machine.run()
    camera = find(checks, "virtual camera")
    assert camera.status == "FAIL"
    assert "not loaded" in camera.detail
    assert camera.fix is not None
    first, second = camera.fix.splitlines()
    assert first == MODPROBE
    assert "v4l2loopback-dkms" in second
    # Nothing to look at without the device.
    assert not [c for c in checks if c.name in ("exclusive_caps", "virtual camera users")]
    assert exit_code(checks) == 1


def test_other_labels_only_fail_and_say_to_reload(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_loopback(3, "Dummy video device (0x0000)")
    camera = find(machine.run(), "virtual camera")
    assert camera.status == "FAIL"
    assert '/dev/video3 ("Dummy video device (0x0000)")' in camera.detail
    assert camera.fix is not None
    assert camera.fix.splitlines()[0] == f"sudo modprobe -r v4l2loopback && {MODPROBE}"


def test_configured_device_is_used_whatever_its_label(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_loopback(3, "Dummy video device (0x0000)")
    chosen = find(machine.run(settings_loader=lambda _: Settings(
        virtualcam_device="/dev/video3")), "virtual camera")
    assert chosen.status == "PASS" and chosen.detail.startswith("/dev/video3 ")
    missing = find(machine.run(settings_loader=lambda _: Settings(
        virtualcam_device="/dev/video7")), "virtual camera")
    assert missing.status == "FAIL" and MODPROBE in (missing.fix or "")


def test_exclusive_caps_off_warns(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_loopback(10, "FaceSwap Cam", exclusive_caps="N,N,N,N,N,N,N,N")
    caps = find(machine.run(), "exclusive_caps")
    assert caps.status == "WARN"
    assert "Chrome" in caps.detail and "/dev/video10" in caps.detail
    assert caps.fix == f"sudo modprobe -r v4l2loopback && {MODPROBE}"


def test_exclusive_caps_is_read_for_our_device(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_loopback(3, "Other", exclusive_caps=None)
    machine.add_loopback(10, "FaceSwap Cam", exclusive_caps="N,Y,N,N")
    assert find(machine.run(), "exclusive_caps").status == "PASS"
    (machine.parameters / "exclusive_caps").write_text("Y,N,Y,Y\n")
    assert find(machine.run(), "exclusive_caps").status == "WARN"
    (machine.parameters / "exclusive_caps").unlink()
    unreadable = find(machine.run(), "exclusive_caps")
    assert unreadable.status == "WARN" and "cannot read" in unreadable.detail


def test_who_has_the_virtual_camera_open(machine: FakeMachine) -> None:
    users = find(machine.run(), "virtual camera users")
    assert (users.status, users.detail) == ("PASS", "/dev/video10 is not open in any process")
    machine.add_process(4300, "chrome", "/dev/null", "/dev/video10")
    machine.add_process(4242, "faceswap-cam", "/dev/video10")
    machine.add_process(77, "bash", "/dev/pts/0")
    (machine.proc / "self").mkdir()  # not a pid: skipped
    users = find(machine.run(), "virtual camera users")
    assert users.status == "PASS"
    assert users.detail == ("/dev/video10 is open in pid 4242 (faceswap-cam), "
                            "pid 4300 (chrome)")


# --- cameras ----------------------------------------------------------------------------------


def test_camera_that_gives_720p30_passes(machine: FakeMachine) -> None:
    cameras = find(machine.run(), "cameras")
    assert cameras.status == "PASS"
    assert cameras.detail == "/dev/video0 (Integrated Camera): 1280x720 at 30 fps: ok"
    assert machine.opened == [0]  # the loopback device is never opened as a camera


def test_camera_that_only_gives_640x480_warns(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_camera(0, "Old Webcam", VGA)
    cameras = find(machine.run(), "cameras")
    assert cameras.status == "WARN"
    assert "/dev/video0 (Old Webcam): gives 640x480 at 30 fps only" in cameras.detail
    assert cameras.fix is not None and "--size 640x480" in cameras.fix
    machine.modes[0] = (True, 1280, 720, 15.0)
    slow = find(machine.run(), "cameras")
    assert slow.status == "WARN" and "gives 1280x720 at 15 fps only" in slow.detail
    assert slow.fix is not None and "--fps 15" in slow.fix


def test_a_better_second_camera_is_suggested(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_camera(0, "Old Webcam", VGA)
    machine.add_camera(2, "Brio", HD)
    cameras = find(machine.run(), "cameras")
    assert cameras.status == "WARN"
    assert cameras.fix == "faceswap-cam run --source webcam:2"


def test_camera_in_use_fails_and_names_the_user(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_camera(0, "Integrated Camera", CLOSED)
    machine.add_process(555, "zoom", "/dev/video0")
    cameras = find(machine.run(), "cameras")
    assert cameras.status == "FAIL"
    assert "cannot be opened (in use by pid 555 (zoom))" in cameras.detail


def test_no_camera_warns_demo(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_loopback(10, "FaceSwap Cam")  # a loopback device is no camera
    cameras = find(machine.run(), "cameras")
    assert (cameras.status, cameras.detail) == ("WARN", NO_CAMERA)
    assert machine.opened == []


def test_camera_follows_the_configured_source(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_camera(0, "Integrated Camera", CLOSED)
    machine.add_camera(2, "Brio", HD)
    picked = find(machine.run(settings_loader=lambda _: Settings(source="webcam:2")), "cameras")
    assert picked.status == "PASS"
    demo = find(machine.run(settings_loader=lambda _: Settings(source="demo")), "cameras")
    assert demo.status == "PASS" and demo.detail.startswith("source demo uses no camera")
    assert machine.opened == [0, 2]  # the demo run opened nothing
    empty = FakeMachine(tmp_path / "empty")
    explicit = find(empty.run(settings_loader=lambda _: Settings(source="webcam:0")), "cameras")
    assert explicit.status == "FAIL" and "cannot start" in explicit.detail


def test_a_camera_configured_by_its_device_path_is_that_camera(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_camera(0, "Integrated Camera", CLOSED)
    machine.add_camera(2, "Brio", HD)
    by_path = find(machine.run(settings_loader=lambda _: Settings(source="webcam:/dev/video2")),
                   "cameras")
    assert by_path.status == "PASS"  # camera 2, not camera 0
    # A device the camera list does not have is opened as configured, by its path.
    other = find(machine.run(settings_loader=lambda _: Settings(source="webcam:/dev/video7")),
                 "cameras")
    assert other.status == "FAIL" and "camera /dev/video7, the one the daemon uses" in other.detail
    assert machine.opened[-1] == "/dev/video7"


def test_camera_is_judged_by_the_configured_size_and_fps(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.add_camera(0, "Brio", (True, 1920, 1080, 30.0))
    full_hd = Settings(size=(1920, 1080), fps=30)
    cameras = find(machine.run(settings_loader=lambda _: full_hd), "cameras")
    assert cameras.status == "PASS"
    assert cameras.detail == "/dev/video0 (Brio): 1920x1080 at 30 fps: ok"
    assert machine.asked == [((1920, 1080), 30.0)]  # the user's mode, not 720p
    # With the default 1280x720 the same camera is scaled, and the advice is the user's size.
    default = find(machine.run(), "cameras")
    assert default.status == "WARN" and "does not give 1280x720 at 30 fps" in default.detail
    assert default.fix is not None and "--size 1920x1080" in default.fix


class FakeCapture:
    """cv2.VideoCapture for a camera that only does 1920x1080 at 30 fps."""

    instances: ClassVar[list[FakeCapture]] = []

    def __init__(self, device: int, api: int) -> None:
        self.device, self.api = device, api
        self.asked: dict[int, float] = {}
        self.released = False
        FakeCapture.instances.append(self)

    def isOpened(self) -> bool:
        return self.device == 0

    def set(self, prop: int, value: float) -> bool:
        self.asked[prop] = value
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 1920.0, cv2.CAP_PROP_FRAME_HEIGHT: 1080.0,
                cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((1080, 1920, 3), np.uint8)

    def release(self) -> None:
        self.released = True


def test_the_real_opener_is_the_webcam_source(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCapture.instances = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    assert doctor.open_camera(0, (1920, 1080), 30.0) == (True, 1920, 1080, 30.0)
    capture = FakeCapture.instances[-1]
    # WebcamSource's requests: the user's mode, MJPG and a one-frame driver buffer.
    assert capture.asked[cv2.CAP_PROP_FRAME_WIDTH] == 1920
    assert capture.asked[cv2.CAP_PROP_FRAME_HEIGHT] == 1080
    assert capture.asked[cv2.CAP_PROP_FPS] == 30
    assert capture.asked[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert capture.released
    assert doctor.open_camera(5, (1920, 1080), 30.0) == (False, 0, 0, 0.0)


# --- GPU --------------------------------------------------------------------------------------


def test_gpu_with_enough_memory_passes(machine: FakeMachine) -> None:
    gpu = find(machine.run(), "gpu")
    assert gpu.status == "PASS"
    assert "cuda:0 NVIDIA H100 80GB HBM3, 80.0 GiB" in gpu.detail


def test_gpu_with_too_little_memory_warns_with_offload_advice(machine: FakeMachine) -> None:
    machine.gpus = [GpuInfo("cuda:0", "NVIDIA GeForce RTX 4090", 24 * GIB)]
    gpu = find(machine.run(), "gpu")
    assert gpu.status == "WARN"
    assert "needs about 40 GiB" in gpu.detail
    assert gpu.fix is not None and "--offload model" in gpu.fix and "--vae-tiling" in gpu.fix
    # Offload already configured: nothing to advise.
    offloaded = find(machine.run(settings_loader=lambda _: Settings(offload="model")), "gpu")
    assert offloaded.status == "PASS"


def test_no_gpu_or_no_torch_warns_passthrough(machine: FakeMachine) -> None:
    machine.gpus = []
    gpu = find(machine.run(), "gpu")
    assert gpu.status == "WARN" and "runs in passthrough / CPU only" in gpu.detail
    machine.gpus = None
    gpu = find(machine.run(), "gpu")
    assert gpu.status == "WARN" and "runs in passthrough / CPU only" in gpu.detail
    assert gpu.fix == MODELS_EXTRA_FIX


def test_configured_gpu_that_is_not_there_fails(machine: FakeMachine) -> None:
    gpu = find(machine.run(settings_loader=lambda _: Settings(device="cuda:1")), "gpu")
    assert gpu.status == "FAIL" and "cuda:1" in gpu.detail


# --- weights ----------------------------------------------------------------------------------


def test_missing_weights_warn_with_the_download_command(machine: FakeMachine) -> None:
    from faceswap_cam.daemon.ops.doctor import weights_needed

    checks = machine.run()
    needed = {name for name, _ in weights_needed(Settings())}
    assert needed
    for name in model_names():
        weights = find(checks, f"weights {name}")
        assert "not downloaded" in weights.detail
        if name not in needed:  # e.g. the live preset's LoRA: fetched only when asked for
            assert weights.status == "PASS" and "does not use it" in weights.detail, weights
            continue
        assert weights.status == "WARN", weights
        assert weights.fix == fix_command(name)


def test_missing_weights_fail_when_the_engine_needs_them(
        machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESWAP_CAM_ENGINE", "wan-animate")
    checks = machine.run()
    wan = find(checks, "weights wan-animate")
    assert (wan.status, wan.fix) == ("FAIL", "faceswap-cam models download --only wan-animate")
    assert "FACESWAP_CAM_ENGINE" in find(checks, "config").detail
    assert exit_code(checks) == 1


def test_damaged_weights_fail_and_unused_ones_pass(machine: FakeMachine) -> None:
    detector = models_dir() / "detector"
    detector.mkdir(parents=True)
    (detector / "config.json").write_text("{}")  # no weights file next to it
    pose = models_dir() / "pose"
    pose.mkdir(parents=True)
    (pose / "vitpose.pth").write_bytes(b"0")  # right shape, but no download record
    checks = machine.run()
    damaged = find(checks, "weights detector")
    assert damaged.status == "FAIL" and damaged.fix == fix_command("detector")
    unrecorded = find(checks, "weights pose")
    assert unrecorded.status == "WARN" and unrecorded.fix == fix_command("pose")
    passthrough = machine.run(settings_loader=lambda _: Settings(engine="passthrough"))
    assert find(passthrough, "weights sam2").status == "PASS"


@pytest.mark.parametrize(("mode", "preprocessor", "expected"), [
    ("replace", "wan", ["wan-animate", "detector", "pose", "sam2"]),
    ("animate", "wan", ["wan-animate", "detector", "pose"]),
    ("replace", "stand-in", ["wan-animate"]),
])
def test_weights_needed_are_the_engines_list(
        machine: FakeMachine, mode: str, preprocessor: str, expected: list[str]) -> None:
    settings = Settings(engine="wan-animate", mode=mode, preprocessor=preprocessor,
                        pose_model="/opt/pose")
    needed = doctor.weights_needed(settings)
    # The engine's availability check reads the same list from the engine options.
    assert needed == required_weights(engine_options(settings))
    assert [name for name, _ in needed] == expected
    assert dict(needed).get("pose") == ("/opt/pose" if "pose" in expected else None)
    checks = machine.run(settings_loader=lambda _: settings)
    failed = [name for name in model_names() if find(checks, f"weights {name}").status == "FAIL"]
    assert failed == [name for name in model_names() if name in expected]
    assert doctor.weights_needed(Settings(engine="passthrough")) == []


@pytest.mark.parametrize(("preset", "expected"), [
    (None, "wan-animate-2"), ("live", "wan-animate-2"), ("quality", "wan-animate-2-base")])
def test_wan_animate_2_weights_come_from_its_engine(
        machine: FakeMachine, preset: str | None, expected: str) -> None:
    # The checkpoint follows the preset; the doctor asks the engine registry, as `auto` does.
    settings = Settings(engine="wan-animate-2", preset=preset)
    assert [name for name, _ in doctor.weights_needed(settings)] == [expected]
    checks = machine.run(settings_loader=lambda _: settings)
    missing = find(checks, f"weights {expected}")
    assert missing.status == "FAIL"
    assert "engine wan-animate-2 cannot start without it" in missing.detail
    assert find(checks, "weights detector").status != "FAIL"


def test_auto_is_judged_by_the_engine_it_runs(
        machine: FakeMachine, tmp_path: Path) -> None:
    """`auto` with a Wan-Animate-2 folder configured runs wan-animate-2: the doctor asks for
    its weights (the folder, checked as a download is), not wan-animate's set."""
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from tests.wan2_tiny import save_tiny_wan_animate_2

    folder = save_tiny_wan_animate_2(tmp_path / "wan2", "distilled")
    settings = Settings(wan2_model=str(folder))
    assert doctor.weights_engine(settings) == "wan-animate-2"
    checks = machine.run(settings_loader=lambda _: settings)
    assert find(checks, "weights wan-animate-2") == doctor.Check(
        "weights wan-animate-2", "PASS", f"configured folder {folder}")
    for name in ("wan-animate", "detector", "pose", "sam2"):
        unused = find(checks, f"weights {name}")
        assert unused.status == "PASS", unused
        assert "engine auto (wan-animate-2 here) with these settings does not use it" \
            in unused.detail
    # A configured folder the engine could not load fails with what is wrong in it.
    (folder / "vae").rename(folder / "vae.old")
    broken = find(machine.run(settings_loader=lambda _: settings), "weights wan-animate-2")
    assert broken.status == "FAIL" and "vae" in broken.detail
    # Nothing of Wan-Animate-2's there: judged by what a plain `models download` fetches.
    assert doctor.weights_engine(Settings(wan2_model=str(tmp_path / "absent"))) == \
        "wan-animate"


# --- config, daemon, service -----------------------------------------------------------------


def test_bad_config_file_fails_with_its_message(machine: FakeMachine) -> None:
    path = config_file()
    path.parent.mkdir(parents=True)
    path.write_text("fps = 0\n")
    checks = machine.run()
    config = find(checks, "config")
    assert config.status == "FAIL"
    assert "fps = 0 (from " in config.detail and str(path) in config.detail
    assert config.fix is not None and str(path) in config.fix
    # The other checks still run, on defaults.
    assert find(checks, "virtual camera").status == "PASS"
    path.write_text("fps = [")
    assert "not valid TOML" in find(machine.run(), "config").detail


def test_good_config_file_passes_with_its_path(machine: FakeMachine, tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('virtualcam_label = "Studio Cam"\n')
    checks = machine.run(config_path=path)
    assert (find(checks, "config").status, find(checks, "config").detail) == ("PASS", str(path))
    # The configured label is the one looked for.
    camera = find(checks, "virtual camera")
    assert camera.status == "FAIL" and 'card_label="Studio Cam"' in (camera.fix or "")


def test_daemon_not_running_warns(machine: FakeMachine) -> None:
    # The real client, reading the control file that FACESWAP_CAM_CONTROL_FILE names (absent).
    checks = machine.run(control_client_factory=doctor._control_client)
    api = find(checks, "control API")
    assert api.status == "WARN"
    assert api.detail.startswith("daemon not running")
    assert api.fix == DAEMON_FIX == "faceswap-cam run"


def test_running_daemon_passes_and_a_broken_one_fails(machine: FakeMachine) -> None:
    api = find(machine.run(), "control API")
    assert (api.status, api.detail) == ("PASS",
                                        "http://127.0.0.1:40123: running, engine wan-animate")
    machine.client = FakeClient(ControlError(None, "GET /status: no answer within 2 s"))
    assert find(machine.run(), "control API").status == "FAIL"


def test_a_daemon_in_trouble_warns_with_its_errors(machine: FakeMachine) -> None:
    machine.client = FakeClient(status_document(state="error", engine_error="out of memory",
                                                camera_error="camera lost"))
    api = find(machine.run(), "control API")
    assert api.status == "WARN"
    assert api.detail.splitlines() == ["http://127.0.0.1:40123: error, engine debug",
                                       "out of memory", "camera lost"]


def test_a_status_of_another_shape_fails(machine: FakeMachine) -> None:
    # What an older daemon might answer: read through the typed status, it is refused.
    machine.client = FakeClient({"state": "running", "engine": "wan-animate"})
    api = find(machine.run(), "control API")
    assert api.status == "FAIL" and "status is not understood" in api.detail
    assert api.fix is not None and "same FaceSwap Cam installation" in api.fix


def test_service_states(machine: FakeMachine) -> None:
    assert find(machine.run(), "service").status == "PASS"
    machine.service = ServiceState(False, None)
    service = find(machine.run(), "service")
    assert (service.status, service.fix) == ("WARN", SERVICE_FIX)
    machine.service = ServiceState(True, False, "active: inactive")
    service = find(machine.run(), "service")
    assert service.status == "WARN" and "inactive" in service.detail
    machine.service = ImportError("No module named 'faceswap_cam.daemon.ops.service'")
    service = find(machine.run(), "service")
    assert (service.status, service.detail) == ("WARN", SERVICE_UNAVAILABLE)


@pytest.fixture
def fake_service_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    state = types.SimpleNamespace(installed=True, manager=("active: active",),
                                  files=(("unit", "ok"),))
    module = types.ModuleType("faceswap_cam.daemon.ops.service")
    module.is_installed = lambda: state.installed  # type: ignore[attr-defined]
    module.status = lambda: state  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "faceswap_cam.daemon.ops.service", module)
    yield state


@pytest.mark.parametrize(("manager", "running"), [
    (("enabled: enabled", "active: active"), True),
    (("enabled: enabled", "active: inactive"), False),
    (("active: unknown (systemd user manager not reachable: no bus)",), None),
    (("com.faceswapcam.daemon: loaded (state = running, pid = 12)",
      "com.faceswapcam.tray: not loaded (x)"), True),
    (("com.faceswapcam.daemon: not loaded (Could not find service)",), False),
    (("task FaceSwap Cam Daemon: registered (Status: Running; Last Result: 0)",), True),
    (("task FaceSwap Cam Daemon: registered (Status: Ready; Last Result: 1)",), False),
])
def test_service_probe_reads_the_service_module(
        fake_service_module: types.SimpleNamespace, manager: tuple[str, ...],
        running: bool | None) -> None:
    fake_service_module.manager = manager
    state = doctor.probe_service()
    assert (state.installed, state.running) == (True, running)


def test_service_probe_not_installed_and_outdated(
        fake_service_module: types.SimpleNamespace) -> None:
    fake_service_module.installed = False
    assert doctor.probe_service() == ServiceState(False, None)
    fake_service_module.installed = True
    fake_service_module.files = (("unit", "outdated"),)
    state = doctor.probe_service()
    assert state.outdated
    check = doctor._service_check(lambda: state)
    assert (check.status, check.fix) == ("WARN", SERVICE_FIX)


def test_missing_service_module_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faceswap_cam.daemon.ops.service", None)
    check = doctor._service_check(doctor.probe_service)
    assert (check.status, check.detail) == ("WARN", SERVICE_UNAVAILABLE)


# --- python, packages, platforms, robustness ---------------------------------------------------


def test_python_and_packages(machine: FakeMachine) -> None:
    installed = {"numpy": "2.0", "opencv-python": "4.10", "pydantic": "2.9",
                 "platformdirs": "4.3", "fastapi": "0.115", "uvicorn": "0.30",
                 "diffusers": "0.35", "transformers": "5.24"}
    checks = machine.run(python_version=(3, 10, 14), version_lookup=installed.get)
    python = find(checks, "python")
    assert python.status == "FAIL" and "3.10.14" in python.detail
    packages = find(checks, "packages")
    assert (packages.status, packages.fix) == ("FAIL", "pip install pyvirtualcam")
    assert "opencv 4.10" in packages.detail
    models = find(checks, "model packages")
    assert (models.status, models.fix) == ("WARN", MODELS_EXTRA_FIX)
    assert "torch" in models.detail
    checks = machine.run(version_lookup={**installed, "pyvirtualcam": "0.12",
                                         "torch": "2.6"}.get)
    assert find(checks, "packages").status == "PASS"
    assert find(checks, "model packages").status == "PASS"
    assert find(checks, "python").status == "PASS"


def test_a_model_package_older_than_the_project_needs_is_named_with_its_fix(
        machine: FakeMachine) -> None:
    installed = {"numpy": "2.0", "opencv-python": "4.10", "pydantic": "2.9",
                 "platformdirs": "4.3", "fastapi": "0.115", "uvicorn": "0.30",
                 "pyvirtualcam": "0.12", "torch": "2.11.0", "diffusers": "0.42.1",
                 "transformers": "5.17.0"}
    # The lent GPU machine's transformers: its SAM2 config builds the wrong mask decoder.
    wanted = {"transformers": "transformers>=5.20", "torch": "torch<=2.14.1,>=2.6"}
    models = find(machine.run(version_lookup=installed.get, requirements_lookup=lambda: wanted),
                  "model packages")
    assert models.status == "WARN"
    assert models.detail.startswith("transformers 5.17.0 (needs transformers>=5.20)")
    assert models.fix == "pip install 'transformers>=5.20'"
    installed["transformers"] = "5.24.0"
    assert find(machine.run(version_lookup=installed.get, requirements_lookup=lambda: wanted),
                "model packages").status == "PASS"


def test_the_model_requirements_are_the_checkouts_models_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = model_requirements()  # this checkout's pyproject.toml, not the install's metadata
    assert "numpy" not in wanted  # a core requirement, checked by presence alone
    assert not unmet_requirements([("transformers", "5.24.0"), ("torch", "2.11.0+cu130")],
                                  wanted)
    assert list(map(str, unmet_requirements([("transformers", "5.17.0")], wanted))) == [
        f"transformers 5.17.0 (needs {wanted['transformers']})"]
    # Torch comes with the torchvision its wheels pin.
    unmet = unmet_requirements([("torch", "2.5.1+cpu")], wanted)
    assert upgrade_command(unmet, wanted) == (
        f"pip install '{wanted['torch']}' '{wanted['torchvision']}'")
    # Without a checkout, the install's metadata: the models extra's lines only.
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: [
        "numpy>=1.26", "pulsectl>=24.4; sys_platform == 'linux'",
        'transformers>=5.20; extra == "models"', 'Huggingface_Hub>=0.34; extra == "models"',
        'pytest>=8; extra == "dev"'])
    assert model_requirements(tmp_path / "pyproject.toml") == {
        "transformers": "transformers>=5.20", "huggingface-hub": "Huggingface_Hub>=0.34"}
    from_metadata = model_requirements(tmp_path / "pyproject.toml")
    unmet = unmet_requirements([("huggingface_hub", "0.30")], from_metadata)
    assert list(map(str, unmet)) == ["huggingface-hub 0.30 (needs Huggingface_Hub>=0.34)"]
    # A name pip spells with an underscore still finds its requirement.
    assert upgrade_command(unmet, from_metadata) == "pip install 'Huggingface_Hub>=0.34'"


def test_macos_and_windows_notes(machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    mac = machine.run(platform="darwin")
    camera = find(mac, "virtual camera")
    assert "OBS Virtual Camera" in camera.detail
    assert find(mac, "cameras").detail.startswith("camera 0:")  # OpenCV index, no sysfs
    monkeypatch.setitem(pyvirtualcam.camera.BACKENDS, "obs", object)
    assert find(machine.run(platform="darwin"), "virtual camera").status == "PASS"
    windows = find(machine.run(platform="win32"), "virtual camera")
    assert "Unity Capture" in windows.detail and windows.status == "PASS"


def test_virtual_camera_follows_the_daemons_backend_choice(
        machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = find(machine.run(platform="sunos5"), "virtual camera")
    assert unknown.status == "WARN" and "no virtual camera is known" in unknown.detail
    monkeypatch.setitem(pyvirtualcam.camera.BACKENDS, "fake", object)
    chosen = find(machine.run(platform="sunos5", settings_loader=lambda _: Settings(
        virtualcam_backend="fake")), "virtual camera")
    assert chosen.status == "PASS" and "fake" in chosen.detail


def test_a_check_that_raises_is_a_fail_not_a_crash(machine: FakeMachine) -> None:
    def broken(index: int, size: tuple[int, int], fps: float) -> tuple[bool, int, int, float]:
        raise RuntimeError("driver exploded")

    checks = machine.run(open_camera=broken)
    cameras = find(checks, "cameras")
    assert cameras.status == "FAIL" and "driver exploded" in cameras.detail
    assert find(checks, "service").status == "PASS"


# --- output -----------------------------------------------------------------------------------


def test_text_report_is_aligned_with_fix_lines() -> None:
    checks = [Check("python", "PASS", "Python 3.11.7"),
              Check("virtual camera", "FAIL", "no device\nsecond line", f"{MODPROBE}\nhint"),
              Check("gpu", "WARN", "no CUDA GPU", None)]
    assert render_text(checks).splitlines() == [
        "PASS  python          Python 3.11.7",
        "FAIL  virtual camera  no device",
        "                      second line",
        f"                      fix: {MODPROBE}",
        "                           hint",
        "WARN  gpu             no CUDA GPU",
        "1 passed, 1 warnings, 1 failed",
    ]


def test_json_shape_and_exit_code(machine: FakeMachine) -> None:
    checks = machine.run()
    document = json.loads(render_json(checks))
    assert list(document) == ["checks"]
    assert [list(item) for item in document["checks"]] == [
        ["name", "status", "detail", "fix"]] * len(checks)
    assert all(item["status"] in ("PASS", "WARN", "FAIL") for item in document["checks"])
    assert exit_code(checks) == 0  # warnings only (weights)
    assert exit_code([*checks, Check("x", "FAIL", "broken")]) == 1


def test_parser_glue() -> None:
    parser = argparse.ArgumentParser(prog="faceswap-cam")
    add_doctor_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["doctor", "--json"])
    assert (args.command, args.json, args.config) == ("doctor", True, None)
    assert parser.parse_args(["doctor"]).json is False


def test_this_machine_as_it_is(tmp_path: Path) -> None:
    """The real probes, in a fresh process, with the user's folders moved into tmp_path."""
    from faceswap_cam.daemon.capture.devices import find_loopback_devices

    result = subprocess.run(
        [sys.executable, "-c",
         "import sys; from faceswap_cam.daemon.ops.doctor import main; sys.exit(main(['--json']))"],
        env=isolated_environment(tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    checks = [Check(**item) for item in document["checks"]]
    assert [list(item) for item in document["checks"]] == [
        ["name", "status", "detail", "fix"]] * len(checks)
    names = [check.name for check in checks]
    assert names[:4] == ["python", "packages", "model packages", "config"]
    assert {"cameras", "gpu", "control API", "service"} <= set(names)
    assert not [c for c in checks if "could not run" in c.detail], checks
    assert find(checks, "control API").status == "WARN"  # no daemon in tmp_path
    assert result.returncode == exit_code(checks)
    labels = {device.name for device in find_loopback_devices()}
    if sys.platform.startswith("linux") and "FaceSwap Cam" not in labels:
        camera = find(checks, "virtual camera")
        assert camera.status == "FAIL"
        assert camera.fix is not None and camera.fix.splitlines()[0] == MODPROBE
        assert result.returncode == 1


def test_plan_lines_for_the_local_gpu(machine: FakeMachine) -> None:
    checks = machine.run(settings_loader=lambda _: Settings(engine="wan-animate"))
    lines = [c for c in checks if c.name.startswith("plan wan-animate ")]
    assert [c.name for c in lines] == [f"plan wan-animate {p}"
                                       for p in ("quality", "balanced", "live")]
    live = find(checks, "plan wan-animate live")
    assert live.status == "PASS"
    assert "848x480 L=9 4 steps" in live.detail and "swapped fps" in live.detail
    assert "on h100" in live.detail and "fp8" in live.detail  # the live preset's own
    # A 24 GB card cannot hold the bf16 weights: the plan says so. The live preset's fp8
    # halves them, and they fit.
    machine.gpus = [GpuInfo("cuda:0", "NVIDIA GeForce RTX 4090", 24 * GIB)]
    checks = machine.run(settings_loader=lambda _: Settings(engine="wan-animate"))
    small = find(checks, "plan wan-animate quality")
    assert small.status == "WARN" and small.fix is not None
    assert find(checks, "plan wan-animate live").status == "PASS"
    # A quantization the user chose holds for every preset.
    checks = machine.run(settings_loader=lambda _: Settings(engine="wan-animate",
                                                            quantize="none"))
    assert find(checks, "plan wan-animate live").status == "WARN"
    # fp8 chosen for a GPU without it: the daemon refuses it, and doctor says so, planning
    # each preset as the daemon runs it there instead.
    machine.gpus = [GpuInfo("cuda:0", "NVIDIA A100-SXM4-80GB", 80 * GIB)]
    checks = machine.run(settings_loader=lambda _: Settings(engine="wan-animate",
                                                            quantize="fp8"))
    refused = find(checks, "plan quantize")
    assert refused.status == "FAIL" and "FP8 tensor cores" in refused.detail
    assert refused.fix is not None and "int8" in refused.fix
    assert "int8" not in find(checks, "plan wan-animate live").detail
    # The debug engine loads no model: nothing to refuse.
    checks = machine.run(settings_loader=lambda _: Settings(engine="debug", quantize="fp8"))
    assert "plan quantize" not in {c.name for c in checks}


def test_plan_without_a_gpu_says_so(machine: FakeMachine) -> None:
    machine.gpus = []
    plan_check = find(machine.run(), "plan")
    assert plan_check.status == "WARN" and "no CUDA GPU" in plan_check.detail
    assert plan_check.fix is not None and "faceswap-cam plan --gpu" in plan_check.fix


# --- FaceSwap Mic ---------------------------------------------------------------------------


def settings_with_mic(mic: str) -> Any:
    return lambda _path: Settings(mic=mic)


def test_the_mic_check_says_what_to_pick_in_the_call_app_and_how_to_turn_it_on(
        machine: FakeMachine) -> None:
    check = find(machine.run(), "mic")
    assert check.status == doctor.PASS
    assert '"FaceSwap Mic"' in check.detail and "alsa_input.usb-mic" in check.detail
    assert check.fix is not None and "--mic auto" in check.fix  # it is off by default


def test_a_missing_sound_server_fails_the_mic_check_only_when_the_mic_is_asked_for(
        machine: FakeMachine) -> None:
    machine.microphones = AudioDeviceError("no sound server",
                                           fix="systemctl --user start pipewire-pulse")
    off = find(machine.run(), "mic")
    assert off.status == doctor.WARN and off.fix == "systemctl --user start pipewire-pulse"
    asked = find(machine.run(settings_loader=settings_with_mic("auto")), "mic")
    assert asked.status == doctor.FAIL and "no sound server" in asked.detail


def test_a_microphone_that_is_not_there_is_named_with_the_ones_that_are(
        machine: FakeMachine) -> None:
    check = find(machine.run(settings_loader=settings_with_mic("headset")), "mic")
    assert check.status == doctor.FAIL
    assert "headset" in check.detail and "alsa_input.usb-mic" in check.detail
    assert check.fix is not None and "--mic NAME" in check.fix


def test_a_microphone_named_as_the_sound_system_knows_it_passes(machine: FakeMachine) -> None:
    check = find(machine.run(settings_loader=settings_with_mic("usb-mic")), "mic")
    assert check.status == doctor.PASS
    assert "--mic usb-mic (alsa_input.usb-mic)" in check.detail


def test_on_macos_the_mic_check_names_the_loopback_driver(machine: FakeMachine) -> None:
    found = find(machine.run(platform="darwin", settings_loader=settings_with_mic("auto")),
                 "mic")
    assert found.status == doctor.PASS and '"BlackHole 2ch"' in found.detail
    machine.microphones = AudioDeviceError("BlackHole is not installed", fix="")
    missing = find(machine.run(platform="darwin", settings_loader=settings_with_mic("auto")),
                   "mic")
    assert missing.status == doctor.FAIL
    assert missing.fix is not None and "brew install blackhole-2ch" in missing.fix
    assert '"BlackHole 2ch"' in missing.fix  # the microphone to pick afterwards


def test_plan_lines_say_when_the_preprocessing_efficiency_is_assumed(
        machine: FakeMachine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.models.plan import gpus as plan_gpus
    from faceswap_cam.models.plan.host import save_host_cost
    from faceswap_cam.models.plan.preprocessing import save_preprocess_efficiency

    measured = tmp_path / "gpu_efficiency.json"
    measured.write_text(json.dumps({"by_gpu": {"h100": {"dit_efficiency": 0.5}}}))
    save_host_cost(measured, "wan-animate-2", {"preprocess_ms": 3.0})
    monkeypatch.setattr(plan_gpus, "EFFICIENCY_FILE", measured)
    checks = machine.run(settings_loader=lambda _: Settings())
    # The DiT is measured; wan-animate's preprocessing models and CPU time are not,
    # wan-animate-2 has no such models and its CPU time is measured.
    assert find(checks, "plan wan-animate live").detail.endswith(
        ", ASSUMED preprocessing efficiency, CPU time")
    assert "ASSUMED" not in find(checks, "plan wan-animate-2 live").detail
    save_preprocess_efficiency(measured, plan_gpus.GPUS["h100"], {
        "device": "NVIDIA H100", "batched_efficiency": 0.3, "tracker_efficiency": 0.1})
    checks = machine.run(settings_loader=lambda _: Settings())
    assert find(checks, "plan wan-animate live").detail.endswith(", ASSUMED CPU time")
    save_host_cost(measured, "wan-animate", {"preprocess_ms": 2.0, "replace_ms": 1.0})
    checks = machine.run(settings_loader=lambda _: Settings())
    assert "ASSUMED" not in find(checks, "plan wan-animate live").detail


def test_plan_lines_plan_the_users_own_mask_mode_and_preprocessor(
        machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.models.plan import predict

    seen: list[dict[str, Any]] = []
    real = predict.preset_rows

    def recorded(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "preset_rows", recorded)
    machine.run(settings_loader=lambda _: Settings(engine="wan-animate", person_mask="box",
                                                    mode="animate", preprocessor="stand-in"))
    assert [(k["person_mask"], k["mode"], k["preprocessor"]) for k in seen] \
        == [("box", "animate", "stand-in")]
    seen.clear()
    machine.run(settings_loader=lambda _: Settings(engine="wan-animate"))
    # No mask of the user's: each preset's own.
    assert [(k["person_mask"], k["mode"], k["preprocessor"]) for k in seen] \
        == [(None, "replace", "wan")]
