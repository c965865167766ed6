"""The CLI against a stale control file, the `badge` and `mic` commands, and messages the CLI
words itself.

A control file outlives a daemon killed outright; by then another server may own its port. The
client must check that the recorded process lives and that the server says it is our daemon,
before the token goes anywhere.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from faceswap_cam.daemon.cli import main
from faceswap_cam.daemon.control.client import (
    IDENTITY_PATH,
    SERVICE_NAME,
    ControlClient,
    DaemonNotRunning,
)
from faceswap_cam.daemon.control.control_file import (
    ControlFile,
    default_token_file,
    write_control_file,
)
from faceswap_cam.daemon.control.server import ControlServer
from tests.fake_daemon import InMemoryDaemon, threads_stop_but_workers, write_png


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    yield from threads_stop_but_workers()


class OtherServer(http.server.ThreadingHTTPServer):
    """Some other program's web server, on the port a dead daemon had: HTML for everything."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                server.paths.append(self.path)
                server.authorizations.append(self.headers.get("Authorization") or "")
                body = b"<html><body><h1>Router admin</h1></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def other_server() -> Iterator[OtherServer]:
    server = OtherServer()
    thread = threading.Thread(target=server.serve_forever, name="other-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def daemon() -> Iterator[tuple[InMemoryDaemon, ControlServer]]:
    fake = InMemoryDaemon()
    server = ControlServer(fake, token_file=default_token_file())
    server.start()
    try:
        yield fake, server
    finally:
        server.close()


@pytest.mark.parametrize("pid", ["alive", "dead", "unrecorded"])
def test_a_stale_file_never_sends_the_token_to_another_server(
        other_server: OtherServer, pid: str, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = {"alive": os.getpid(), "dead": dead_pid(), "unrecorded": None}[pid]
    write_control_file(default_token_file(),
                       ControlFile(url=other_server.url, token="our-secret", pid=recorded))
    assert main(["status"]) == 3
    out, err = capsys.readouterr()
    assert "FaceSwap Cam is not running" in err
    assert "Router admin" not in out + err
    assert other_server.authorizations == [""] * len(other_server.paths)
    if pid == "dead":
        assert other_server.paths == []  # a dead writer: not even asked who it is

    with pytest.raises(DaemonNotRunning) as caught:
        ControlClient.from_token_file(default_token_file(), timeout=5.0)
    assert "stale" in caught.value.reason


def test_another_daemon_on_the_port_is_not_the_one_that_wrote_the_file(
        daemon: tuple[InMemoryDaemon, ControlServer]) -> None:
    _, server = daemon
    write_control_file(default_token_file(),
                       ControlFile(url=server.url, token=server.token, pid=dead_pid()))
    with pytest.raises(DaemonNotRunning, match="not running"):
        ControlClient.from_token_file(default_token_file(), timeout=5.0)
    # Alive, but not the process that answers there.
    write_control_file(default_token_file(),
                       ControlFile(url=server.url, token=server.token, pid=os.getppid()))
    with pytest.raises(DaemonNotRunning) as caught:
        ControlClient.from_token_file(default_token_file(), timeout=5.0)
    assert f"PID {os.getpid()}" in caught.value.reason


def test_identity_is_served_without_the_token_and_only_to_local_pages(
        daemon: tuple[InMemoryDaemon, ControlServer]) -> None:
    _, server = daemon
    with urllib.request.urlopen(server.url + IDENTITY_PATH, timeout=5) as response:
        assert json.loads(response.read()) == {"service": SERVICE_NAME, "pid": os.getpid()}
    foreign = urllib.request.Request(server.url + IDENTITY_PATH,
                                     headers={"Origin": "https://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(foreign, timeout=5)
    assert refused.value.code == 403
    # Everything else still needs the token.
    with pytest.raises(urllib.error.HTTPError) as unauthorised:
        urllib.request.urlopen(server.url + "/status", timeout=5)
    assert unauthorised.value.code == 401
    # The file the daemon wrote passes the check.
    assert ControlClient.from_token_file(timeout=5.0).status()["swap"] is True


def test_badge_command(daemon: tuple[InMemoryDaemon, ControlServer],
                       capsys: pytest.CaptureFixture[str]) -> None:
    fake, _ = daemon
    assert main(["badge", "on"]) == 0
    assert fake.status().ai_badge is True
    assert "AI altered" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "AI badge   on" in capsys.readouterr().out
    assert main(["badge", "off"]) == 0
    assert fake.status().ai_badge is False
    assert ControlClient.from_token_file(timeout=5.0).status()["ai_badge"] is False


def test_mic_command(daemon: tuple[InMemoryDaemon, ControlServer],
                     capsys: pytest.CaptureFixture[str]) -> None:
    fake, _ = daemon
    assert main(["mic", "on"]) == 0
    assert fake.status().mic is not None
    assert 'pick "FaceSwap Mic" in the call app' in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "mic        running" in capsys.readouterr().out
    assert main(["mic", "off"]) == 0
    assert fake.status().mic is None
    assert "off (faceswap-cam mic on)" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["use", "remove"])
def test_a_missing_reference_is_named_with_the_way_to_list_them(
        daemon: tuple[InMemoryDaemon, ControlServer], action: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["references", action, "ghost"]) == 1
    err = capsys.readouterr().err
    assert "no reference named ghost; `faceswap-cam references` lists them" in err
    assert "HTTP 404" not in err


def test_an_unchecked_reference_says_why(daemon: tuple[InMemoryDaemon, ControlServer],
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake, _ = daemon
    image = write_png(tmp_path / "bob.png", 16)
    assert main(["references", "add", str(image)]) == 0
    assert "not checked" not in capsys.readouterr().out
    fake.person_check_skipped = "the person detector's weights are not downloaded"
    image = write_png(tmp_path / "carol.png", 16)
    assert main(["references", "add", str(image)]) == 0
    out = capsys.readouterr().out
    assert "added carol" in out
    assert ("note: not checked for exactly one person: the person detector's weights are not "
            "downloaded") in out
