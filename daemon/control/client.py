"""The client of the daemon's control API, for the tray, the CLI and the doctor.

Standard library only (plus the control file's module): the tray and the CLI start fast and stay
light, whatever the server needs. It finds the daemon through its control file, sends the token
with every request, and turns every way a request can fail into :class:`DaemonNotRunning` or
:class:`ControlError`. Answers are plain JSON; callers validate the status document into
:class:`~faceswap_cam.daemon.control.status.DaemonStatus`.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.client import HTTPException as HTTPClientError
from pathlib import Path
from typing import Any

from faceswap_cam.daemon.control.control_file import (
    ControlFileError,
    find_control_file,
    read_control_file,
)

__all__ = [
    "IDENTITY_PATH",
    "MAX_IMAGE_BYTES",
    "NOT_RUNNING_MESSAGE",
    "SERVICE_NAME",
    "ControlClient",
    "ControlError",
    "DaemonNotRunning",
    "size_text",
]

#: Largest reference image the API accepts; bigger uploads are refused before they are read.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

NOT_RUNNING_MESSAGE = "FaceSwap Cam is not running: start it with `faceswap-cam run`"

#: The one route served without the token: ``{"service": SERVICE_NAME, "pid": ...}``, so that a
#: client can tell our daemon from whatever took a stale control file's port before it sends
#: the token there.
IDENTITY_PATH = "/identity"
SERVICE_NAME = "faceswap-cam"


def size_text(count: int) -> str:
    """A byte count for people: "20 MiB", "64 KiB", "12 bytes"."""
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):g} MiB"
    if count >= 1024:
        return f"{count / 1024:g} KiB"
    return f"{count} bytes"


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (it may belong to another user)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        # os.kill would terminate it there; the server's identity check has the last word.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DaemonNotRunning(RuntimeError):
    """No daemon answers: no control file, or nothing listening where it says."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(NOT_RUNNING_MESSAGE)
        #: The detail (which file, which address), for logs and ``--verbose`` output.
        self.reason = reason


class ControlError(RuntimeError):
    """The daemon refused or failed a request. ``status`` is the HTTP status, or None when no
    answer came (timeout, dropped connection)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message if status is None else f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class ControlClient:
    """The daemon's control API over HTTP, with the standard library only (the tray and the
    CLI stay light). Every method raises :class:`DaemonNotRunning` or :class:`ControlError`."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 source: Path | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not _is_loopback(parts.hostname):
            # The token must never travel off this machine, whatever a control file says.
            raise ValueError(f"not a loopback control URL: {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._source = source
        # An empty ProxyHandler: the user's HTTP(S)_PROXY must not see loopback requests (or
        # the token in them).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_token_file(cls, path: Path | None = None, *, timeout: float = 10.0) -> ControlClient:
        """A client for the daemon that wrote ``path`` (default: the first control file found
        where daemons write them)."""
        if path is None:
            path = find_control_file()
        try:
            document = read_control_file(path)
        except ControlFileError as exc:
            raise DaemonNotRunning(str(exc)) from exc
        try:
            client = cls(document.url, document.token, timeout=timeout, source=path)
        except ValueError as exc:
            raise DaemonNotRunning(f"{path}: {exc}") from exc
        # A daemon killed outright leaves its file behind, and another server may own its port
        # by now: the token goes only to the daemon that wrote the file.
        if document.pid is not None and not _pid_alive(document.pid):
            raise DaemonNotRunning(f"{path} is stale: the daemon that wrote it (PID "
                                   f"{document.pid}) is gone")
        client._check_identity(document.pid)
        return client

    # Routes, one method each.

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/status")
        return result

    def references(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/references")
        return result

    def add_reference(self, path: Path | str, name: str | None = None) -> dict[str, Any]:
        """Upload an image file; OSError if it cannot be read."""
        path = Path(path)
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            # Refused here: the server would cut the upload off mid-way, which reads as a
            # dropped connection rather than as this message.
            raise ControlError(413, f"{path} is {size_text(size)}; the limit is "
                                    f"{size_text(MAX_IMAGE_BYTES)}")
        data = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0]
        if not content_type or not content_type.startswith("image/"):
            content_type = "application/octet-stream"
        # The library names an entry after the file when no name is given, as the user expects.
        name = name or path.stem
        query = f"?{urllib.parse.urlencode({'name': name})}" if name else ""
        result: dict[str, Any] = self._request("POST", f"/references{query}", body=data,
                                               content_type=content_type)
        return result

    def select_reference(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request(
            "POST", f"/references/{urllib.parse.quote(name, safe='')}/select")
        return result

    def remove_reference(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request(
            "DELETE", f"/references/{urllib.parse.quote(name, safe='')}")
        return result

    def set_swap(self, enabled: bool) -> dict[str, Any]:
        return self._post_json("/swap", {"enabled": enabled})

    def set_paused(self, paused: bool) -> dict[str, Any]:
        return self._post_json("/pause", {"paused": paused})

    def set_mic(self, enabled: bool) -> dict[str, Any]:
        return self._post_json("/mic", {"enabled": enabled})

    def set_ai_badge(self, enabled: bool) -> dict[str, Any]:
        return self._post_json("/badge", {"enabled": enabled})

    def set_playout(self, mode: str) -> dict[str, Any]:
        return self._post_json("/playout", {"mode": mode})

    def set_fallback(self, mode: str) -> dict[str, Any]:
        return self._post_json("/fallback", {"mode": mode})

    def shutdown(self) -> None:
        self._request("POST", "/shutdown")

    # Plumbing.

    def _check_identity(self, pid: int | None) -> None:
        """DaemonNotRunning unless a FaceSwap Cam daemon (with ``pid``, when known) answers
        at our URL. Asked without the token, which must not reach any other server."""
        request = urllib.request.Request(self.url + IDENTITY_PATH,
                                         headers={"Accept": "application/json"})
        stale = f"{self._source or 'the control file'} is stale"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                document = json.loads(response.read(4096))
        except urllib.error.HTTPError as exc:
            if exc.code in (429, 503):  # a daemon too busy to answer is still running
                raise self._refused(exc) from None
            raise DaemonNotRunning(f"{stale}: {self.url} is not a FaceSwap Cam daemon "
                                   f"(HTTP {exc.code})") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise self._unreachable(exc, f"GET {self.url}{IDENTITY_PATH}") from exc
        except (OSError, HTTPClientError, ValueError) as exc:
            raise DaemonNotRunning(f"{stale}: {self.url} is not a FaceSwap Cam daemon "
                                   f"({type(exc).__name__})") from exc
        if not (isinstance(document, dict) and document.get("service") == SERVICE_NAME):
            raise DaemonNotRunning(f"{stale}: {self.url} is not a FaceSwap Cam daemon")
        if pid is not None and document.get("pid") != pid:
            raise DaemonNotRunning(f"{stale}: another FaceSwap Cam daemon (PID "
                                   f"{document.get('pid')}) now listens at {self.url}")

    def _post_json(self, path: str, document: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", path, body=json.dumps(document).encode(),
                                               content_type="application/json")
        return result

    def _request(self, method: str, path: str, *, body: bytes | None = None,
                 content_type: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, headers=headers,
                                         method=method)
        where = f"{method} {self.url}{path}"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise self._unreachable(exc, where) from exc
        except (OSError, HTTPClientError) as exc:
            raise ControlError(None, f"{where}: {type(exc).__name__}: {exc}") from exc
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise ControlError(None, f"{where}: the answer is not JSON") from exc

    def _unreachable(self, exc: OSError, where: str) -> Exception:
        """What a failed connection means: nobody listens (the daemon is not running), or the
        request got no answer. Refused connections and timeouts come bare or inside a
        URLError depending on where in urllib they happen."""
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ConnectionRefusedError):
            return DaemonNotRunning(f"nothing listens at {self.url}")
        if isinstance(reason, TimeoutError):
            return ControlError(None, f"{where}: no answer within {self.timeout:g} s")
        return ControlError(None, f"{where}: {reason}")

    def _refused(self, exc: urllib.error.HTTPError) -> ControlError:
        try:
            raw = exc.read()
        except OSError:
            raw = b""
        message = ""
        try:
            document = json.loads(raw)
            if isinstance(document, dict) and isinstance(document.get("error"), str):
                message = document["error"]
        except ValueError:
            message = raw.decode("utf-8", "replace").strip()
        message = message or str(exc.reason)
        if exc.code == 401:
            # The usual cause: a control file left behind, and another process on its port.
            where = f" in {self._source}" if self._source else ""
            message = f"the daemon refused the token{where} (is the file stale?): {message}"
        return ControlError(exc.code, message)
