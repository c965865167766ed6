"""The login service (``faceswap-cam service``): the generated files are valid for the tools that
read them, and install/uninstall round trips leave a temporary home exactly as they found it.

Every service-manager command goes through a fake (or, for systemctl, the real one fenced into a
temporary runtime dir where no user bus can be reached), so nothing here touches the real
session."""

from __future__ import annotations

import argparse
import configparser
import functools
import hashlib
import os
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from faceswap_cam.daemon.ops import service
from faceswap_cam.daemon.ops.service import common, launcher, linux, macos, windows
from faceswap_cam.daemon.ops.service.common import CommandResult

CLI = "faceswap_cam.daemon.cli"
PYTHON = sys.executable
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
NO_BUS = "Failed to connect to bus: No medium found"


# ----------------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with what it is: folders, links (target) and files (hash)."""
    tree: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                tree[rel] = "link -> " + os.readlink(path)
            elif path.is_dir():
                tree[rel] = "dir"
            else:
                tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


class FakeManager:
    """systemctl, launchctl and schtasks in one: records every call and keeps just enough state
    to answer like them. ``offline``: the manager cannot be reached (systemctl still edits its
    links, as the real one does without a bus). ``missing``: the programs do not exist."""

    def __init__(self, home: Path, *, offline: bool = False, missing: bool = False) -> None:
        self.unit_dir = home / ".config" / "systemd" / "user"
        self.offline = offline
        self.missing = missing
        self.calls: list[list[str]] = []
        self.loaded: set[str] = set()
        self.tasks: set[str] = set()

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        if self.missing:
            return CommandResult(127, stderr=f"{argv[0]}: command not found")
        handler = {"systemctl": self._systemctl, "journalctl": self._journalctl,
                   "launchctl": self._launchctl, "schtasks": self._schtasks}[argv[0]]
        return handler(list(argv[1:]))

    def commands(self, program: str) -> list[str]:
        return [" ".join(call[1:]) for call in self.calls if call[0] == program]

    def _systemctl(self, args: list[str]) -> CommandResult:
        assert args[0] == "--user", "every systemctl call must be --user"
        verb = args[1]
        link = self.unit_dir / "graphical-session.target.wants" / linux.UNIT_NAME
        if verb == "enable":
            link.parent.mkdir(exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(self.unit_dir / linux.UNIT_NAME)
            return CommandResult(0)
        if verb == "disable":
            if link.is_symlink():
                link.unlink()
                link.parent.rmdir()
            return CommandResult(0)
        if verb == "is-enabled":
            return CommandResult(0 if link.is_symlink() else 1,
                                 "enabled\n" if link.is_symlink() else "disabled\n")
        if self.offline:
            return CommandResult(1, stderr=NO_BUS + "\n")
        if verb == "is-active":
            return CommandResult(0, "active\n")
        return CommandResult(0)

    def _journalctl(self, args: list[str]) -> CommandResult:
        if self.offline:
            return CommandResult(1, stderr="No journal files were found.\n")
        return CommandResult(0, "Nov 25 12:00:00 host faceswap-cam[42]: INFO publishing\n")

    def _launchctl(self, args: list[str]) -> CommandResult:
        verb = args[0]
        if verb == "print":
            label = args[1].rsplit("/", 1)[1]
            if label in self.loaded:
                return CommandResult(0, f"{args[1]} = {{\n\tstate = running\n\tpid = 4242\n}}\n")
            return CommandResult(113, stderr=f"Could not find service \"{label}\" in domain\n")
        if self.offline:
            return CommandResult(125, stderr="Bootstrap failed: 125: Domain does not support "
                                 "specified action\n")
        if verb == "bootstrap":
            self.loaded.add(plistlib.loads(Path(args[2]).read_bytes())["Label"])
        elif verb == "bootout":
            self.loaded.discard(args[1].rsplit("/", 1)[1])
        return CommandResult(0)

    def _schtasks(self, args: list[str]) -> CommandResult:
        verb, name = args[0], args[args.index("/TN") + 1]
        if verb == "/Create":
            if self.offline:
                return CommandResult(1, stderr="ERROR: Access is denied.\n")
            ET.fromstring(Path(args[args.index("/XML") + 1]).read_bytes())
            self.tasks.add(name)
            return CommandResult(0, f'SUCCESS: The scheduled task "{name}" has been created.\n')
        if name not in self.tasks:
            return CommandResult(1, stderr="ERROR: The system cannot find the file specified.\n")
        if verb == "/Delete":
            self.tasks.discard(name)
        if verb == "/Query":
            return CommandResult(0, "Status:        Running\nLast Result:   267009\n")
        return CommandResult(0)


WINDOWS_ENV = {"USERNAME": "alice", "USERDOMAIN": "PC"}


def env_for(platform: str) -> dict[str, str]:
    return dict(WINDOWS_ENV) if platform == "win32" else {}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def systemd_tools() -> dict[str, str]:
    """systemd-analyze and systemctl; installed with apt (once) when missing and we are root on
    a Debian-like system, as the CI image is; skipped elsewhere."""
    wanted = ("systemd-analyze", "systemctl")
    if not all(shutil.which(tool) for tool in wanted):
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"]
            if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True,
                               check=False)
                subprocess.run(install, env=env, capture_output=True, check=False)
        if not all(shutil.which(tool) for tool in wanted):
            pytest.skip("systemd-analyze/systemctl not found, and not root with apt-get to "
                        "install them (sudo apt-get install systemd)")
    return {tool: str(shutil.which(tool)) for tool in wanted}


@pytest.fixture
def systemd_sandbox(tmp_path: Path) -> dict[str, str]:
    """An environment for the real systemd tools in which no user manager can be reached (an
    empty runtime dir, no session bus) and the user unit dir is inside tmp_path."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home/.config"),
            "XDG_RUNTIME_DIR": str(runtime)}


def verify_unit(unit: Path, env: dict[str, str]) -> list[str]:
    """What `systemd-analyze --user verify` says about our unit. It exits 0 on mere warnings
    (an unknown key), so any line naming the unit counts as a complaint."""
    done = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if "faceswap-cam" in line]
    if done.returncode != 0:
        complaints.append(f"exit status {done.returncode}: {done.stderr.strip()}")
    return complaints


def read_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def desktop_exec_argv(value: str) -> list[str]:
    """Decode an Exec value the way the Desktop Entry spec says a launcher must: string
    escapes, then quoting, then %% -> %. Independent of the encoder under test."""
    unescaped, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            unescaped.append({"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
                             [value[i + 1]])
            i += 2
        else:
            unescaped.append(value[i])
            i += 1
    text, argv, word, quoted, i = "".join(unescaped), [], "", False, 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\" and text[i + 1] in '"`$\\':
            word += text[i + 1]
            i += 1
        elif char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            argv.append(word)
            word = ""
        else:
            word += char
        i += 1
    argv.append(word)
    return [arg.replace("%%", "%") for arg in argv]


# ------------------------------------------------------------------------ generated files


def test_systemd_unit_passes_systemd_analyze_verify(
        systemd_tools: dict[str, str], systemd_sandbox: dict[str, str], tmp_path: Path) -> None:
    unit = tmp_path / "units" / linux.UNIT_NAME
    unit.parent.mkdir()
    text = linux.systemd_unit(PYTHON)
    unit.write_text(text)
    assert verify_unit(unit, systemd_sandbox) == []

    parsed = read_ini(text)
    quoted = f'"{PYTHON}"' if " " in PYTHON else PYTHON
    assert parsed["Service"]["ExecStart"] == f"{quoted} -m {CLI} run"
    assert parsed["Service"]["Restart"] == "on-failure"
    assert int(parsed["Service"]["RestartSec"]) > 0
    assert int(parsed["Service"]["TimeoutStartSec"]) > 0
    assert int(parsed["Service"]["TimeoutStopSec"]) > 0
    assert parsed["Unit"]["After"] == "graphical-session.target"
    assert parsed["Unit"]["PartOf"] == "graphical-session.target"
    assert parsed["Install"]["WantedBy"] == "graphical-session.target"
    assert "User" not in parsed["Service"], "a user unit runs as the user: no root"


def test_unit_runs_interpreters_at_awkward_paths(
        systemd_tools: dict[str, str], systemd_sandbox: dict[str, str], tmp_path: Path) -> None:
    # verify checks that the program exists, so it proves systemd reads back the same path.
    python = tmp_path / "my venv %h $HOME" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(PYTHON)
    unit = tmp_path / "units" / linux.UNIT_NAME
    unit.parent.mkdir()
    unit.write_text(linux.systemd_unit(str(python)))
    assert verify_unit(unit, systemd_sandbox) == []


@pytest.mark.parametrize("python", ['/opt/a"b/python', "/opt/a\\b/python", "venv/bin/python"])
def test_unit_refuses_paths_systemd_cannot_run(python: str) -> None:
    with pytest.raises(service.ServiceError, match="systemd cannot run"):
        linux.systemd_unit(python)


@pytest.mark.parametrize("python", [PYTHON, "/home/a b/my venv %x $HOME (1)/bin/python"])
def test_autostart_entry_parses_with_the_tray_command(python: str) -> None:
    text = linux.autostart_entry(python)
    entry = read_ini(text)["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["X-GNOME-Autostart-enabled"] == "true"
    assert desktop_exec_argv(entry["Exec"]) == [python, "-m", CLI, "tray"]
    if python == PYTHON:
        assert entry["Exec"] == f"{PYTHON} -m {CLI} tray"


def test_autostart_entry_passes_desktop_file_validate(tmp_path: Path) -> None:
    if not shutil.which("desktop-file-validate"):
        pytest.skip("desktop-file-validate not installed (apt-get install desktop-file-utils)")
    path = tmp_path / linux.DESKTOP_NAME
    path.write_text(linux.autostart_entry("/home/a b/venv $1/bin/python"))
    done = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_launch_agents_parse_with_plistlib(home: Path) -> None:
    service.install(platform="darwin", home=home, runner=FakeManager(home))
    agents = home / "Library" / "LaunchAgents"
    logs = home / "Library" / "Logs" / "FaceSwapCam"
    for label, command in ((macos.DAEMON_LABEL, "run"), (macos.TRAY_LABEL, "tray")):
        with (agents / f"{label}.plist").open("rb") as stream:
            agent = plistlib.load(stream)
        assert agent["Label"] == label
        assert agent["ProgramArguments"] == [PYTHON, "-m", CLI, command]
        assert agent["RunAtLoad"] is True
        assert agent["KeepAlive"] == {"SuccessfulExit": False}
        for key in ("StandardOutPath", "StandardErrorPath"):
            assert Path(agent[key]).parent == logs
    assert logs.is_dir(), "launchd only writes logs into a folder that exists"


def test_windows_task_xml_is_well_formed_with_a_logon_trigger(home: Path) -> None:
    scripts = home / "venv" / "Scripts"
    scripts.mkdir(parents=True)
    (scripts / "python.exe").touch()
    (scripts / "pythonw.exe").touch()
    service.install(platform="win32", home=home, env=WINDOWS_ENV,
                    python=str(scripts / "python.exe"), runner=FakeManager(home))
    folder = home / "AppData" / "Local" / "FaceSwapCam" / "service"
    for name, command in (("faceswap-cam-daemon.xml", "run"), ("faceswap-cam-tray.xml", "tray")):
        data = (folder / name).read_bytes()
        assert data.startswith(b"\xff\xfe"), "UTF-16 with a BOM, as Task Scheduler exports"
        task = ET.fromstring(data)
        assert task.tag == f"{{{TASK_NS['t']}}}Task"
        assert task.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=TASK_NS) == \
            "PC\\alice"
        settings = task.find("t:Settings", TASK_NS)
        assert settings is not None
        assert settings.findtext("t:ExecutionTimeLimit", namespaces=TASK_NS) == "PT0S"
        assert settings.findtext("t:Hidden", namespaces=TASK_NS) == "true"
        assert settings.find("t:RestartOnFailure", TASK_NS) is not None
        action = task.find("t:Actions/t:Exec", TASK_NS)
        assert action is not None
        # pythonw: no console window at every logon.
        assert action.findtext("t:Command", namespaces=TASK_NS) == str(scripts / "pythonw.exe")
        log = home / "AppData" / "Local" / "FaceSwapCam" / "logs" / f"{name.split('-')[2][:-4]}.log"
        assert action.findtext("t:Arguments", namespaces=TASK_NS) == \
            f"-m faceswap_cam.daemon.ops.service --log {log} {command}"


def test_windows_arguments_quote_paths_with_spaces() -> None:
    data = windows.daemon_task_xml(r"C:\Py 3\pythonw.exe", Path("C:/Users/A B/daemon.log"),
                                   "alice", Path("C:/Users/A B"))
    action = ET.fromstring(data).find("t:Actions/t:Exec", TASK_NS)
    assert action is not None
    assert action.findtext("t:Command", namespaces=TASK_NS) == '"C:\\Py 3\\pythonw.exe"'
    assert action.findtext("t:Arguments", namespaces=TASK_NS) == \
        '-m faceswap_cam.daemon.ops.service --log "C:/Users/A B/daemon.log" run'


# ---------------------------------------------------------------------------- round trips


PLATFORMS = ["linux", "darwin", "win32"]
# A file of the user's in a folder install writes to: uninstall must leave it (and its folder).
NEIGHBOUR = {"linux": ".config/autostart/other-app.desktop",
             "darwin": "Library/LaunchAgents/com.example.other.plist",
             "win32": "AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup/other.lnk"}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_install_uninstall_round_trip_leaves_nothing_behind(platform: str, home: Path) -> None:
    neighbour = home / NEIGHBOUR[platform]
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text("not ours\n")
    before = snapshot(home)
    manager = FakeManager(home)
    env = env_for(platform)
    install = functools.partial(service.install, platform=platform, home=home, env=env,
                                runner=manager)
    uninstall = functools.partial(service.uninstall, platform=platform, home=home, env=env,
                                  runner=manager)
    status = functools.partial(service.status, platform=platform, home=home, env=env,
                               runner=manager)
    is_installed = functools.partial(service.is_installed, platform=platform, home=home, env=env)

    first = install()
    assert first.action == "installed"
    assert first.warnings == ()
    assert first.written
    assert all(path.is_relative_to(home) for path in first.written)
    installed = snapshot(home)

    again = install()
    assert again.action == "unchanged"
    assert again.written == () and again.removed == ()
    assert snapshot(home) == installed

    report = status()
    assert report.installed
    assert {state for _, state in report.files} == {"ok"}
    assert is_installed()

    removed = uninstall()
    assert removed.action == "removed"
    assert removed.warnings == ()
    assert snapshot(home) == before
    assert uninstall().action == "absent"
    assert snapshot(home) == before
    assert not is_installed()
    assert not status().installed


def test_linux_install_enables_reloads_and_starts(home: Path) -> None:
    manager = FakeManager(home)
    env = {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}
    service.install(platform="linux", home=home, env=env, runner=manager)
    assert manager.commands("systemctl") == [
        "--user enable faceswap-cam.service",
        "--user daemon-reload",
        "--user import-environment DISPLAY WAYLAND_DISPLAY XDG_RUNTIME_DIR",
        "--user start faceswap-cam.service",
        "--user is-active graphical-session.target",
    ]
    manager.calls.clear()
    service.install(platform="linux", home=home, env=env, runner=manager)
    assert "--user daemon-reload" not in manager.commands("systemctl"), "nothing changed"


def test_update_rewrites_and_restarts(home: Path, tmp_path: Path) -> None:
    manager = FakeManager(home)
    service.install(platform="linux", home=home, runner=manager)
    moved = str(tmp_path / "moved-venv" / "bin" / "python")
    stale = service.status(platform="linux", home=home, python=moved, runner=manager)
    assert ("outdated" in {state for _, state in stale.files}
            and "install` again" in stale.render())
    manager.calls.clear()
    outcome = service.install(platform="linux", home=home, python=moved, runner=manager)
    assert outcome.action == "updated"
    assert f"{moved} -m {CLI} run" in (home / ".config/systemd/user" / linux.UNIT_NAME
                                       ).read_text()
    assert manager.commands("systemctl")[1:3] == ["--user daemon-reload",
                                                  "--user restart faceswap-cam.service"]


def test_uninstall_keeps_what_the_user_added(home: Path) -> None:
    manager = FakeManager(home)
    service.install(platform="linux", home=home, runner=manager)
    drop_in = home / ".config/systemd/user/faceswap-cam.service.d/override.conf"
    drop_in.parent.mkdir()
    drop_in.write_text("[Service]\nEnvironment=X=1\n")
    service.uninstall(platform="linux", home=home, runner=manager)
    assert drop_in.read_text() == "[Service]\nEnvironment=X=1\n"
    assert not (home / ".config/systemd/user" / linux.UNIT_NAME).exists()
    assert not (home / ".config/autostart").exists(), "install made it, and it is empty"


# ------------------------------------------------------------- manager unavailable / failing


LATER = {"linux": ["systemctl --user daemon-reload", "systemctl --user start faceswap-cam.service"],
         "darwin": ["launchctl bootstrap gui/"],
         "win32": ['schtasks /Create /XML', '/TN "FaceSwap Cam Daemon" /F']}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_unreachable_manager_still_installs_and_says_what_to_run_later(
        platform: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(home)
    manager = FakeManager(home, offline=True)
    parser = argparse.ArgumentParser(prog="faceswap-cam")
    service.add_service_parser(parser.add_subparsers(dest="command"))
    env = env_for(platform)

    code = service.run_service(parser.parse_args(["service", "install"]), platform=platform,
                               home=home, env=env, runner=manager)
    out, err = capsys.readouterr()
    assert code == 0
    assert "installed" in out
    assert "warning:" in err and "run this later" in err
    for command in LATER[platform]:
        assert command in err
    assert service.is_installed(platform=platform, home=home, env=env)
    if platform == "win32":
        startup = home / NEIGHBOUR["win32"].rsplit("/", 1)[0] / "faceswap-cam.cmd"
        assert "-m faceswap_cam.daemon.ops.service --log" in startup.read_text()

    again = service.install(platform=platform, home=home, env=env, runner=manager)
    assert again.action == "unchanged"

    code = service.run_service(parser.parse_args(["service", "uninstall"]), platform=platform,
                               home=home, env=env, runner=manager)
    assert code == 0
    assert snapshot(home) == before


def test_missing_systemctl_leaves_the_unit_unenabled_and_says_so(home: Path) -> None:
    before = snapshot(home)
    manager = FakeManager(home, missing=True)
    outcome = service.install(platform="linux", home=home, runner=manager)
    assert outcome.action == "installed"
    (warning,) = outcome.warnings
    assert "not enabled yet" in warning
    assert "systemctl --user enable faceswap-cam.service" in warning
    assert service.uninstall(platform="linux", home=home, runner=manager).action == "removed"
    assert snapshot(home) == before


def test_real_systemctl_without_a_user_bus(
        systemd_tools: dict[str, str], systemd_sandbox: dict[str, str], tmp_path: Path) -> None:
    """The real systemctl, with no manager to reach (as in a container or an SSH session):
    enable still links the unit for the next login, the rest is left to run later, and
    uninstall unlinks it again."""
    home = Path(systemd_sandbox["HOME"])
    home.mkdir()
    before = snapshot(home)
    runner = functools.partial(common.run_command, env=systemd_sandbox)
    outcome = service.install(platform="linux", home=home, runner=runner)
    assert outcome.action == "installed"
    (warning,) = outcome.warnings
    assert "starts at your next desktop login" in warning
    assert "systemctl --user daemon-reload" in warning
    wants = home / ".config/systemd/user/graphical-session.target.wants" / linux.UNIT_NAME
    assert wants.is_symlink()
    assert service.status(platform="linux", home=home, runner=runner).manager[0] == \
        "enabled: enabled"
    service.uninstall(platform="linux", home=home, runner=runner)
    assert snapshot(home) == before


# ----------------------------------------------------------------------------- status, logs


def test_status_exit_codes_and_unsupported_platform(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="faceswap-cam")
    service.add_service_parser(parser.add_subparsers(dest="command"))
    status = parser.parse_args(["service", "status"])
    manager = FakeManager(home)
    assert service.run_service(status, platform="linux", home=home, runner=manager) == 3
    service.install(platform="linux", home=home, runner=manager)
    assert service.run_service(status, platform="linux", home=home, runner=manager) == 0
    out = capsys.readouterr().out
    assert "active: active" in out and "enabled: enabled" in out
    assert service.run_service(status, platform="freebsd", home=home) == 2
    assert "no login service" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["service"])


def test_macos_status_explains_the_camera_permission(home: Path) -> None:
    manager = FakeManager(home)
    outcome = service.install(platform="darwin", home=home, runner=manager)
    assert any("Privacy & Security > Camera" in note and PYTHON in note
               for note in outcome.notes)
    report = service.status(platform="darwin", home=home, runner=manager)
    assert any("Privacy & Security > Camera" in note for note in report.notes)
    assert any("state = running" in line for line in report.manager)


def test_logs_per_platform(home: Path) -> None:
    manager = FakeManager(home)
    assert "INFO publishing" in service.logs(platform="linux", home=home, runner=manager)
    assert manager.calls[-1] == ["journalctl", "--user", "-u", "faceswap-cam", "-n", "200",
                                 "--no-pager"]
    offline = service.logs(platform="linux", home=home, runner=FakeManager(home, offline=True))
    assert "could not read the journal" in offline

    log_dir = home / "Library" / "Logs" / "FaceSwapCam"
    log_dir.mkdir(parents=True)
    (log_dir / "daemon.log").write_text("".join(f"line {i}\n" for i in range(300)))
    lines = service.logs(platform="darwin", home=home, runner=manager).splitlines()
    shown = [line for line in lines if line.startswith("line ")]
    assert shown == [f"line {i}" for i in range(100, 300)]
    assert lines[-1].endswith("tray.log: no log yet")

    windows = service.logs(platform="win32", home=home, env=WINDOWS_ENV, runner=manager)
    assert "taskschd.msc" in windows and "daemon.log: no log yet" in windows


def test_macos_uninstall_keeps_the_logs_and_says_where(home: Path) -> None:
    manager = FakeManager(home)
    service.install(platform="darwin", home=home, runner=manager)
    log = home / "Library" / "Logs" / "FaceSwapCam" / "daemon.log"
    log.write_text("ran\n")
    outcome = service.uninstall(platform="darwin", home=home, runner=manager)
    assert log.read_text() == "ran\n"
    assert any(str(log) in note for note in outcome.notes)
    assert macos.DAEMON_LABEL not in manager.loaded


# ---------------------------------------------------------------------- runner and launcher


def test_run_command_reports_failures_as_results() -> None:
    missing = common.run_command(["faceswap-cam-no-such-program"])
    assert missing.returncode == 127 and "not found" in missing.reason()
    done = common.run_command([PYTHON, "-c", "print('hi')"])
    assert done.ok and done.stdout == "hi\n"


def test_launch_logged_sends_output_to_the_log(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "logs" / "daemon.log"
    saved = sys.stdout, sys.stderr
    code = launcher.launch_logged(["--log", str(log), "no-such-command"])
    assert (sys.stdout, sys.stderr) == saved
    assert code == 2
    assert "invalid choice: 'no-such-command'" in log.read_text()

    monkeypatch.setattr(launcher, "_LOG_ROTATE_BYTES", 10)
    launcher.launch_logged(["--log", str(log), "no-such-command"])
    assert "invalid choice" in log.with_name("daemon.log.1").read_text()
    assert log.read_text().count("invalid choice") == 1
