"""Wheels for the lent GPU machine, so the GPU benchmarks run there in one call.

The device (one H200, see the library's device README) has Python 3.12 with torch,
transformers, accelerate, peft, OpenCV and numpy, but no diffusers, no platformdirs and no way
to download: what is missing travels as wheels in ``.whl/`` (ignored by git, named in the
call's ``carry``). This script fills ``.whl/`` here, where pip reaches the registry, with the
versions this checkout's environment runs (so the GPU measures the code the tests proved):

    .venv/bin/python benchmarks/device_wheels.py

and prints the command to give the device tool (``carry: [".whl"]``). The project itself is
not a wheel there: the checkout travels, and a folder holding a ``faceswap_cam`` link to it
makes it importable under its package name, as the editable install does here.

The command runs one benchmark, so that each fits the 10-minute limit of a call:
``--preset all`` (wan-animate) first, then ``--engine wan-animate-2 --preset all``, then
``--gpus N`` on a machine with N GPUs. The log and the efficiency file come back through
``$OUT``: copy the file over ``benchmarks/results/gpu_efficiency.json`` before the next call
(which adds its engine's section to it) and commit it at the end, and ``faceswap-cam plan``
predicts from the measurement instead of its assumption. ``preprocess`` times the real-size
detector, pose and SAM2 models around a batch in the person window, against the plan's H200
live batch (the figure to replace with the measured ``live-win`` one): the daemon keeps the
plan's cadence while the whole call, these included, stays under 95 % of a batch period. It
writes the preprocessing's measured efficiency into the same file, for the plan's ``pre s``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Installed on the device, checked against the library's list of what its image holds.
MISSING_THERE = ("diffusers", "platformdirs", "importlib_metadata",
                 # The live preset's fp8. torchao 0.18 loads its compiled ops from torch 2.11
                 # on, the device's; should they fail there, the benchmark measures
                 # unquantized and says why.
                 "torchao")
#: Everything pip must know to pick wheels for the device rather than for this machine.
DEVICE_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                   "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                   "--platform", "manylinux2014_x86_64"]
BENCHMARKS = {
    "wan-animate": "benchmarks/gpu_engine.py --preset all",
    "wan-animate-2": "benchmarks/gpu_engine.py --preset all --engine wan-animate-2",
    "preprocess": "benchmarks/preprocess.py --gpu --wan-batch-s 0.692",
}


def pinned(name: str) -> str:
    """``name==VERSION`` as installed here; exits naming the fix when it is not."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"device_wheels: {name} is not installed here: run the README's test "
                         "command once (it installs the model stack), then this again") from None


def device_command(benchmark: str) -> str:
    """The shell command for the device tool's ``run`` (with ``carry: [".whl"]``)."""
    return ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "
            "--target /tmp/site .whl/*.whl || exit; mkdir -p /tmp/ns && ln -sfn \"$PWD\" "
            "/tmp/ns/faceswap_cam; export PYTHONPATH=/tmp/ns:/tmp/site PYTHONUNBUFFERED=1; "
            "nvidia-smi --query-gpu=name,memory.total --format=csv; set -o pipefail; "
            f"python3 {BENCHMARKS[benchmark]} 2>&1 | tee $OUT/gpu_engine.log; status=$?; "
            "cp benchmarks/results/gpu_efficiency.json $OUT/; exit $status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".whl",
                        help="where the wheels go (default: .whl in the checkout)")
    args = parser.parse_args()
    args.dest.mkdir(exist_ok=True)
    for old in args.dest.glob("*.whl"):
        old.unlink()  # two versions of one package stop the whole install there
    wanted = [pinned(name) for name in MISSING_THERE]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", *DEVICE_PLATFORM,
                    "-d", str(args.dest), *wanted], check=True)
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(wheel.stat().st_size for wheel in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {args.dest} "
          f"(the device call carries at most 64 MiB with the checkout):")
    for wheel in wheels:
        print(f"  {wheel.name}")
    print("\nGive the device tool, with carry [\".whl\"], one of these per call:")
    for name in BENCHMARKS:
        print(f"\n# {name}\n{device_command(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
