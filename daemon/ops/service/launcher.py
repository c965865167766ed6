"""``python -m faceswap_cam.daemon.ops.service --log FILE COMMAND...``: the Windows logon tasks'
launcher (see :func:`launch_logged`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

# `python -m` this package runs launch_logged (its __main__).
LAUNCHER_MODULE = "faceswap_cam.daemon.ops.service"
_LOG_ROTATE_BYTES = 10 * 1024 * 1024


@contextlib.contextmanager
def _log_stream(path: Path) -> Iterator[TextIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        # One old generation is enough to see what happened before the last restart.
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    with path.open("a", encoding="utf-8", errors="replace", buffering=1) as stream:
        yield stream


def launch_logged(argv: Sequence[str]) -> int:
    """``python -m faceswap_cam.daemon.ops.service --log FILE COMMAND...``: run ``faceswap-cam
    COMMAND...`` with stdout and stderr appended to FILE. The Windows tasks start pythonw.exe
    (no console window at logon), which has no stdout or stderr at all: without this the
    daemon's log would go nowhere."""
    parser = argparse.ArgumentParser(prog=f"python -m {LAUNCHER_MODULE}")
    parser.add_argument("--log", type=Path, required=True, help="file to append output to")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="faceswap-cam arguments")
    args = parser.parse_args(argv)
    from faceswap_cam.daemon import cli

    with _log_stream(args.log) as stream:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = stream
        try:
            return cli.main(args.cli_args)
        except SystemExit as exc:
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        except Exception:
            traceback.print_exc(file=stream)
            return 1
        finally:
            sys.stdout, sys.stderr = saved
