"""The command ``benchmarks/device_wheels.py`` prints for the lent GPU machine."""

from __future__ import annotations

from benchmarks.device_wheels import (
    BENCHMARKS,
    DEVICE_IMAGE,
    MISSING_THERE,
    REHEARSALS,
    device_command,
)

#: What the device tool takes as one command.
DEVICE_COMMAND_LIMIT = 2000


def test_each_command_installs_the_carried_wheels_and_returns_its_figures() -> None:
    for name, benchmark in BENCHMARKS.items():
        command = device_command(name)
        assert len(command) <= DEVICE_COMMAND_LIMIT
        assert command.startswith("python3 -m pip install") and ".whl/*.whl" in command
        assert "--no-index" in command  # nothing can be fetched there
        assert f"python3 {benchmark} " in command
        # The checkout is importable as the package, and the figures come back in $OUT.
        assert "/tmp/ns/faceswap_cam" in command and "PYTHONPATH=/tmp/ns:/tmp/site" in command
        assert "$OUT/gpu_engine.log" in command and "$OUT/" in command.split("cp ", 1)[1]
        assert command.endswith("exit $status")  # the benchmark's own exit code
    assert "diffusers" in MISSING_THERE


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
