"""A host on another machine: TLS with a pinned certificate, a kept token, ``engine pair``,
and the refusals (wrong token, wrong certificate, busy, a reference that names a file)."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import ssl
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.cli import main
from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.engine_host import protocol, security
from faceswap_cam.daemon.engine_host.address import (
    Address,
    AddressError,
    EngineUrl,
    parse_engine_url,
    parse_listen,
)
from faceswap_cam.daemon.engine_host.host import HostStartError, open_listener
from faceswap_cam.daemon.engine_host.launch import plan_engine
from faceswap_cam.daemon.engine_host.protocol import Error, Hello, Ok, Reference, Welcome
from faceswap_cam.daemon.engine_host.proxy import (
    EngineHostError,
    EngineHostProxy,
    open_connection,
)
from faceswap_cam.daemon.engine_host.remote import RemoteEngineHost
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp, StartError
from tests.engine_host.helpers import daemon, serving_line, status_when, wait_for


@pytest.fixture(autouse=True)
def host_and_laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's certificate folder and the laptop's pairings, private to each test (the
    host processes inherit the environment)."""
    monkeypatch.setenv(paths.ENGINE_HOST_DIR_ENV, str(tmp_path / "host"))
    monkeypatch.setenv(paths.PAIRINGS_FILE_ENV, str(tmp_path / "laptop" / "pairings.json"))


@contextmanager
def host(*flags: str, listen: str = "127.0.0.1:0") -> Iterator[tuple[EngineUrl, str]]:
    """``engine serve --engine debug FLAGS --listen LISTEN``: its URL and its pairing line."""
    with serving_line("--engine", "debug", *flags, listen=listen) as (url, line, _):
        yield url, line


def dial(url: EngineUrl, token: str | None = None) -> EngineHostProxy:
    return EngineHostProxy.connect(url, (url.token or "") if token is None else token,
                                   frame_size=None, call_timeout_s=10, open_timeout_s=10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_tls_host_keeps_its_identity_and_a_paired_daemon_swaps_through_it(
        apps: list[RealtimeFaceSwapApp], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "host"
    with host("--tls") as (url, line):
        assert url.token and url.fingerprint
        assert line.startswith("faceswap-cam engine pair 'fscam://127.0.0.1:")
        assert "fp=sha256:" in line  # readable, not percent-encoded
        assert mode(folder) == 0o700 and mode(folder / "key.pem") == 0o600
        assert (folder / "token").read_text().strip() == url.token
        assert mode(folder / "token") == 0o600
        der = ssl.PEM_cert_to_DER_cert((folder / "certificate.pem").read_text())
        assert security.fingerprint(der) == url.fingerprint

        assert main(["engine", "pair", line]) == 0  # the whole line, as printed
        out = capsys.readouterr().out
        assert f"faceswap-cam run --engine-url {url}" in out
        pairings = tmp_path / "laptop" / "pairings.json"
        assert mode(pairings) == 0o600 and url.token in pairings.read_text()

        app = daemon(apps, engine_url=str(url))  # no token, no fingerprint: the pairing's
        wait_for(lambda: app.processor.frames_swapped >= 10, 20, "swapped frames")
        status = app.status().engine_host
        assert status is not None and status.state.value == "connected"
        assert status.url == str(url)
        app.close()

        proxy = dial(url)
        try:  # the pinned connection is TLS
            assert isinstance(proxy._connection.socket, ssl.SSLSocket)
        finally:
            proxy.close()

    with host("--tls") as (again, _):
        assert (again.token, again.fingerprint) == (url.token, url.fingerprint)
    with host("--tls", "--new-token") as (revoked, _):
        assert revoked.fingerprint == url.fingerprint and revoked.token != url.token
        with pytest.raises(EngineHostError, match="refused: wrong token: pair again with the "
                           "line `engine serve` prints") as caught:
            dial(revoked, url.token)
        assert "engine pair" in caught.value.fix


def test_a_host_with_another_certificate_is_refused_and_the_camera_runs_on(
        apps: list[RealtimeFaceSwapApp], tmp_path: Path) -> None:
    other = security.host_identity(tmp_path / "another-host")
    with host("--tls") as (url, _):
        assert url.fingerprint is not None
        forged = replace(url, fingerprint=other.fingerprint)
        with pytest.raises(EngineHostError) as caught:
            dial(forged)
        message = str(caught.value)
        assert url.fingerprint in message and other.fingerprint in message
        assert "certificate changed" in message and "not your host" in message
        assert "pair again" in caught.value.fix

        security.save_pairing(forged)  # what a daemon paired with another host would hold
        app = daemon(apps, engine_url=str(url))
        wait_for(lambda: app.processor.engine_failures >= 2, 20, "two refused dials")
        before = app.ticks
        time.sleep(0.3)
        assert app.ticks - before >= 7  # the camera keeps publishing the fallback
        status = status_when(app, lambda s: s.engine_host is not None
                             and s.engine_host.state.value == "failed", 10,
                             "the failed state between dials").engine_host
        assert status is not None
        assert url.fingerprint in status.error and other.fingerprint in status.error
        assert "pair again" in status.fix
        assert app.processor.frames_swapped == 0


def test_the_certificate_is_checked_before_any_websocket_byte(tmp_path: Path) -> None:
    """An impostor that completes TLS learns nothing: not the upgrade request, not hello."""
    context = security.server_context(security.host_identity(tmp_path / "impostor"))
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def impostor() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                while chunk := tls.recv(4096):
                    received.extend(chunk)
        except OSError:
            pass  # the client hung up mid-TLS: fine, nothing was read

    thread = threading.Thread(target=impostor, name="impostor")
    thread.start()
    try:
        url = EngineUrl(Address(host="127.0.0.1", port=listener.getsockname()[1]),
                        token="the-secret", fingerprint="sha256:" + "0" * 64)
        with pytest.raises(EngineHostError, match="shows certificate sha256:"):
            open_connection(url, open_timeout=5, fingerprint=url.fingerprint)
    finally:
        thread.join(10)
        listener.close()
    assert not thread.is_alive()
    assert bytes(received) == b""


def test_refusals_over_tls_and_no_file_is_read_on_the_host(tmp_path: Path) -> None:
    face = tmp_path / "face.png"  # an image that exists on the host's disk
    cv2.imwrite(str(face), np.random.default_rng(0).integers(0, 255, (320, 256, 3), np.uint8))
    with host("--tls") as (url, _):
        with pytest.raises(EngineHostError, match="wrong token"):
            dial(url, "not-the-token")
        first = dial(url)
        try:
            with pytest.raises(EngineHostError, match="busy: another daemon is connected"):
                dial(url)
            frame = np.full((48, 64, 3), 200, np.uint8)
            assert first.process([frame] * first.first_batch).swapped
        finally:
            first.close()

        connection = open_connection(url, open_timeout=10, fingerprint=url.fingerprint)
        try:
            def send(header: protocol.Message, payload: bytes = b"") -> protocol.Message:
                connection.send(protocol.encode(header, payload))
                reply, _ = protocol.decode(connection.recv(timeout=10))
                return reply

            assert isinstance(send(Hello(protocol=protocol.PROTOCOL_VERSION,
                                         version=protocol.package_version(),
                                         token=url.token or "")), Welcome)
            for named in (str(face), face.as_uri(), "/etc/passwd"):
                refusal = send(Reference(), named.encode())
                assert isinstance(refusal, Error), named
                assert "cannot be decoded as an image" in refusal.message
            # The same file's bytes are a good reference: only what travels is read.
            assert isinstance(send(Reference(), face.read_bytes()), Ok)
        finally:
            connection.close()


def test_tls_and_plain_do_not_mix() -> None:
    with host() as (plain, _):  # a plain loopback host: a new token each start, no fp
        assert plain.fingerprint is None
        pinned = replace(plain, fingerprint="sha256:" + "0" * 64)
        with pytest.raises(EngineHostError, match="cannot set up TLS"):
            dial(pinned)
    with host("--tls") as (tls, _), pytest.raises(EngineHostError, match="cannot reach"):
        dial(replace(tls, fingerprint=None))


def test_a_non_loopback_listener_needs_tls() -> None:
    with pytest.raises(HostStartError, match="needs TLS and a token"):
        open_listener(parse_listen("0.0.0.0:0"), None)
    assert parse_listen("0.0.0.0:7861").reachable().host == socket.gethostname()


def _own_non_loopback_address() -> str | None:
    """An IPv4 address of one of this machine's interfaces other than loopback (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = array.array("B", struct.pack("256s", name.encode()[:15]))
            try:
                fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue
            address = socket.inet_ntoa(request.tobytes()[20:24])
            if not address.startswith("127."):
                return address
    return None


def test_a_host_on_this_machines_network_address_speaks_tls_only() -> None:
    address = _own_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with host(listen=f"{address}:0") as (url, _):  # no --tls: a network address forces it
        assert url.address.host == address and url.token and url.fingerprint
        proxy = dial(url)
        try:
            assert isinstance(proxy._connection.socket, ssl.SSLSocket)
            frame = np.full((48, 64, 3), 200, np.uint8)
            assert proxy.process([frame] * proxy.first_batch).swapped
        finally:
            proxy.close()


def test_engine_pair_takes_the_line_or_the_url_and_refuses_what_cannot_be_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fp = "sha256:" + "ab" * 32
    pairings = tmp_path / "laptop" / "pairings.json"
    assert main(["engine", "pair", f"fscam://gpu-box:7861?token=t1&fp={fp}"]) == 0
    # The line pasted unquoted: the shell splits it into words.
    assert main(["engine", "pair", "faceswap-cam", "engine", "pair",
                 f"'fscam://10.0.0.5:7000?token=t2&fp={fp.upper()}'"]) == 0
    found = security.find_pairing(Address(host="10.0.0.5", port=7000))
    assert found is not None and (found.token, found.fingerprint) == ("t2", fp)
    assert mode(pairings) == 0o600
    capsys.readouterr()
    for line, words in [
        ("fscam://gpu-box:7861?token=t1", "no certificate fingerprint"),
        (f"fscam://gpu-box:7861?fp={fp}", "carries no token"),
        ("fscam://gpu-box:7861?token=t1&fp=sha256:00", "is not a certificate fingerprint"),
        ("http://gpu-box:7861", "not an engine host URL"),
    ]:
        assert main(["engine", "pair", line]) == 2, line
        assert words in capsys.readouterr().err
    with pytest.raises(AddressError, match="certificate fingerprint"):
        parse_engine_url("fscam://h:1?token=x&fp=md5:00")


def test_run_uses_the_stored_pairing_and_a_fingerprint_in_the_url_wins() -> None:
    stored, given = "sha256:" + "11" * 32, "sha256:" + "22" * 32
    security.save_pairing(parse_engine_url(f"fscam://gpu-box:7861?token=kept&fp={stored}"))
    for url, expected in [("fscam://gpu-box:7861", stored),
                          (f"fscam://gpu-box:7861?fp={given}", given)]:
        name, link = plan_engine(Settings(engine_url=url), {})
        assert isinstance(link, RemoteEngineHost) and name == "remote"
        assert link.url.fingerprint == expected
        assert "token" not in str(link.url) and "fp" not in str(link.url)


def test_a_host_elsewhere_without_a_fingerprint_is_refused_at_start() -> None:
    with pytest.raises(StartError, match="no certificate fingerprint for the engine host"):
        RealtimeFaceSwapApp(Settings(source="demo", sinks=["null"], control_api=False,
                                     engine_url="fscam://gpu-box:7861?token=abc"))


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "host-keys"
    identity = security.host_identity(folder)
    assert security.host_identity(folder) == identity  # kept, not remade
    os.chmod(identity.key, 0o644)
    with pytest.raises(security.SecurityError, match="chmod 600"):
        security.host_identity(folder)
