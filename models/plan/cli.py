"""``faceswap-cam plan``: its arguments and the command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from faceswap_cam.models.plan.engines import fp8_refused, planned_engines
from faceswap_cam.models.plan.gpus import (
    EFFICIENCY_FILE,
    gpu_for_name,
    gpu_names,
    load_efficiency,
    load_scaling,
    local_gpu,
    local_gpu_name,
)
from faceswap_cam.models.plan.host import load_host_cost
from faceswap_cam.models.plan.preprocessing import load_preprocess_efficiency
from faceswap_cam.models.plan.report import render_text, rows_json
from faceswap_cam.models.plan.rows import DEFAULT_SIZES, build_plan
from faceswap_cam.models.plan.timing import CAMERA_FPS
from faceswap_cam.models.plan.work import VAE_SCALE_TEMPORAL


def _say(text: str, *, error: bool = False) -> None:
    """The command's output (this is a command, not library code)."""
    print(text, file=sys.stderr if error else sys.stdout)


def size_list(text: str) -> list[tuple[int, int]]:
    """``WxH,WxH,...`` as (width, height) pairs (the plan's and the GPU benchmark's flags)."""
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        sizes.append((int(width), int(height)))
    return sizes


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_plan_parser(subparsers: Any) -> Any:
    plan = subparsers.add_parser(
        "plan", help="predict swapped fps, latency and memory of each preset on a GPU",
        description="Count the FLOPs of each engine, preset and generation size on the "
        "real-size models (meta device: no weights, no GPU needed) and predict what a GPU "
        "does with them.")
    plan.add_argument("--gpu", metavar="NAME",
                      help=f"one of {gpu_names()} (default: the local GPU)")
    plan.add_argument("--gpus", type=int, default=1, help="GPUs splitting the DiT (default 1)")
    plan.add_argument("--quantize", choices=("auto", "none", "fp8", "int8"), default="auto",
                      help="auto: each preset's own (default)")
    plan.add_argument("--sizes", type=size_list, default=list(DEFAULT_SIZES),
                      help="generation sizes WxH (default 848x480,1280x720)")
    plan.add_argument("--segments", type=int_list, default=None,
                      help="segment lengths L (default 9,17 and each engine's presets' own)")
    plan.add_argument("--camera-fps", type=float, default=CAMERA_FPS)
    plan.add_argument("--efficiency-file", type=Path, default=None,
                      help=f"measured efficiency (default {EFFICIENCY_FILE})")
    plan.add_argument("--json", action="store_true", help="one JSON list, a row per line item")
    return plan


def run_plan(args: Any) -> int:
    if args.gpus < 1:
        _say("plan: --gpus must be >= 1", error=True)
        return 2
    for segment in args.segments or ():
        if (segment - 1) % VAE_SCALE_TEMPORAL or segment < 5:
            _say(f"plan: segment lengths are 4n+1 (5, 9, 13, 17...), got {segment}",
                  error=True)
            return 2
    if args.gpu:
        gpu = gpu_for_name(args.gpu)
        if gpu is None:
            _say(f"plan: unknown GPU {args.gpu!r}; --gpu takes one of: {gpu_names()}",
                  error=True)
            return 2
    else:
        try:
            gpu = local_gpu(use_torch=True)
        except ImportError:
            _say("plan: needs torch and diffusers (pip install 'faceswap-cam[models]')",
                  error=True)
            return 2
        if gpu is None:
            name = local_gpu_name()
            seen = f"the local GPU {name!r} is not in the table" if name else "no local CUDA GPU"
            _say(f"plan: {seen}; name one with --gpu: {gpu_names()}", error=True)
            return 2
    refused = fp8_refused(args.quantize, gpu)
    if refused:
        _say(f"plan: {refused}", error=True)  # no rows for what cannot run
        return 2
    engines = planned_engines()
    if not engines:
        _say("plan: no engine has presets registered", error=True)
        return 2
    rows = build_plan(gpu, engines=engines, sizes=args.sizes, segments=args.segments,
                      quantize=args.quantize, gpus=args.gpus, camera_fps=args.camera_fps,
                      efficiency_file=args.efficiency_file)
    if args.json:
        _say(rows_json(rows))
    else:
        efficiencies = {engine: load_efficiency(gpu, args.efficiency_file, engine)
                        for engine in dict.fromkeys(row.engine for row in rows)}
        scaling = load_scaling(gpu, args.gpus, args.efficiency_file) if args.gpus > 1 else None
        _say(render_text(rows, gpu, efficiencies, gpus=args.gpus, camera_fps=args.camera_fps,
                         scaling=scaling,
                         preprocess=load_preprocess_efficiency(gpu, args.efficiency_file),
                         hosts={engine: load_host_cost(engine, args.efficiency_file)
                                for engine in efficiencies}))
    return 0
