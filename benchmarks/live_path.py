"""The screen side of the capacity plan: does the daemon show what ``plan`` predicts from a
batch time?

``faceswap-cam plan`` turns a GPU's batch time into swapped fps and capture-to-screen latency
with arithmetic (models/plan/timing.py): the cadence k that keeps up with the engine, camera
fps / k, and (L - P) x k / camera fps + batch time + a frame. That arithmetic, not the GPU, is
what this measures, on any machine: the whole daemon runs in this process (demo source at
1280x720, the real capture, feeder, processor, cadence adaptation, playout and publisher), with
the ``debug`` engine standing in for the GPU. It takes the plan's segment shape (L new frames,
then L - P a call) and sleeps the plan's predicted batch time per call, so the processor sees
the same timing a GPU that meets the prediction would give it.

After a warm-up (the cadence starts at 1 and adapts, as it does for an engine the plan does
not know), it counts, per playout:

* swapped fps: distinct swapped frames shown per second (a frame held for several ticks counts
  once), beside the plan's fps;
* latency: capture to screen of each swapped frame when first shown, p50 / p90 / max, beside
  the plan's figure (which is the oldest frame of a batch: the worst case);
* the cadence the processor settled on, beside the plan's k;
* what the ticks showed: the share of swapped, held and passthrough (the fallback) ticks.

    .venv/bin/python benchmarks/live_path.py [--engine wan-animate] [--preset live]
        [--gpu h200] [--size 480x480] [--seconds 30] [--playout smooth|live|both]

The default is the plan's ``person`` row for the live preset on an H200 (480x480, L = 9, fp8).
Figures are printed, never asserted; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import threading
import time
from typing import Any

import numpy as np

from faceswap_cam.daemon.config import load_settings
from faceswap_cam.daemon.outputs.base import Tick
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.models.plan.cli import size_list
from faceswap_cam.models.plan.engines import engine_quantize, load_presets
from faceswap_cam.models.plan.gpus import gpu_for_name
from faceswap_cam.models.plan.predict import predict_settings
from faceswap_cam.models.simple_engines import DebugEngine

CAMERA = (1280, 720)
CAMERA_FPS = 30.0


class TickLog(NullSink):
    """Every tick's kind, time and the age of the frame shown (inline: no worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[tuple[str, int, float | None]] = []
        self._lock = threading.Lock()

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        with self._lock:
            self.ticks.append((tick.kind, tick.published_ns, tick.latency_ms))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(playout: str, *, first: int, following: int, delay_ms: float, seconds: float,
        warmup: float) -> dict[str, Any]:
    settings = load_settings({"source": "demo", "engine": "debug", "size": "1280x720",
                              "fps": CAMERA_FPS, "sinks": ["null"], "playout": playout},
                             environ={})
    log = TickLog()
    engine = DebugEngine(delay_ms=delay_ms, first_batch=first, next_batch=following)
    app = RealtimeFaceSwapApp(settings, engine_factory=lambda: engine, sinks=[log])
    with app:
        time.sleep(warmup)  # the cadence adapts from 1: not what a steady call sees
        start_ns = time.monotonic_ns()
        time.sleep(seconds)
        end_ns = time.monotonic_ns()
        cadence = app.processor.cadence
    first_shown: dict[int, float] = {}  # capture time (ms, rounded) -> latency when first shown
    kinds: dict[str, int] = {}
    for kind, published_ns, latency_ms in log.ticks:
        if not start_ns <= published_ns < end_ns:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind != "swapped" or latency_ms is None:
            continue
        captured = round(published_ns / 1e6 - latency_ms)
        first_shown.setdefault(captured, latency_ms)
    latencies = list(first_shown.values())
    span_s = (end_ns - start_ns) / 1e9
    ticks = sum(kinds.values()) or 1
    return {
        "playout": playout, "seconds": round(span_s, 1), "cadence": cadence,
        "shown": {kind: round(count / ticks, 3) for kind, count in sorted(kinds.items())},
        "swapped_fps": round(len(latencies) / span_s, 2),
        "latency_p50_s": round(percentile(latencies, 0.5) / 1000, 3) if latencies else None,
        "latency_p90_s": round(percentile(latencies, 0.9) / 1000, 3) if latencies else None,
        "latency_max_s": round(max(latencies) / 1000, 3) if latencies else None,
        "latency_mean_s": round(statistics.fmean(latencies) / 1000, 3) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="wan-animate")
    parser.add_argument("--preset", default="live")
    parser.add_argument("--gpu", default="h200")
    parser.add_argument("--size", type=size_list, default=[(480, 480)],
                        help="generation size WxH (default 480x480, the person window)")
    parser.add_argument("--quantize", default="auto", help="auto: the preset's own")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--playout", choices=("smooth", "live", "both"), default="both")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    gpu = gpu_for_name(args.gpu)
    if gpu is None:
        parser.error(f"unknown GPU {args.gpu!r}")
    preset = next((p for p in load_presets(args.engine) if p.name.value == args.preset), None)
    if preset is None:
        parser.error(f"{args.engine} has no preset {args.preset!r}")
    quantize = engine_quantize(args.engine, preset, args.quantize, gpu)
    timing = predict_settings(args.engine, steps=preset.steps,
                              segment_frames=preset.segment_frames, carry=preset.carry,
                              size=args.size[0], preset=preset.name.value, quantize=quantize,
                              gpu_name=gpu.name)
    if timing is None:
        parser.error("the plan has no prediction for this engine and GPU")
    first, following = preset.segment_frames, preset.segment_frames - preset.carry
    print(f"plan: {args.engine} {args.preset} {args.size[0][0]}x{args.size[0][1]} L={first} "
          f"{quantize} on {gpu.key}: {timing.batch_s:.3f} s a batch -> cadence {timing.cadence}, "
          f"{timing.fps:.2f} swapped fps, {timing.latency_s:.2f} s capture to screen (oldest "
          "frame of a batch)", flush=True)
    print(f"daemon: debug engine, L={first} then {following} a call, "
          f"{timing.batch_s * 1000:.0f} ms a call; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    playouts = ["smooth", "live"] if args.playout == "both" else [args.playout]
    results = []
    for playout in playouts:
        result = run(playout, first=first, following=following,
                     delay_ms=timing.batch_s * 1000, seconds=args.seconds, warmup=args.warmup)
        results.append(result)
        print(f"  {playout:<6} cadence {result['cadence']} (plan {timing.cadence}), "
              f"{result['swapped_fps']:.2f} swapped fps (plan {timing.fps:.2f}), latency "
              f"p50 {result['latency_p50_s']} s, p90 {result['latency_p90_s']} s, max "
              f"{result['latency_max_s']} s (plan {timing.latency_s:.2f} s); ticks: "
              + ", ".join(f"{kind} {share:.0%}" for kind, share in result["shown"].items()),
              flush=True)
    print(json.dumps({"benchmark": "live_path", "engine": args.engine, "preset": args.preset,
                      "gpu": gpu.key, "size": list(args.size[0]), "quantize": quantize,
                      "plan": {"batch_s": round(timing.batch_s, 4), "cadence": timing.cadence,
                               "fps": round(timing.fps, 2),
                               "latency_s": round(timing.latency_s, 3)},
                      "load": round(os.getloadavg()[0], 2), "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
