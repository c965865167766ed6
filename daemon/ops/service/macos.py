"""macOS: two LaunchAgents (``~/Library/LaunchAgents/``), logs in
``~/Library/Logs/FaceSwapCam/``."""

from __future__ import annotations

import os
import plistlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.ops.service.common import (
    CLI_MODULE,
    MANIFEST_NAME,
    Activation,
    Commands,
    Context,
    ServiceFile,
    log_tails,
    manager_line,
)

DAEMON_LABEL = "com.faceswapcam.daemon"
TRAY_LABEL = "com.faceswapcam.tray"


def launch_agent_plist(label: str, arguments: Sequence[str], log_path: Path) -> bytes:
    """A LaunchAgent: runs at login, restarted when it exits with an error (a clean exit, such
    as Quit in the tray, stays stopped)."""
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


class MacOSBackend:
    """Two agents in ``~/Library/LaunchAgents``, loaded with ``launchctl`` in the GUI domain."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.agents = ctx.home / "Library" / "LaunchAgents"
        self.log_dir = ctx.home / "Library" / "Logs" / "FaceSwapCam"
        self.daemon = self.agents / f"{DAEMON_LABEL}.plist"
        self.tray = self.agents / f"{TRAY_LABEL}.plist"
        self._manifest = (ctx.home / "Library" / "Application Support" / paths.APP_NAME
                          / MANIFEST_NAME)
        self.domain = f"gui/{os.getuid() if hasattr(os, 'getuid') else 0}"

    def log_files(self) -> list[Path]:
        return [self.log_dir / "daemon.log", self.log_dir / "tray.log"]

    def files(self) -> list[ServiceFile]:
        python = self.ctx.python
        daemon_log, tray_log = self.log_files()
        return [
            ServiceFile(self.daemon, launch_agent_plist(
                DAEMON_LABEL, [python, "-m", CLI_MODULE, "run"], daemon_log)),
            ServiceFile(self.tray, launch_agent_plist(
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

    def activate(self, commands: Commands, changed: bool, was_installed: bool) -> Activation:
        done = Activation()
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

    def deactivate(self, commands: Commands) -> list[str]:
        target = f"{self.domain}/{DAEMON_LABEL}"
        if not commands.query(["launchctl", "print", target]).ok:
            return []
        result = commands.query(["launchctl", "bootout", target])
        if result.ok:
            return []
        return [f"could not stop the daemon (launchctl bootout {target}: {result.reason()}); "
                f"run this later in your desktop session: launchctl bootout {target}"]

    def cleanup(self, commands: Commands, manager_ok: bool) -> list[Path]:
        return []

    def manager_status(self) -> list[str]:
        return [manager_line(self.ctx.runner, ["launchctl", "print", f"{self.domain}/{label}"],
                             label, absent="not loaded", present="loaded",
                             facts_from=("state =", "pid =", "last exit code ="),
                             separator=", ")
                for label in (DAEMON_LABEL, TRAY_LABEL)]

    def notes(self) -> list[str]:
        return self._camera_notes()

    def logs(self, lines: int) -> str:
        return "\n".join(log_tails(self.log_files(), lines))

