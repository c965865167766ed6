"""The ``faceswap-cam`` command: ``run`` the daemon, ``render`` a clip, manage ``models``,
list ``devices``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceswap_cam.daemon.config import (
    ConfigError,
    EngineHosting,
    Fallback,
    Offload,
    Playout,
    Preprocessing,
    Settings,
    VirtualCameraFormat,
    load_settings,
)
from faceswap_cam.daemon.control.status import DaemonStatus, StatusError, parse_status
from faceswap_cam.daemon.ops.doctor import add_doctor_parser, run_doctor
from faceswap_cam.daemon.ops.service import add_service_parser, run_service
from faceswap_cam.daemon.paths import config_file
from faceswap_cam.models import defaults
from faceswap_cam.models.plan.cli import add_plan_parser, run_plan
from faceswap_cam.models.presets import PresetName
from faceswap_cam.models.wan2.variants import Wan2Variant
from faceswap_cam.models.weights.commands import add_models_parser, run_models

logger = logging.getLogger("faceswap_cam")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3
#: Stopped by a second Ctrl-C while already stopping (the shell's 128 + SIGINT).
EXIT_INTERRUPTED = 130


def _add_run_parser(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run the daemon (webcam -> face swap -> virtual camera)",
        description="Run the daemon. Unset flags come from FACESWAP_CAM_* variables, then the "
        f"config file ({config_file()}), then defaults.")
    run.add_argument("--config", type=Path, help="TOML config file to read instead of the default")
    run.add_argument("--source", help="auto (default) | webcam:N | webcam:auto | file:PATH | demo")
    run.add_argument("--sink", dest="sinks", action="append", metavar="SINK",
                     help="virtualcam | preview | file:PATH | null | auto; repeat for several")
    run.add_argument("--engine", help="auto (default) | passthrough | debug")
    run.add_argument("--engine-delay-ms", type=float, help="delay per batch of the debug engine")
    run.add_argument("--engine-timeout-s", type=float, help="an engine call longer than this "
                     "is treated as hung and the engine restarted")
    run.add_argument("--engine-host", choices=[h.value for h in EngineHosting],
                     help="where the engine runs: auto (default: model engines in a child "
                     "process, passthrough/debug inside the daemon) | child | inline")
    run.add_argument("--engine-url", metavar="URL",
                     help="use an engine host elsewhere: the URL its pairing line printed")
    run.add_argument("--engine-token-file", type=Path, metavar="PATH",
                     help="a file holding that host's token (instead of the URL's)")
    run.add_argument("--engine-gpus", type=_positive_int, metavar="N",
                     help="split wan-animate over N GPUs of this machine in the local child "
                     "host (`engine serve --gpus N`; default 1)")
    run.add_argument("--cadence", type=_positive_int, metavar="K",
                     help="swap every K-th camera frame at start (1 to 30), adapting from "
                     "there (default: the preset's, else the capacity plan's for this GPU, "
                     "else 1)")
    fps, (width, height) = _default("fps"), _default("size")
    run.add_argument("--fps", type=float, help=f"output frame rate (default {fps:g})")
    run.add_argument("--size", help=f"output size WIDTHxHEIGHT (default {width}x{height})")
    run.add_argument("--duration", type=float, help="stop after SECONDS of output")
    run.add_argument("--fallback", choices=[f.value for f in Fallback],
                     help="what to show while no swapped frame is due")
    run.add_argument("--playout", choices=[p.value for p in Playout],
                     help="smooth (default): every swapped frame, at capture cadence behind "
                     "an adaptive delay; live: each batch's newest as soon as it arrives")
    run.add_argument("--swap", dest="swap", action=argparse.BooleanOptionalAction, default=None,
                     help="swap faces (default) or pass the camera through")
    run.add_argument("--preview-port", type=int, help="port of the preview page (0: any free)")
    run.add_argument("--virtualcam-format", choices=[f.value for f in VirtualCameraFormat])
    run.add_argument("--virtualcam-device", help="/dev/videoN (Linux) or camera name")
    run.add_argument("--overlay-output", action="store_true", default=None,
                     help="also draw the stats overlay on the virtual camera output")
    run.add_argument("--ai-badge", action=argparse.BooleanOptionalAction, default=None,
                     help="mark the virtual camera's swapped frames \"AI altered\" with a small "
                     "corner badge (default off; `faceswap-cam badge on|off` while running)")
    run.add_argument("--mic", help="FaceSwap Mic, your microphone delayed to match the "
                     "swapped video, so lips and words stay together in the call: auto (the "
                     "system's microphone) | NAME (faceswap-cam doctor lists them) | off "
                     "(default; `faceswap-cam mic on|off` while running)")
    run.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR")
    run.add_argument("--reference", type=Path, help="image of the character to become")
    _add_engine_flags(run)


def _default(setting: str) -> Any:
    return Settings.model_fields[setting].default


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """Wan-Animate flags shared by ``run`` and ``render``."""
    group = parser.add_argument_group("Wan-Animate engine")
    group.add_argument("--preset", choices=[p.value for p in PresetName],
                       help="quality: 20 steps at 720p; balanced: 6 steps with the "
                       "step-distillation LoRA; live: 4 steps with it, 480p, short segments, "
                       "fp8 where the GPU has it. Steps, segment, carry, size, LoRA, shift and "
                       "quantize given as well win")
    group.add_argument("--wan-model", help="diffusers folder or repo id (downloaded with "
                       "`faceswap-cam models download`)")
    group.add_argument("--wan2-model", help="wan-animate-2: diffusers folder or repo id "
                       "(default: the downloaded checkpoint of --wan2-variant)")
    group.add_argument("--wan2-variant", choices=[v.value for v in Wan2Variant],
                       help="wan-animate-2's checkpoint: base (40 steps with guidance) or "
                       "distilled (10 steps); default: the preset's, else distilled")
    group.add_argument("--mode", choices=defaults.MODES,
                       help="replace: keep your room, replace the person; animate: the "
                       f"character in its own scene (default {defaults.MODE})")
    group.add_argument("--steps", type=int,
                       help=f"denoising steps per segment (default {defaults.STEPS})")
    group.add_argument("--segment-frames", type=int,
                       help=f"segment length L = 4n+1 (default {defaults.SEGMENT_FRAMES})")
    group.add_argument("--carry", type=int, choices=defaults.CARRY_CHOICES,
                       help="frames carried from one segment to the next "
                       f"(default {defaults.CARRY})")
    group.add_argument("--seed", type=int, help=f"default {defaults.SEED}")
    group.add_argument("--prompt", help=f'default "{defaults.PROMPT}"')
    group.add_argument("--device", help="auto | cuda | cuda:N | mps | cpu")
    group.add_argument("--dtype", help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32")
    group.add_argument("--vae-fp32", action="store_true", default=None,
                       help="run the VAE in fp32")
    group.add_argument("--offload", choices=[o.value for o in Offload],
                       help="CPU offload to save GPU memory")
    group.add_argument("--vae-tiling", action="store_true", default=None)
    group.add_argument("--attention-backend",
                       help="auto (default: FlashAttention-3 or SageAttention where installed "
                       "and supported, else native) | a diffusers backend, e.g. native, flash")
    group.add_argument("--quantize", choices=[q.value for q in defaults.Quantize],
                       help="the transformer's weights: none (default) | fp8 (compute "
                       "capability 8.9+: Ada, Hopper, Blackwell) | int8 (any GPU, the CPU too)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the transformer blocks (default: off; on for "
                       "wan-animate-2 on a CUDA GPU, whose flex attention needs it)")
    group.add_argument("--lora", dest="loras", action="append", metavar="PATH[:SCALE]",
                       help="LoRA file (repeat for several), e.g. relighting or step distillation")
    group.add_argument("--shift", type=float, help="scheduler flow shift (distillation LoRAs)")
    group.add_argument("--gen-size", help="generation WIDTHxHEIGHT, multiples of 16")
    group.add_argument("--detector-model", help="person detector: folder or repo id")
    group.add_argument("--pose-model", help="whole-body pose model: folder or repo id")
    group.add_argument("--sam2-model", help="SAM2 video model (replace mode): folder or repo id")
    group.add_argument("--preprocessor", choices=[p.value for p in Preprocessing],
                       help="wan: Wan-Animate's preprocessing models; stand-in: image "
                       "operations only, to check the pipeline without them (default "
                       f"{defaults.PREPROCESSOR})")
    group.add_argument("--colour-match", action="store_true", default=None,
                       help="match the swapped person's colours to the room")
    group.add_argument("--gen-window", choices=defaults.GEN_WINDOWS,
                       help="replace mode: generate a window around the person, about half "
                       "the work of the frame at the same detail (person, default) or the "
                       "whole frame (frame)")
    group.add_argument("--person-mask", choices=defaults.PERSON_MASKS,
                       help="replace mode: where the person mask comes from: sam2 (Wan's "
                       f"recipe, default {defaults.PERSON_MASK}) or box (the detector's person "
                       "box: Wan fills the mask to its box anyway, so this is the same kind of "
                       "mask without running SAM2; the live preset's choice)")


def _add_engine_parser(subparsers: Any) -> None:
    from faceswap_cam.daemon.engine_host.address import DEFAULT_LISTEN

    engine = subparsers.add_parser("engine", help="run a swap engine in its own process")
    actions = engine.add_subparsers(dest="action", metavar="ACTION")
    serve = actions.add_parser(
        "serve", help="host an engine for a daemon (locally or on a GPU machine)",
        description="Load the engine, listen, print the pairing line (the last line on "
        "start), and serve one daemon at a time until stopped (Ctrl-C or SIGTERM).")
    serve.add_argument("--config", type=Path, help="TOML config file to read instead of the "
                       "default")
    serve.add_argument("--engine", help="auto (default) | passthrough | debug | wan-animate")
    serve.add_argument("--engine-delay-ms", type=float, help="delay per batch of the debug "
                       "engine")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT|unix:PATH",
                       help=f"where to listen (default {DEFAULT_LISTEN}, loopback only; "
                       "another address, e.g. 0.0.0.0:7861, always uses TLS and a token)")
    serve.add_argument("--tls", action="store_true", help="use TLS on loopback too (a "
                       "non-loopback --listen always does): the certificate and token are "
                       "kept and the pairing line carries the certificate's fingerprint")
    serve.add_argument("--new-token", action="store_true", help="replace the kept token: "
                       "daemons paired before are refused until they pair again")
    serve.add_argument("--reference", type=Path, help="image of the character to become "
                       "(a daemon sends its own)")
    serve.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR")
    # The daemon that started this host as its child: the host stops when that one is gone.
    serve.add_argument("--exit-with-parent", type=int, metavar="PID", help=argparse.SUPPRESS)
    serve.add_argument("--gpus", type=_positive_int, default=1, metavar="N",
                       help="run wan-animate on N GPUs of this machine (default 1): N "
                       "processes, one per GPU, joined by torch.distributed with context "
                       "parallelism (Ulysses); needs N CUDA GPUs (the first N that "
                       "CUDA_VISIBLE_DEVICES shows), torch with NCCL, and no --offload; the "
                       "model's attention heads and each segment's tokens must divide by N")
    # A process of a --gpus N group (RANK, WORLD_SIZE... set by the launcher or torchrun).
    serve.add_argument("--group-rank", action="store_true", help=argparse.SUPPRESS)
    _add_engine_flags(serve)
    pair = actions.add_parser(
        "pair", help="remember an engine host on another machine",
        description="Store the URL, token and certificate fingerprint from the line "
        "`faceswap-cam engine serve` printed, so `run --engine-url fscam://HOST:PORT` finds "
        "them.")
    pair.add_argument("line", nargs="+", metavar="LINE",
                      help="the pairing line, or just its fscam:// URL")


def _engine_pair(args: argparse.Namespace) -> int:
    from faceswap_cam.daemon.engine_host.security import (
        SecurityError,
        parse_pairing,
        save_pairing,
    )

    try:
        url = parse_pairing(" ".join(args.line))
        file = save_pairing(url)
    except SecurityError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    pinned = (f"its certificate {url.fingerprint} is pinned" if url.fingerprint
              else "no certificate (a plain loopback host)")
    print(f"paired with the engine host at {url}: token kept in {file}, {pinned}")
    print(f"use it: faceswap-cam run --engine-url {url}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _engine(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from faceswap_cam.daemon.engine_host.address import AddressError, parse_listen

    if args.action == "pair":
        return _engine_pair(args)
    if args.action != "serve":
        print("faceswap-cam: engine needs an action: serve or pair (see `faceswap-cam engine "
              "serve --help`)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_settings(_cli_values(args, "action", "listen", "exit_with_parent",
                                             "tls", "new_token", "gpus", "group_rank"),
                                 config_path=args.config)
        listen = parse_listen(args.listen)
    except (ConfigError, AddressError) as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.tls and listen.is_unix:
        print("faceswap-cam: --tls is for TCP: a Unix socket is private to this user already",
              file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level)
    from faceswap_cam.daemon.engine_host.child import OPTIONS_ENV
    from faceswap_cam.daemon.engine_host.host import exit_code, exit_now, serve
    from faceswap_cam.daemon.pipeline.app import engine_options

    # A child host gets exactly the options its daemon resolved.
    given = os.environ.pop(OPTIONS_ENV, "")
    options = json.loads(given) if given else engine_options(settings)
    if args.gpus > 1 or args.group_rank:
        from faceswap_cam.daemon.engine_host import distributed

        if not args.group_rank:  # this process starts the ranks and supervises them
            return distributed.launch(args.gpus, argv, settings.engine, options,
                                      exit_with_parent=args.exit_with_parent)
        if os.environ.get("RANK") != "0":  # only rank 0 listens
            return distributed.run_rank(args.gpus, options, None,
                                        exit_with_parent=args.exit_with_parent)
    tls: dict[str, Any] = {}
    if args.tls or not listen.is_loopback:
        from faceswap_cam.daemon.engine_host.security import (
            SecurityError,
            host_identity,
            server_context,
        )

        try:  # before the engine loads: a key problem must not wait minutes to show
            identity = host_identity(new_token=args.new_token)
            tls = {"ssl_context": server_context(identity), "token": identity.token,
                   "fingerprint": identity.fingerprint}
        except SecurityError as exc:
            print(f"faceswap-cam: engine host cannot start: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    elif args.new_token:
        print("faceswap-cam: --new-token replaces the token a TLS host keeps: add --tls "
              "(a plain loopback host makes a new token each start)", file=sys.stderr)
        return EXIT_CONFIG
    if args.group_rank:
        distributed.run_rank(args.gpus, options, lambda build: serve(
            settings.engine, options, listen, exit_with_parent=args.exit_with_parent,
            engine_factory=build, **tls), exit_with_parent=args.exit_with_parent)
    code = exit_code(lambda: serve(settings.engine, options, listen,
                                   exit_with_parent=args.exit_with_parent, **tls))
    if args.exit_with_parent is not None:
        exit_now(code)
    return code


def _add_render_parser(subparsers: Any) -> None:
    render = subparsers.add_parser(
        "render", help="render a preprocessed clip offline with the same streaming engine",
        description="Run every frame of a clip preprocessed the Wan-Animate way (src_ref.png, "
        "src_pose.mp4, src_face.mp4, plus src_bg.mp4 and src_mask.mp4 in replace mode) "
        "through the streaming engine.")
    source = render.add_mutually_exclusive_group(required=True)
    source.add_argument("--preprocessed", type=Path, metavar="DIR",
                        help="a folder from Wan-Animate's own preprocessing")
    source.add_argument("--input", type=Path, metavar="VIDEO",
                        help="a raw clip: preprocessed live, like the camera (needs --reference)")
    render.add_argument("--reference", type=Path, help="image of the character to become")
    render.add_argument("--output", type=Path, required=True, metavar="PATH",
                        help="a video file, or a folder (no extension) of lossless PNG frames")
    render.add_argument("--config", type=Path)
    render.add_argument("--log-level")
    _add_engine_flags(render)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceswap-cam", description="FaceSwap Cam: a live face-swap virtual camera.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(subparsers)
    _add_render_parser(subparsers)
    _add_engine_parser(subparsers)
    add_models_parser(subparsers)
    _add_client_parsers(subparsers)
    add_service_parser(subparsers)
    add_doctor_parser(subparsers)
    add_plan_parser(subparsers)
    subparsers.add_parser("devices", help="list cameras and virtual-camera devices")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _run(args: argparse.Namespace) -> int:
    from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp, StartError
    from faceswap_cam.daemon.single_instance import AlreadyRunning

    try:
        settings = load_settings(_cli_values(args), config_path=args.config)
    except ConfigError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level)
    try:
        # Takes the one-daemon lock first of all, before any device or port is opened.
        app = RealtimeFaceSwapApp(settings)
    except AlreadyRunning as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartError as exc:
        print(f"faceswap-cam: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    if app.engine_name == "passthrough" and settings.engine == "auto" and not _nvidia_gpu_seen():
        logger.warning("no NVIDIA GPU found: face swapping needs a CUDA GPU, so the camera runs "
                       "in passthrough (`faceswap-cam doctor` checks the whole set-up)")

    interrupts = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        if signum == signal.SIGINT:
            interrupts += 1
        if interrupts >= 2:
            # The orderly stop goes on (it releases the camera and finishes recordings); a
            # third Ctrl-C ends the process at once.
            logger.warning("already stopping; press Ctrl-C again to quit at once")
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        else:
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
    return EXIT_INTERRUPTED if interrupts >= 2 else EXIT_OK


def _nvidia_gpu_seen() -> bool:
    """A cheap hint (no torch import at start): an NVIDIA driver's device node or tool."""
    import shutil

    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def _add_client_parsers(subparsers: Any) -> None:
    status_command = subparsers.add_parser("status", help="what the running daemon is doing")
    status_command.add_argument("--json", action="store_true", help="one JSON object")
    references = subparsers.add_parser("references", help="the reference-face library")
    actions = references.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list reference faces (default)")
    add = actions.add_parser("add", help="add an image to the library")
    add.add_argument("path", type=Path)
    add.add_argument("--name", help="name in the library (default: from the file name)")
    use = actions.add_parser("use", help="swap to this reference from the next batch on")
    use.add_argument("name")
    remove = actions.add_parser("remove", help="delete a reference from the library")
    remove.add_argument("name")
    swap = subparsers.add_parser("swap", help="turn face swapping on or off")
    swap.add_argument("state", choices=("on", "off"))
    mic = subparsers.add_parser(
        "mic", help="FaceSwap Mic on or off: your voice, delayed to match the swapped video")
    mic.add_argument("state", choices=("on", "off"))
    badge = subparsers.add_parser(
        "badge", help='mark the virtual camera\'s swapped frames "AI altered" (or stop)')
    badge.add_argument("state", choices=("on", "off"))
    subparsers.add_parser("pause", help="privacy: show a still card instead of the camera")
    subparsers.add_parser("resume", help="show the camera again after pause")
    subparsers.add_parser("stop", help="stop the running daemon")
    tray = subparsers.add_parser("tray", help="the system-tray icon (a separate process)")
    tray.add_argument("--control-file", help="the daemon's control file (default: found)")
    tray.add_argument("--interval", help="seconds between status polls")


def _client_command(args: argparse.Namespace) -> int:
    from faceswap_cam.daemon.control.client import ControlClient, ControlError, DaemonNotRunning

    try:
        client = ControlClient.from_token_file()
        if args.command == "status":
            return _print_status(client.status(), as_json=args.json)
        if args.command == "references":
            return _references(client, args)
        if args.command == "swap":
            client.set_swap(args.state == "on")
            print(f"swap {args.state}")
        elif args.command == "mic":
            status = client.set_mic(args.state == "on")
            print(_mic_line(parse_status(status)))
        elif args.command == "badge":
            client.set_ai_badge(args.state == "on")
            print('swapped frames on the virtual camera are marked "AI altered"'
                  if args.state == "on" else "AI badge off")
        elif args.command in ("pause", "resume"):
            client.set_paused(args.command == "pause")
            print("paused: the camera shows a still card" if args.command == "pause"
                  else "resumed")
        elif args.command == "stop":
            client.shutdown()
            print("FaceSwap Cam is stopping")
    except DaemonNotRunning as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def _references(client: Any, args: argparse.Namespace) -> int:
    from faceswap_cam.daemon.control.client import ControlError

    action = args.action or "list"
    if action == "add":
        try:
            info = client.add_reference(args.path, name=args.name)
        except OSError as exc:
            print(f"faceswap-cam: cannot read {args.path}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_CONFIG
        print(f"added {info['name']} ({info['width']}x{info['height']}); use it with "
              f"`faceswap-cam references use {info['name']}`")
        skipped = info.get("person_check_skipped")
        if skipped:
            print(f"note: not checked for exactly one person: {skipped}")
        return EXIT_OK
    try:
        if action == "use":
            client.select_reference(args.name)
            print(f"swapping to {args.name} from the next batch")
            return EXIT_OK
        if action == "remove":
            client.remove_reference(args.name)
            print(f"removed {args.name}")
            return EXIT_OK
    except ControlError as exc:
        if exc.status != 404:
            raise
        print(f"faceswap-cam: no reference named {args.name}; `faceswap-cam references` lists "
              "them", file=sys.stderr)
        return EXIT_RUNTIME
    entries = client.references()
    if not entries:
        print("no reference faces yet: faceswap-cam references add IMAGE")
    for entry in entries:
        mark = "*" if entry.get("selected") else " "
        print(f"{mark} {entry['name']}\t{entry['width']}x{entry['height']}")
    return EXIT_OK


def _mic_line(status: DaemonStatus) -> str:
    """FaceSwap Mic in one line: off, or where it is and how far the voice is from the lips."""
    mic = status.mic
    if mic is None:
        return "off (faceswap-cam mic on)"
    line = f"{mic.state}, pick \"{mic.device or 'FaceSwap Mic'}\" in the call app; voice " \
           f"delay {mic.delay_ms:.0f} ms"
    if mic.av_offset_ms is not None:
        line += f", voice vs lips {mic.av_offset_ms:+.0f} ms"
    if mic.detail:
        line += f"; {mic.detail}" + (f" (fix: {mic.fix})" if mic.fix else "")
    return line


def _generation_line(status: DaemonStatus) -> str:
    window = status.generation
    if window is None:
        return "-"
    x, y, width, height = window.window
    return (f"{window.size[0]}x{window.size[1]}, from the camera frame's {width}x{height} "
            f"at ({x}, {y})")


def _print_status(document: object, *, as_json: bool) -> int:
    try:
        status = parse_status(document)
    except StatusError as exc:
        print(f"faceswap-cam: {exc} (is the daemon from another version?)", file=sys.stderr)
        return EXIT_RUNTIME
    if as_json:
        print(json.dumps(status.model_dump(mode="json"), sort_keys=True))
        return EXIT_OK
    lines = [
        f"state      {status.state}" + (" (paused)" if status.paused else ""),
        f"swap       {'on' if status.swap else 'off'}, showing {status.showing or '-'}",
        f"reference  {status.reference or 'none'}",
        f"engine     {status.engine}: {status.engine_state}"
        + (f", preset {status.preset}" if status.preset else ""),
        f"generating {_generation_line(status)}",
        f"playout    {status.playout}, fallback {status.fallback}",
        f"AI badge   {'on' if status.ai_badge else 'off'}",
        f"mic        {_mic_line(status)}",
        f"fps        capture {status.capture_fps}, process {status.process_fps}, "
        f"publish {status.publish_fps}; latency {status.latency_ms} ms",
        f"preview    {status.preview_url or '-'}",
        f"control    {status.api_url}",
    ]
    host = status.engine_host
    if host is not None:
        lines.append(f"host       {host.state}, pid {host.pid or '-'}, {host.restarts} "
                     f"restarts ({host.url or '-'})")
    problems = (("engine error", status.engine_error), ("camera error", status.camera_error),
                ("reference error", status.reference_error),
                ("host error", "" if host is None else host.error),
                ("host fix", "" if host is None else host.fix))
    lines += [f"{label:10} {text}" for label, text in problems if text]
    for failed in status.output_errors:
        lines += [f"{'output':10} {failed.output}: {failed.error}", f"{'fix':10} {failed.fix}"]
    print("\n".join(lines))
    return EXIT_OK


def _cli_values(args: argparse.Namespace, *skip: str) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items()
            if key not in ("command", "config", *skip) and value is not None}


def _render(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(_cli_values(args, "preprocessed", "output", "input"),
                                 config_path=args.config)
    except ConfigError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level)
    if args.input is not None:
        return _render_input(args, settings)
    from faceswap_cam.models.render import PreprocessedError, load_preprocessed, write_frames

    try:
        clip = load_preprocessed(args.preprocessed, settings.mode.value)
    except PreprocessedError as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        frames = _render_frames(settings, clip)
        written = write_frames(frames, args.output, clip.fps)
    except (PreprocessedError, RuntimeError, ValueError) as exc:
        print(f"faceswap-cam: render failed: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(json.dumps({"frames": written, "output": str(args.output), "fps": clip.fps,
                      "size": list(clip.size)}), flush=True)
    return EXIT_OK


def _render_input(args: argparse.Namespace, settings: Settings) -> int:
    from faceswap_cam.models.engine import EngineError
    from faceswap_cam.models.reference import ReferenceError, decode_reference
    from faceswap_cam.models.render import PreprocessedError, read_clip, render_raw, write_frames

    if settings.reference is None:
        print("faceswap-cam: render --input needs --reference IMAGE", file=sys.stderr)
        return EXIT_CONFIG
    try:
        reference = decode_reference(settings.reference)
        frames, fps = read_clip(args.input)
    except (ReferenceError, PreprocessedError) as exc:
        print(f"faceswap-cam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from faceswap_cam.daemon.pipeline.app import engine_options
    from faceswap_cam.models.wan.engine import create

    try:
        engine = create(**engine_options(settings))
        engine.set_reference(reference)
        rendered = render_raw(engine, frames)
        written = write_frames([f[..., ::-1] for f in rendered], args.output, fps)
    except (EngineError, PreprocessedError, RuntimeError, ValueError) as exc:
        print(f"faceswap-cam: render failed: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    height, width = frames[0].shape[:2]
    print(json.dumps({"frames": written, "output": str(args.output), "fps": fps,
                      "size": [width, height]}), flush=True)
    return EXIT_OK


def _render_frames(settings: Settings, clip: Any) -> list[Any]:
    from faceswap_cam.daemon.pipeline.app import engine_options
    from faceswap_cam.models.render import render_clip
    from faceswap_cam.models.wan.engine import create_stream

    width, height = clip.size
    stream = create_stream(engine_options(settings), width=width, height=height)
    frames: list[Any] = render_clip(stream, clip)
    return frames


def _devices() -> int:
    from faceswap_cam.daemon.capture.devices import list_v4l2_devices

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
    if args.command == "render":
        return _render(args)
    if args.command == "engine":
        return _engine(args, sys.argv[1:] if argv is None else argv)
    if args.command == "models":
        return run_models(args)
    if args.command in ("status", "references", "swap", "mic", "badge", "pause", "resume",
                        "stop"):
        return _client_command(args)
    if args.command == "service":
        return run_service(args)
    if args.command == "doctor":
        return run_doctor(args)
    if args.command == "plan":
        return run_plan(args)
    if args.command == "tray":
        from faceswap_cam.tray.app import main as tray_main

        forwarded = [arg for key in ("control_file", "interval") if getattr(args, key)
                     for arg in (f"--{key.replace('_', '-')}", getattr(args, key))]
        return tray_main(forwarded)
    if args.command == "devices":
        return _devices()
    parser.print_help()
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
