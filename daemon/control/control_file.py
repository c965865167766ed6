"""The control file: where a running daemon says how to reach it (``{"url", "token", "pid"}``).

It holds the API's token, so it is written readable by this user only, into a folder only this
user can enter, and atomically (a client never reads half of one). The places it may be come
from :func:`faceswap_cam.daemon.paths.control_file_candidates`.

Standard library and daemon/paths.py only: the client imports this.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from faceswap_cam.daemon import paths

__all__ = [
    "ControlFile",
    "ControlFileError",
    "default_token_file",
    "find_control_file",
    "read_control_file",
    "remove_control_file",
    "write_control_file",
]


class ControlFileError(Exception):
    """No usable control file at a path; the message names it and says what is wrong."""


@dataclass(frozen=True)
class ControlFile:
    url: str
    token: str
    pid: int | None = None


def default_token_file() -> Path:
    """Where a daemon writes its control file: ``$FACESWAP_CAM_CONTROL_FILE``, else
    ``control.json`` in the user's runtime dir (private, and gone at logout like the daemon),
    else in the user's config dir."""
    return paths.control_file_candidates()[0]


def find_control_file() -> Path:
    """The first control file that exists where daemons write them (else where one would be)."""
    candidates = paths.control_file_candidates()
    return next((p for p in candidates if p.exists()), candidates[0])


def write_control_file(path: Path, document: ControlFile) -> None:
    """Write ``document`` to ``path``, readable by this user only. OSError when it cannot."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps({"url": document.url, "token": document.token, "pid": document.pid})
    paths.atomic_write(path, data.encode(), mode=0o600)


def read_control_file(path: Path) -> ControlFile:
    """The control file at ``path``; ControlFileError when there is none or it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ControlFileError(f"no control file at {path}") from None
    except (OSError, ValueError) as exc:
        raise ControlFileError(f"cannot read control file {path}: {exc}") from exc
    if not (isinstance(document, dict) and isinstance(document.get("url"), str)
            and isinstance(document.get("token"), str)):
        raise ControlFileError(f"{path} is not a FaceSwap Cam control file")
    pid = document.get("pid")
    return ControlFile(url=document["url"], token=document["token"],
                       pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None)


def remove_control_file(path: Path, token: str) -> None:
    """Remove the control file at ``path`` if it still holds ``token``: a daemon started after
    the one that wrote it may have replaced it, and that file is not ours to remove."""
    # Read-then-unlink leaves a tiny window; both daemons would be racing for one port or one
    # file anyway.
    try:
        document = read_control_file(path)
    except ControlFileError:
        return
    if document.token == token:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
