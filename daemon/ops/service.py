"""Start FaceSwap Cam at login: ``faceswap-cam service install|uninstall|status|logs``.

One login service per platform, all running the interpreter this command runs under (a venv's
``bin/python`` is used as is, never resolved: the link is what makes it the venv):

- Linux: a systemd *user* unit for the daemon (``$XDG_CONFIG_HOME/systemd/user/``) and an XDG
  autostart entry for the tray (``$XDG_CONFIG_HOME/autostart/``). No root.
- macOS: two LaunchAgents (``~/Library/LaunchAgents/``), logs in ``~/Library/Logs/FaceSwapCam/``.
- Windows: two per-user logon tasks registered with ``schtasks /Create /XML``; a Startup-folder
  ``.cmd`` stands in when Task Scheduler refuses.

The file generators are pure functions of their arguments. ``install``/``uninstall``/``status``/
``logs`` take the platform, the home folder and the environment as parameters, and every command
that talks to the OS service manager goes through one injectable :data:`Runner`, so all of it is
tested in a temporary home on any OS.

Files are written atomically and only when their content changes, so a second ``install``
reports ``unchanged``. ``install`` records the folders it had to create in a small manifest, so
``uninstall`` removes exactly what ``install`` added, those folders included, and nothing else.
When the service manager cannot be reached (no user systemd bus, an SSH session on a Mac),
``install`` still writes the files, says exactly what to run later, and succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Protocol, TextIO
from xml.sax.saxutils import escape as xml_escape

logger = logging.getLogger(__name__)

__all__ = [
    "DAEMON_LABEL",
    "DAEMON_TASK",
    "TRAY_LABEL",
    "TRAY_TASK",
    "UNIT_NAME",
    "CommandResult",
    "Outcome",
    "Runner",
    "ServiceError",
    "Status",
    "add_service_parser",
    "autostart_entry",
    "daemon_task_xml",
    "install",
    "is_installed",
    "launch_agent_plist",
    "launch_logged",
    "logs",
    "run_command",
    "run_service",
    "startup_cmd",
    "status",
    "systemd_unit",
    "tray_task_xml",
    "uninstall",
]

CLI_MODULE = "faceswap_cam.daemon.cli"
# `python -m` this module with --log: the Windows tasks' launcher (see launch_logged).
LAUNCHER_MODULE = "faceswap_cam.daemon.ops.service"
UNIT_NAME = "faceswap-cam.service"
DESKTOP_NAME = "faceswap-cam-tray.desktop"
DAEMON_LABEL = "com.faceswapcam.daemon"
TRAY_LABEL = "com.faceswapcam.tray"
DAEMON_TASK = "FaceSwap Cam Daemon"
TRAY_TASK = "FaceSwap Cam Tray"
STARTUP_CMD_NAME = "faceswap-cam.cmd"
MANIFEST_NAME = "service-install.json"
LOG_LINES = 200
# Service-manager commands answer in milliseconds; a hung one must not hang `install`.
COMMAND_TIMEOUT_S = 30.0
# Configuration errors exit with 2 (cli.EXIT_CONFIG): restarting cannot fix them.
_EXIT_CONFIG = 2
_STATUS_NOT_INSTALLED = 3
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_TAIL_READ_BYTES = 1024 * 1024
_LINUX, _MACOS, _WINDOWS = "linux", "darwin", "windows"


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


def _shell_line(argv: Sequence[str], windows: bool) -> str:
    """A command as the user would type it (for "run this later")."""
    if windows:
        return subprocess.list2cmdline(list(argv))
    import shlex

    return shlex.join(argv)


class _Commands:
    """Runs service-manager commands in order. After the first required one fails, the rest are
    not tried (they depend on it) but collected, so the user is told exactly what to run."""

    def __init__(self, runner: Runner, windows: bool) -> None:
        self._runner = runner
        self._windows = windows
        self.ran: list[str] = []
        self.failure: tuple[str, CommandResult] | None = None
        self.pending: list[str] = []

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        line = _shell_line(argv, self._windows)
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
        line = _shell_line(argv, self._windows)
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
        lines = [f"FaceSwap Cam login service ({_KIND[self.platform]}): {state}"]
        lines += [f"  {path}: {file_state}" for path, file_state in self.files]
        lines += [f"  {line}" for line in self.manager]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


_KIND = {_LINUX: "systemd user unit + XDG autostart", _MACOS: "launchd agents",
         _WINDOWS: "Task Scheduler logon tasks"}


# ------------------------------------------------------------------------------ generators


def _systemd_executable(path: str) -> str:
    """ExecStart's program path. systemd expands %specifiers in it (so % is doubled) but not
    $VARIABLES (so $ stays single: "$$" would be taken literally), and refuses quotes and
    backslashes in it whatever the escaping, as `systemd-analyze verify` shows."""
    if not path.startswith("/") or any(c in "\"'\\" or ord(c) < 32 for c in path):
        raise ServiceError(f"systemd cannot run the interpreter {path!r}: it needs an absolute "
                           "path without quotes, backslashes or control characters (move the "
                           "virtual environment to such a folder and install again)")
    escaped = path.replace("%", "%%")
    return f'"{escaped}"' if any(c.isspace() for c in path) else escaped


# Characters the Desktop Entry spec reserves in Exec arguments (they force quoting).
_DESKTOP_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")


def _desktop_arg(arg: str) -> str:
    """Quote one Exec argument per the Desktop Entry spec, then apply the spec's string-value
    escaping (a backslash is written twice, again): the two layers are unescaped in turn."""
    if not arg or any(c in arg for c in "\n\r\0"):
        raise ServiceError(f"cannot put {arg!r} in a desktop entry")
    if any(c in _DESKTOP_RESERVED for c in arg):
        inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
        arg = f'"{inner}"'
    return arg.replace("%", "%%").replace("\\", "\\\\")


_SYSTEMD_UNIT = Template("""\
# FaceSwap Cam daemon: a systemd user unit written by `faceswap-cam service install`
# (`faceswap-cam service uninstall` removes it). The next install overwrites edits made here:
# put local changes in a drop-in instead (`systemctl --user edit faceswap-cam`).

[Unit]
Description=FaceSwap Cam virtual camera daemon
# The camera is there for video-call apps in the desktop session: start with that session
# and stop when it ends, rather than at any login (SSH, lingering) with nobody at the screen.
After=graphical-session.target
PartOf=graphical-session.target
# A daemon that keeps failing gives up after 5 starts in 2 minutes instead of looping forever.
StartLimitIntervalSec=120
StartLimitBurst=5

[Service]
# exec: the start fails visibly if the interpreter is gone (the venv was moved or deleted).
Type=exec
ExecStart=$exec_start
# Log lines reach the journal as they are written, not when a buffer fills.
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=$exit_config
# The daemon never waits for the camera (a missing one falls back to a demo source), so
# starting is quick; stopping is orderly but bounded: after TimeoutStopSec, SIGKILL.
TimeoutStartSec=30
TimeoutStopSec=20
KillMode=mixed
SyslogIdentifier=faceswap-cam

[Install]
WantedBy=graphical-session.target
""")


def systemd_unit(python: str) -> str:
    """The daemon's systemd user unit, ``faceswap-cam.service``.

    WantedBy=graphical-session.target rather than default.target: default.target is reached at
    any login of the user manager (an SSH login, or boot with lingering), which would hold the
    webcam with nobody at the desk. GNOME and KDE Plasma start graphical-session.target; for a
    session that does not, ``systemctl --user add-wants default.target faceswap-cam.service``
    (install says so when it finds the target inactive)."""
    exec_start = f"{_systemd_executable(python)} -m {CLI_MODULE} run"
    return _SYSTEMD_UNIT.substitute(exec_start=exec_start, exit_config=_EXIT_CONFIG)


_AUTOSTART_ENTRY = Template("""\
# FaceSwap Cam tray, started at login. Written by `faceswap-cam service install`;
# `faceswap-cam service uninstall` removes it.
[Desktop Entry]
Type=Application
Version=1.0
Name=FaceSwap Cam tray
Comment=Tray icon that shows and controls the FaceSwap Cam virtual camera
Exec=$exec_line
Icon=camera-web
Terminal=false
X-GNOME-Autostart-enabled=true
X-KDE-autostart-after=panel
""")


def autostart_entry(python: str) -> str:
    """The tray's XDG autostart entry, ``faceswap-cam-tray.desktop``."""
    exec_line = " ".join(_desktop_arg(a) for a in (python, "-m", CLI_MODULE, "tray"))
    return _AUTOSTART_ENTRY.substitute(exec_line=exec_line)


def launch_agent_plist(label: str, arguments: Sequence[str], log_path: Path) -> bytes:
    """A LaunchAgent: runs at login, restarted when it exits with an error (a clean exit, such
    as Quit in the tray, stays stopped)."""
    import plistlib

    agent: dict[str, Any] = {
        "Label": label,
        "ProgramArguments": list(arguments),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        # Seconds between restarts, so a crash loop does not spin.
        "ThrottleInterval": 10,
        # Only in a logged-in GUI session: camera access (TCC) and the menu bar need one.
        "LimitLoadToSessionType": "Aqua",
        # Interactive: no App Nap or background throttling for a real-time video pipeline.
        "ProcessType": "Interactive",
        # Seconds from SIGTERM to SIGKILL: the daemon's orderly stop fits in it.
        "ExitTimeOut": 20,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(log_path),
        "StandardErrorPath": str(log_path),
    }
    return plistlib.dumps(agent, sort_keys=False)


_TASK_XML = Template("""\
<?xml version="1.0" encoding="UTF-16"?>
<!-- Written by `faceswap-cam service install`; `faceswap-cam service uninstall` removes it. -->
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>$description</Description>
    <URI>\\$name</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>$user</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>$user</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>false</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>true</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>4</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>5</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>$command</Command>
      <Arguments>$arguments</Arguments>
      <WorkingDirectory>$workdir</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
""")
# Notes on the settings above, kept out of the XML itself:
# - ExecutionTimeLimit PT0S: the default (72 h) would kill a daemon left running for days.
# - Priority 4 (normal): the task default, 7, is below-normal, which starves a real-time
#   pipeline whenever anything else is busy.
# - Battery and idle conditions off: a laptop on battery still needs its camera.
# - IgnoreNew: `schtasks /Run` while it runs does not start a second daemon.


def _task_xml(name: str, description: str, *, python: str, log_path: Path,
              cli_args: Sequence[str], user: str, workdir: Path) -> bytes:
    command = _windows_command(python)
    arguments = subprocess.list2cmdline(
        ["-m", LAUNCHER_MODULE, "--log", str(log_path), *cli_args])
    text = _TASK_XML.substitute(
        name=xml_escape(name), description=xml_escape(description), user=xml_escape(user),
        command=xml_escape(command), arguments=xml_escape(arguments),
        workdir=xml_escape(str(workdir)))
    # UTF-16 with a BOM and CRLF, as Task Scheduler itself exports tasks: what schtasks /XML
    # reads most reliably.
    return b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")


def _windows_command(python: str) -> str:
    return f'"{python}"' if " " in python else python


def daemon_task_xml(python: str, log_path: Path, user: str, workdir: Path) -> bytes:
    """The daemon's logon task (``schtasks /Create /XML``)."""
    return _task_xml(DAEMON_TASK, "FaceSwap Cam virtual camera daemon, started at logon.",
                     python=python, log_path=log_path, cli_args=("run",), user=user,
                     workdir=workdir)


def tray_task_xml(python: str, log_path: Path, user: str, workdir: Path) -> bytes:
    """The tray's logon task."""
    return _task_xml(TRAY_TASK, "FaceSwap Cam tray icon, started at logon.",
                     python=python, log_path=log_path, cli_args=("tray",), user=user,
                     workdir=workdir)


def _cmd_arg(arg: str) -> str:
    # In a batch file % starts a variable even inside quotes.
    arg = arg.replace("%", "%%")
    return f'"{arg}"' if any(c in arg for c in ' \t&|<>^()"') else arg


def startup_cmd(python: str, daemon_log: Path, tray_log: Path) -> bytes:
    """The Startup-folder fallback, used only when Task Scheduler refuses the tasks. It starts
    both processes once at logon; unlike the tasks it cannot restart them after a crash."""
    def start(log_path: Path, cli_arg: str) -> str:
        words = [python, "-m", LAUNCHER_MODULE, "--log", str(log_path), cli_arg]
        return 'start "" ' + " ".join(_cmd_arg(word) for word in words)

    lines = [
        "@echo off",
        "rem FaceSwap Cam at logon. Written by `faceswap-cam service install` because Task",
        "rem Scheduler refused its tasks; `faceswap-cam service uninstall` removes it.",
        start(daemon_log, "run"),
        start(tray_log, "tray"),
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# ----------------------------------------------------------------------------- file handling


@dataclass(frozen=True)
class _File:
    path: Path
    content: bytes


def _write_atomic(path: Path, content: bytes) -> bool:
    """Write ``content`` unless the file already holds it; returns whether it wrote. A temp file
    in the same folder, then os.replace: a reader (systemd, launchd) never sees half a file."""
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes 0600; these are ordinary config files (launchd only refuses ones
        # writable by others).
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    logger.info("service: wrote %s", path)
    return True


def _make_dirs(folder: Path, created: list[Path]) -> None:
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


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    logger.info("service: removed %s", path)
    return True


def _prune(folders: Sequence[Path]) -> list[Path]:
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


def _read_manifest(path: Path) -> dict[str, list[str]]:
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


def _manifest_bytes(files: Sequence[Path], created_dirs: Sequence[Path]) -> bytes:
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


def _log_tails(paths: Sequence[Path], lines: int) -> list[str]:
    """Each log file's last ``lines`` lines under a ``== path`` header, or that it has none."""
    parts = []
    for path in paths:
        try:
            tail = _tail(path, lines)
        except FileNotFoundError:
            parts.append(f"== {path}: no log yet")
            continue
        parts.append(f"== {path} (last {len(tail)} lines)")
        parts.extend(tail)
    return parts


def _manager_line(runner: Runner, argv: Sequence[str], title: str, *, absent: str,
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


# ---------------------------------------------------------------------------------- context


@dataclass(frozen=True)
class _Context:
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
        return _LINUX
    if name == "darwin":
        return _MACOS
    if name in ("win32", "cygwin", "windows"):
        return _WINDOWS
    raise ServiceError(f"no login service for platform {name!r} (supported: Linux with "
                       "systemd, macOS, Windows); run `faceswap-cam run` from your session's "
                       "autostart instead")


def _context(platform: str | None, home: Path | None, env: Mapping[str, str] | None,
             python: str | None, runner: Runner | None) -> _Context:
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
    return _Context(_normalize_platform(platform), Path(home), env, interpreter,
                    run_command if runner is None else runner)


class _Backend(Protocol):
    def files(self) -> list[_File]: ...
    def paths(self) -> list[Path]: ...
    def primary(self) -> Path: ...
    def extra_paths(self) -> list[Path]: ...
    def extra_dirs(self) -> list[Path]: ...
    def log_files(self) -> list[Path]: ...
    def manifest(self) -> Path: ...
    def activate(self, commands: _Commands, changed: bool,
                 was_installed: bool) -> _Activation: ...
    def deactivate(self, commands: _Commands) -> list[str]: ...
    def cleanup(self, commands: _Commands, manager_ok: bool) -> list[Path]: ...
    def manager_status(self) -> list[str]: ...
    def notes(self) -> list[str]: ...
    def logs(self, lines: int) -> str: ...


@dataclass
class _Activation:
    """What a backend did after the files were written: extra files it wrote or removed (the
    Windows fallback), notes, and warnings."""

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ Linux


class _Linux:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        config = ctx.env_dir("XDG_CONFIG_HOME", ctx.home / ".config")
        self.unit_dir = config / "systemd" / "user"
        self.unit = self.unit_dir / UNIT_NAME
        self.desktop = config / "autostart" / DESKTOP_NAME
        state = ctx.env_dir("XDG_STATE_HOME", ctx.home / ".local" / "state")
        self._manifest = state / "faceswap-cam" / MANIFEST_NAME

    def files(self) -> list[_File]:
        return [_File(self.unit, systemd_unit(self.ctx.python).encode("utf-8")),
                _File(self.desktop, autostart_entry(self.ctx.python).encode("utf-8"))]

    def paths(self) -> list[Path]:
        return [self.unit, self.desktop]

    def primary(self) -> Path:
        return self.unit

    def extra_paths(self) -> list[Path]:
        return []

    def extra_dirs(self) -> list[Path]:
        return []

    def log_files(self) -> list[Path]:
        return []

    def manifest(self) -> Path:
        return self._manifest

    def activate(self, commands: _Commands, changed: bool, was_installed: bool) -> _Activation:
        done = _Activation()
        # enable only edits symlinks, so it works without a running user manager: the daemon
        # then starts at the next desktop login even if nothing below can run now.
        enable = commands.run(["systemctl", "--user", "enable", UNIT_NAME])
        if changed:
            commands.run(["systemctl", "--user", "daemon-reload"])
        # The user manager does not inherit the desktop's environment. The daemon needs no
        # display, but the tray and the daemon must agree on XDG_RUNTIME_DIR (the control
        # token lives there), and a unit started now should see the session it belongs to.
        session_vars = [n for n in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR")
                        if self.ctx.env.get(n)]
        if session_vars:
            commands.run(["systemctl", "--user", "import-environment", *session_vars])
        # restart, not start, after an update: a running daemon must pick up the new unit.
        commands.run(["systemctl", "--user", "restart" if changed and was_installed
                      else "start", UNIT_NAME])
        if commands.failure is None:
            target = commands.query(["systemctl", "--user", "is-active",
                                     "graphical-session.target"])
            if not target.ok:
                done.notes.append(
                    "graphical-session.target is not active in this session, so the daemon "
                    "will not start by itself at your next login (window managers without "
                    "systemd integration never start it). Either have your session start it, "
                    "or start the daemon at any login: systemctl --user add-wants "
                    f"default.target {UNIT_NAME}")
        elif enable is not None and enable.ok:
            done.warnings.append(commands.later(
                "The service is enabled and starts at your next desktop login; to start it "
                "now, run this later in a terminal of your desktop session:"))
        else:
            done.warnings.append(commands.later(
                "The files are in place but the service is not enabled yet; run this later "
                "in a terminal of your desktop session:"))
        done.notes.append("the tray starts at your next login (now: faceswap-cam tray)")
        done.notes.append("logs: faceswap-cam service logs "
                          f"(journalctl --user -u faceswap-cam -n {LOG_LINES} --no-pager)")
        return done

    def deactivate(self, commands: _Commands) -> list[str]:
        warnings: list[str] = []
        stop = commands.query(["systemctl", "--user", "stop", UNIT_NAME])
        disable = commands.query(["systemctl", "--user", "disable", UNIT_NAME])
        # 5: the manager never loaded the unit (installed while it was unreachable): not running.
        if not stop.ok and stop.returncode != 5:
            warnings.append(
                f"could not stop the daemon (`systemctl --user stop {UNIT_NAME}`: "
                f"{stop.reason()}). If it is still running in your desktop session, run this "
                f"later there: systemctl --user stop {UNIT_NAME}; systemctl --user daemon-reload")
        if not disable.ok:
            logger.info("service: systemctl disable failed (%s); removing its links directly",
                        disable.reason())
        return warnings

    def cleanup(self, commands: _Commands, manager_ok: bool) -> list[Path]:
        # `enable` linked the unit into <target>.wants/; when `disable` could not run (no
        # systemctl), remove those links here, and only those: links to our unit file.
        removed: list[Path] = []
        for wants in self.unit_dir.glob("*.wants"):
            link = wants / UNIT_NAME
            if link.is_symlink() and Path(os.readlink(link)).name == UNIT_NAME:
                link.unlink()
                removed.append(link)
                with contextlib.suppress(OSError):
                    wants.rmdir()
                    removed.append(wants)
        if manager_ok:
            commands.query(["systemctl", "--user", "daemon-reload"])
        return removed

    def manager_status(self) -> list[str]:
        enabled = self.ctx.runner(["systemctl", "--user", "is-enabled", UNIT_NAME])
        active = self.ctx.runner(["systemctl", "--user", "is-active", UNIT_NAME])
        lines = [f"enabled: {enabled.stdout.strip() or enabled.reason()}"]
        if active.stdout.strip():
            lines.append(f"active: {active.stdout.strip()}")
        else:
            lines.append(f"active: unknown (systemd user manager not reachable: "
                         f"{active.reason()})")
        return lines

    def notes(self) -> list[str]:
        return ['the virtual camera is a v4l2loopback device labelled "FaceSwap Cam" '
                '(sudo modprobe v4l2loopback devices=1 card_label="FaceSwap Cam" '
                "exclusive_caps=1)"]

    def logs(self, lines: int) -> str:
        argv = ["journalctl", "--user", "-u", "faceswap-cam", "-n", str(lines), "--no-pager"]
        result = self.ctx.runner(argv)
        if result.ok:
            return result.stdout.rstrip("\n")
        return (f"could not read the journal ({_shell_line(argv, False)}: {result.reason()}).\n"
                "The daemon logs to the user journal when systemd runs it; run that command "
                "in your desktop session.")


# ------------------------------------------------------------------------------------ macOS


class _MacOS:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.agents = ctx.home / "Library" / "LaunchAgents"
        self.log_dir = ctx.home / "Library" / "Logs" / "FaceSwapCam"
        self.daemon = self.agents / f"{DAEMON_LABEL}.plist"
        self.tray = self.agents / f"{TRAY_LABEL}.plist"
        self._manifest = (ctx.home / "Library" / "Application Support" / "faceswap-cam"
                          / MANIFEST_NAME)
        self.domain = f"gui/{os.getuid() if hasattr(os, 'getuid') else 0}"

    def log_files(self) -> list[Path]:
        return [self.log_dir / "daemon.log", self.log_dir / "tray.log"]

    def files(self) -> list[_File]:
        python = self.ctx.python
        daemon_log, tray_log = self.log_files()
        return [
            _File(self.daemon, launch_agent_plist(
                DAEMON_LABEL, [python, "-m", CLI_MODULE, "run"], daemon_log)),
            _File(self.tray, launch_agent_plist(
                TRAY_LABEL, [python, "-m", CLI_MODULE, "tray"], tray_log)),
        ]

    def paths(self) -> list[Path]:
        return [self.daemon, self.tray]

    def primary(self) -> Path:
        return self.daemon

    def extra_paths(self) -> list[Path]:
        return []

    def extra_dirs(self) -> list[Path]:
        # launchd only opens the log files in a folder that exists.
        return [self.log_dir]

    def manifest(self) -> Path:
        return self._manifest

    def activate(self, commands: _Commands, changed: bool, was_installed: bool) -> _Activation:
        done = _Activation()
        target = f"{self.domain}/{DAEMON_LABEL}"
        loaded = commands.query(["launchctl", "print", target]).ok
        if changed or not loaded:
            if loaded:
                # bootstrap refuses a loaded label; bootout first so the new plist is used.
                commands.run(["launchctl", "bootout", target])
            commands.run(["launchctl", "bootstrap", self.domain, str(self.daemon)])
        if commands.failure is not None:
            done.warnings.append(commands.later(
                "launchd loads the agents at your next login anyway; to start the daemon now, "
                "run this later in Terminal in your desktop session:"))
        # The tray is not loaded now: install may be running from the tray itself, and a
        # RunAtLoad agent would start a second icon. launchd starts it at the next login.
        done.notes.append("the tray starts at your next login (now: faceswap-cam tray)")
        done.notes.extend(self._camera_notes())
        done.notes.append(f"logs: faceswap-cam service logs (files in {self.log_dir})")
        return done

    def _camera_notes(self) -> list[str]:
        real = os.path.realpath(self.ctx.python)
        shown = self.ctx.python if real == self.ctx.python else f"{self.ctx.python} -> {real}"
        return [
            "camera permission: macOS asks the first time the daemon opens the camera. A "
            "launch agent often cannot show that prompt; if the log says the camera is denied, "
            "open System Settings > Privacy & Security > Camera and allow the Python binary "
            f"({shown}), then restart the daemon: launchctl kickstart -k "
            f"{self.domain}/{DAEMON_LABEL}",
            'the virtual camera on macOS is OBS Virtual Camera (its name is fixed): install '
            "OBS and start its virtual camera once so macOS approves the camera extension",
        ]

    def deactivate(self, commands: _Commands) -> list[str]:
        target = f"{self.domain}/{DAEMON_LABEL}"
        if not commands.query(["launchctl", "print", target]).ok:
            return []
        result = commands.query(["launchctl", "bootout", target])
        if result.ok:
            return []
        return [f"could not stop the daemon (launchctl bootout {target}: {result.reason()}); "
                f"run this later in your desktop session: launchctl bootout {target}"]

    def cleanup(self, commands: _Commands, manager_ok: bool) -> list[Path]:
        return []

    def manager_status(self) -> list[str]:
        return [_manager_line(self.ctx.runner, ["launchctl", "print", f"{self.domain}/{label}"],
                              label, absent="not loaded", present="loaded",
                              facts_from=("state =", "pid =", "last exit code ="),
                              separator=", ")
                for label in (DAEMON_LABEL, TRAY_LABEL)]

    def notes(self) -> list[str]:
        return self._camera_notes()

    def logs(self, lines: int) -> str:
        return "\n".join(_log_tails(self.log_files(), lines))


# ---------------------------------------------------------------------------------- Windows


class _Windows:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        roaming = ctx.env_dir("APPDATA", ctx.home / "AppData" / "Roaming")
        local = ctx.env_dir("LOCALAPPDATA", ctx.home / "AppData" / "Local")
        self.service_dir = local / "FaceSwapCam" / "service"
        self.log_dir = local / "FaceSwapCam" / "logs"
        self.daemon_xml = self.service_dir / "faceswap-cam-daemon.xml"
        self.tray_xml = self.service_dir / "faceswap-cam-tray.xml"
        self.startup = (roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs"
                        / "Startup" / STARTUP_CMD_NAME)
        self._manifest = self.service_dir / MANIFEST_NAME

    def python(self) -> str:
        # pythonw.exe has no console: with python.exe a black window would open at every
        # logon (the task's Hidden flag hides the task in the UI, not the window).
        path = Path(self.ctx.python)
        if path.name.lower() == "python.exe" and path.with_name("pythonw.exe").exists():
            return str(path.with_name("pythonw.exe"))
        return self.ctx.python

    def user(self) -> str:
        name = self.ctx.env.get("USERNAME") or getpass.getuser()
        domain = self.ctx.env.get("USERDOMAIN")
        return f"{domain}\\{name}" if domain else name

    def log_files(self) -> list[Path]:
        return [self.log_dir / "daemon.log", self.log_dir / "tray.log"]

    def files(self) -> list[_File]:
        daemon_log, tray_log = self.log_files()
        python, user = self.python(), self.user()
        return [_File(self.daemon_xml, daemon_task_xml(python, daemon_log, user, self.ctx.home)),
                _File(self.tray_xml, tray_task_xml(python, tray_log, user, self.ctx.home))]

    def paths(self) -> list[Path]:
        return [self.daemon_xml, self.tray_xml]

    def primary(self) -> Path:
        return self.daemon_xml

    def extra_paths(self) -> list[Path]:
        return [self.startup]

    def extra_dirs(self) -> list[Path]:
        return []

    def manifest(self) -> Path:
        return self._manifest

    def activate(self, commands: _Commands, changed: bool, was_installed: bool) -> _Activation:
        done = _Activation()
        for name, xml in ((DAEMON_TASK, self.daemon_xml), (TRAY_TASK, self.tray_xml)):
            commands.run(["schtasks", "/Create", "/XML", str(xml), "/TN", name, "/F"])
        if commands.failure is None:
            if _remove(self.startup):
                done.removed.append(self.startup)
            # Only the daemon starts now: install may be running from the tray itself.
            started = commands.query(["schtasks", "/Run", "/TN", DAEMON_TASK])
            if not started.ok:
                done.warnings.append(
                    f"the task is registered but did not start now ({started.reason()}); it "
                    f'starts at your next logon, or run: schtasks /Run /TN "{DAEMON_TASK}"')
        else:
            daemon_log, tray_log = self.log_files()
            _make_dirs(self.startup.parent, done.created_dirs)
            if _write_atomic(self.startup, startup_cmd(self.python(), daemon_log, tray_log)):
                done.written.append(self.startup)
            done.warnings.append(commands.later(
                f"Using the Startup folder instead ({self.startup}): both start at your next "
                "logon, but a crashed daemon is not restarted. To use Task Scheduler, run this "
                "later and then install again:"))
        done.notes.append("the tray starts at your next logon (now: faceswap-cam tray)")
        done.notes.extend(self.notes())
        return done

    def deactivate(self, commands: _Commands) -> list[str]:
        warnings: list[str] = []
        for name in (DAEMON_TASK, TRAY_TASK):
            if not commands.query(["schtasks", "/Query", "/TN", name]).ok:
                continue
            if name == DAEMON_TASK:
                commands.query(["schtasks", "/End", "/TN", name])
            deleted = commands.query(["schtasks", "/Delete", "/TN", name, "/F"])
            if not deleted.ok:
                warnings.append(f'could not delete the task "{name}" ({deleted.reason()}); '
                                f'run this later: schtasks /Delete /TN "{name}" /F')
        return warnings

    def cleanup(self, commands: _Commands, manager_ok: bool) -> list[Path]:
        return []

    def manager_status(self) -> list[str]:
        lines = [_manager_line(self.ctx.runner,
                               ["schtasks", "/Query", "/TN", name, "/V", "/FO", "LIST"],
                               f"task {name}", absent="not registered", present="registered",
                               facts_from=("Status:", "Last Result:", "Last Run Time:"),
                               separator="; ")
                 for name in (DAEMON_TASK, TRAY_TASK)]
        if self.startup.exists():
            lines.append(f"Startup-folder fallback: {self.startup}")
        return lines

    def notes(self) -> list[str]:
        return ['the virtual camera on Windows is Unity Capture registered under the name '
                '"FaceSwap Cam" (its installer needs administrator rights), else OBS Virtual '
                "Camera"]

    def logs(self, lines: int) -> str:
        parts = [
            f'Task Scheduler history: open taskschd.msc, select "{DAEMON_TASK}", History tab '
            "(enable All Tasks History in the Actions pane if it is empty); last result: "
            f'schtasks /Query /TN "{DAEMON_TASK}" /V /FO LIST',
            *_log_tails(self.log_files(), lines),
        ]
        return "\n".join(parts)


def _backend(ctx: _Context) -> _Backend:
    if ctx.platform == _LINUX:
        return _Linux(ctx)
    if ctx.platform == _MACOS:
        return _MacOS(ctx)
    return _Windows(ctx)


# --------------------------------------------------------------------------------- the API


def install(*, platform: str | None = None, home: Path | None = None,
            env: Mapping[str, str] | None = None, python: str | None = None,
            runner: Runner | None = None) -> Outcome:
    """Write the login-service files (only those whose content changed) and tell the service
    manager. ``home`` given without ``env`` means an empty environment (see _context)."""
    ctx = _context(platform, home, env, python, runner)
    backend = _backend(ctx)
    manifest_path = backend.manifest()
    manifest = _read_manifest(manifest_path)
    created = [Path(p) for p in manifest.get("created_dirs", [])]
    was_installed = backend.primary().exists()
    files = backend.files()
    for folder in (*backend.extra_dirs(), *(f.path.parent for f in files), manifest_path.parent):
        _make_dirs(folder, created)

    def record() -> bool:
        extras = [p for p in backend.extra_paths() if p.exists()]
        return _write_atomic(manifest_path,
                             _manifest_bytes([f.path for f in files] + extras, created))

    # The manifest goes first: if install dies half way, uninstall still knows the folders.
    manifest_written = record()
    written = [item.path for item in files if _write_atomic(item.path, item.content)]

    commands = _Commands(ctx.runner, ctx.platform == _WINDOWS)
    activation = backend.activate(commands, changed=bool(written), was_installed=was_installed)
    written += activation.written
    created += activation.created_dirs
    if record() or manifest_written:
        written.append(manifest_path)

    if not written and not activation.removed:
        action = "unchanged"
    else:
        action = "updated" if was_installed else "installed"
    return Outcome(action, ctx.platform, tuple(written), tuple(activation.removed),
                   tuple(commands.ran), tuple(activation.notes), tuple(activation.warnings))


def uninstall(*, platform: str | None = None, home: Path | None = None,
              env: Mapping[str, str] | None = None, runner: Runner | None = None) -> Outcome:
    """Stop the daemon, then remove every file install wrote and the folders it created. Running
    it again, or without an install, is fine ("absent")."""
    ctx = _context(platform, home, env, None, runner)
    backend = _backend(ctx)
    manifest_path = backend.manifest()
    manifest = _read_manifest(manifest_path)
    # Paths only, no contents: uninstall must work even where install could not generate them.
    ours = set(backend.paths()) | set(backend.extra_paths())
    ours |= {Path(p) for p in manifest.get("files", [])}
    present = sorted(p for p in ours if p.exists() or p.is_symlink())
    commands = _Commands(ctx.runner, ctx.platform == _WINDOWS)
    warnings: list[str] = []
    if present:
        warnings = backend.deactivate(commands)
    removed = [p for p in present if _remove(p)]
    removed += backend.cleanup(commands, manager_ok=bool(present) and not warnings)
    if _remove(manifest_path):
        removed.append(manifest_path)
    removed += _prune([Path(p) for p in manifest.get("created_dirs", [])])
    notes = []
    kept = [p for p in backend.log_files() if p.exists()]
    if kept:
        notes.append("logs kept: " + ", ".join(str(p) for p in kept))
    return Outcome("removed" if removed else "absent", ctx.platform, (), tuple(removed),
                   tuple(commands.ran), tuple(notes), tuple(warnings))


def status(*, platform: str | None = None, home: Path | None = None,
           env: Mapping[str, str] | None = None, python: str | None = None,
           runner: Runner | None = None) -> Status:
    """What is installed, whether it is what install would write now, and what the service
    manager says about it."""
    ctx = _context(platform, home, env, python, runner)
    backend = _backend(ctx)
    files = []
    for item in backend.files():
        try:
            state = "ok" if item.path.read_bytes() == item.content else "outdated"
        except FileNotFoundError:
            state = "missing"
        files.append((item.path, state))
    notes = backend.notes()
    if any(state == "outdated" for _, state in files):
        notes.insert(0, "some files differ from what this Python would install (moved venv? "
                     "newer version?): run `faceswap-cam service install` again")
    installed = backend.primary().exists()
    manager = backend.manager_status() if installed else []
    return Status(ctx.platform, installed, tuple(files), tuple(manager), tuple(notes))


def logs(*, platform: str | None = None, home: Path | None = None,
         env: Mapping[str, str] | None = None, runner: Runner | None = None,
         lines: int = LOG_LINES) -> str:
    """The service's recent log: the user journal (Linux), the log files (macOS), the log files
    and where Task Scheduler's history is (Windows)."""
    ctx = _context(platform, home, env, None, runner)
    return _backend(ctx).logs(lines)


def is_installed(*, platform: str | None = None, home: Path | None = None,
                 env: Mapping[str, str] | None = None) -> bool:
    """Whether the daemon's login file exists: one stat, cheap enough for the tray's poll."""
    try:
        ctx = _context(platform, home, env, None, None)
    except ServiceError:
        return False
    return _backend(ctx).primary().exists()


# --------------------------------------------------------------- Windows launcher (pythonw)


@contextlib.contextmanager
def _log_stream(path: Path) -> Iterator[TextIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        # One old generation is enough to see what happened before the last restart.
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    with path.open("a", encoding="utf-8", errors="replace", buffering=1) as stream:
        yield stream


def launch_logged(argv: Sequence[str]) -> int:
    """``python -m faceswap_cam.daemon.ops.service --log FILE COMMAND...``: run ``faceswap-cam
    COMMAND...`` with stdout and stderr appended to FILE. The Windows tasks start pythonw.exe
    (no console window at logon), which has no stdout or stderr at all: without this the
    daemon's log would go nowhere."""
    parser = argparse.ArgumentParser(prog=f"python -m {LAUNCHER_MODULE}")
    parser.add_argument("--log", type=Path, required=True, help="file to append output to")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="faceswap-cam arguments")
    args = parser.parse_args(argv)
    from faceswap_cam.daemon import cli

    with _log_stream(args.log) as stream:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = stream
        try:
            return cli.main(args.cli_args)
        except SystemExit as exc:
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        except Exception:
            traceback.print_exc(file=stream)
            return 1
        finally:
            sys.stdout, sys.stderr = saved


# ------------------------------------------------------------------------------- CLI glue


def add_service_parser(subparsers: Any) -> None:
    """``faceswap-cam service install|uninstall|status|logs``."""
    service = subparsers.add_parser(
        "service", help="start FaceSwap Cam at login (install | uninstall | status | logs)",
        description="Start the daemon and the tray at login: a systemd user unit and an XDG "
        "autostart entry (Linux), launchd agents (macOS), logon tasks (Windows). No admin "
        "rights needed. The service runs this Python: " + (sys.executable or "?"))
    actions = service.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    actions.add_parser("install", help="write the login service and start the daemon "
                       "(safe to repeat)")
    actions.add_parser("uninstall", help="stop the daemon and remove everything install added")
    actions.add_parser("status", help="what is installed and running (exit 3: not installed)")
    log_parser = actions.add_parser("logs", help="the service's recent log")
    log_parser.add_argument("-n", "--lines", type=int, default=LOG_LINES,
                            help=f"how many lines (default {LOG_LINES})")


def run_service(args: argparse.Namespace, *, platform: str | None = None,
                home: Path | None = None, env: Mapping[str, str] | None = None,
                runner: Runner | None = None) -> int:
    """Run a parsed ``service`` command; the keyword arguments are for tests. Exit codes: 0 done
    (warnings included), 1 a file could not be written, 2 unsupported here, 3 status: not
    installed."""
    try:
        if args.service_command == "install":
            _print_outcome(install(platform=platform, home=home, env=env, runner=runner))
        elif args.service_command == "uninstall":
            _print_outcome(uninstall(platform=platform, home=home, env=env, runner=runner))
        elif args.service_command == "status":
            report = status(platform=platform, home=home, env=env, runner=runner)
            print(report.render())  # noqa: T201
            return 0 if report.installed else _STATUS_NOT_INSTALLED
        else:
            text = logs(platform=platform, home=home, env=env, runner=runner, lines=args.lines)
            print(text)  # noqa: T201
    except ServiceError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)  # noqa: T201
        return _EXIT_CONFIG
    except OSError as exc:
        print(f"faceswap-cam: service {args.service_command} failed: {exc}",  # noqa: T201
              file=sys.stderr)
        return 1
    return 0


_HEADLINE = {
    "installed": "FaceSwap Cam login service installed",
    "updated": "FaceSwap Cam login service updated",
    "unchanged": "FaceSwap Cam login service unchanged, already installed",
    "removed": "FaceSwap Cam login service removed",
    "absent": "FaceSwap Cam login service was not installed (nothing to remove)",
}


def _print_outcome(outcome: Outcome) -> None:
    print(f"{_HEADLINE[outcome.action]} ({_KIND[outcome.platform]}).")  # noqa: T201
    for path in outcome.written:
        print(f"  wrote {path}")  # noqa: T201
    for path in outcome.removed:
        print(f"  removed {path}")  # noqa: T201
    for command in outcome.commands:
        print(f"  ran: {command}")  # noqa: T201
    for note in outcome.notes:
        print(f"note: {note}")  # noqa: T201
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    sys.exit(launch_logged(sys.argv[1:]))
