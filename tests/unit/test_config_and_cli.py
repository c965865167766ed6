"""Configuration layering and the command line's failures: clear, non-zero, nothing left."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from faceswap_cam.daemon.capture.source import register_source
from faceswap_cam.daemon.cli import EXIT_OK, EXIT_RUNTIME, _print_status
from faceswap_cam.daemon.config import ConfigError, Fallback, Playout, load_settings
from faceswap_cam.daemon.outputs.base import Sink, SinkError, Tick
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp, StartError
from tests.conftest import faceswap_cam_exe
from tests.fake_daemon import InMemoryDaemon
from tests.fakes import NumberedSource


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings.fps == 30
    assert settings.size == (1280, 720)
    assert settings.fallback is Fallback.PASSTHROUGH
    assert settings.playout is Playout.SMOOTH
    assert settings.sinks == ["auto"]


def test_file_then_environment_then_cli(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('fps = 24\nsize = "640x480"\nfallback = "hold"\nsinks = ["null"]\n')
    settings = load_settings({}, config_path=config, environ={})
    assert (settings.fps, settings.size, settings.fallback) == (24, (640, 480), Fallback.HOLD)
    environ = {"FACESWAP_CAM_FPS": "25", "FACESWAP_CAM_SINKS": "null,preview"}
    settings = load_settings({}, config_path=config, environ=environ)
    assert settings.fps == 25
    assert settings.sinks == ["null", "preview"]
    settings = load_settings({"fps": 12}, config_path=config, environ={"FACESWAP_CAM_FPS": "25"})
    assert settings.fps == 12
    assert settings.size == (640, 480)  # untouched layers still count


@pytest.mark.parametrize(
    ("cli", "environ", "expected"),
    [
        ({"fps": -1}, {}, ["fps = -1", "--fps", "> 0"]),
        ({"size": "wide"}, {}, ["size = 'wide'", "WIDTHxHEIGHT"]),
        ({"size": "641x480"}, {}, ["641x480", "even"]),
        ({"fallback": "blur"}, {}, ["fallback = 'blur'", "passthrough | hold | placeholder"]),
        ({}, {"FACESWAP_CAM_PLAYOUT": "fast"}, ["FACESWAP_CAM_PLAYOUT", "live | smooth"]),
        ({"preview_host": "0.0.0.0"}, {}, ["preview_host", "loopback only"]),
    ],
)
def test_bad_values_name_field_value_origin_and_allowed(
        cli: dict[str, object], environ: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cli, environ=environ)
    for text in expected:
        assert text in str(info.value)


def test_bad_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("fps = 30\nframe_rate = 30\n")
    with pytest.raises(ConfigError, match=r"frame_rate .*unknown setting"):
        load_settings({}, config_path=config, environ={})
    config.write_text("fps = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, config_path=config, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings({}, config_path=tmp_path / "missing.toml", environ={})


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([faceswap_cam_exe(), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fps", "0"], "fps = 0.0 (from --fps)"),
        (["--source", "camera:0"], "unknown source 'camera:0'"),
        (["--source", "file:/nonexistent.mp4"], "video file not found"),
        (["--sink", "screen"], "unknown sink 'screen'"),
        (["--engine", "magic"], "unknown engine 'magic'"),
        (["--sink", "file:/nonexistent-dir/out.mp4"], "does not exist"),
        # No v4l2loopback on this machine (or in CI): the error says how to create it.
        (["--sink", "virtualcam"],
         'modprobe v4l2loopback devices=1 card_label="FaceSwap Cam" exclusive_caps=1'),
    ],
)
def test_cli_refuses_to_start_with_a_clear_message(
        args: list[str], message: str, cli_env: dict[str, str]) -> None:
    result = run_cli(["run", "--source", "demo", "--size", "320x240", "--duration", "1", *args],
                     cli_env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_cli_reads_environment(cli_env: dict[str, str]) -> None:
    result = run_cli(["run", "--source", "demo"], {**cli_env, "FACESWAP_CAM_SIZE": "big"})
    assert result.returncode == 2
    assert "FACESWAP_CAM_SIZE" in result.stderr


def test_help_lists_commands(cli_env: dict[str, str]) -> None:
    result = run_cli(["--help"], cli_env)
    assert result.returncode == 0
    assert "run" in result.stdout and "devices" in result.stdout


class BrokenSink(Sink):
    def __init__(self) -> None:
        self.closed = False

    @property
    def description(self) -> str:
        return "broken"

    def open(self, size: tuple[int, int], fps: float) -> None:
        raise SinkError("device busy")

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        raise AssertionError("never opened")

    def close(self) -> None:
        self.closed = True


class ClosingNullSink(NullSink):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_failed_start_leaves_nothing_running() -> None:
    source = NumberedSource()
    register_source("numbered-test", lambda arg, size, fps: source)
    settings = load_settings({"source": "numbered-test", "size": "320x240", "sinks": ["null"]},
                             environ={})
    first = ClosingNullSink()
    app = RealtimeFaceSwapApp(settings, sinks=[first, BrokenSink()])
    before = set(threading.enumerate())
    with pytest.raises(StartError, match="device busy"):
        app.start()
    assert first.closed, "the sink opened before the failure was not closed"
    assert source.opens == 1 and source.closes >= 1, "the camera was not released"
    assert set(threading.enumerate()) <= before


def test_no_heavy_imports_for_passthrough() -> None:
    """The daemon and CLI start without importing torch & co (they stay inside models/)."""
    code = ("import sys, faceswap_cam.daemon.cli, faceswap_cam.daemon.pipeline.app;"
            "heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules);"
            "print(sorted(heavy))")
    python = Path(faceswap_cam_exe()).with_name("python")
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_namespace_only_under_faceswap_cam() -> None:
    """Nothing generic (``daemon``, ``models``) is importable from the installed package."""
    python = Path(faceswap_cam_exe()).with_name("python")
    code = ("import importlib.util as u;"
            "print([n for n in ('daemon', 'models', 'tray') if u.find_spec(n)])")
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                            check=True, cwd="/")
    assert result.stdout.strip() == "[]"


def test_status_printing(capsys: pytest.CaptureFixture[str]) -> None:
    daemon = InMemoryDaemon()
    daemon.state, daemon.engine_state = "error", "failed"
    daemon.engine_error = "CUDA out of memory"
    document = daemon.status().model_dump(mode="json")
    assert _print_status(document, as_json=False) == EXIT_OK
    text = capsys.readouterr().out
    for line in ("state      error", "swap       on, showing swapped", "reference  alice",
                 "engine     debug: failed", "playout    smooth, fallback passthrough",
                 "engine error CUDA out of memory"):
        assert line in text
    assert _print_status(document, as_json=True) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == document
    document["generation"] = {"window": [280, 8, 720, 704], "size": [480, 464]}
    assert _print_status(document, as_json=False) == EXIT_OK
    assert "generating 480x464, from the camera frame's 720x704 at (280, 8)" \
        in capsys.readouterr().out


def test_status_printing_names_a_stopped_output(capsys: pytest.CaptureFixture[str]) -> None:
    document = InMemoryDaemon().status().model_dump(mode="json")
    document["output_errors"] = [{"output": "file:/media/usb/call.mp4",
                                  "error": "RecordingError: the disk at /media/usb is full",
                                  "fix": "free space on /media/usb"}]
    assert _print_status(document, as_json=False) == EXIT_OK
    text = capsys.readouterr().out
    assert "output     file:/media/usb/call.mp4: RecordingError: the disk" in text
    assert "fix        free space on /media/usb" in text


def test_status_of_another_shape_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _print_status({"state": "running", "engine": {"name": "wan"}},
                         as_json=True) == EXIT_RUNTIME
    captured = capsys.readouterr()
    assert not captured.out and "not understood" in captured.err
