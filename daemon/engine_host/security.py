"""An engine host's identity (certificate, key, token) and the pairings a daemon keeps.

A host that other machines reach speaks TLS with a self-signed certificate made on its first
start and kept, with its key and its token, in :func:`paths.engine_host_dir` (key and token
0600). Its pairing line carries the token and the certificate's SHA-256 fingerprint;
``faceswap-cam engine pair LINE`` keeps both on the laptop (:func:`paths.pairings_file`,
0600). The daemon pins the certificate SSH-style: no certificate authority is asked, the TLS
handshake is finished and the fingerprint compared *before* a byte of WebSocket, so a token
never reaches a host that is not the paired one. ``--new-token`` revokes every pairing; a new
certificate (its folder deleted) makes every daemon refuse the host until paired again.

What a client can reach on the host, and why it is not a file:

- The network gives the host WebSocket binary messages only. Each header is validated by a
  pydantic model with ``extra="forbid"`` (``protocol.py``) whose fields are numbers, a
  version string, the token and a codec out of {"shm", "jpeg"}: no field names a path.
- Payloads are decoded in memory: the reference from its bytes (``decode_reference`` is given
  ``bytes``, never a ``Path``, so a payload that spells a path is refused as an image), frames
  with ``cv2.imdecode``. Results go back on the socket, nowhere else.
- Shared memory is made by the host under a name it picks, and only on its Unix socket
  (the local child, the same user); a client never names a segment or a file to open.
- Everything the host reads from disk (weights, this folder, engine options) is named on the
  host's own command line or config before it listens, never by a message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import select
import ssl
import stat
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.engine_host.address import (
    MAX_TOKEN_CHARS,
    Address,
    AddressError,
    EngineUrl,
    check_token,
    parse_engine_url,
    parse_pairing_line,
)

logger = logging.getLogger(__name__)

CERTIFICATE_FILE = "certificate.pem"
KEY_FILE = "key.pem"
TOKEN_FILE = "token"
#: Taken while the identity is made or read, so two hosts starting at once make one.
LOCK_FILE = ".lock"
#: How long a token given as a pipe may take to come.
PIPE_WAIT_S = 5.0
#: Pinned, not checked against a date: long enough never to be in the way.
CERTIFICATE_DAYS = 3650
PAIRINGS_VERSION = 1


class SecurityError(ValueError):
    """A certificate, token or pairing that cannot be used; the message says what to do."""


def fingerprint(der: bytes) -> str:
    """The pinned form of a certificate: ``sha256:`` and the hex digest of its DER bytes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


# --- the host's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class HostIdentity:
    """What a TLS host presents (certificate and key files) and the token it asks for."""

    certificate: Path
    key: Path
    token: str
    fingerprint: str


def host_identity(folder: Path | None = None, *, new_token: bool = False) -> HostIdentity:
    """The host's certificate, key and token from ``folder``, made on first use and kept;
    ``new_token`` replaces the token (every daemon paired before must pair again)."""
    folder = folder or paths.engine_host_dir()
    _private_folder(folder)
    certificate, key, token_file = (folder / CERTIFICATE_FILE, folder / KEY_FILE,
                                    folder / TOKEN_FILE)
    remake = f"delete {folder} to make a new one (every daemon then pairs again)"
    # Two hosts started at once on a fresh folder each made a key and a token: the files
    # left did not match, and one host printed a pairing line for what it did not serve.
    with paths.file_lock(folder / LOCK_FILE):
        if not certificate.exists() and not key.exists():
            _make_certificate(certificate, key)
            logger.info("made a new certificate for this engine host in %s", folder)
        try:
            _check_private(key)
            _check_private(certificate, secret=False)
            der = _certificate_der(certificate)
        except OSError as exc:
            raise SecurityError(f"cannot read the engine host's certificate in {folder}: "
                                f"{exc.strerror or exc}; {remake}") from exc
        except SecurityError:
            raise  # its own fix (chmod, an owner), not a new identity
        except ValueError as exc:  # not PEM, or not ASCII
            raise SecurityError(f"the engine host's certificate {certificate} is damaged "
                                f"({exc}); {remake}") from exc
        token = "" if new_token else _read_token(token_file)
        if not token:
            token = secrets.token_urlsafe(32)
            paths.atomic_write(token_file, (token + "\n").encode(), mode=0o600)
    return HostIdentity(certificate, key, token, fingerprint(der))


def server_context(identity: HostIdentity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(identity.certificate, identity.key)
    except (ssl.SSLError, OSError) as exc:
        folder = identity.certificate.parent
        raise SecurityError(f"the engine host's certificate and key in {folder} do not load "
                            f"({exc}); delete {folder} to make new ones (every daemon then "
                            "pairs again)") from exc
    return context


def client_context() -> ssl.SSLContext:
    """TLS without a certificate authority: the caller compares the pinned fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _make_certificate(certificate: Path, key_file: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faceswap-cam engine host")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    # The key first: a certificate on disk always has its key beside it.
    paths.atomic_write(key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), mode=0o600)
    paths.atomic_write(certificate, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _certificate_der(certificate: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(certificate.read_text(encoding="ascii"))


def _read_token(token_file: Path) -> str:
    try:
        return read_token_file(token_file)
    except FileNotFoundError:
        return ""
    except SecurityError as exc:
        raise SecurityError(f"{exc}; or start with --new-token to make a new one (every "
                            "daemon then pairs again)") from exc


def read_token_file(path: Path) -> str:
    """A token kept in ``path``: a private regular file of this user, one line of printable
    ASCII. Raises ``FileNotFoundError`` when there is none, ``SecurityError`` for the rest."""
    try:
        _check_private(path, pipe=True)
        data = _read_bounded(path, MAX_TOKEN_CHARS + 2)  # the token and a line end
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecurityError(f"cannot read the token {path}: {exc.strerror or exc}") from exc
    try:
        return check_token(data.decode("ascii").strip(), str(path))
    except UnicodeDecodeError:
        raise SecurityError(f"the token {path} is damaged: it is not text") from None
    except AddressError as exc:
        raise SecurityError(str(exc)) from None


def _read_bounded(path: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of a file, or of a pipe (``--engine-token-file <(pass show
    ...)``) within ``PIPE_WAIT_S``: a FIFO nobody writes to must not block a start."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return os.read(fd, limit)
        data = bytearray()
        deadline = time.monotonic() + PIPE_WAIT_S
        while len(data) < limit:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SecurityError(f"{path} is a pipe that gave no token within "
                                    f"{PIPE_WAIT_S:g} s")
            chunk = os.read(fd, limit - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)
    finally:
        os.close(fd)


def _private_folder(folder: Path) -> None:
    try:
        # Every folder made here is 0700 whatever the umask: under umask 000 a parent made
        # by mkdir(parents=True) was 0777, where anyone could replace our files.
        for part in [*reversed(folder.parents), folder]:
            if not part.exists():
                part.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise SecurityError(f"cannot make {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK):
        raise SecurityError(f"{folder} cannot be written: faceswap-cam keeps keys and tokens "
                            "there")
    _check_unchangeable(folder)


def _check_unchangeable(path: Path, status: os.stat_result | None = None) -> None:
    """Like ssh's StrictModes: a folder or file that another user could replace is refused,
    since a key, certificate or token planted there would be used as ours. ``status``: the
    path's, when the caller has it."""
    if sys.platform == "win32":
        return
    status = status or path.stat()
    if status.st_uid not in (os.getuid(), 0):  # root can change anything anyway
        raise SecurityError(f"{path} belongs to another user (uid {status.st_uid}): it is "
                            "not ours to trust")
    mode = status.st_mode
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        # Sticky, like /tmp: others cannot replace what we made there, and a file they made
        # is refused for its owner.
        return
    if mode & 0o022:
        raise SecurityError(f"{path} can be changed by other users (mode {mode & 0o777:o}): "
                            f"run `chmod go-w {path}`")


def _check_private(path: Path, *, secret: bool = True, pipe: bool = False) -> None:
    """Like ssh, refuse a secret others can read, and any file of ours that is not a regular
    file (or, with ``pipe``, a pipe) this user owns (POSIX permissions only)."""
    if sys.platform == "win32":
        return
    status = path.stat()
    if not (stat.S_ISREG(status.st_mode) or (pipe and stat.S_ISFIFO(status.st_mode))):
        raise SecurityError(f"{path} is not a regular file")
    if status.st_uid != os.getuid():
        raise SecurityError(f"{path} belongs to another user (uid {status.st_uid}): it is "
                            f"not ours to trust; delete it")
    if secret and status.st_mode & 0o077:
        raise SecurityError(f"{path} can be read by other users (mode "
                            f"{status.st_mode & 0o777:o}): run `chmod 600 {path}`")
    _check_unchangeable(path, status)


# --- the daemon's side: pairings -----------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """A host this daemon was paired with: its URL (no secrets), token and fingerprint."""

    url: str
    token: str
    fingerprint: str | None


def parse_pairing(text: str) -> EngineUrl:
    """The host in a pairing line, or in just its URL; it must carry a token, and a host on
    another machine must carry its certificate's fingerprint."""
    url = parse_pairing_line(text)
    if url is None:
        url = text.strip().strip("'\"")
    try:
        engine_url = parse_engine_url(url)
    except AddressError as exc:
        raise SecurityError(str(exc)) from None
    address = engine_url.address
    if address.is_unix:
        raise SecurityError("a Unix socket host is a local child: the daemon starts those "
                            "itself, there is nothing to pair")
    if not engine_url.token:
        raise SecurityError(f"{engine_url} carries no token: copy the whole line "
                            "`faceswap-cam engine serve` printed")
    if engine_url.fingerprint is None and not address.is_loopback:
        raise SecurityError(f"{engine_url} carries no certificate fingerprint (fp=): a host on "
                            "another machine speaks TLS; copy the whole line `faceswap-cam "
                            "engine serve` printed")
    return engine_url


def save_pairing(url: EngineUrl, file: Path | None = None) -> Path:
    """Keep ``url``'s token and fingerprint for its host:port (replacing an older pairing)."""
    if not url.token:
        raise SecurityError(f"{url} carries no token")
    file = file or paths.pairings_file()
    _private_folder(file.parent)
    try:
        # Pairings made at once each read the file and wrote it back: all but one were lost.
        with paths.file_lock(file.with_name(file.name + ".lock")):
            hosts = _read_pairings(file)
            hosts[str(url)] = {"token": url.token, "fingerprint": url.fingerprint}
            paths.atomic_write(file, json.dumps({"version": PAIRINGS_VERSION, "hosts": hosts},
                                                indent=2, sort_keys=True).encode() + b"\n",
                               mode=0o600)
    except OSError as exc:
        raise SecurityError(f"cannot write {file}: {exc.strerror or exc}") from exc
    return file


def find_pairing(address: Address, file: Path | None = None) -> Pairing | None:
    """The stored pairing for the host at ``address``, or None."""
    file = file or paths.pairings_file()
    key = address.url()
    entry = _read_pairings(file).get(key)
    if entry is None:
        return None
    token, fp = entry.get("token"), entry.get("fingerprint")
    if not isinstance(token, str) or not token or not (fp is None or isinstance(fp, str)):
        raise SecurityError(f"the pairing for {key} in {file} is damaged: pair again")
    try:
        check_token(token, f"the pairing for {key} in {file}")
    except AddressError as exc:
        raise SecurityError(f"{exc}; pair again") from None
    return Pairing(key, token, fp)


def _read_pairings(file: Path) -> dict[str, dict[str, str | None]]:
    try:
        _check_unchangeable(file.parent)
        _check_private(file)  # its own fix (chmod), not "delete it"
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SecurityError(f"cannot read the engine pairings {file}: "
                            f"{exc.strerror or exc}") from exc
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the engine pairings {file} ({exc}): delete it and "
                            "pair again") from exc
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, dict) or not all(isinstance(v, dict) for v in hosts.values()):
        raise SecurityError(f"the engine pairings {file} are damaged: delete it and pair again")
    return hosts
