#!/usr/bin/env python3
"""Create or update the development virtual environment at ``.venv/`` in the repo root.

Used by both README commands. It installs the package in editable mode with its extras and
skips pip when nothing it depends on changed since the last run, so reruns take a second.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
RUNTIME_EXTRAS = ["models", "tray"]
DEV_EXTRAS = ["dev"]


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also install test and lint tools")
    parser.add_argument("--force", action="store_true", help="reinstall even if up to date")
    args = parser.parse_args()

    if sys.version_info < (3, 11):  # noqa: UP036 (runs under any python3)
        print(f"FaceSwap Cam needs Python 3.11 or newer; this is {sys.version.split()[0]}",
              file=sys.stderr)
        return 1
    extras = RUNTIME_EXTRAS + (DEV_EXTRAS if args.dev else [])
    stamp_file = VENV / ".faceswap-cam-install"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes())
    digest.update(",".join(extras).encode())
    stamp = digest.hexdigest()

    python = venv_python()
    if not python.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    installed = stamp_file.read_text().split() if stamp_file.exists() else []
    if args.force or stamp not in installed:
        print(f"installing faceswap-cam[{','.join(extras)}] into {VENV} "
              "(the model stack is large: the first run takes a few minutes)", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
             "-e", f"{REPO}[{','.join(extras)}]"],
            check=True,
        )
        # A --dev install includes the runtime one, so it satisfies both commands.
        stamps = {stamp}
        if args.dev:
            runtime = hashlib.sha256((REPO / "pyproject.toml").read_bytes())
            runtime.update(",".join(RUNTIME_EXTRAS).encode())
            stamps.add(runtime.hexdigest())
        stamp_file.write_text("\n".join(sorted(stamps)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
