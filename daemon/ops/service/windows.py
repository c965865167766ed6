"""Windows: two per-user logon tasks registered with ``schtasks /Create /XML``; a Startup-folder
``.cmd`` stands in when Task Scheduler refuses."""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Sequence
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape as xml_escape

from faceswap_cam.daemon.ops.service.common import (
    MANIFEST_NAME,
    Activation,
    Commands,
    Context,
    ServiceFile,
    log_tails,
    make_dirs,
    manager_line,
    remove_file,
    write_file,
)
from faceswap_cam.daemon.ops.service.launcher import LAUNCHER_MODULE

DAEMON_TASK = "FaceSwap Cam Daemon"
TRAY_TASK = "FaceSwap Cam Tray"
STARTUP_CMD_NAME = "faceswap-cam.cmd"


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


class WindowsBackend:
    """Two task XML files registered with ``schtasks``, or the Startup-folder ``.cmd``."""

    def __init__(self, ctx: Context) -> None:
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

    def files(self) -> list[ServiceFile]:
        daemon_log, tray_log = self.log_files()
        python, user = self.python(), self.user()
        home = self.ctx.home
        return [ServiceFile(self.daemon_xml, daemon_task_xml(python, daemon_log, user, home)),
                ServiceFile(self.tray_xml, tray_task_xml(python, tray_log, user, home))]

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

    def activate(self, commands: Commands, changed: bool, was_installed: bool) -> Activation:
        done = Activation()
        for name, xml in ((DAEMON_TASK, self.daemon_xml), (TRAY_TASK, self.tray_xml)):
            commands.run(["schtasks", "/Create", "/XML", str(xml), "/TN", name, "/F"])
        if commands.failure is None:
            if remove_file(self.startup):
                done.removed.append(self.startup)
            # Only the daemon starts now: install may be running from the tray itself.
            started = commands.query(["schtasks", "/Run", "/TN", DAEMON_TASK])
            if not started.ok:
                done.warnings.append(
                    f"the task is registered but did not start now ({started.reason()}); it "
                    f'starts at your next logon, or run: schtasks /Run /TN "{DAEMON_TASK}"')
        else:
            daemon_log, tray_log = self.log_files()
            make_dirs(self.startup.parent, done.created_dirs)
            if write_file(self.startup, startup_cmd(self.python(), daemon_log, tray_log)):
                done.written.append(self.startup)
            done.warnings.append(commands.later(
                f"Using the Startup folder instead ({self.startup}): both start at your next "
                "logon, but a crashed daemon is not restarted. To use Task Scheduler, run this "
                "later and then install again:"))
        done.notes.append("the tray starts at your next logon (now: faceswap-cam tray)")
        done.notes.extend(self.notes())
        return done

    def deactivate(self, commands: Commands) -> list[str]:
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

    def cleanup(self, commands: Commands, manager_ok: bool) -> list[Path]:
        return []

    def manager_status(self) -> list[str]:
        lines = [manager_line(self.ctx.runner,
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
            *log_tails(self.log_files(), lines),
        ]
        return "\n".join(parts)

