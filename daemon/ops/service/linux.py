"""Linux: a systemd *user* unit for the daemon (``$XDG_CONFIG_HOME/systemd/user/``) and an XDG
autostart entry for the tray (``$XDG_CONFIG_HOME/autostart/``). No root."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from string import Template

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.ops.service.common import (
    CLI_MODULE,
    EXIT_CONFIG,
    LOG_LINES,
    MANIFEST_NAME,
    Activation,
    Commands,
    Context,
    ServiceError,
    ServiceFile,
    shell_line,
)

logger = logging.getLogger(__name__)

UNIT_NAME = "faceswap-cam.service"
DESKTOP_NAME = "faceswap-cam-tray.desktop"


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
    return _SYSTEMD_UNIT.substitute(exec_start=exec_start, exit_config=EXIT_CONFIG)


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


class LinuxBackend:
    """The unit and the autostart entry under ``$XDG_CONFIG_HOME``, told to ``systemctl --user``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        config = ctx.env_dir("XDG_CONFIG_HOME", ctx.home / ".config")
        self.unit_dir = config / "systemd" / "user"
        self.unit = self.unit_dir / UNIT_NAME
        self.desktop = config / "autostart" / DESKTOP_NAME
        state = ctx.env_dir("XDG_STATE_HOME", ctx.home / ".local" / "state")
        self._manifest = state / paths.APP_NAME / MANIFEST_NAME

    def files(self) -> list[ServiceFile]:
        return [ServiceFile(self.unit, systemd_unit(self.ctx.python).encode("utf-8")),
                ServiceFile(self.desktop, autostart_entry(self.ctx.python).encode("utf-8"))]

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

    def activate(self, commands: Commands, changed: bool, was_installed: bool) -> Activation:
        done = Activation()
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

    def deactivate(self, commands: Commands) -> list[str]:
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

    def cleanup(self, commands: Commands, manager_ok: bool) -> list[Path]:
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
        return (f"could not read the journal ({shell_line(argv, False)}: {result.reason()}).\n"
                "The daemon logs to the user journal when systemd runs it; run that command "
                "in your desktop session.")

