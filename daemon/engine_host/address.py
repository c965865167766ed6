"""Where an engine host listens and how a daemon names it.

A host listens on ``HOST:PORT`` (TCP, loopback by default) or ``unix:PATH`` (the local child).
It prints one pairing line whose URL a daemon takes with ``--engine-url``:
``fscam://HOST:PORT?token=...&fp=sha256:HEX`` for TCP (``fp``: the SHA-256 of the host's
certificate, when it speaks TLS), ``fscam+unix:///PATH`` for a Unix socket. The URL maps onto
the WebSocket URI the proxy dials (``ws://HOST:PORT/engine``; TLS is set up on the socket
before, see ``proxy.open_connection``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlencode, urlsplit

TCP_SCHEME = "fscam"
UNIX_SCHEME = "fscam+unix"
DEFAULT_PORT = 7861
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
#: The WebSocket route the host serves.
ROUTE = "/engine"
PAIR_COMMAND = "faceswap-cam engine pair"
#: A certificate fingerprint as the pairing line carries it.
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
#: A host's token, as its pairing line carries it (``secrets.token_urlsafe(32)``: 43).
MAX_TOKEN_CHARS = 512
#: Printable ASCII without spaces: what a host makes, and what survives a copy by hand.
_TOKEN_CHARS = re.compile(r"[!-~]+")
#: A host name or an IP address; anything else was not printed by a host. A wildcard host
#: prints ``socket.gethostname()``, which may hold "_" (Windows) or end in "."; an IPv6
#: link-local address carries its zone.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?"
                        r"|[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?")
_SECRET = re.compile(r"(token=)[^&#\s]*", re.IGNORECASE)


class AddressError(ValueError):
    """A listen address or engine URL that cannot be used; the message says which form works."""


@dataclass(frozen=True)
class Address:
    """A TCP ``host``/``port`` or a Unix socket ``path`` (then host is None)."""

    host: str | None = None
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_wildcard(self) -> bool:
        """Listening on every interface (0.0.0.0 or ::)."""
        return self.host in ("0.0.0.0", "::")

    def reachable(self) -> Address:
        """The address to print for others: a wildcard listener is named by this machine's
        host name (the README says to use another name or IP if the laptop needs one)."""
        if self.is_wildcard:
            return Address(host=socket.gethostname(), port=self.port)
        return self

    @property
    def is_loopback(self) -> bool:
        """A Unix socket, a loopback address, or ``localhost`` when every address it resolves
        to here is loopback (a hosts file can point it elsewhere; then it is not)."""
        if self.path is not None:
            return True
        if self.host == "localhost":
            try:
                resolved = socket.getaddrinfo(self.host, None, proto=socket.IPPROTO_TCP)
            except OSError:
                return False
            return bool(resolved) and all(is_loopback_ip(str(info[4][0]))
                                          for info in resolved)
        return is_loopback_ip(self.host or "")

    def url(self, *, token: str | None = None, fingerprint: str | None = None) -> str:
        """The pairing URL, with the token and certificate fingerprint when given."""
        query = {key: value for key, value in (("token", token), ("fp", fingerprint)) if value}
        tail = f"?{urlencode(query, safe=':')}" if query else ""
        if self.path is not None:
            return f"{UNIX_SCHEME}://{quote(self.path)}{tail}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{TCP_SCHEME}://{host}:{self.port}{tail}"

    def websocket_uri(self, *, tls: bool = False) -> str:
        if self.path is not None:
            return f"ws://localhost{ROUTE}"  # the host part is unused on a Unix socket
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{'wss' if tls else 'ws'}://{host}:{self.port}{ROUTE}"


def is_loopback_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.partition("%")[0]).is_loopback
    except ValueError:
        return False


def redact(text: str) -> str:
    """``text`` with any token in it hidden, for messages and logs."""
    return _SECRET.sub(r"\1...", text)


def check_token(token: str, where: str) -> str:
    """``token``, if a host could have made it: printable ASCII, no spaces, not too long."""
    if not token:
        raise AddressError(f"the token in {where} is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise AddressError(f"the token in {where} is longer than {MAX_TOKEN_CHARS} characters: "
                           "it is not a host's token")
    if not _TOKEN_CHARS.fullmatch(token):
        raise AddressError(f"the token in {where} has spaces or characters a host's token "
                           "never has: copy it again from the host's pairing line")
    return token


def parse_listen(text: str) -> Address:
    """``HOST:PORT``, ``:PORT`` (loopback) or ``unix:PATH``."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path.startswith("/"):
            raise AddressError(f"--listen {text!r}: unix:PATH needs an absolute path")
        return Address(path=path)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise AddressError(f"--listen {text!r}: use HOST:PORT (e.g. {DEFAULT_LISTEN}) or "
                           "unix:PATH")
    host = host.strip("[]") or "127.0.0.1"
    return Address(host=host, port=_port(port, text))


@dataclass(frozen=True)
class EngineUrl:
    """A parsed pairing URL: where the host is, and the token and fingerprint it carried."""

    address: Address
    token: str | None = None
    fingerprint: str | None = None

    def __str__(self) -> str:
        """The URL without its secrets (for logs and the status)."""
        return self.address.url()


def parse_engine_url(text: str) -> EngineUrl:
    """A host's URL as its pairing line printed it; refused, without echoing its token, when
    it has anything a host does not print (a user name, a port 0, control characters)."""
    text = text.strip()
    shown = repr(redact(text))[:300]
    if any(not char.isprintable() or char.isspace() for char in text):
        raise AddressError(f"{shown} has spaces or control characters: copy the URL again "
                           "from the host's pairing line")
    parts = urlsplit(text)
    query = parse_qs(parts.query)
    token = query.get("token", [None])[-1]
    if token is not None:
        check_token(token, "the URL")
    fingerprint = query.get("fp", [None])[-1]
    if fingerprint is not None:
        fingerprint = fingerprint.lower()
        if not FINGERPRINT.fullmatch(fingerprint):
            raise AddressError(f"fp={fingerprint[:80]!r} is not a "
                               "certificate fingerprint: the pairing line has fp=sha256: and "
                               "64 hex digits")
    if parts.scheme == UNIX_SCHEME:
        if parts.netloc or not parts.path.startswith("/"):
            raise AddressError(f"{shown}: a Unix socket URL is {UNIX_SCHEME}:///ABSOLUTE/PATH")
        return EngineUrl(Address(path=parts.path), token, fingerprint)
    if parts.scheme != TCP_SCHEME or not parts.hostname:
        raise AddressError(f"{shown} is not an engine host URL: use the one the host printed, "
                           f"{TCP_SCHEME}://HOST:PORT?token=... or {UNIX_SCHEME}:///PATH")
    if "@" in parts.netloc:
        raise AddressError(f"{shown} has a user name: an engine host URL is "
                           f"{TCP_SCHEME}://HOST:PORT?token=..., as the host printed it")
    if not _HOST_NAME.fullmatch(parts.hostname):
        raise AddressError(f"{shown}: {parts.hostname[:80]!r} is not a host name or address")
    try:
        port = DEFAULT_PORT if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise AddressError(f"{shown}: the port must be 1..65535")
    return EngineUrl(Address(host=parts.hostname, port=port), token, fingerprint)


def pairing_line(url: str) -> str:
    return f"{PAIR_COMMAND} '{url}'"


def parse_pairing_line(line: str) -> str | None:
    """The URL in a host's pairing line, or None when ``line`` is not one."""
    line = line.strip()
    if not line.startswith(PAIR_COMMAND + " "):
        return None
    return line.removeprefix(PAIR_COMMAND).strip().strip("'\"")


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise AddressError(f"--listen {whole!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"--listen {whole!r}: the port must be 0..65535 (0: any free)")
    return port
