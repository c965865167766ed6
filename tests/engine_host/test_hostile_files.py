"""What a probe of the host's identity, the pairings and the token file found: files another
user planted and we trusted, two first starts making two identities, tracebacks for damaged
files, ``localhost`` trusted without looking, token files that hang, and URLs echoed with their
token or stored changed."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.cli import main
from faceswap_cam.daemon.config import ConfigError, Settings, load_settings
from faceswap_cam.daemon.engine_host import address as address_module
from faceswap_cam.daemon.engine_host import security
from faceswap_cam.daemon.engine_host.address import Address, AddressError, parse_engine_url
from faceswap_cam.daemon.engine_host.host import HostStartError, open_listener
from faceswap_cam.daemon.engine_host.launch import plan_engine
from faceswap_cam.daemon.engine_host.proxy import EngineHostError, EngineHostProxy
from faceswap_cam.models.engine import EngineError
from tests.engine_host.helpers import serving

FP = "sha256:" + "ab" * 32
AS_ROOT = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                             reason="giving a file to another user needs root")
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.fixture(autouse=True)
def laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pairings = tmp_path / "laptop" / "pairings.json"
    monkeypatch.setenv(paths.PAIRINGS_FILE_ENV, str(pairings))
    return pairings


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the host's identity ---------------------------------------------------------------------


@POSIX
def test_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "host"
    folder.mkdir()
    folder.chmod(0o777)  # anyone could have put a key of theirs in it
    with pytest.raises(security.SecurityError, match=r"changed by other users.*chmod go-w"):
        security.host_identity(folder)


@POSIX
@AS_ROOT
@pytest.mark.parametrize("name", [security.CERTIFICATE_FILE, security.KEY_FILE,
                                  security.TOKEN_FILE])
def test_files_planted_by_another_user_are_refused(tmp_path: Path, name: str) -> None:
    # Another user's key, certificate and token: the host served them and printed their
    # fingerprint, and whoever holds that key could pose as the host.
    folder = tmp_path / "host"
    security.host_identity(folder)
    os.chown(folder / name, 12345, 12345)
    with pytest.raises(security.SecurityError, match="belongs to another user") as refused:
        security.host_identity(folder)
    assert "is damaged" not in str(refused.value)


@POSIX
def test_a_key_others_can_read_is_fixed_with_chmod_not_a_new_identity(tmp_path: Path) -> None:
    folder = tmp_path / "host"
    security.host_identity(folder)
    (folder / security.KEY_FILE).chmod(0o644)
    with pytest.raises(security.SecurityError, match="chmod 600") as refused:
        security.host_identity(folder)
    assert "is damaged" not in str(refused.value) and "delete" not in str(refused.value)


@POSIX
def test_folders_made_under_an_open_umask_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "home" / ".config" / "faceswap-cam" / "engine-host"
    with umask(0):
        security.host_identity(folder)
    for made in (folder, folder.parent, folder.parent.parent, folder.parent.parent.parent):
        assert mode(made) == 0o700, made


def test_hosts_starting_at_once_make_one_identity(tmp_path: Path) -> None:
    # Each made a key and a token: the files left did not match each other (16 of 40 tries),
    # and one host printed a pairing line for what it did not serve.
    for attempt in range(6):
        folder = tmp_path / f"fresh-{attempt}"
        start = threading.Barrier(4)

        def first_start(folder: Path = folder, start: threading.Barrier = start) \
                -> security.HostIdentity:
            start.wait()
            return security.host_identity(folder)

        with ThreadPoolExecutor(4) as pool:
            identities = list(pool.map(lambda _: first_start(), range(4)))
        assert len({(i.fingerprint, i.token) for i in identities}) == 1
        security.server_context(identities[0])  # key and certificate belong together
        assert security.host_identity(folder) == identities[0]


@pytest.mark.parametrize(("damage", "words"), [
    (lambda f: (f / "certificate.pem").write_text(
        (f / "certificate.pem").read_text()[:200]), "certificate .* is damaged"),
    (lambda f: (f / "certificate.pem").write_text(""), "certificate .* is damaged"),
    (lambda f: (f / "certificate.pem").write_bytes("é".encode() * 40), "is damaged"),
    (lambda f: (f / "token").write_bytes(b"\xff\xfe token"), "token .* is damaged.*new-token"),
])
def test_damaged_files_say_what_to_do(tmp_path: Path, damage: object, words: str) -> None:
    folder = tmp_path / "host"
    security.host_identity(folder)
    damage(folder)  # type: ignore[operator]
    with pytest.raises(security.SecurityError, match=words):
        security.host_identity(folder)


@pytest.fixture
def short_pipe_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "PIPE_WAIT_S", 0.5)


@POSIX
@pytest.mark.usefixtures("short_pipe_wait")
def test_a_token_that_is_a_fifo_nobody_writes_to_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "host"
    security.host_identity(folder)
    (folder / "token").unlink()
    os.mkfifo(folder / "token", 0o600)
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(security.host_identity, folder)
        try:
            with pytest.raises(security.SecurityError, match=r"gave no token within 0\.5 s"):
                reading.result(timeout=10)
        finally:
            if not reading.done():  # the old code: let its open() go
                os.close(os.open(folder / "token", os.O_WRONLY | os.O_NONBLOCK))


def test_the_host_says_a_damaged_certificate_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "host"
    security.host_identity(folder)
    (folder / "certificate.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    monkeypatch.setenv(paths.ENGINE_HOST_DIR_ENV, str(folder))
    assert main(["engine", "serve", "--engine", "debug", "--tls", "--listen",
                 "127.0.0.1:0"]) != 0
    err = capsys.readouterr().err
    assert "is damaged" in err and f"delete {folder}" in err and "Traceback" not in err


# --- loopback ----------------------------------------------------------------------------------


def test_localhost_is_loopback_only_when_it_resolves_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert Address(host="localhost", port=1).is_loopback

    def elsewhere(*_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.2", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", elsewhere)  # a hosts file pointing it away
    assert not Address(host="localhost", port=1).is_loopback
    with pytest.raises(HostStartError, match="needs TLS"):
        open_listener(Address(host="localhost", port=0), None)


def test_a_plain_listener_that_binds_off_loopback_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The name is resolved again by the bind; what was bound is what counts.
    monkeypatch.setattr(address_module.Address, "is_loopback", property(lambda _: True))
    with pytest.raises(HostStartError, match=r"it is 0\.0\.0\.0 here, not loopback"):
        open_listener(Address(host="0.0.0.0", port=0), None)


# --- the daemon's token file ---------------------------------------------------------------


def token_file(tmp_path: Path, data: bytes, file_mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(data)
    path.chmod(file_mode)
    return path


def plan_with(path: Path) -> None:
    plan_engine(Settings(engine_url=f"fscam://gpu-box:7861?fp={FP}", engine_token_file=path),
                {})


@pytest.mark.parametrize(("data", "file_mode", "words"), [
    (b"\xff\xfe\n", 0o600, "token .*/token is damaged: it is not text"),
    (b"x" * 600, 0o600, "longer than 512 characters"),
    (b"two words\n", 0o600, "spaces or characters"),
    (b"t0ken\n", 0o644, "read by other users .*chmod 600"),
])
def test_a_token_file_that_cannot_be_a_token_is_refused(
        tmp_path: Path, data: bytes, file_mode: int, words: str) -> None:
    if os.name != "posix" and file_mode != 0o600:
        pytest.skip("POSIX permissions")
    with pytest.raises(EngineError, match=words):
        plan_with(token_file(tmp_path, data, file_mode))


@POSIX
@pytest.mark.usefixtures("short_pipe_wait")
def test_a_token_file_that_is_not_a_file_is_refused_at_once(tmp_path: Path) -> None:
    # A FIFO hung the start; /dev/zero grew the daemon 400 MB a second.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for path, words in ((fifo, r"gave no token within 0\.5 s"),
                        (Path("/dev/zero"), "not a regular file")):
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            planning = pool.submit(plan_with, path)
            try:
                with pytest.raises(EngineError, match=words):
                    planning.result(timeout=10)
            finally:
                if path == fifo and not planning.done():
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert time.monotonic() - started < 5


@POSIX
def test_a_token_from_a_pipe_is_read(tmp_path: Path) -> None:
    # --engine-token-file <(pass show gpu-box): a pipe its writer fills.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write("s3cret-Token_1\n")

    with ThreadPoolExecutor(1) as pool:
        pool.submit(write)
        assert security.read_token_file(fifo) == "s3cret-Token_1"


def test_a_token_too_long_for_hello_fails_at_once_saying_so() -> None:
    # It failed as the host's "no hello within 10 s", retried for good.
    with serving("--engine", "debug") as (url, _):
        started = time.monotonic()
        with pytest.raises(EngineHostError, match="cannot say hello"):
            EngineHostProxy.connect(url, "x" * 600, frame_size=None, call_timeout_s=5)
        assert time.monotonic() - started < 5


# --- URLs and pairings ---------------------------------------------------------------------


@pytest.mark.parametrize(("url", "words"), [
    (f"fscam://gpu-box:0?token=t&fp={FP}", "port must be 1..65535"),
    (f"fscam://gpu-box:99999?token=t&fp={FP}", "port must be 1..65535"),
    (f"fscam://user:pw@gpu-box:7861?token=t&fp={FP}", "has a user name"),
    (f"fscam://gpu-box:7861?token=a\nb&fp={FP}", "spaces or control characters"),
    (f"fscam://gpu-box:7861?token=a%0Ab&fp={FP}", "spaces or characters"),
    (f"fscam://gpu-box:7861?token=a%00b&fp={FP}", "spaces or characters"),
    (f"fscam://a$(id)b:7861?token=t&fp={FP}", "not a host name"),
    (f"fscam://..%2f..%2fetc:7861?token=t&fp={FP}", "not a host name"),
])
def test_urls_a_host_never_prints_are_refused_not_changed(url: str, words: str) -> None:
    with pytest.raises(AddressError, match=words):
        parse_engine_url(url)


@pytest.mark.parametrize("host", ["gpu_box", "gpu-box.lan.", "[::1]", "[fd00::2]",
                                  "[fe80::1%25eth0]", "10.0.0.5"])
def test_every_name_a_host_prints_is_taken(host: str) -> None:
    # A wildcard host prints socket.gethostname(): "_" on Windows, a trailing dot.
    assert parse_engine_url(f"fscam://{host}:7861?token=t&fp={FP}").address.port == 7861


@POSIX
def test_pairings_may_be_kept_in_a_sticky_folder(tmp_path: Path) -> None:
    sticky = tmp_path / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: nobody can replace what another made there
    file = sticky / "pairings.json"
    security.save_pairing(parse_engine_url(f"fscam://gpu-box:7861?token=t&fp={FP}"), file)
    found = security.find_pairing(Address(host="gpu-box", port=7861), file)
    assert found is not None and found.token == "t"


def test_a_refused_url_does_not_show_its_token(tmp_path: Path) -> None:
    with pytest.raises(AddressError) as refused:
        parse_engine_url("fscam://192.0.2.77:99999?token=SECRET2")
    assert "SECRET2" not in str(refused.value)
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(ConfigError) as invalid:
        load_settings(cli={"engine_url": "192.0.2.77:7861?token=SECRET3"},
                      config_path=tmp_path / "empty.toml", environ={})
    assert "SECRET3" not in str(invalid.value) and "token=..." in str(invalid.value)


def test_pairings_made_at_once_are_all_kept(laptop: Path) -> None:
    def pair(number: int) -> None:
        security.save_pairing(parse_engine_url(f"fscam://10.0.0.{number}:7861?token=t{number}"
                                               f"&fp={FP}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pair, range(1, 9)))
    for number in range(1, 9):
        found = security.find_pairing(Address(host=f"10.0.0.{number}", port=7861))
        assert found is not None and found.token == f"t{number}"


@POSIX
def test_a_pairings_file_others_can_read_is_fixed_with_chmod_not_deleted(laptop: Path) -> None:
    security.save_pairing(parse_engine_url(f"fscam://gpu-box:7861?token=t&fp={FP}"))
    laptop.chmod(0o644)
    with pytest.raises(security.SecurityError) as refused:
        security.find_pairing(Address(host="gpu-box", port=7861))
    assert "chmod 600" in str(refused.value) and "delete" not in str(refused.value)


@POSIX
def test_pairings_in_a_folder_others_can_write_are_refused(laptop: Path) -> None:
    security.save_pairing(parse_engine_url(f"fscam://gpu-box:7861?token=t&fp={FP}"))
    laptop.parent.chmod(0o777)  # anyone could swap the file for one with their fingerprint
    with pytest.raises(security.SecurityError, match="changed by other users"):
        security.find_pairing(Address(host="gpu-box", port=7861))
