"""Every folder FaceSwap Cam keeps things in, per platform, and the one way files are written.

Folders come from platformdirs (XDG on Linux, ~/Library on macOS, %APPDATA% on Windows); an
environment variable overrides each where users or tests need it. Nothing here creates a
folder: callers make what they write into.

Standard library and platformdirs only: the tray and the CLI client import this.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

APP_NAME = "faceswap-cam"

#: Overrides for the folders below (tests and unusual set-ups).
MODELS_DIR_ENV = "FACESWAP_CAM_MODELS_DIR"
REFERENCES_DIR_ENV = "FACESWAP_CAM_REFERENCES_DIR"
CONTROL_FILE_ENV = "FACESWAP_CAM_CONTROL_FILE"
ENGINE_HOST_DIR_ENV = "FACESWAP_CAM_ENGINE_HOST_DIR"
PAIRINGS_FILE_ENV = "FACESWAP_CAM_PAIRINGS_FILE"
CONTROL_FILE_NAME = "control.json"
DAEMON_LOCK_NAME = "daemon.lock"


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME))


def config_file() -> Path:
    """The settings file ``faceswap-cam run`` reads (TOML)."""
    return config_dir() / "config.toml"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def references_dir() -> Path:
    """The reference-face library (``$FACESWAP_CAM_REFERENCES_DIR`` overrides)."""
    override = os.environ.get(REFERENCES_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else data_dir() / "references"


def models_dir() -> Path:
    """Where ``models download`` puts weights (``$FACESWAP_CAM_MODELS_DIR`` overrides)."""
    override = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else data_dir() / "models"


def engine_host_dir() -> Path:
    """An engine host's certificate, key and token (``$FACESWAP_CAM_ENGINE_HOST_DIR``
    overrides): config, not data, as they are this machine's identity, like ``~/.ssh``."""
    override = os.environ.get(ENGINE_HOST_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else config_dir() / "engine-host"


def pairings_file() -> Path:
    """The engine hosts this daemon is paired with (``$FACESWAP_CAM_PAIRINGS_FILE``
    overrides)."""
    override = os.environ.get(PAIRINGS_FILE_ENV, "").strip()
    return Path(override).expanduser() if override else config_dir() / "engine-pairings.json"


def runtime_dir() -> Path | None:
    """The user's private runtime folder (gone at logout), or None where there is no
    trustworthy one."""
    xdg = None
    if sys.platform not in ("win32", "darwin"):
        # Without XDG_RUNTIME_DIR platformdirs guesses (/run/user/UID, a folder in /tmp), and a
        # guess can change between the daemon's start and a client's look: use config instead.
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if not xdg:
            return None
    try:
        with warnings.catch_warnings():
            # platformdirs warns when it distrusts XDG_RUNTIME_DIR; the check below decides.
            warnings.simplefilter("ignore")
            runtime = Path(platformdirs.user_runtime_dir(APP_NAME))
    except OSError:
        return None
    if xdg is not None and not runtime.is_relative_to(xdg):
        return None  # platformdirs refused $XDG_RUNTIME_DIR and fell back to a guess
    return runtime if private_enough(runtime) else None


def private_enough(path: Path) -> bool:
    """Whether ``path`` (or, not yet made, its parent) is a directory this user owns, so that
    nobody else could have made it to read what we put there."""
    existing = path if path.exists() else path.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        return False
    getuid = getattr(os, "getuid", None)
    return getuid is None or existing.stat().st_uid == getuid()


def control_file_candidates() -> list[Path]:
    """Where the daemon writes its control file (the first) and where clients look, in order.
    Both places: a tray started in the desktop session (with a runtime dir) must find a daemon
    started over ssh (without one), and the other way round."""
    override = os.environ.get(CONTROL_FILE_ENV)
    if override:
        return [Path(override).expanduser()]
    config = config_dir() / CONTROL_FILE_NAME
    runtime = runtime_dir()
    return [config] if runtime is None else [runtime / CONTROL_FILE_NAME, config]


def daemon_lock_file() -> Path:
    """The file the running daemon holds an OS lock on, one per user: ``daemon.lock`` in the
    config dir, the one folder that is the same over ssh and in the desktop session (the
    runtime dir is not). Beside ``$FACESWAP_CAM_CONTROL_FILE`` when that is set, so that tests
    and unusual set-ups with their own control file have their own daemon."""
    override = os.environ.get(CONTROL_FILE_ENV)
    if override:
        return Path(override).expanduser().with_suffix(".lock")
    return config_dir() / DAEMON_LOCK_NAME


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open folders this way)."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644,
                 skip_unchanged: bool = False) -> bool:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never a part,
    and a crash right after leaves the new one on disk (file and folder fsync).

    ``mode`` is set on the temporary file before any byte is written (0o600 keeps a secret
    private throughout). With ``skip_unchanged`` a file that already holds ``data`` is left
    alone. Returns whether it wrote.
    """
    if skip_unchanged:
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return False
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), mode)  # exactly this mode, whatever the umask
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_dir(path.parent)
    return True


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, across threads and processes alike.

    Each call opens its own descriptor: flock and msvcrt locks conflict between separate
    opens even inside one process, so threads need no extra lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    # LK_LOCK gives up after about ten seconds; keep waiting like flock does.
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
