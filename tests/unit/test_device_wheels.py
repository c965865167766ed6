"""The command ``benchmarks/device_wheels.py`` prints for the lent GPU machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import device_wheels
from benchmarks.device_wheels import (
    BENCHMARKS,
    BUDGET_MARGIN_S,
    BUDGETED,
    CALL_BUDGET_S,
    CALL_LIMIT_S,
    CALLS,
    COMMAND_LIMIT,
    DEVICE_IMAGE,
    MISSING_THERE,
    REHEARSALS,
    TIME_LIMITS,
    device_command,
)

#: A stand-in for the device's python3: pip installs nothing; a benchmark adds its name to the
#: efficiency file it is given, says so, and exits with the status the test gives it, or
#: sleeps until its timeout stops it.
FAKE_PYTHON = """#!/bin/bash
[ "$1" = -m ] && exit 0
name=$(basename "$1" .py)
echo "$*" > "$OUT/$name.args"
while [ $# -gt 0 ] && [ "$1" != --efficiency-file ]; do shift; done
echo "$name" >> "$2"
echo "ran $name"
how=$(eval "echo \\${EXIT_$name:-0}")
[ "$how" = sleep ] && exec sleep 30
exit "$how"
"""


def run_on_a_fake_device(tmp_path: Path, call: str, **exits: int | str) -> tuple[int, Path]:
    """``device_command(call)`` run by bash in a fake checkout holding an efficiency file, with
    python3 and nvidia-smi standing in: (its exit status, its $OUT)."""
    checkout, out, tools = tmp_path / "checkout", tmp_path / "out", tmp_path / "bin"
    for folder in (checkout / ".whl", checkout / "benchmarks/results", out, tools):
        folder.mkdir(parents=True)
    (checkout / "benchmarks/results/gpu_efficiency.json").write_text("measured before\n")
    for name, text in (("python3", FAKE_PYTHON), ("nvidia-smi", "#!/bin/sh\necho H200\n")):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "OUT": str(out),
           **{f"EXIT_{name}": str(code) for name, code in exits.items()}}
    # bash, as the device runs it (set -o pipefail, SECONDS and $(( )) are bash's).
    done = subprocess.run(["bash", "-c", device_command(call)], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, out


def test_each_call_installs_the_carried_wheels_and_fits_the_device_tool() -> None:
    for call, names in CALLS.items():
        command = device_command(call)
        assert len(command) <= COMMAND_LIMIT
        assert command.startswith("python3 -m pip install") and ".whl/*.whl" in command
        assert "--no-index" in command  # nothing can be fetched there
        # The checkout is importable as the package.
        assert "/tmp/ns/faceswap_cam" in command and "PYTHONPATH=/tmp/ns:/tmp/site" in command
        for name in names:
            assert f"t={TIME_LIMITS[name]}; " in command
            budget = (f"--budget-s $((t > {2 * BUDGET_MARGIN_S} ? t - {BUDGET_MARGIN_S} : t)) "
                      if name in BUDGETED else "")
            assert (f"python3 {BENCHMARKS[name]} {budget}--efficiency-file "
                    f"$OUT/gpu_efficiency.json 2>&1 | tee $OUT/{name}.log") in command
        # Installing the wheels takes a few seconds of the call's own limit.
        assert sum(TIME_LIMITS[name] for name in names) <= CALL_BUDGET_S <= CALL_LIMIT_S - 10
    assert set(BENCHMARKS) <= {name for names in CALLS.values() for name in names}
    assert CALLS["first"][0] == "wan-animate"


def test_a_call_returns_each_benchmarks_log_and_the_efficiency_file_they_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, out = run_on_a_fake_device(tmp_path / "ok", "first")
    assert status == 0
    assert (out / "wan-animate.log").read_text() == "ran gpu_engine\n"
    assert (out / "preprocess.log").read_text() == "ran preprocess\n"
    # gpu_engine stops itself, with its table, before its timeout would.
    limit = TIME_LIMITS["wan-animate"]
    assert f"--budget-s {limit - BUDGET_MARGIN_S} " in (out / "gpu_engine.args").read_text()
    assert "--budget-s" not in (out / "preprocess.args").read_text()
    # Each added to the checkout's file, in $OUT itself: it comes back however the call ends.
    assert (out / "gpu_efficiency.json").read_text().split("\n") == [
        "measured before", "gpu_engine", "preprocess", ""]
    # A failure is the call's status, and the benchmarks after it still run.
    status, out = run_on_a_fake_device(tmp_path / "failed", "first", gpu_engine=3)
    assert status == 3
    assert (out / "preprocess.log").read_text() == "ran preprocess\n"
    # A benchmark past its limit is stopped (124), keeps what it wrote, and the next runs.
    monkeypatch.setitem(TIME_LIMITS, "wan-animate", 1)
    status, out = run_on_a_fake_device(tmp_path / "slow", "first", gpu_engine="sleep")
    assert status == 124
    assert (out / "gpu_efficiency.json").read_text().split("\n") == [
        "measured before", "gpu_engine", "preprocess", ""]
    # Nor may one run past what is left of the call, whatever its own limit.
    monkeypatch.setitem(TIME_LIMITS, "wan-animate", 430)
    monkeypatch.setattr(device_wheels, "CALL_BUDGET_S", 2)
    status, out = run_on_a_fake_device(tmp_path / "late", "first", gpu_engine="sleep")
    assert status == 124 and (out / "preprocess.log").read_text() == "ran preprocess\n"


def test_each_benchmark_has_a_rehearsal_of_the_same_script_on_the_cpu() -> None:
    assert REHEARSALS.keys() == BENCHMARKS.keys()
    for name, rehearsal in REHEARSALS.items():
        script = BENCHMARKS[name].split()[0]
        assert rehearsal.split()[0] == script
        assert "--tiny" in rehearsal.split() or "--real-on-cpu" in rehearsal.split()
        # The device run's own options, but the one that needs CUDA.
        device_options = set(BENCHMARKS[name].split()[1:]) - {"--gpu", "--wan-batch-s", "0.692"}
        assert device_options <= set(rehearsal.split())
    # The rehearsal's base is the image's transformers, which the carried one must replace.
    assert "transformers==5.17.0" in DEVICE_IMAGE and "transformers" in MISSING_THERE
    assert "diffusers" in MISSING_THERE
