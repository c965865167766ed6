"""The control API and CLI against a running daemon (demo source, real HTTP on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.config import load_settings
from faceswap_cam.daemon.control.client import ControlClient, ControlError, DaemonNotRunning
from faceswap_cam.daemon.outputs.base import Tick
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from tests.conftest import faceswap_cam_exe


class TickCounter(NullSink):
    """Counts published ticks so a test can wait for the camera to keep going."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.count = 0
        self.kinds: list[str] = []

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        with self.cond:
            self.count += 1
            self.kinds.append(tick.kind)
            self.cond.notify_all()

    def advances(self, ticks: int = 5) -> bool:
        with self.cond:
            target = self.count + ticks
            return self.cond.wait_for(lambda: self.count >= target, timeout=10)


def start_daemon() -> tuple[RealtimeFaceSwapApp, TickCounter]:
    settings = load_settings({"source": "demo", "size": "320x240", "engine": "debug",
                              "sinks": ["null"]}, environ={})
    counter = TickCounter()
    app = RealtimeFaceSwapApp(settings, sinks=[counter])
    app.start()
    return app, counter


@pytest.fixture
def daemon() -> Iterator[tuple[RealtimeFaceSwapApp, TickCounter]]:
    app, counter = start_daemon()
    try:
        yield app, counter
    finally:
        app.close()


def png(width: int = 120, height: int = 160) -> bytes:
    ok, data = cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def raw(url: str, *, method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_every_operation_while_the_camera_keeps_publishing(
        daemon: tuple[RealtimeFaceSwapApp, TickCounter], tmp_path: Path) -> None:
    app, counter = daemon
    client = ControlClient.from_token_file()
    status = client.status()
    assert status["state"] in ("starting", "running")
    assert status["api_url"] == client.url
    assert {"swap", "reference", "fallback", "playout", "engine_state", "preview_url",
            "devices"} <= set(status)

    image = tmp_path / "Pirate Face.png"
    image.write_bytes(png())
    added = client.add_reference(image)
    assert added["name"] == "pirate-face"
    client.select_reference("pirate-face")
    assert app.reference_name == "pirate-face"
    assert [r["name"] for r in client.references() if r["selected"]] == ["pirate-face"]

    assert client.set_swap(False)["swap"] is False
    assert counter.advances()
    assert client.set_swap(True)["swap"] is True
    assert client.set_playout("live")["playout"] == "live"
    assert client.set_fallback("hold")["fallback"] == "hold"
    assert client.set_paused(True)["paused"] is True
    assert counter.advances()
    assert counter.kinds[-1] == "paused"
    client.set_paused(False)
    client.remove_reference("pirate-face")
    assert client.references() == []
    assert counter.advances()  # still publishing after all of it

    client.shutdown()
    assert app._stop.wait(5)  # the daemon was asked to stop


def test_refused_requests_change_nothing(daemon: tuple[RealtimeFaceSwapApp, TickCounter]
                                         ) -> None:
    app, counter = daemon
    client = ControlClient.from_token_file()
    control_file = json.loads(Path(os.environ["FACESWAP_CAM_CONTROL_FILE"]).read_text())
    url, token = control_file["url"], control_file["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert raw(f"{url}/status")[0] == 401
    assert raw(f"{url}/status", headers={"Authorization": "Bearer nope"})[0] == 401
    evil = {**auth, "Origin": "http://evil.example", "Content-Type": "application/json"}
    assert raw(f"{url}/swap", method="POST", body=b'{"enabled": false}', headers=evil)[0] == 403
    bad_json = {**auth, "Content-Type": "application/json"}
    assert raw(f"{url}/swap", method="POST", body=b"{enabled:", headers=bad_json)[0] == 400
    code, body = raw(f"{url}/playout", method="POST", body=b'{"mode": "fast"}',
                     headers=bad_json)
    assert code == 422 and "live" in str(body)
    huge = {**auth, "Content-Type": "image/png"}
    try:
        oversized = raw(f"{url}/references", method="POST", body=b"\0" * (21 * 2**20),
                        headers=huge)[0]
    except urllib.error.URLError:
        oversized = 413  # refused before the body was read: the upload was cut off
    assert oversized == 413
    code, body = raw(f"{url}/references", method="POST", body=b"not an image",
                     headers=huge)
    assert code == 422 and "cannot be decoded" in str(body)
    assert raw(f"{url}/references/ghost/select", method="POST", headers=auth)[0] == 404
    assert app.swap_enabled and app.selector.playout.value == "smooth"
    assert client.references() == []
    assert counter.advances()


def test_selection_survives_a_restart(tmp_path: Path) -> None:
    app, _ = start_daemon()
    try:
        client = ControlClient.from_token_file()
        image = tmp_path / "me.png"
        image.write_bytes(png())
        client.add_reference(image, name="captain")
        client.select_reference("captain")
    finally:
        app.close()
    with pytest.raises(DaemonNotRunning):
        ControlClient.from_token_file().status()
    again, _ = start_daemon()
    try:
        assert again.reference_name == "captain"
        assert ControlClient.from_token_file().status()["reference"] == "captain"
    finally:
        again.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([faceswap_cam_exe(), *args], capture_output=True, text=True,
                          timeout=60, check=False, env=dict(os.environ))


def test_cli_commands_against_the_daemon(daemon: tuple[RealtimeFaceSwapApp, TickCounter],
                                         tmp_path: Path) -> None:
    app, counter = daemon
    status = json.loads(cli("status", "--json").stdout)
    assert {"api_url", "state", "swap", "reference", "fallback", "playout"} <= set(status)
    assert isinstance(status["swap"], bool)
    assert "state" in cli("status").stdout
    image = tmp_path / "ref.png"
    image.write_bytes(png())
    assert cli("references", "add", str(image), "--name", "ref").returncode == 0
    assert "ref" in cli("references", "list").stdout
    assert cli("references", "use", "ref").returncode == 0
    assert app.reference_name == "ref"
    missing = cli("references", "use", "ghost")
    assert missing.returncode == 1 and "ghost" in missing.stderr
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    rejected = cli("references", "add", str(bad))
    assert rejected.returncode == 1 and "cannot be decoded" in rejected.stderr
    def state() -> tuple[bool, bool]:  # read fresh each time (the daemon changes it)
        return app.swap_enabled, app.paused

    assert cli("swap", "off").returncode == 0 and state() == (False, False)
    assert cli("swap", "on").returncode == 0 and state() == (True, False)
    assert cli("pause").returncode == 0 and state() == (True, True)
    assert cli("resume").returncode == 0 and state() == (True, False)
    assert counter.advances()
    assert cli("stop").returncode == 0
    assert app._stop.wait(5)


def test_cli_without_a_daemon_says_so() -> None:
    result = cli("status")
    assert result.returncode == 3
    assert "not running: start it with `faceswap-cam run`" in result.stderr


def test_a_second_daemon_refuses_to_start(daemon: tuple[RealtimeFaceSwapApp, TickCounter]
                                          ) -> None:
    result = cli("run", "--source", "demo", "--sink", "null", "--duration", "1")
    assert result.returncode == 2
    assert "already running" in result.stderr


def test_control_errors_are_precise(daemon: tuple[RealtimeFaceSwapApp, TickCounter]) -> None:
    client = ControlClient.from_token_file()
    with pytest.raises(ControlError) as info:
        client.set_fallback("blur")
    assert info.value.status == 422
