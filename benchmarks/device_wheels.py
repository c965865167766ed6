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

A session's device time is 15 minutes in all, the machine's start included, and a call may
run 10. So the first call (``first``) runs wan-animate's ``--preset all`` (about 4 minutes:
``gpu_engine.py --preset all --predict h200`` says how it adds up) and then ``preprocess`` in
one go, each under its own ``timeout`` that keeps the pair inside the call's limit (and
gpu_engine under a ``--budget-s`` a little shorter, so that it stops itself first): the
second adds its section to the efficiency file the first wrote, there,
with no copying between calls and no idle machine meanwhile. The presets run cheapest first
and the file is written after each, so that a run cut short still leaves DiT figures.
``wan-animate-2`` (``--engine wan-animate-2 --preset all``, about 5.5 minutes) is a second call,
where the time left allows, and ``--gpus N`` one on a machine with N GPUs. Each benchmark's
log and the efficiency file (which they write in ``$OUT`` itself) come back through ``$OUT``,
whatever stops them: copy the file over ``benchmarks/results/gpu_efficiency.json`` before the
next call (which adds its section to it) and commit it at the end, and ``faceswap-cam plan``
predicts from the measurement instead of its assumption. ``preprocess`` times the real-size
detector, pose and SAM2 models around a batch in the person window, against the plan's H200
live batch (the figure to replace with the measured ``live-win`` one): the daemon keeps the
plan's cadence while the whole call, these included, stays under 95 % of a batch period. It
writes the preprocessing's measured efficiency into the same file, for the plan's ``pre s``.

A device's time is scarce and a failed call costs minutes of it, so rehearse first, here:

    .venv/bin/python benchmarks/device_wheels.py --rehearse /tmp/device-rehearsal

builds a Python 3.12 environment (``--python`` names the interpreter) with the device image's
own versions (``DEVICE_IMAGE``: torch 2.11, transformers 5.17, ...; about 3.5 GB, downloaded
once), installs the carried wheels over it as the device command does, and runs each
benchmark's CPU form (``REHEARSALS``) that way.
It found what ``MISSING_THERE`` says of ftfy and transformers: both would have failed the
device's first call.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Installed on the device, checked against the library's list of what its image holds.
MISSING_THERE = ("diffusers", "platformdirs", "importlib_metadata",
                 # diffusers' Wan pipelines clean a prompt with ftfy whenever they encode one
                 # (a NameError without it), as preprocess.py's tiny engine does.
                 "ftfy", "wcwidth",
                 # The live preset's fp8. torchao 0.18 loads its compiled ops from torch 2.11
                 # on, the device's; should they fail there, the benchmark measures
                 # unquantized and says why.
                 "torchao",
                 # There but too old: its 5.17 builds SAM2's mask decoder from the prompt
                 # encoder's config, so no SAM2 checkpoint loads (pyproject asks for 5.20).
                 "transformers")
#: Everything pip must know to pick wheels for the device rather than for this machine.
DEVICE_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                   "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                   "--platform", "manylinux2014_x86_64"]
BENCHMARKS = {
    "wan-animate": "benchmarks/gpu_engine.py --preset all",
    "wan-animate-2": "benchmarks/gpu_engine.py --preset all --engine wan-animate-2",
    "preprocess": "benchmarks/preprocess.py --gpu --wan-batch-s 0.692",
}
#: Seconds each may run within a call, at most: less where the call has less left before
#: ``CALL_BUDGET_S`` (the device stops a call at 600 s, and its ``$OUT`` comes back, but a
#: benchmark stopped there has no chance to finish its log). ``timeout`` stops a benchmark
#: with SIGTERM (and SIGKILL ``KILL_AFTER_S`` later); what it had written stays.
TIME_LIMITS = {"wan-animate": 430, "wan-animate-2": 570, "preprocess": 150}
CALL_BUDGET_S = 585
KILL_AFTER_S = 5
#: The benchmarks that keep to a ``--budget-s`` of their own (benchmarks/call_time.py): it is
#: their time limit less this, so that they stop themselves, table and JSON line printed,
#: before ``timeout`` would. ``timeout`` counts from the process's start, the budget from
#: after its imports (torch, diffusers: well over 10 s on a machine just started).
BUDGETED = ("wan-animate", "wan-animate-2")
BUDGET_MARGIN_S = 30
#: What each device call runs, in order: ``first`` is the one to make first.
CALLS = {"first": ("wan-animate", "preprocess"), "wan-animate": ("wan-animate",),
         "wan-animate-2": ("wan-animate-2",), "preprocess": ("preprocess",)}
#: The device tool's limit on one call's command, in seconds and in characters.
CALL_LIMIT_S = 600
COMMAND_LIMIT = 2000
#: Each benchmark as the CPU runs it: the same loaders, builders and engine calls, on tiny
#: models (gpu_engine) or the real-size preprocessing models on the CPU (a few minutes).
REHEARSALS = {
    "wan-animate": "benchmarks/gpu_engine.py --preset all --tiny",
    "wan-animate-2": "benchmarks/gpu_engine.py --preset all --engine wan-animate-2 --tiny",
    "preprocess": "benchmarks/preprocess.py --real-on-cpu --frames 4 --repeats 1 --warmup 0",
}
#: The device image's versions of what the benchmarks import (the device KINDS page's pip
#: list, 2026-11), for the rehearsal; the rest of what they need is in the image at some
#: version and is taken as pip resolves it. The image has pytest as well; the rehearsal leaves
#: it out, so a benchmark that comes to import it through a test module fails here first, where
#: a user's venv after the daemon's set-up (no test tools) would fail the same way.
DEVICE_IMAGE = ("torch==2.11.0", "torchvision==0.26.0", "transformers==5.17.0",
                "accelerate==1.15.0", "huggingface_hub==1.33.0", "numpy==2.5.2",
                "safetensors==0.8.0", "tokenizers==0.23.2", "opencv-python-headless", "pillow",
                "peft", "requests", "packaging")
DEVICE_PYTHON = "python3.12"
#: How the carried wheels go in on the device, and over the rehearsal's image the same way:
#: beside the image's packages, ahead of them on PYTHONPATH, nothing fetched.
WHEEL_INSTALL = ("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                 "--no-cache-dir", "--target")


def pinned(name: str) -> str:
    """``name==VERSION`` as installed here; exits naming the fix when it is not."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"device_wheels: {name} is not installed here: run the README's test "
                         "command once (it installs the model stack), then this again") from None


def device_command(call: str) -> str:
    """The shell command for the device tool's ``run`` (with ``carry: [".whl"]``) that runs
    ``CALLS[call]`` in order, each under its time limit; its exit status is the first failure's
    (a timeout's is 124), else 0. Every benchmark writes the efficiency file in ``$OUT``
    itself (the checkout's, copied there first, so that each adds to what is known), so what
    it measured comes back however the call ends."""
    steps = "".join(
        f"t=$(({CALL_BUDGET_S} - SECONDS)); [ $t -gt {TIME_LIMITS[name]} ] && "
        f"t={TIME_LIMITS[name]}; [ $t -lt 1 ] && t=1; "
        f"timeout -k {KILL_AFTER_S} $t python3 {BENCHMARKS[name]} "
        + (f"--budget-s $((t > {2 * BUDGET_MARGIN_S} ? t - {BUDGET_MARGIN_S} : t)) "
           if name in BUDGETED else "")
        + f"--efficiency-file $OUT/gpu_efficiency.json 2>&1 | tee $OUT/{name}.log; "
        "s=$?; [ $status = 0 ] && status=$s; "
        for name in CALLS[call])
    return (f"python3 {' '.join(WHEEL_INSTALL)} /tmp/site .whl/*.whl || exit; "
            "mkdir -p /tmp/ns && ln -sfn \"$PWD\" "
            "/tmp/ns/faceswap_cam; export PYTHONPATH=/tmp/ns:/tmp/site PYTHONUNBUFFERED=1; "
            "cp benchmarks/results/gpu_efficiency.json $OUT/ 2>/dev/null; "
            "nvidia-smi --query-gpu=name,memory.total --format=csv; set -o pipefail; status=0; "
            f"{steps}exit $status")


def rehearse(venv: Path, wheels: Path, python: str) -> int:
    """Run each benchmark's CPU form on the device image's versions with the carried wheels
    over them, as the device command installs and imports them; 0 when all pass."""
    interpreter = venv / "bin" / "python"
    installed = venv / "device-image.txt"
    if venv.exists() and not installed.exists():
        # Not one this built (or its build failed half-way): never install the device's
        # versions over some other environment, the checkout's own .venv say.
        raise SystemExit(f"device_wheels: {venv} exists and is no rehearsal environment: "
                         "name a new folder, or remove it")
    if not venv.exists():
        _build_rehearsal(venv, python)
    elif installed.read_text().split() != list(DEVICE_IMAGE):
        _install_image(venv)
    site, namespace = venv / "device-site", venv / "device-ns"
    shutil.rmtree(site, ignore_errors=True)
    subprocess.run([str(interpreter), *WHEEL_INSTALL, str(site),
                    *map(str, sorted(wheels.glob("*.whl")))], check=True)
    namespace.mkdir(exist_ok=True)
    link = namespace / "faceswap_cam"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(REPO)
    # The checkout's own .venv stays out of it: only what the device has and the wheels.
    env = {**os.environ, "PYTHONPATH": f"{namespace}{os.pathsep}{site}",
           "PYTHONUNBUFFERED": "1"}
    failed = []
    with tempfile.TemporaryDirectory(prefix="device-rehearsal-") as folder:
        for name, command in REHEARSALS.items():
            log = venv / f"{name}.log"
            # A scratch efficiency file: a rehearsal's figures are the CPU's, not a GPU's.
            argv = [str(interpreter), *command.split(), "--efficiency-file",
                    str(Path(folder) / "gpu_efficiency.json")]
            with log.open("w") as out:
                code = subprocess.run(argv, cwd=REPO, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, check=False).returncode
            print(f"{name}: {'ok' if code == 0 else f'FAILED (exit {code})'}: {log}")
            if code != 0:
                failed.append(name)
                print("".join(log.read_text().splitlines(keepends=True)[-15:]))
    return 1 if failed else 0


def _build_rehearsal(venv: Path, python: str) -> None:
    """A Python 3.12 venv with ``DEVICE_IMAGE`` at ``venv``, built beside it and moved there
    only once whole, so that a failed build leaves nothing to be taken for one."""
    building = venv.with_name(venv.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    try:
        subprocess.run([python, "-m", "venv", str(building)], check=True)
        subprocess.run([str(building / "bin" / "python"), "-c",
                        "import sys; assert sys.version_info[:2] == (3, 12), sys.version"],
                       check=True)
        _install_image(building)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise SystemExit(f"device_wheels: could not build the rehearsal with {python} ({exc}): "
                         "the device runs Python 3.12 with the registry's wheels; name a "
                         "working python3.12 with --python") from None
    building.rename(venv)


def _install_image(venv: Path) -> None:
    """``DEVICE_IMAGE`` into ``venv``, then the note that says it is there."""
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *DEVICE_IMAGE],
                   check=True)
    (venv / "device-image.txt").write_text("\n".join(DEVICE_IMAGE) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".whl",
                        help="where the wheels go (default: .whl in the checkout)")
    parser.add_argument("--rehearse", type=Path, default=None, metavar="VENV",
                        help="then run each benchmark's CPU form on the device image's "
                             "versions, in this environment (built on first use)")
    parser.add_argument("--python", default=DEVICE_PYTHON,
                        help=f"the interpreter to build it with (default {DEVICE_PYTHON})")
    args = parser.parse_args()
    if args.rehearse is not None:
        args.rehearse = args.rehearse.resolve()
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
    print("\nGive the device tool, with carry [\".whl\"], one of these per call, 'first' "
          "first:")
    for name in CALLS:
        print(f"\n# {name}\n{device_command(name)}")
    if args.rehearse is not None:
        print(f"\nrehearsing on the device image's versions in {args.rehearse}:")
        return rehearse(args.rehearse, args.dest, args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
