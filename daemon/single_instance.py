"""One daemon per user, enforced by the OS: an exclusive lock held for the daemon's whole life.

The lock is ``flock`` (POSIX) or ``msvcrt.locking`` (Windows) on :func:`paths.daemon_lock_file`,
taken before any camera, output or port is opened. The kernel drops it when its holder dies,
however it dies (``kill -9`` included), so a crash never leaves a stale lock behind, and of two
daemons started at the same instant exactly one wins. The winner writes its PID into the file;
the loser reads it, finds that daemon's control URL in its control file, and says both.

Standard library and daemon/paths.py (plus the control file's reader) only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.control.control_file import ControlFileError, read_control_file

logger = logging.getLogger(__name__)

__all__ = ["AlreadyRunning", "DaemonLock", "take_daemon_lock"]

# How long a refused start waits for the winner to write its PID and then its control file:
# both start at the same instant, and the winner publishes its URL only once its API is up.
_PID_WAIT_S = 2.0
_URL_WAIT_S = 8.0
_POLL_S = 0.05
# Windows locks byte ranges and refuses reads inside one: lock a byte past the PID's text.
_WINDOWS_LOCK_OFFSET = 4096


class AlreadyRunning(RuntimeError):
    """Another daemon of this user holds the lock; the message names its PID and URL."""

    def __init__(self, pid: int | None, url: str | None, lock_file: Path) -> None:
        self.pid = pid
        self.url = url
        self.lock_file = lock_file
        who = f"PID {pid}" if pid is not None else f"the holder of {lock_file}"
        where = (f", control API at {url}" if url is not None
                 else ", its control API not up (yet)")
        super().__init__(f"FaceSwap Cam is already running ({who}{where}); stop it with "
                         "`faceswap-cam stop` first")


class DaemonLock:
    """The held lock; :meth:`release` (or the process's death) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path | None = None) -> DaemonLock:
        """Take the lock at once or raise :class:`AlreadyRunning`; OSError when the lock file
        cannot be made at all."""
        path = path if path is not None else paths.daemon_lock_file()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            locked = _try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            pid = _wait_for_pid(path)
            raise AlreadyRunning(pid, _wait_for_url(pid), path)
        try:
            # Only the holder writes, so the text is always the holder's PID once written.
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            logger.debug("cannot record our PID in %s: %s", path, exc)
        logger.debug("daemon lock %s taken", path)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Free the lock. Idempotent. The file stays: unlinking it would let a daemon that
        opened the old file and one that creates a new one both hold "the" lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            _unlock(fd)
        os.close(fd)
        logger.debug("daemon lock %s released", self.path)


def take_daemon_lock() -> DaemonLock | None:
    """The user's daemon lock, or :class:`AlreadyRunning`. None when no lock file can be made
    (a read-only config folder): the daemon then runs unguarded rather than not at all."""
    try:
        return DaemonLock.acquire()
    except OSError as exc:
        logger.warning("cannot take the one-daemon lock (%s): a second daemon would not be "
                       "noticed", exc)
        return None


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_pid(path: Path) -> int | None:
    try:
        with path.open("rb") as file:
            text = file.read(64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _wait_for_pid(path: Path) -> int | None:
    """The holder's PID; it may have locked the file a moment ago and not written it yet."""
    deadline = time.monotonic() + _PID_WAIT_S
    while (pid := _read_pid(path)) is None and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return pid


def _wait_for_url(pid: int | None) -> str | None:
    """The control URL in the control file that ``pid`` wrote, once it has written one (a file
    from an earlier daemon, with another PID, is not its)."""
    if pid is None:
        return None
    deadline = time.monotonic() + _URL_WAIT_S
    while True:
        for candidate in paths.control_file_candidates():
            with contextlib.suppress(ControlFileError):
                document = read_control_file(candidate)
                if document.pid == pid:
                    return document.url
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL_S)
