"""The control API over real HTTP on a loopback port, with an in-memory daemon behind it:
every route through ControlClient, the guards (token, Host, Origin, body limits), the control
file's lifecycle and the client's "not running" answers."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon.cli import main
from faceswap_cam.daemon.control.client import (
    MAX_IMAGE_BYTES,
    NOT_RUNNING_MESSAGE,
    ControlClient,
    ControlError,
    DaemonNotRunning,
)
from faceswap_cam.daemon.control.control_file import (
    ControlFile,
    default_token_file,
    read_control_file,
    remove_control_file,
    write_control_file,
)
from faceswap_cam.daemon.control.server import ControlServer
from faceswap_cam.daemon.control.status import DaemonStatus, parse_status
from faceswap_cam.daemon.paths import CONTROL_FILE_ENV
from tests.fake_daemon import (
    FALLBACKS,
    PLAYOUTS,
    PNG_MAGIC,
    PREVIEW_URL,
    threads_stop_but_workers,
    write_png,
)
from tests.fake_daemon import InMemoryDaemon as FakeDaemon


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """conftest's check, less the shared server's pooled worker threads, which outlive a test
    by design; ``shared`` checks that they end when that server closes."""
    yield from threads_stop_but_workers()


# One server for the module (starting and stopping one costs ~0.1 s); each test gets a fresh
# fake behind it.
class Holder:
    daemon: FakeDaemon


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlServer, Holder]]:
    holder = Holder()
    holder.daemon = FakeDaemon()
    proxy = _Forwarder(holder)
    # No status snapshot: each test changes its fake behind the API's back and reads at once.
    server = ControlServer(proxy, token_file=tmp_path_factory.mktemp("run") / "control.json",
                           max_image_bytes=4096, status_max_age_s=0)
    before = set(threading.enumerate())
    server.start()
    yield server, holder
    server.close()
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        thread.join(timeout=2.0)
    assert not [t.name for t in started if t.is_alive()]


class _Forwarder:
    """Forwards every DaemonControl call to the current test's fake."""

    def __init__(self, holder: Holder) -> None:
        self._holder = holder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._holder.daemon, name)


@pytest.fixture
def server(shared: tuple[ControlServer, Holder]) -> ControlServer:
    return shared[0]


@pytest.fixture
def daemon(shared: tuple[ControlServer, Holder]) -> FakeDaemon:
    shared[1].daemon = FakeDaemon()
    return shared[1].daemon


@pytest.fixture
def client(server: ControlServer, daemon: FakeDaemon) -> ControlClient:
    return ControlClient.from_token_file(server.token_file, timeout=5.0)


def raw(server: ControlServer, method: str, path: str, *, headers: dict[str, str] | None = None,
        body: bytes | None = None, token: str | None = "default") -> tuple[int, Any, Any]:
    """One request with exactly these headers: (status, decoded JSON body, response headers)."""
    all_headers = {"Host": f"127.0.0.1:{server.port}"}
    if token == "default":
        token = server.token
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None, response.headers
    finally:
        connection.close()


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return write_png(tmp_path / "face.png", 100)


# --- every operation through the client -------------------------------------------------------


def test_status(client: ControlClient, daemon: FakeDaemon) -> None:
    daemon.publish_fps, daemon.latency_ms = float("nan"), float("inf")  # must survive JSON
    status = client.status()
    assert status["state"] == "running"
    assert status["swap"] is True
    assert status["reference"] == "alice"
    assert status["preview_url"] == PREVIEW_URL
    assert status["publish_fps"] is None and status["latency_ms"] is None
    assert parse_status(status) == daemon.status()


def test_settings(client: ControlClient, daemon: FakeDaemon) -> None:
    assert client.set_swap(False)["swap"] is False
    assert daemon.swap is False
    assert client.set_paused(True)["paused"] is True
    assert daemon.paused is True
    assert client.set_playout("live")["playout"] == "live"
    assert client.set_fallback("placeholder")["fallback"] == "placeholder"
    assert daemon.snapshot()["fallback"] == "placeholder"
    assert client.set_paused(False)["state"] == "running"


def test_references(client: ControlClient, daemon: FakeDaemon, png: Path) -> None:
    assert [r["name"] for r in client.references()] == ["alice"]
    entry = client.add_reference(png, name="bob")
    assert entry["name"] == "bob" and entry["width"] == 64
    unnamed = client.add_reference(str(png))
    assert unnamed["name"] == png.stem  # named after the file when no name is given
    library = client.select_reference("bob")
    assert {r["name"]: r["selected"] for r in library} == {
        "alice": False, "bob": True, png.stem: False}
    assert daemon.selected == "bob"
    library = client.remove_reference("alice")
    assert [r["name"] for r in library] == sorted(["bob", png.stem])
    assert client.status()["reference"] == "bob"


def test_reference_names_are_quoted(client: ControlClient, daemon: FakeDaemon,
                                    png: Path) -> None:
    client.add_reference(png, name="my face & co?")
    assert "my face & co?" in daemon.library
    client.select_reference("my face & co?")
    assert daemon.selected == "my face & co?"


def test_shutdown(client: ControlClient, daemon: FakeDaemon) -> None:
    client.shutdown()
    assert daemon.stopping.is_set()


# --- errors the daemon reports ----------------------------------------------------------------


def test_unknown_reference_is_404(client: ControlClient, daemon: FakeDaemon) -> None:
    before = daemon.snapshot()
    for call in (client.select_reference, client.remove_reference):
        with pytest.raises(ControlError) as caught:
            call("nobody")
        assert caught.value.status == 404
        assert "nobody" in caught.value.message
    assert daemon.snapshot() == before


def test_bad_mode_lists_allowed_values(client: ControlClient, daemon: FakeDaemon) -> None:
    before = daemon.snapshot()
    with pytest.raises(ControlError) as caught:
        client.set_playout("fast")
    assert caught.value.status == 422
    assert all(mode in caught.value.message for mode in PLAYOUTS)
    with pytest.raises(ControlError) as caught:
        client.set_fallback("blur")
    assert caught.value.status == 422
    assert all(mode in caught.value.message for mode in FALLBACKS)
    assert daemon.snapshot() == before


def test_bad_image_is_422_and_library_unchanged(client: ControlClient, daemon: FakeDaemon,
                                                 tmp_path: Path) -> None:
    before = daemon.snapshot()
    text = tmp_path / "notes.png"
    text.write_bytes(b"hello")
    with pytest.raises(ControlError) as caught:
        client.add_reference(text)
    assert caught.value.status == 422 and "not a PNG" in caught.value.message
    assert daemon.snapshot() == before


def test_upload_needs_an_image_body(server: ControlServer, daemon: FakeDaemon) -> None:
    before = daemon.snapshot()
    status, body, _ = raw(server, "POST", "/references",
                          headers={"Content-Type": "text/plain"}, body=PNG_MAGIC)
    assert status == 415 and "image/" in body["error"]
    status, body, _ = raw(server, "POST", "/references",
                          headers={"Content-Type": "image/png"}, body=b"")
    assert status == 400 and "empty" in body["error"]
    assert daemon.snapshot() == before


def test_daemon_bug_is_500_with_json(server: ControlServer, daemon: FakeDaemon,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(daemon, "status", broken)
    status, body, _ = raw(server, "GET", "/status")
    assert status == 500 and "boom" in body["error"]


# --- guards -----------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic dXNlcjpwYXNz", "Bearer"])
def test_token_required(server: ControlServer, daemon: FakeDaemon,
                        authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, body, response_headers = raw(server, "POST", "/swap", token=None, headers={
        "Content-Type": "application/json", **headers}, body=b'{"enabled": false}')
    assert status == 401
    assert "token" in body["error"]
    assert response_headers["WWW-Authenticate"] == "Bearer"
    assert daemon.swap is True and "set_swap" not in daemon.calls


def test_wrong_token_through_client(server: ControlServer, daemon: FakeDaemon) -> None:
    client = ControlClient(server.url, "not-the-token", timeout=5.0)
    with pytest.raises(ControlError) as caught:
        client.status()
    assert caught.value.status == 401


def test_foreign_origin_refused_even_with_token(server: ControlServer,
                                                daemon: FakeDaemon) -> None:
    for origin in ("http://evil.example", "null", f"http://evil.example:{server.port}",
                   f"https://127.0.0.1:{server.port}", "http://127.0.0.1"):
        status, body, headers = raw(server, "POST", "/swap", headers={
            "Origin": origin, "Content-Type": "application/json"}, body=b'{"enabled": false}')
        assert status == 403, origin
        assert "origin" in body["error"]
        assert not any(name.lower().startswith("access-control-") for name in headers)
    status, _, _ = raw(server, "GET", "/status", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert daemon.swap is True and "set_swap" not in daemon.calls


def test_own_origin_allowed(server: ControlServer, daemon: FakeDaemon) -> None:
    for origin in (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}"):
        status, _, headers = raw(server, "GET", "/status", headers={"Origin": origin})
        assert status == 200, origin
        assert not any(name.lower().startswith("access-control-") for name in headers)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1",
                                  "127.0.0.1:1", "192.168.1.10:{port}"])
def test_bad_host_refused(server: ControlServer, daemon: FakeDaemon, host: str) -> None:
    status, body, _ = raw(server, "POST", "/swap",
                          headers={"Host": host.format(port=server.port),
                                   "Content-Type": "application/json"},
                          body=b'{"enabled": false}')
    assert status == 403
    assert "host" in body["error"]
    assert daemon.swap is True


def test_localhost_host_allowed(server: ControlServer, daemon: FakeDaemon) -> None:
    status, _, _ = raw(server, "GET", "/status", headers={"Host": f"localhost:{server.port}"})
    assert status == 200


@pytest.mark.parametrize(("body", "status", "words"), [
    (b'{"enabled": fal', 400, "malformed JSON"),
    (b"not json at all", 400, "malformed JSON"),
    (b'{"enabled": "no"}', 422, "enabled"),
    (b'{"enabled": false, "extra": 1}', 422, "extra"),
    (b"{}", 422, "enabled"),
    (b"[]", 422, "invalid request"),
])
def test_bad_json_refused(server: ControlServer, daemon: FakeDaemon, body: bytes, status: int,
                          words: str) -> None:
    before = daemon.snapshot()
    got, answer, _ = raw(server, "POST", "/swap", body=body,
                         headers={"Content-Type": "application/json"})
    assert got == status
    assert words in answer["error"]
    assert daemon.snapshot() == before and "set_swap" not in daemon.calls


def test_declared_oversized_upload_refused_before_reading(server: ControlServer,
                                                          daemon: FakeDaemon) -> None:
    before = daemon.snapshot()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        # Headers promise 30 MB; only a few bytes follow. The answer must come anyway.
        connection.putrequest("POST", "/references?name=huge", skip_host=True)
        connection.putheader("Host", f"127.0.0.1:{server.port}")
        connection.putheader("Authorization", f"Bearer {server.token}")
        connection.putheader("Content-Type", "image/png")
        connection.putheader("Content-Length", str(30 * 1024 * 1024))
        connection.endheaders(PNG_MAGIC)
        response = connection.getresponse()
        assert response.status == 413
        assert "too large" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert daemon.snapshot() == before


def test_streamed_oversized_upload_refused(server: ControlServer, daemon: FakeDaemon) -> None:
    before = daemon.snapshot()
    # Chunked: no length declared, so the limit (4 KiB on this server) is counted as it comes.
    chunks = iter([PNG_MAGIC + b"\0" * 3000, b"\0" * 3000])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("POST", "/references?name=huge", body=chunks, encode_chunked=True,
                           headers={"Host": f"127.0.0.1:{server.port}",
                                    "Authorization": f"Bearer {server.token}",
                                    "Content-Type": "image/png",
                                    "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        assert response.status == 413
        assert "4 KiB" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert daemon.snapshot() == before


def test_oversized_json_refused(server: ControlServer, daemon: FakeDaemon) -> None:
    body = json.dumps({"enabled": False, "pad": "x" * 70_000}).encode()
    status, answer, _ = raw(server, "POST", "/swap", body=body,
                            headers={"Content-Type": "application/json"})
    assert status == 413 and "64 KiB" in answer["error"]
    assert daemon.swap is True


def test_client_refuses_oversized_file_without_sending(client: ControlClient, daemon: FakeDaemon,
                                                       tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(MAX_IMAGE_BYTES + 1)  # sparse: instant
    before = daemon.snapshot()
    with pytest.raises(ControlError) as caught:
        client.add_reference(big)
    assert caught.value.status == 413
    assert daemon.snapshot() == before


def test_unknown_route_is_json_404(server: ControlServer, daemon: FakeDaemon) -> None:
    status, body, _ = raw(server, "GET", "/nothing-here")
    assert status == 404 and body == {"error": "Not Found"}
    status, body, _ = raw(server, "GET", "/swap")
    assert status == 405 and "error" in body


def test_openapi_served_behind_token(server: ControlServer, daemon: FakeDaemon) -> None:
    status, schema, _ = raw(server, "GET", "/openapi.json")
    assert status == 200
    assert {"/status", "/references", "/references/{name}/select", "/swap", "/pause",
            "/playout", "/fallback", "/shutdown"} <= set(schema["paths"])
    status, _, _ = raw(server, "GET", "/openapi.json", token=None)
    assert status == 401
    status, _, _ = raw(server, "GET", "/docs")
    assert status == 404


# --- the control file and the server's lifecycle ----------------------------------------------


def test_control_file(server: ControlServer) -> None:
    document = json.loads(server.token_file.read_text())
    assert document == {"url": server.url, "token": server.token, "pid": os.getpid()}
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert len(server.token) >= 40
    if sys.platform != "win32":
        assert server.token_file.stat().st_mode & 0o777 == 0o600
    leftovers = [p.name for p in server.token_file.parent.iterdir() if p != server.token_file]
    assert not leftovers


def test_close_removes_file_and_is_idempotent(tmp_path: Path) -> None:
    token_file = tmp_path / "sub" / "control.json"
    sigint_before = signal.getsignal(signal.SIGINT)
    server = ControlServer(FakeDaemon(), token_file=token_file)
    server.start()
    assert signal.getsignal(signal.SIGINT) is sigint_before  # Ctrl-C stays the daemon's
    client = ControlClient.from_token_file(token_file, timeout=5.0)
    assert client.status()["swap"] is True
    server.close()
    assert not token_file.exists()
    server.close()
    with pytest.raises(DaemonNotRunning) as caught:
        client.status()  # the port is closed: connection refused
    assert str(caught.value) == NOT_RUNNING_MESSAGE
    with pytest.raises(DaemonNotRunning):
        ControlClient.from_token_file(token_file)


def test_close_leaves_a_newer_daemons_file(tmp_path: Path) -> None:
    token_file = tmp_path / "control.json"
    with ControlServer(FakeDaemon(), token_file=token_file) as server:
        newer = {"url": "http://127.0.0.1:1", "token": "someone-else", "pid": 1}
        token_file.write_text(json.dumps(newer))
        assert server.url
    assert json.loads(token_file.read_text()) == newer


def test_busy_port_fails_in_start(server: ControlServer, tmp_path: Path) -> None:
    other = ControlServer(FakeDaemon(), port=server.port, token_file=tmp_path / "c.json")
    with pytest.raises(OSError):
        other.start()
    other.close()
    assert not (tmp_path / "c.json").exists()


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ControlServer(FakeDaemon(), host="0.0.0.0", token_file=Path("unused.json"))
    for url in ("http://192.168.1.2:8000", "http://localhost.example:8000",
                "https://127.0.0.1:8000"):
        with pytest.raises(ValueError, match="loopback"):
            ControlClient(url, "token")
    for url in ("http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"):
        assert ControlClient(url, "token").url == url


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_control_file_is_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "new" / "control.json"
    write_control_file(path, ControlFile(url="http://127.0.0.1:1", token="secret", pid=7))
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_control_file(path) == ControlFile("http://127.0.0.1:1", "secret", 7)
    remove_control_file(path, "another daemon's token")
    assert path.exists()
    remove_control_file(path, "secret")
    assert not path.exists()


# --- the client when nothing runs -------------------------------------------------------------


def test_no_control_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nothing" / "control.json"
    with pytest.raises(DaemonNotRunning) as caught:
        ControlClient.from_token_file(missing)
    assert "faceswap-cam run" in str(caught.value)
    assert str(missing) in caught.value.reason
    monkeypatch.setenv(CONTROL_FILE_ENV, str(missing))
    assert default_token_file() == missing
    with pytest.raises(DaemonNotRunning):
        ControlClient.from_token_file()


def test_garbled_control_file(tmp_path: Path) -> None:
    for content in ("{not json", "[]", '{"url": "http://example.com:80", "token": "t"}'):
        path = tmp_path / "control.json"
        path.write_text(content)
        with pytest.raises(DaemonNotRunning):
            ControlClient.from_token_file(path)


@pytest.fixture
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A private XDG runtime dir and config home, and no control-file override."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.delenv(CONTROL_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return runtime, tmp_path / "config"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG layout")
def test_default_token_file_prefers_runtime_dir(user_dirs: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, config = user_dirs
    assert default_token_file() == runtime / "faceswap-cam" / "control.json"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_token_file() == config / "faceswap-cam" / "control.json"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG layout")
def test_client_finds_a_daemon_started_without_runtime_dir(
        user_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, config = user_dirs
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with ControlServer(FakeDaemon(), token_file=default_token_file()) as server:
        assert server.token_file.is_relative_to(config)
        # The tray, in a desktop session that has a runtime dir:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        assert ControlClient.from_token_file(timeout=5.0).status()["swap"] is True


def test_idle_server_does_no_work_and_still_stops_at_once(tmp_path: Path) -> None:
    # uvicorn's stock loop wakes every 0.1 s to poll for exit; ours sleeps until asked to stop,
    # so a daemon whose control API nobody calls spends no CPU on it.
    server = ControlServer(FakeDaemon(), token_file=tmp_path / "control.json")
    server.start()
    uvicorn_server = server._server
    assert uvicorn_server is not None
    ticks = 0
    on_tick = uvicorn_server.on_tick

    async def counting_tick(counter: int) -> bool:
        nonlocal ticks
        ticks += 1
        return await on_tick(counter)

    uvicorn_server.on_tick = counting_tick  # type: ignore[method-assign]
    ControlClient.from_token_file(tmp_path / "control.json", timeout=5.0).status()
    threading.Event().wait(0.35)  # long enough for uvicorn's loop to have ticked 3 times
    assert ticks <= 1  # at most the one tick that sets the headers at start
    thread = server._thread
    server.close()
    assert thread is not None and not thread.is_alive()


# --- bursts: served, not shed; past the bound, refused in JSON --------------------------------


class CountingDaemon(FakeDaemon):
    def __init__(self) -> None:
        super().__init__()
        self.status_calls = 0

    def status(self) -> DaemonStatus:
        self.status_calls += 1  # under the GIL; a count, not a lock-free protocol
        return super().status()


def test_a_burst_of_200_parallel_status_calls_is_served(tmp_path: Path) -> None:
    daemon = CountingDaemon()
    burst = 200
    with ControlServer(daemon, token_file=tmp_path / "control.json") as server:
        client = ControlClient.from_token_file(server.token_file, timeout=30.0)
        start = threading.Barrier(burst)

        def call(_: int) -> str:
            start.wait()
            return str(client.status()["state"])

        began = time.perf_counter()
        with ThreadPoolExecutor(burst) as pool:
            states = list(pool.map(call, range(burst)))
        elapsed = time.perf_counter() - began
    print(f"{burst} parallel status calls in {elapsed:.2f} s, "
          f"{daemon.status_calls} daemon status calls")
    assert states == ["running"] * burst
    assert daemon.status_calls < burst  # one snapshot serves many


class BlockingDaemon(FakeDaemon):
    """``list_references`` waits until released, so requests pile up in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waiting = threading.Semaphore(0)

    def list_references(self) -> list[dict[str, Any]]:
        self.waiting.release()
        self.release.wait(10)
        return super().list_references()


def test_requests_past_the_bound_are_refused_in_json_and_the_cli_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    daemon = BlockingDaemon()
    bound = 3
    with ControlServer(daemon, token_file=tmp_path / "control.json",
                       max_requests=bound) as server:
        client = ControlClient.from_token_file(server.token_file, timeout=10.0)
        with ThreadPoolExecutor(bound) as pool:
            held = [pool.submit(client.references) for _ in range(bound)]
            try:
                for _ in range(bound):
                    assert daemon.waiting.acquire(timeout=10)
                status, body, headers = raw(server, "GET", "/status")
                assert status == 503
                assert headers["Content-Type"] == "application/json"
                assert "busy" in body["error"] and str(bound) in body["error"]
                assert headers["Retry-After"] == "1"
                with pytest.raises(ControlError) as refused:
                    client.status()
                assert refused.value.status == 503
                assert refused.value.message == body["error"]
                monkeypatch.setenv(CONTROL_FILE_ENV, str(server.token_file))
                assert main(["status"]) == 1
                assert f"faceswap-cam: {body['error']} (HTTP 503)" in capsys.readouterr().err
            finally:
                daemon.release.set()
            assert all(len(f.result(timeout=10)) == 1 for f in held)
        assert client.status()["state"] == "running"  # served again once they are done
