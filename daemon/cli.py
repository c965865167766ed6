"""The ``faceswap-cam`` command: ``run`` the daemon, list ``devices``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceswap_cam.daemon.config import (
    ConfigError,
    Fallback,
    Playout,
    VirtualCameraFormat,
    default_config_path,
    load_settings,
)

logger = logging.getLogger("faceswap_cam")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def _add_run_parser(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run the daemon (webcam -> face swap -> virtual camera)",
        description="Run the daemon. Unset flags come from FACESWAP_CAM_* variables, then the "
        f"config file ({default_config_path()}), then defaults.")
    run.add_argument("--config", type=Path, help="TOML config file to read instead of the default")
    run.add_argument("--source", help="auto (default) | webcam:N | webcam:auto | file:PATH | demo")
    run.add_argument("--sink", dest="sinks", action="append", metavar="SINK",
                     help="virtualcam | preview | file:PATH | null | auto; repeat for several")
    run.add_argument("--engine", help="auto (default) | passthrough | debug")
    run.add_argument("--engine-delay-ms", type=float, help="delay per batch of the debug engine")
    run.add_argument("--engine-timeout-s", type=float, help="an engine call longer than this "
                     "is treated as hung and the engine restarted")
    run.add_argument("--fps", type=float, help="output frame rate (default 30)")
    run.add_argument("--size", help="output size WIDTHxHEIGHT (default 1280x720)")
    run.add_argument("--duration", type=float, help="stop after SECONDS of output")
    run.add_argument("--fallback", choices=[f.value for f in Fallback],
                     help="what to show while no swapped frame is due")
    run.add_argument("--playout", choices=[p.value for p in Playout],
                     help="live: swapped frames as soon as they arrive; smooth: at capture "
                     "cadence behind an adaptive delay")
    run.add_argument("--swap", dest="swap", action=argparse.BooleanOptionalAction, default=None,
                     help="swap faces (default) or pass the camera through")
    run.add_argument("--preview-port", type=int, help="port of the preview page (0: any free)")
    run.add_argument("--virtualcam-format", choices=[f.value for f in VirtualCameraFormat])
    run.add_argument("--virtualcam-device", help="/dev/videoN (Linux) or camera name")
    run.add_argument("--overlay-output", action="store_true", default=None,
                     help="also draw the stats overlay on the virtual camera output")
    run.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceswap-cam", description="FaceSwap Cam: a live face-swap virtual camera.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(subparsers)
    subparsers.add_parser("devices", help="list cameras and virtual-camera devices")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _run(args: argparse.Namespace) -> int:
    from faceswap_cam.daemon.app import RealtimeFaceSwapApp, StartError

    cli = {key: value for key, value in vars(args).items()
           if key not in ("command", "config") and value is not None}
    try:
        settings = load_settings(cli, config_path=args.config)
    except ConfigError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level)
    try:
        app = RealtimeFaceSwapApp(settings)
    except StartError as exc:
        print(f"faceswap-cam: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        app.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stats = app.run(settings.duration)
    except StartError as exc:
        print(f"faceswap-cam: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(stats, sort_keys=True), flush=True)
    return EXIT_OK


def _devices() -> int:
    from faceswap_cam.daemon.sources import list_v4l2_devices

    devices = list_v4l2_devices()
    if not devices:
        print("no video devices found (this lists Linux /dev/video* nodes)")
    for device in devices:
        role = ("virtual camera (output)" if device.is_loopback
                else "camera" if device.can_capture else "not a capture node")
        print(f"{device.path}\t{device.name}\t{device.driver or '?'}\t{role}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "devices":
        return _devices()
    parser.print_help()
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
