"""tests/run.sh installs the system tools that some tests need, so that CI never skips them.

The script runs for real, in a copy of the repository's layout where every program it calls
(python, apt-get, id) is a stand-in that logs its arguments and nothing else is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN_SH = Path(__file__).resolve().parents[2] / "tests" / "run.sh"

#: The tools whose tests skip without them, and the Debian package of each.
TOOLS = {"chromium": "chromium", "chromedriver": "chromium-driver", "Xvfb": "xvfb",
         "shellcheck": "shellcheck", "desktop-file-validate": "desktop-file-utils",
         "pulseaudio": "pulseaudio"}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="run.sh is the Linux CI's script")


def _stand_in(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _sandbox(tmp_path: Path, *, uid: int, present: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A repository copy with run.sh and a fake .venv, and a PATH of stand-ins. Returns the
    script and the log every stand-in appends to."""
    repo, bin_dir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "calls.log"
    (repo / "tests").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(RUN_SH, repo / "tests" / "run.sh")
    _stand_in(repo / ".venv" / "bin" / "python", f'echo "venv-python $*" >> "{log}"')
    _stand_in(bin_dir / "python3", f'echo "python3 $*" >> "{log}"')
    _stand_in(bin_dir / "apt-get", f'echo "apt-get $*" >> "{log}"')
    _stand_in(bin_dir / "id", f'echo {uid}')
    for tool in present:
        _stand_in(bin_dir / tool, "exit 0")
    for tool in ("dirname", "mkdir", "ln", "df", "awk"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return repo / "tests" / "run.sh", log


def _run(script: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    assert sh is not None
    return subprocess.run([sh, str(script)], env={"PATH": str(tmp_path / "bin")},
                          capture_output=True, text=True, timeout=60, check=False)


def _apt_calls(log: Path) -> list[list[str]]:
    return [line.split()[1:] for line in log.read_text().splitlines()
            if line.startswith("apt-get ")]


def test_as_root_installs_every_missing_tool_after_one_update(tmp_path: Path) -> None:
    script, log = _sandbox(tmp_path, uid=0)
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = _apt_calls(log)
    assert [call for call in calls if call[0] == "update"] == [["update", "-qq"]]
    assert calls[0][0] == "update"
    installs = [call for call in calls if call[0] == "install"]
    assert len(installs) == 1
    assert set(TOOLS.values()) <= set(installs[0])
    # The checks still run after the installation.
    assert "venv-python -m pytest" in log.read_text()


def test_as_root_installs_only_what_is_missing(tmp_path: Path) -> None:
    script, log = _sandbox(tmp_path, uid=0, present=("chromium", "chromedriver", "shellcheck"))
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    installs = [call for call in _apt_calls(log) if call[0] == "install"]
    assert len(installs) == 1
    packages = {word for word in installs[0] if not word.startswith("-")} - {"install"}
    assert packages == {"xvfb", "desktop-file-utils", "pulseaudio"}


def test_nothing_is_installed_when_every_tool_is_there(tmp_path: Path) -> None:
    script, log = _sandbox(tmp_path, uid=0, present=tuple(TOOLS))
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _apt_calls(log) == []


def test_without_root_it_says_what_to_install(tmp_path: Path) -> None:
    script, log = _sandbox(tmp_path, uid=1000)
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _apt_calls(log) == []
    note = next(line for line in result.stdout.splitlines() if line.startswith("note:"))
    for package in TOOLS.values():
        assert package in note


def test_run_sh_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (tests/run.sh installs it as root)")
    result = subprocess.run([shellcheck, str(RUN_SH)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_a_nearly_full_temp_folder_is_named_before_the_tests_run(tmp_path: Path) -> None:
    for name, available_kb, warned in (("full", 512000, True), ("roomy", 5120000, False)):
        root = tmp_path / name
        script, _ = _sandbox(root, uid=1000, present=tuple(TOOLS))
        (root / "bin" / "df").unlink()
        _stand_in(root / "bin" / "df", "echo 'Filesystem 1024-blocks Used Available'\n"
                                       f"echo '/dev/vda 263174212 262000000 {available_kb}'")
        result = _run(script, root)
        assert result.returncode == 0, result.stdout + result.stderr
        assert ("only 500 MB free" in result.stderr) is warned, result.stderr
