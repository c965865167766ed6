"""One daemon per user: two `faceswap-cam run` started at the same instant, again and again;
exactly one runs, the other exits 2 naming the first's PID and control URL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faceswap_cam.daemon.control.control_file import ControlFileError, read_control_file
from faceswap_cam.daemon.single_instance import AlreadyRunning, DaemonLock
from tests.conftest import faceswap_cam_exe

ROUNDS = 6
RUN_ARGS = ["run", "--source", "demo", "--sink", "null", "--engine", "passthrough",
            "--size", "160x120", "--fps", "15", "--duration", "60"]

# Each racer imports everything first, then waits for the go file: both then call the CLI
# within a millisecond or so of each other.
RACER = """
import os, sys, time
from faceswap_cam.daemon import cli
import faceswap_cam.daemon.pipeline.app
go = sys.argv[1]
open(f"{go}.ready-{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
sys.exit(cli.main(sys.argv[2:]))
"""


def control_file(env: dict[str, str]) -> Path:
    # cli_env's runtime dir does not exist, so the daemon writes into its config dir.
    return Path(env["XDG_CONFIG_HOME"]) / "faceswap-cam" / "control.json"


def wait_for_control_file(path: Path, pid: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            document = read_control_file(path)
            if document.pid == pid:
                return document.url
        except ControlFileError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no control file from PID {pid} at {path}")


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=30)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM stops the daemon only on POSIX")
def test_two_daemons_started_together_exactly_one_runs(cli_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    control = control_file(cli_env)
    for round_number in range(ROUNDS):
        go = tmp_path / f"go-{round_number}"
        racers = [subprocess.Popen([sys.executable, "-c", RACER, str(go), *RUN_ARGS],
                                   env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for _ in range(2)]
        try:
            ready = time.monotonic() + 60
            while len(list(tmp_path.glob(f"{go.name}.ready-*"))) < 2:
                assert time.monotonic() < ready, "the racers did not start"
                time.sleep(0.01)
            go.touch()
            # The loser exits on its own; the winner runs until stopped.
            deadline = time.monotonic() + 30
            while all(r.poll() is None for r in racers) and time.monotonic() < deadline:
                time.sleep(0.02)
            losers = [r for r in racers if r.poll() is not None]
            assert len(losers) == 1, f"round {round_number}: none refused to start"
            loser = losers[0]
            winner = next(r for r in racers if r is not loser)
            _, loser_err = loser.communicate(timeout=10)
            assert loser.returncode == 2, loser_err
            url = wait_for_control_file(control, winner.pid)
            assert f"PID {winner.pid}" in loser_err, loser_err
            assert url in loser_err, loser_err
            assert "already running" in loser_err
            assert winner.poll() is None, "the winner stopped as well"
            _, winner_err = stop(winner)
            assert winner.returncode == 0, winner_err
        finally:
            for racer in racers:
                if racer.poll() is None:
                    racer.kill()
                    racer.communicate(timeout=10)


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGKILL on Windows")
def test_a_killed_daemon_leaves_no_lock_behind(cli_env: dict[str, str]) -> None:
    control = control_file(cli_env)
    first = subprocess.Popen([faceswap_cam_exe(), *RUN_ARGS], env=cli_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_control_file(control, first.pid)
        first.kill()  # no cleanup of any kind: the kernel drops the lock
        first.communicate(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.Popen([faceswap_cam_exe(), *RUN_ARGS], env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_control_file(control, second.pid)
        _, err = stop(second)
        assert second.returncode == 0, err
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate(timeout=10)


def test_the_lock_is_exclusive_within_a_process_and_freed_by_release(tmp_path: Path) -> None:
    path = tmp_path / "daemon.lock"
    first = DaemonLock.acquire(path)
    with pytest.raises(AlreadyRunning) as refused:
        DaemonLock.acquire(path)
    assert refused.value.pid == os.getpid()
    assert re.search(rf"PID {os.getpid()}\b", str(refused.value))
    first.release()
    first.release()  # idempotent
    DaemonLock.acquire(path).release()
