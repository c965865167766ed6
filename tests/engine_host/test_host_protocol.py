"""A real engine host process: what it refuses, and how frames cross to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from faceswap_cam.daemon.engine_host import protocol
from faceswap_cam.daemon.engine_host.address import EngineUrl
from faceswap_cam.daemon.engine_host.child import ChildEngineHost
from faceswap_cam.daemon.engine_host.protocol import Error, Hello, Welcome
from faceswap_cam.daemon.engine_host.proxy import EngineHostError, EngineHostProxy
from faceswap_cam.models.engine import EngineError, EngineLost
from tests.engine_host.helpers import serving, wait_for


def raw(url: EngineUrl) -> object:
    return connect(url.address.websocket_uri(), max_size=None, compression=None, proxy=None,
                   open_timeout=10, close_timeout=2)


def hello(url: EngineUrl, token: str | None = None) -> bytes:
    return protocol.encode(Hello(protocol=protocol.PROTOCOL_VERSION,
                                 version=protocol.package_version(),
                                 token=url.token if token is None else token))


def answer(connection: object) -> protocol.Message:
    header, _ = protocol.decode(connection.recv(timeout=10))  # type: ignore[attr-defined]
    return header


def closed(connection: object) -> int | None:
    """The close code once the host has closed the connection."""
    with pytest.raises(ConnectionClosed) as caught:
        connection.recv(timeout=10)  # type: ignore[attr-defined]
    return None if caught.value.rcvd is None else caught.value.rcvd.code


def works(url: EngineUrl) -> None:
    """A well-behaved client still gets its batch swapped (the host kept serving)."""
    proxy = EngineHostProxy.connect(url, url.token or "", frame_size=None, call_timeout_s=10)
    try:
        frame = np.full((48, 64, 3), 200, np.uint8)
        result = proxy.process([frame] * proxy.first_batch)
        assert result.swapped
        assert abs(int(result.frames[0].mean()) - 55) <= 2  # inverted, through JPEG
    finally:
        proxy.close()


def test_refusals_leave_the_host_serving() -> None:
    with serving("--engine", "debug") as (url, process):
        # Malformed: bytes that are no message.
        with raw(url) as bad:  # type: ignore[attr-defined]
            bad.send(b"\x00\x00\xff\xffnot json")
            refusal = answer(bad)
            assert isinstance(refusal, Error) and "header length" in refusal.message
            assert closed(bad) == 1002
        # Malformed: a header of the wrong shape after a good hello.
        with raw(url) as bad:  # type: ignore[attr-defined]
            bad.send(hello(url))
            assert isinstance(answer(bad), Welcome)
            forged = b'{"type": "process", "count": 0, "rm": "/etc/passwd"}'
            bad.send(len(forged).to_bytes(4, "big") + forged)
            refusal = answer(bad)
            assert isinstance(refusal, Error) and "malformed header" in refusal.message
            assert closed(bad) == 1002
        # Oversized: refused by the transport before it is read into memory.
        with raw(url) as big:  # type: ignore[attr-defined]
            big.send(hello(url))
            assert isinstance(answer(big), Welcome)
            with pytest.raises(ConnectionClosed) as caught:  # on the send or the recv
                big.send(b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1))
                big.recv(timeout=10)
            # 1009 "message too big", unless the host hung up while we were still sending.
            assert caught.value.rcvd is None or caught.value.rcvd.code == 1009
        # A wrong token.
        with raw(url) as stranger:  # type: ignore[attr-defined]
            stranger.send(hello(url, token="guess"))
            refusal = answer(stranger)
            assert isinstance(refusal, Error) and "wrong token" in refusal.message
            assert closed(stranger) == 1008
        works(url)
        assert process.poll() is None


def test_a_second_daemon_is_told_the_host_is_busy() -> None:
    with serving("--engine", "debug") as (url, _):
        first = EngineHostProxy.connect(url, url.token or "", frame_size=None, call_timeout_s=10)
        try:
            with pytest.raises(EngineHostError, match="busy: another daemon is connected"):
                EngineHostProxy.connect(url, url.token or "", frame_size=None, call_timeout_s=10)
        finally:
            first.close()
        works(url)  # free again once the first has gone


def test_a_host_of_another_protocol_version_is_refused_naming_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with serving("--engine", "debug") as (url, _):
        monkeypatch.setattr(protocol, "PROTOCOL_VERSION", protocol.PROTOCOL_VERSION + 1)
        with pytest.raises(EngineHostError) as caught:
            EngineHostProxy.connect(url, url.token or "", frame_size=None, call_timeout_s=10)
        message = str(caught.value)
        assert "protocol version mismatch" in message
        assert f"protocol {protocol.PROTOCOL_VERSION - 1}" in message  # the host's
        assert f"protocol {protocol.PROTOCOL_VERSION}" in message  # this daemon's
        assert protocol.package_version() in message


def test_a_bad_reference_is_refused_and_the_connection_stays() -> None:
    with serving("--engine", "debug") as (url, _):
        proxy = EngineHostProxy.connect(url, url.token or "", frame_size=None,
                                        call_timeout_s=10)
        try:
            with pytest.raises(EngineError, match="too small") as refused:
                proxy.set_reference(np.zeros((8, 8, 3), np.uint8))
            # A verdict on the image, not a lost host: the daemon keeps its engine.
            assert not isinstance(refused.value, EngineLost)
            proxy.set_reference(np.zeros((128, 96, 3), np.uint8))
            frame = np.zeros((48, 64, 3), np.uint8)
            assert proxy.process([frame] * proxy.first_batch).swapped
        finally:
            proxy.close()


def test_a_host_killed_before_a_reference_reads_as_lost_not_as_a_refusal() -> None:
    with serving("--engine", "debug") as (url, process):
        proxy = EngineHostProxy.connect(url, url.token or "", frame_size=None,
                                        call_timeout_s=10)
        try:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            with pytest.raises(EngineLost, match=r"closed the connection|broke"):
                proxy.set_reference(np.zeros((128, 96, 3), np.uint8))
        finally:
            proxy.close()


def test_local_frames_go_through_shared_memory_not_the_socket() -> None:
    host = ChildEngineHost("debug", {"delay_ms": 0}, frame_size=(1280, 720),
                           call_timeout_s=10)
    try:
        proxy = host.connect()
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (720, 1280, 3), np.uint8)
                  for _ in range(proxy.first_batch)]
        result = proxy.process(frames)
        assert result.swapped
        for out, frame in zip(result.frames, frames, strict=True):
            assert np.array_equal(out, 255 - frame)  # exact: no compression locally
        # A 720p batch is ~14 MB of pixels; only the headers crossed the socket.
        assert proxy.bytes_sent < 1024 and proxy.bytes_received < 1024
        proxy.close()
    finally:
        host.close()


def test_a_client_keeps_its_frames_and_mapping_when_the_host_is_killed() -> None:
    host = ChildEngineHost("debug", {"delay_ms": 0}, frame_size=(320, 240), call_timeout_s=10)
    try:
        proxy = host.connect()
        frame = np.full((240, 320, 3), 7, np.uint8)
        swapped = proxy.process([frame] * proxy.first_batch).frames
        assert host.pid is not None
        os.kill(host.pid, signal.SIGKILL)
        with pytest.raises(EngineHostError):
            proxy.process([frame] * proxy.first_batch)
        proxy.close()  # unmaps what the dead host made, with no view of it left
        assert all(int(out.min()) == 248 for out in swapped)  # still readable, still ours
    finally:
        host.close()


def test_sigterm_closes_the_engine_and_removes_the_socket(tmp_path: Path) -> None:
    """uvicorn re-raises SIGTERM with the default action once it stops serving; the host must
    still unwind: engine closed, Unix socket removed, exit 0 (not killed by the signal). A
    daemon's child host (``--exit-with-parent``) then ends at once, without the interpreter's
    teardown: the seconds of tearing torch and diffusers down would be spent while its daemon
    waits (3 s, then SIGKILL). An exit hook of the interpreter's marks a teardown."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "torn-down"
    (hooks / "sitecustomize.py").write_text(
        "import atexit, pathlib\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n")
    socket_path = tmp_path / "engine.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for child in (False, True):
        flags = ["--exit-with-parent", str(os.getpid())] if child else ["--log-level", "INFO"]
        process = subprocess.Popen(
            [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve", "--engine",
             "debug", "--listen", f"unix:{socket_path}", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert process.stdout is not None
        assert process.stdout.readline()  # the pairing line: serving
        assert socket_path.exists()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert not socket_path.exists()
        # A host a person started ends as any program does; a daemon's child at once.
        assert marker.exists() is not child
        marker.unlink(missing_ok=True)


def test_an_interrupted_call_is_not_a_failure_of_the_host() -> None:
    """A daemon that stops (or gives up on a call) interrupts it: the host answers that it was
    interrupted, not that it failed, so the daemon does not report the host as stopped after
    a failure."""
    import concurrent.futures

    from faceswap_cam.daemon.engine_host.proxy import EngineHostInterrupted
    from faceswap_cam.models.engine import EngineInterrupted

    closed_with: list[tuple[bool, str]] = []
    with serving("--engine", "debug", "--engine-delay-ms", "20000") as (url, _):
        proxy = EngineHostProxy.connect(
            url, url.token or "", frame_size=None, call_timeout_s=60,
            on_close=lambda hung, failure: closed_with.append((hung, failure)))
        try:
            frame = np.full((48, 64, 3), 200, np.uint8)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                call = pool.submit(proxy.process, [frame] * proxy.first_batch)
                wait_for(lambda: proxy._in_flight, 20, "the call on its way")
                proxy.interrupt()
                with pytest.raises(EngineHostInterrupted, match="interrupted") as caught:
                    call.result(timeout=20)
            assert isinstance(caught.value, EngineInterrupted)
        finally:
            proxy.close()
    assert closed_with == [(False, "")]  # no failure to report
