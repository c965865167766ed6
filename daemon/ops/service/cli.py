"""``faceswap-cam service install|uninstall|status|logs``: its arguments and what it prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceswap_cam.daemon.ops.service.common import (
    EXIT_CONFIG,
    KIND,
    LOG_LINES,
    Outcome,
    Runner,
    ServiceError,
)
from faceswap_cam.daemon.ops.service.lifecycle import install, logs, status, uninstall

_STATUS_NOT_INSTALLED = 3


def add_service_parser(subparsers: Any) -> None:
    """``faceswap-cam service install|uninstall|status|logs``."""
    service = subparsers.add_parser(
        "service", help="start FaceSwap Cam at login (install | uninstall | status | logs)",
        description="Start the daemon and the tray at login: a systemd user unit and an XDG "
        "autostart entry (Linux), launchd agents (macOS), logon tasks (Windows). No admin "
        "rights needed. The service runs this Python: " + (sys.executable or "?"))
    actions = service.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    actions.add_parser("install", help="write the login service and start the daemon "
                       "(safe to repeat)")
    actions.add_parser("uninstall", help="stop the daemon and remove everything install added")
    actions.add_parser("status", help="what is installed and running (exit 3: not installed)")
    log_parser = actions.add_parser("logs", help="the service's recent log")
    log_parser.add_argument("-n", "--lines", type=int, default=LOG_LINES,
                            help=f"how many lines (default {LOG_LINES})")


def run_service(args: argparse.Namespace, *, platform: str | None = None,
                home: Path | None = None, env: Mapping[str, str] | None = None,
                runner: Runner | None = None) -> int:
    """Run a parsed ``service`` command; the keyword arguments are for tests. Exit codes: 0 done
    (warnings included), 1 a file could not be written, 2 unsupported here, 3 status: not
    installed."""
    try:
        if args.service_command == "install":
            _print_outcome(install(platform=platform, home=home, env=env, runner=runner))
        elif args.service_command == "uninstall":
            _print_outcome(uninstall(platform=platform, home=home, env=env, runner=runner))
        elif args.service_command == "status":
            report = status(platform=platform, home=home, env=env, runner=runner)
            print(report.render())  # noqa: T201
            return 0 if report.installed else _STATUS_NOT_INSTALLED
        else:
            text = logs(platform=platform, home=home, env=env, runner=runner, lines=args.lines)
            print(text)  # noqa: T201
    except ServiceError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    except OSError as exc:
        print(f"faceswap-cam: service {args.service_command} failed: {exc}",  # noqa: T201
              file=sys.stderr)
        return 1
    return 0


_HEADLINE = {
    "installed": "FaceSwap Cam login service installed",
    "updated": "FaceSwap Cam login service updated",
    "unchanged": "FaceSwap Cam login service unchanged, already installed",
    "removed": "FaceSwap Cam login service removed",
    "absent": "FaceSwap Cam login service was not installed (nothing to remove)",
}


def _print_outcome(outcome: Outcome) -> None:
    print(f"{_HEADLINE[outcome.action]} ({KIND[outcome.platform]}).")  # noqa: T201
    for path in outcome.written:
        print(f"  wrote {path}")  # noqa: T201
    for path in outcome.removed:
        print(f"  removed {path}")  # noqa: T201
    for command in outcome.commands:
        print(f"  ran: {command}")  # noqa: T201
    for note in outcome.notes:
        print(f"note: {note}")  # noqa: T201
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)  # noqa: T201

