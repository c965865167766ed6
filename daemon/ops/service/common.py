"""What the three login-service backends share: running service-manager commands, the files
install writes and the manifest of what it added, the results, and the backend protocol."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from faceswap_cam.daemon import paths

logger = logging.getLogger(__name__)

CLI_MODULE = "faceswap_cam.daemon.cli"
MANIFEST_NAME = "service-install.json"
LOG_LINES = 200
# Service-manager commands answer in milliseconds; a hung one must not hang `install`.
COMMAND_TIMEOUT_S = 30.0
# Configuration errors exit with 2 (cli.EXIT_CONFIG): restarting cannot fix them.
EXIT_CONFIG = 2
LINUX, MACOS, WINDOWS = "linux", "darwin", "windows"
KIND = {LINUX: "systemd user unit + XDG autostart", MACOS: "launchd agents",
        WINDOWS: "Task Scheduler logon tasks"}
_TAIL_READ_BYTES = 1024 * 1024


class ServiceError(Exception):
    """The login service cannot be set up here (unsupported platform, no usable interpreter)."""


# --------------------------------------------------------------------------- service manager


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """The first line the command said about its failure, for a one-line warning."""
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f"exit status {self.returncode}"


Runner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                timeout_s: float = COMMAND_TIMEOUT_S) -> CommandResult:
    """The default :data:`Runner`. A missing program or a timeout is a failed result, not an
    exception, so callers treat "no systemctl" like "no user bus": tell the user what to run."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                              timeout=timeout_s, env=None if env is None else dict(env),
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return CommandResult(127, stderr=f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, stderr=f"{argv[0]}: no answer within {timeout_s:g} s")
    except OSError as exc:
        return CommandResult(126, stderr=f"{argv[0]}: {exc}")
    return CommandResult(done.returncode, done.stdout or "", done.stderr or "")


def shell_line(argv: Sequence[str], windows: bool) -> str:
    """A command as the user would type it (for "run this later")."""
    return subprocess.list2cmdline(list(argv)) if windows else shlex.join(argv)


class Commands:
    """Runs service-manager commands in order. After the first required one fails, the rest are
    not tried (they depend on it) but collected, so the user is told exactly what to run."""

    def __init__(self, runner: Runner, windows: bool) -> None:
        self._runner = runner
        self._windows = windows
        self.ran: list[str] = []
        self.failure: tuple[str, CommandResult] | None = None
        self.pending: list[str] = []

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        line = shell_line(argv, self._windows)
        if self.failure is not None:
            self.pending.append(line)
            return None
        result = self.query(argv)
        if not result.ok:
            self.failure = (line, result)
            self.pending.append(line)
        return result

    def query(self, argv: Sequence[str]) -> CommandResult:
        """Run a command whose failure is an answer (is-active, print), not a problem."""
        line = shell_line(argv, self._windows)
        result = self._runner(argv)
        self.ran.append(line)
        logger.debug("service: %s -> %d %s", line, result.returncode,
                     (result.stdout + result.stderr).strip()[:500])
        return result

    def later(self, intro: str) -> str:
        assert self.failure is not None
        line, result = self.failure
        steps = "\n".join(f"    {command}" for command in self.pending)
        return f"`{line}` failed ({result.reason()}). {intro}\n{steps}"


def manager_line(runner: Runner, argv: Sequence[str], title: str, *, absent: str,
                 present: str, facts_from: tuple[str, ...], separator: str) -> str:
    """One status line for a job the service manager is asked about with ``argv``: ``title:
    absent (why)`` when it does not know it, else ``title: present`` with the lines of its
    answer that start with one of ``facts_from``."""
    result = runner(argv)
    if not result.ok:
        return f"{title}: {absent} ({result.reason()})"
    facts = [line.strip() for line in result.stdout.splitlines()
             if line.strip().startswith(facts_from)]
    return f"{title}: {present}" + (f" ({separator.join(facts)})" if facts else "")


# --------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Outcome:
    """What ``install`` or ``uninstall`` did. ``action`` is installed | updated | unchanged
    (install) or removed | absent (uninstall). Warnings are things the user must still do; the
    call succeeded anyway (exit code 0)."""

    action: str
    platform: str
    written: tuple[Path, ...] = ()
    removed: tuple[Path, ...] = ()
    commands: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


@dataclass(frozen=True)
class Status:
    """``files``: (path, ok | missing | outdated). ``outdated`` means install would write
    something else now (the venv moved, a newer template): run install again."""

    platform: str
    installed: bool
    files: tuple[tuple[Path, str], ...]
    manager: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        state = "installed" if self.installed else "not installed"
        lines = [f"FaceSwap Cam login service ({KIND[self.platform]}): {state}"]
        lines += [f"  {path}: {file_state}" for path, file_state in self.files]
        lines += [f"  {line}" for line in self.manager]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class Activation:
    """What a backend did after the files were written: extra files it wrote or removed (the
    Windows fallback), notes, and warnings."""

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- file handling


@dataclass(frozen=True)
class ServiceFile:
    """A file install writes, with the content it should hold."""

    path: Path
    content: bytes


def write_file(path: Path, content: bytes) -> bool:
    """Write ``content`` unless the file already holds it; returns whether it wrote. Atomic, so
    a reader (systemd, launchd) never sees half a file; 0644 because these are ordinary config
    files (launchd only refuses ones writable by others)."""
    wrote = paths.atomic_write(path, content, mode=0o644, skip_unchanged=True)
    if wrote:
        logger.info("service: wrote %s", path)
    return wrote


def make_dirs(folder: Path, created: list[Path]) -> None:
    """mkdir -p that remembers which folders it made, so uninstall removes those and only
    those."""
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        candidate.mkdir(exist_ok=True)
        created.append(candidate)


def remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    logger.info("service: removed %s", path)
    return True


def prune_dirs(folders: Sequence[Path]) -> list[Path]:
    """Remove folders install created, deepest first, where they are now empty (a folder the user
    has since put files in stays)."""
    removed: list[Path] = []
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            continue
        removed.append(folder)
    return removed


def read_manifest(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("service: ignoring unreadable %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: [str(item) for item in value] for key, value in data.items()
            if key in ("created_dirs", "files") and isinstance(value, list)}


def manifest_bytes(files: Sequence[Path], created_dirs: Sequence[Path]) -> bytes:
    data = {"created_dirs": sorted({str(p) for p in created_dirs}),
            "files": sorted({str(p) for p in files})}
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file, reading at most its last megabyte."""
    with path.open("rb") as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(max(0, size - _TAIL_READ_BYTES))
        data = stream.read()
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def log_tails(log_paths: Sequence[Path], lines: int) -> list[str]:
    """Each log file's last ``lines`` lines under a ``== path`` header, or that it has none."""
    parts = []
    for path in log_paths:
        try:
            tail = _tail(path, lines)
        except FileNotFoundError:
            parts.append(f"== {path}: no log yet")
            continue
        parts.append(f"== {path} (last {len(tail)} lines)")
        parts.extend(tail)
    return parts


# ---------------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Context:
    """Where a backend works: the platform, the home folder and environment (a temporary home
    in tests), the interpreter the service runs, and the runner for service-manager commands."""

    platform: str
    home: Path
    env: Mapping[str, str]
    python: str
    runner: Runner

    def env_dir(self, name: str, default: Path) -> Path:
        # The XDG spec: a relative value is invalid and must be ignored.
        value = self.env.get(name, "")
        return Path(value) if value and os.path.isabs(value) else default


def _normalize_platform(platform: str | None) -> str:
    name = sys.platform if platform is None else platform
    if name.startswith("linux"):
        return LINUX
    if name == "darwin":
        return MACOS
    if name in ("win32", "cygwin", "windows"):
        return WINDOWS
    raise ServiceError(f"no login service for platform {name!r} (supported: Linux with "
                       "systemd, macOS, Windows); run `faceswap-cam run` from your session's "
                       "autostart instead")


def make_context(platform: str | None, home: Path | None, env: Mapping[str, str] | None,
                 python: str | None, runner: Runner | None) -> Context:
    if home is None:
        home = Path.home()
        env = os.environ if env is None else env
    elif env is None:
        # A given home with no environment means a clean one: a test in a temporary HOME must
        # not follow the real XDG_CONFIG_HOME out of it.
        env = {}
    interpreter = sys.executable if python is None else python
    if not interpreter:
        raise ServiceError("cannot tell which Python runs FaceSwap Cam (sys.executable is "
                           "empty); run this command with the environment's python")
    return Context(_normalize_platform(platform), Path(home), env, interpreter,
                   run_command if runner is None else runner)


class Backend(Protocol):
    """One platform's login service: the files it writes and how it tells the manager."""

    def files(self) -> list[ServiceFile]: ...
    def paths(self) -> list[Path]: ...
    def primary(self) -> Path: ...
    def extra_paths(self) -> list[Path]: ...
    def extra_dirs(self) -> list[Path]: ...
    def log_files(self) -> list[Path]: ...
    def manifest(self) -> Path: ...
    def activate(self, commands: Commands, changed: bool,
                 was_installed: bool) -> Activation: ...
    def deactivate(self, commands: Commands) -> list[str]: ...
    def cleanup(self, commands: Commands, manager_ok: bool) -> list[Path]: ...
    def manager_status(self) -> list[str]: ...
    def notes(self) -> list[str]: ...
    def logs(self, lines: int) -> str: ...
