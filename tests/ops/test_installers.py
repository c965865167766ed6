"""The end-user installers in installers/.

The Linux installer runs for real in a throw-away home: install, re-run (must change nothing),
uninstall (must keep reference faces), purge (must leave the home as it found it). It installs
without the model extra from a copy of the checkout, through the machine's own pip set-up; that
takes about 20 s. The system steps (v4l2loopback, /etc) only run as --dry-run. The macOS and
Windows scripts are checked as scripts: they need their own platforms to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALLERS = REPO / "installers"
LINUX = INSTALLERS / "install-linux.sh"
MACOS = INSTALLERS / "install-macos.sh"
WINDOWS = INSTALLERS / "install-windows.ps1"

MODPROBE_CONF = Path("/etc/modprobe.d/faceswap-cam.conf")
MODULES_LOAD_CONF = Path("/etc/modules-load.d/faceswap-cam.conf")
MODPROBE_LINE = 'options v4l2loopback devices=1 card_label="FaceSwap Cam" exclusive_caps=1'
CTL_HINT = 'v4l2loopback-ctl add -n "FaceSwap Cam" --exclusive-caps=1'
QUIET = ("--skip-v4l2loopback", "--no-service")

# Tree entries: path -> (kind, size, mtime in ns, link target).
Tree = dict[str, tuple[str, int, int, str]]

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="runs the Linux installer")


@dataclass(frozen=True)
class UserHome:
    root: Path
    home: Path
    data: Path
    env: dict[str, str]

    @property
    def venv(self) -> Path:
        return self.data / "faceswap-cam" / "venv"

    @property
    def link(self) -> Path:
        return self.home / ".local" / "bin" / "faceswap-cam"


def _real_pip_settings() -> dict[str, str]:
    """pip's cache and user config as the real user has them, found before HOME moves.

    With HOME and XDG_* in tmp_path pip would lose its configured package indexes and start an
    empty cache; the installer must not depend on that, but the test should reuse them.
    """
    settings: dict[str, str] = {}
    home = Path.home()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    settings["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(cache_home / "pip")
    if "PIP_CONFIG_FILE" in os.environ:
        settings["PIP_CONFIG_FILE"] = os.environ["PIP_CONFIG_FILE"]
    else:
        for candidate in (config_home / "pip" / "pip.conf", home / ".pip" / "pip.conf"):
            if candidate.is_file():
                settings["PIP_CONFIG_FILE"] = str(candidate)
                break
    # pip asks `rustc --version` for its user agent; a rustup proxy would then write its
    # settings into the fake home. Keep tool state where it really lives.
    settings["RUSTUP_HOME"] = os.environ.get("RUSTUP_HOME") or str(home / ".rustup")
    settings["CARGO_HOME"] = os.environ.get("CARGO_HOME") or str(home / ".cargo")
    return settings


@pytest.fixture
def user(tmp_path: Path) -> UserHome:
    """An empty home with its XDG folders, as a user who never installed FaceSwap Cam has."""
    root = tmp_path / "user"
    home, data = root / "home", root / "data"
    for folder in (home, data, root / "config", root / "cache", root / "state"):
        folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACESWAP_CAM_", "XDG_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(_real_pip_settings())
    env.update({
        "HOME": str(home),
        "XDG_DATA_HOME": str(data),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_STATE_HOME": str(root / "state"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    })
    return UserHome(root=root, home=home, data=data, env=env)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout to install from.

    Others edit the real one while tests run, which would make the re-run reinstall, and pip
    builds in the source folder, which should not leave build/ output in the real one.
    """
    dest = tmp_path_factory.mktemp("checkout") / "faceswap-cam"
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "__pycache__", "out", "tests", "benchmarks"))
    return dest


def run_script(script: Path, user: UserHome, *args: str,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # No stdin: the installer must take its non-interactive defaults, never wait on a prompt.
    return subprocess.run(["sh", str(script), *args], env=user.env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def tree(root: Path) -> Tree:
    entries: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            if path.is_symlink():
                entries[str(path)] = ("link", 0, info.st_mtime_ns, os.readlink(path))
            elif path.is_dir():
                entries[str(path)] = ("dir", 0, info.st_mtime_ns, "")
            else:
                entries[str(path)] = ("file", info.st_size, info.st_mtime_ns, "")
    return entries


def kinds(entries: Tree) -> dict[str, str]:
    """The tree without times: which paths exist and what they are."""
    return {path: entry[0] for path, entry in entries.items()}


NETWORK_ERRORS = ("Failed to establish a new connection", "Temporary failure in name resolution",
                  "Network is unreachable", "ConnectTimeoutError", "ReadTimeoutError")


# ---------------------------------------------------------------------------- real install


@linux_only
@pytest.mark.timeout(600)
def test_linux_install_rerun_uninstall_purge(user: UserHome, checkout: Path) -> None:
    script = checkout / "installers" / "install-linux.sh"
    args = (*QUIET, "--no-models", "--python", sys.executable)
    before = tree(user.root)

    started = time.monotonic()
    first = run_script(script, user, *args, timeout=540)
    install_seconds = time.monotonic() - started
    if first.returncode != 0 and any(error in first.stdout + first.stderr
                                     for error in NETWORK_ERRORS):
        pytest.skip(f"pip could not reach a package index:\n{output(first)}")
    assert first.returncode == 0, output(first)
    print(f"first install took {install_seconds:.1f} s")
    entry = user.venv / "bin" / "faceswap-cam"
    assert (user.venv / "bin" / "python").is_file()
    assert entry.is_file()
    assert user.link.is_symlink()
    assert os.readlink(user.link) == str(entry)
    help_run = subprocess.run([str(user.link), "--help"], env=user.env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert help_run.returncode == 0, help_run.stderr
    assert "usage: faceswap-cam" in help_run.stdout
    # Without the model extra there must be no torch: that is what keeps this install small.
    assert not list(user.venv.glob("lib/python3*/site-packages/torch"))

    installed = tree(user.root)
    started = time.monotonic()
    second = run_script(script, user, *args)
    rerun_seconds = time.monotonic() - started
    assert second.returncode == 0, output(second)
    assert "Nothing to change" in second.stdout, output(second)
    assert not [line for line in second.stdout.splitlines() if line.startswith("+ ")], \
        output(second)
    assert tree(user.root) == installed, "the re-run changed files"
    print(f"re-run took {rerun_seconds:.1f} s")

    dry = run_script(script, user, "--uninstall", "--dry-run", *QUIET)
    assert dry.returncode == 0, output(dry)
    assert f"would run: rm -rf -- {user.venv}" in dry.stdout, output(dry)
    assert tree(user.root) == installed, "--dry-run changed files"

    references = user.data / "faceswap-cam" / "references"
    references.mkdir()
    face = references / "me.png"
    face.write_bytes(b"\x89PNG not really")
    mine = kinds(tree(user.root))

    removed = run_script(script, user, "--uninstall", *QUIET)
    assert removed.returncode == 0, output(removed)
    assert not user.venv.exists()
    assert not user.link.exists() and not user.link.is_symlink()
    assert face.read_bytes() == b"\x89PNG not really"
    left = kinds(tree(user.root))
    expected = {path: kind for path, kind in mine.items()
                if path in kinds(before) or Path(path) == references.parent
                or Path(path).is_relative_to(references)}
    assert left == expected, f"left behind: {sorted(set(left) - set(expected))}"

    purged = run_script(script, user, "--uninstall", "--purge", *QUIET)
    assert purged.returncode == 0, output(purged)
    assert kinds(tree(user.root)) == kinds(before)


@linux_only
def test_linux_uninstall_leaves_a_command_that_is_not_ours(user: UserHome) -> None:
    foreign = user.link
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho mine\n")

    install = run_script(LINUX, user, "--dry-run", *QUIET, "--no-models")
    assert install.returncode == 0, output(install)
    assert "is not our link; leaving it alone" in install.stderr

    remove = run_script(LINUX, user, "--uninstall", *QUIET)
    assert remove.returncode == 0, output(remove)
    assert "leaving it" in remove.stdout
    assert "Nothing to remove" in remove.stdout
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"


@linux_only
def test_linux_repoints_our_link_from_another_data_folder(user: UserHome) -> None:
    user.link.parent.mkdir(parents=True)
    user.link.symlink_to("/old/share/faceswap-cam/venv/bin/faceswap-cam")

    result = run_script(LINUX, user, "--dry-run", *QUIET, "--no-models")

    assert result.returncode == 0, output(result)
    entry = user.venv / "bin" / "faceswap-cam"
    assert f"would run: ln -sfn -- {entry} {user.link}" in result.stdout, output(result)


# ---------------------------------------------------------------------------- dry run


@linux_only
def test_dry_run_with_v4l2loopback_prints_the_system_files(user: UserHome) -> None:
    etc_before = {path: path.read_bytes() if path.exists() else None
                  for path in (MODPROBE_CONF, MODULES_LOAD_CONF)}
    before = tree(user.root)

    result = run_script(LINUX, user, "--dry-run", "--with-v4l2loopback", "--no-service",
                        "--no-models")

    assert result.returncode == 0, output(result)
    lines = [line.strip() for line in result.stdout.splitlines()]
    for path, content in ((MODPROBE_CONF, MODPROBE_LINE), (MODULES_LOAD_CONF, "v4l2loopback")):
        if etc_before[path] is None:
            header = lines.index(f"would write {path}:")
            assert lines[header + 1] == content, output(result)
        else:
            assert f"{path} is already set" in result.stdout or path.name in result.stderr
    if not Path("/sys/module/v4l2loopback").exists():
        assert re.search(r"^would run: (sudo )?modprobe v4l2loopback$", result.stdout, re.M), \
            output(result)
    assert "Key was rejected by service" in result.stdout
    assert CTL_HINT in result.stdout
    assert "Dry run finished: nothing was changed." in result.stdout
    assert {path: path.read_bytes() if path.exists() else None
            for path in (MODPROBE_CONF, MODULES_LOAD_CONF)} == etc_before
    assert tree(user.root) == before


@linux_only
def test_without_a_terminal_v4l2loopback_is_skipped_with_a_note(user: UserHome) -> None:
    result = run_script(LINUX, user, "--dry-run", "--no-service", "--no-models")
    assert result.returncode == 0, output(result)
    if "v4l2loopback is set up" not in result.stdout:
        assert "no terminal to ask on" in result.stdout, output(result)
        assert "would write /etc" not in result.stdout


# ---------------------------------------------------------------------------- as scripts


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("script", [LINUX, MACOS], ids=["linux", "macos"])
def test_shell_syntax(script: Path, shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, "--shell=sh", str(LINUX), str(MACOS)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", [LINUX, MACOS], ids=["linux", "macos"])
def test_help_lists_the_flags(script: Path, user: UserHome) -> None:
    result = run_script(script, user, "--help")
    assert result.returncode == 0, output(result)
    for flag in ("--source", "--no-models", "--no-service", "--uninstall", "--purge",
                 "--dry-run"):
        assert flag in result.stdout
    bad = run_script(script, user, "--purge")
    assert bad.returncode != 0
    assert "--purge only goes with --uninstall" in bad.stderr


def test_macos_dry_run_explains_obs_and_the_camera_permission(user: UserHome) -> None:
    # The macOS script runs anywhere in a dry run; only its paths and notes are macOS's.
    before = tree(user.root)
    result = run_script(MACOS, user, "--dry-run", "--no-models", "--no-service")
    assert result.returncode == 0, output(result)
    venv = user.home / "Library" / "Application Support" / "faceswap-cam" / "venv"
    assert f"would run: '{venv / 'bin' / 'python'}' -m pip install" in result.stdout
    assert '"OBS Virtual Camera"' in result.stdout
    assert "Privacy & Security > Camera" in result.stdout
    assert "v4l2loopback-dkms" not in result.stdout
    assert tree(user.root) == before


def _brackets_balance(text: str) -> bool:
    """Brackets balance outside PowerShell strings and comments (a stand-in for a parser)."""
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("<#", i):
            i = text.index("#>", i) + 2
            continue
        if char == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        if char == "'":
            i += 1
            while not (text[i] == "'" and text[i + 1:i + 2] != "'"):
                i += 2 if text[i:i + 2] == "''" else 1
        elif char == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "`" else 1
        elif char in "({[":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
        i += 1
    return not stack


def test_windows_script_has_the_key_steps() -> None:
    text = WINDOWS.read_text()
    for needle in ("[switch]$Uninstall", "[switch]$Purge", "[switch]$NoModels",
                   "[switch]$NoService", "[switch]$DryRun", "[string]$Source",
                   "Join-Path $env:LOCALAPPDATA 'FaceSwapCam'",
                   "@('-m', 'venv', $Venv)",
                   "@('-m', 'pip', 'install', '--disable-pip-version-check'",
                   "'models,tray'", "@('service', 'install')", "@('service', 'uninstall')",
                   "InstallCustomName.bat", "$CameraLabel = 'FaceSwap Cam'",
                   '"OBS Virtual Camera"'):
        assert needle in text, needle
    # References and models are deleted only under -Purge.
    assert re.search(r"if \(\$Purge\) \{\s*Remove-OurPath \$AppAuthorDir\s*\}", text)
    assert text.count("$AppAuthorDir") == 3  # defined, joined into $AppDataDir, purged
    assert _brackets_balance(text)


def test_windows_script_parses() -> None:
    pwsh = shutil.which("pwsh") or shutil.which("powershell")
    if pwsh is None:
        pytest.skip("PowerShell is not installed: install-windows.ps1 was only checked as text")
    command = (
        "$errors = $null; "
        f"[System.Management.Automation.Language.Parser]::ParseFile('{WINDOWS}', "
        "[ref]$null, [ref]$errors) | Out-Null; "
        "if ($errors) { $errors | ForEach-Object { $_.ToString() }; exit 1 }")
    result = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", command],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
