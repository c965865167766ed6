"""Small ways a start or a stop went wrong: each ends in a clear message, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.capture.file import FileSource
from faceswap_cam.daemon.capture.thread import WebcamCapture
from faceswap_cam.daemon.cli import main
from faceswap_cam.daemon.config import ConfigError, load_settings
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp, person_check_unavailable
from faceswap_cam.daemon.references import ReferenceLibrary
from tests.conftest import faceswap_cam_exe


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_duration_must_be_finite(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--source", "demo", "--sink", "null", "--engine", "passthrough",
                 f"--duration={value}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "duration" in err and "--duration" in err
    assert "Traceback" not in err and "OverflowError" not in err


def test_a_binary_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    config = tmp_path / "photo.toml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd")
    with pytest.raises(ConfigError, match=r"photo\.toml is not a TOML text file"):
        load_settings({}, config_path=config, environ={})
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "UnicodeDecodeError" not in err


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_still_image_is_a_camera_that_never_moves(tmp_path: Path, suffix: str) -> None:
    picture = np.zeros((60, 80, 3), np.uint8)
    picture[:, :40] = (0, 0, 255)
    path = tmp_path / f"photo{suffix}"
    assert cv2.imwrite(str(path), picture)
    source = FileSource(str(path), size=(80, 60), fps=50)
    source.open()
    try:
        assert source.fps == 50  # an image has no frame rate of its own
        frames = [source.read() for _ in range(6)]
    finally:
        source.close()
    for frame in frames:
        assert frame.shape == (60, 80, 3)
        assert np.abs(frame.astype(int) - picture).max() <= 8  # JPEG is lossy
    frames[0][:] = 0  # each read is its own array
    assert frames[1].any()


def test_a_still_image_keeps_the_capture_live(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    assert cv2.imwrite(str(path), np.full((48, 64, 3), 77, np.uint8))
    capture = WebcamCapture(FileSource(str(path), size=(64, 48), fps=60))
    capture.open()
    capture.start()
    try:
        deadline = time.monotonic() + 10
        while capture.frames_captured < 20 and time.monotonic() < deadline:
            threading.Event().wait(0.02)
        assert capture.frames_captured >= 20
        assert capture.last_error == ""
    finally:
        capture.close()


def daemon_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESWAP_CAM_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_RUNTIME_DIR=str(tmp_path / "run"),
               HOME=str(tmp_path / "home"), FACESWAP_CAM_CONTROL_FILE=str(tmp_path / "c.json"),
               FACESWAP_CAM_REFERENCES_DIR=str(tmp_path / "references"),
               FACESWAP_CAM_MODELS_DIR=str(tmp_path / "models"))
    return env


def interrupted_daemon(tmp_path: Path, interrupts: int) -> subprocess.CompletedProcess[str]:
    """Run the daemon, wait until it serves its control API, press Ctrl-C ``interrupts``
    times in quick succession, and wait for it to end."""
    env = daemon_env(tmp_path)
    process = subprocess.Popen(
        [faceswap_cam_exe(), "run", "--source", "demo", "--sink", "null", "--engine",
         "passthrough", "--size", "320x240"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    control_file = Path(env["FACESWAP_CAM_CONTROL_FILE"])
    try:
        deadline = time.monotonic() + 30
        while not control_file.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the daemon did not start"
            threading.Event().wait(0.05)
        for _ in range(interrupts):
            process.send_signal(signal.SIGINT)
            threading.Event().wait(0.02)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not control_file.exists(), "a clean stop removes the control file"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_double_ctrl_c_still_stops_cleanly_and_exits_130(tmp_path: Path) -> None:
    result = interrupted_daemon(tmp_path, interrupts=2)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "already stopping" in result.stderr
    assert "capture demo: stopped" in result.stderr
    assert "frames_published" in json.loads(result.stdout)  # the run's stats, as on any stop


def test_one_ctrl_c_is_an_ordinary_stop(tmp_path: Path) -> None:
    result = interrupted_daemon(tmp_path, interrupts=1)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def png_bytes() -> bytes:
    ok, data = cv2.imencode(".png", np.full((160, 120, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def test_a_reference_accepted_unchecked_says_why(tmp_path: Path) -> None:
    # No model weights in this test's models folder: the detector cannot run.
    reason = person_check_unavailable()
    assert "models download" in reason or "not installed" in reason
    settings = load_settings({"source": "demo", "size": "320x240", "engine": "passthrough",
                              "control_api": False}, environ={})
    app = RealtimeFaceSwapApp(settings, sinks=[NullSink()],
                              references=ReferenceLibrary(tmp_path / "references"))
    try:
        entry = app.add_reference("nobody", png_bytes())
    finally:
        app.close()
    assert entry["name"] == "nobody"
    assert entry["person_check_skipped"] == reason


def test_a_checked_reference_says_nothing_was_skipped(tmp_path: Path) -> None:
    settings = load_settings({"source": "demo", "size": "320x240", "engine": "passthrough",
                              "control_api": False}, environ={})
    library = ReferenceLibrary(tmp_path / "references", person_check=lambda image: None)
    app = RealtimeFaceSwapApp(settings, sinks=[NullSink()], references=library)
    try:
        assert app.add_reference("someone", png_bytes())["person_check_skipped"] == ""
    finally:
        app.close()
