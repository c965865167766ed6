"""The screen side of the capacity plan: does the daemon show what ``plan`` predicts from a
batch time?

``faceswap-cam plan`` turns a GPU's batch time into swapped fps and capture-to-screen latency
with arithmetic (models/plan/timing.py): the cadence k that keeps up with the engine, camera
fps / k, and (L - P - 1) x k / camera fps + batch time + a frame. That arithmetic, not the GPU, is
what this measures, on any machine: the whole daemon runs in this process (demo source at
1280x720, the real capture, feeder, processor, cadence adaptation, playout and publisher), with
the ``debug`` engine standing in for the GPU. It takes the plan's segment shape (L new frames,
then L - P a call) and each call takes the plan's predicted batch time (its own work included),
so the processor sees the same timing a GPU that meets the prediction would give it; what the
daemon adds around the engine call is its own.

The processor starts at the plan's cadence, as the daemon does for a model engine
(``--start-cadence 1``: as for an engine the plan does not know, adapting from measurements),
and after a warm-up it counts, per playout:

* swapped fps: distinct swapped frames shown per second (a frame held for several ticks counts
  once), beside the plan's fps;
* latency: capture to screen of each swapped frame when first shown, p50 / p90 / max, beside
  the plan's figure (which is the oldest frame of a batch: the worst case);
* the cadence the processor kept most of the window (and every one it used), beside the
  plan's k;
* what the ticks showed: the share of swapped, held and passthrough (the fallback) ticks;
* until when, from the daemon's start, swapped frames came more than 0.15 s later than the
  window's p50 (``--first-call-s S``: the engine's first call takes S seconds, as a device's
  warm-up does, and this says how long the delay it leaves lasts);
* from the daemon's start, how often the picture stepped back in time (and by how much at
  most), and the longest one frame stayed on screen: swapped frames taking over from the
  camera, or handing back to it (``--nobody-every N``: every N-th call finds nobody).

``--batch-s`` asks what a slower GPU (or the preprocessing around it) would show, and
``--hiccup-every N`` whether one slow call in N costs the cadence (it should not: a change of
cadence restarts the segment chain, and the camera shows its fallback meanwhile).

    .venv/bin/python benchmarks/live_path.py [--engine wan-animate] [--preset live]
        [--gpu h200] [--size 480x480] [--seconds 30] [--playout smooth|live|both]
        [--batch-s S] [--hiccup-every N --hiccup-s S] [--nobody-every N]

The default is the plan's ``person`` row for the live preset on an H200 (480x480, L = 9, fp8).
Figures are printed, never asserted; the last line is JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceswap_cam.daemon.config import load_settings
from faceswap_cam.daemon.outputs.base import Tick
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.models.engine import SwapResult
from faceswap_cam.models.plan.cli import size_list
from faceswap_cam.models.plan.engines import engine_quantize, fp8_refused, load_presets
from faceswap_cam.models.plan.gpus import gpu_for_name
from faceswap_cam.models.plan.predict import predict_settings
from faceswap_cam.models.simple_engines import DebugEngine

CAMERA = (1280, 720)
CAMERA_FPS = 30.0


class PlannedEngine(DebugEngine):
    """The debug engine with every call taking the plan's batch time, its own work (inverting
    the frames) included: the processor sees what a GPU meeting the prediction gives it."""

    def __init__(self, *, batch_s: float, first_batch: int, next_batch: int,
                 hiccup_every: int = 0, hiccup_s: float = 0.0,
                 first_call_s: float | None = None, nobody_every: int = 0) -> None:
        super().__init__(delay_ms=0.0, first_batch=first_batch, next_batch=next_batch)
        self.batch_s = batch_s
        self.first_call_s = first_call_s
        self.nobody_every = nobody_every
        self.hiccup_every = hiccup_every
        self.hiccup_s = hiccup_s
        self._calls = 0

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        start = time.perf_counter()
        if self._finds_nobody():
            return SwapResult.untouched(frames)
        result = super().process(frames)
        self._rest(start)
        return result

    def _finds_nobody(self) -> bool:
        """Whether this call finds nobody: it then answers at once, as the detector does,
        before any generating (and counts as a call)."""
        if not self.nobody_every or (self._calls + 1) % self.nobody_every:
            return False
        self._calls += 1
        return True

    def process_into(self, frames: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> bool:
        start = time.perf_counter()
        if self._finds_nobody():
            return False
        done = super().process_into(frames, outputs)
        self._rest(start)
        return done

    def _rest(self, start: float) -> None:
        self._calls += 1
        hiccup = self.hiccup_s if self.hiccup_every and self._calls % self.hiccup_every == 0 \
            else 0.0
        took = self.first_call_s if self._calls == 1 and self.first_call_s else self.batch_s
        left = took + hiccup - (time.perf_counter() - start)
        if left > 0:
            self._interrupted.wait(left)


class TickLog(NullSink):
    """Every tick's kind, time and the age of the frame shown (inline: no worker)."""

    def __init__(self) -> None:
        super().__init__()
        #: Written by the publisher alone, read once the daemon has stopped.
        self.ticks: list[tuple[str, int, float | None]] = []

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        self.ticks.append((tick.kind, tick.published_ns, tick.latency_ms))


def run(playout: str, *, first: int, following: int, batch_s: float, seconds: float,
        warmup: float, config: Path, hiccup_every: int = 0, hiccup_s: float = 0.0,
        start_cadence: int = 1, first_call_s: float | None = None,
        nobody_every: int = 0) -> dict[str, Any]:
    # The user's config file and control API stay out of it: only these settings count.
    settings = load_settings({"source": "demo", "engine": "debug", "size": "1280x720",
                              "fps": CAMERA_FPS, "sinks": ["null"], "playout": playout,
                              "control_api": False}, config_path=config, environ={})
    log = TickLog()
    engine = PlannedEngine(batch_s=batch_s, first_batch=first, next_batch=following,
                           hiccup_every=hiccup_every, hiccup_s=hiccup_s,
                           first_call_s=first_call_s, nobody_every=nobody_every)
    app = RealtimeFaceSwapApp(settings, engine_factory=lambda: engine, sinks=[log],
                              start_cadence=start_cadence)
    cadences: list[int] = []
    started_ns = time.monotonic_ns()
    with app:
        time.sleep(warmup)  # the first batches and the playout delay settle
        start_ns = time.monotonic_ns()
        while time.monotonic_ns() - start_ns < seconds * 1e9:
            cadences.append(app.processor.cadence)
            time.sleep(0.25)
        end_ns = time.monotonic_ns()
    # Each swapped frame once, when it was first shown (before the window too, so a frame
    # already on screen when the window opens is not counted as new).
    first_shown: dict[int, tuple[int, float]] = {}  # capture ms -> (shown ns, latency ms)
    kinds: dict[str, int] = {}
    for kind, published_ns, latency_ms in log.ticks:
        if start_ns <= published_ns < end_ns:
            kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "swapped" and latency_ms is not None:
            first_shown.setdefault(round(published_ns / 1e6 - latency_ms),
                                   (published_ns, latency_ms))
    latencies = [latency for shown_ns, latency in first_shown.values()
                 if start_ns <= shown_ns < end_ns]
    cadence = max(set(cadences), key=cadences.count) if cadences else 0
    # How long swapped frames came later than the window's usual (a slow first call, the
    # delay it left): the last frame first shown more than 0.15 s later than the p50.
    usual_ms = float(np.percentile(latencies, 50)) if latencies else 0.0
    late = [shown_ns for shown_ns, latency in first_shown.values()
            if latency > usual_ms + 150 and shown_ns < end_ns]
    settled_s = round((max(late) - started_ns) / 1e9, 1) if late and latencies else None
    span_s = (end_ns - start_ns) / 1e9
    timeline = _timeline(log.ticks)
    ticks = sum(kinds.values()) or 1
    p50, p90, most, mean = ([round(float(v) / 1000, 3) for v in (
        *np.percentile(latencies, [50, 90]), max(latencies), statistics.fmean(latencies))]
        if latencies else [None] * 4)
    return {
        "playout": playout, "seconds": round(span_s, 1), "cadence": cadence,
        "cadences": sorted(set(cadences)),
        "shown": {kind: round(count / ticks, 3) for kind, count in sorted(kinds.items())},
        "swapped_fps": round(len(latencies) / span_s, 2),
        "latency_p50_s": p50, "latency_p90_s": p90, "latency_max_s": most,
        "latency_mean_s": mean, "settled_s": settled_s, **timeline,
    }


def _timeline(ticks: Sequence[tuple[str, int, float | None]]) -> dict[str, Any]:
    """From the daemon's start: how often the picture stepped back in time (a tick showing a
    frame captured before the one shown before it), by how much at most, and the longest the
    same frame stayed on screen (a take-over's hold, a stall)."""
    captured = [published_ns / 1e6 - latency_ms for _, published_ns, latency_ms in ticks
                if latency_ms is not None]
    backs = [a - b for a, b in itertools.pairwise(captured) if b < a - 1.0]
    longest = run_length = 1
    for a, b in itertools.pairwise(captured):
        run_length = run_length + 1 if abs(b - a) <= 1.0 else 1
        longest = max(longest, run_length)
    return {"steps_back": len(backs),
            "most_back_s": round(max(backs) / 1000, 3) if backs else 0.0,
            "longest_hold_s": round(longest / CAMERA_FPS, 2) if captured else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="wan-animate")
    parser.add_argument("--preset", default="live")
    parser.add_argument("--gpu", default="h200")
    parser.add_argument("--size", type=size_list, default=[(480, 480)],
                        help="generation size WxH (default 480x480, the person window)")
    parser.add_argument("--quantize", default="auto", help="auto: the preset's own")
    parser.add_argument("--batch-s", type=float, default=None,
                        help="seconds a call takes instead of the plan's (what if the GPU, or "
                        "the preprocessing around it, is slower)")
    parser.add_argument("--hiccup-every", type=int, default=0, metavar="N",
                        help="every N-th call takes --hiccup-s longer (a stalled CPU, a "
                        "garbage collection): does one slow call cost the cadence?")
    parser.add_argument("--hiccup-s", type=float, default=0.2)
    parser.add_argument("--first-call-s", type=float, default=None,
                        help="the engine's first call takes this long (the device's warm-up): "
                        "how long does the delay it leaves last? (give --warmup room: 30)")
    parser.add_argument("--nobody-every", type=int, default=0, metavar="N",
                        help="every N-th call finds nobody (returns at once, frames untouched): "
                        "a person leaving, a detector miss; the camera shows meanwhile")
    parser.add_argument("--start-cadence", type=int, default=None,
                        help="the cadence the processor starts at (default: the plan's)")
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
    refused = fp8_refused(args.quantize, gpu)
    if refused:
        parser.error(refused)
    quantize = engine_quantize(args.engine, preset, args.quantize, gpu)
    timing = predict_settings(args.engine, steps=preset.steps,
                              segment_frames=preset.segment_frames, carry=preset.carry,
                              size=args.size[0], preset=preset.name.value, quantize=quantize,
                              gpu_name=gpu.name)
    if timing is None:
        parser.error("the plan has no prediction for this engine and GPU")
    first, following = preset.segment_frames, preset.segment_frames - preset.carry
    batch_s = args.batch_s if args.batch_s is not None else timing.batch_s
    start_cadence = args.start_cadence or timing.cadence
    print(f"plan: {args.engine} {args.preset} {args.size[0][0]}x{args.size[0][1]} L={first} "
          f"{quantize} on {gpu.key}: {timing.batch_s:.3f} s a batch -> cadence {timing.cadence}, "
          f"{timing.fps:.2f} swapped fps, {timing.latency_s:.2f} s capture to screen (oldest "
          "frame of a batch)", flush=True)
    hiccups = (f" (every {args.hiccup_every}th {args.hiccup_s * 1000:.0f} ms more)"
               if args.hiccup_every else "")
    print(f"daemon: debug engine, L={first} then {following} a call, "
          f"{batch_s * 1000:.0f} ms a call{hiccups}, starting at cadence {start_cadence}; "
          f"{os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    playouts = ["smooth", "live"] if args.playout == "both" else [args.playout]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.toml"
        config.write_text("")
        for playout in playouts:
            results.append(run(playout, first=first, following=following,
                               batch_s=batch_s, seconds=args.seconds,
                               warmup=args.warmup, config=config,
                               hiccup_every=args.hiccup_every, hiccup_s=args.hiccup_s,
                               start_cadence=start_cadence, first_call_s=args.first_call_s,
                               nobody_every=args.nobody_every))
    for result in results:
        playout = result["playout"]
        print(f"  {playout:<6} cadence {result['cadence']} (plan {timing.cadence}; seen "
              f"{result['cadences']}), "
              f"{result['swapped_fps']:.2f} swapped fps (plan {timing.fps:.2f}), latency "
              f"p50 {result['latency_p50_s']} s, p90 {result['latency_p90_s']} s, max "
              f"{result['latency_max_s']} s (plan {timing.latency_s:.2f} s); "
              + ("no frame 0.15 s over the p50" if result["settled_s"] is None else
                 f"frames 0.15 s over the p50 until {result['settled_s']} s after start")
              + "; ticks: "
              + ", ".join(f"{kind} {share:.0%}" for kind, share in result["shown"].items())
              + f"; from the start: stepped back {result['steps_back']} times (at most "
              f"{result['most_back_s']} s), longest hold {result['longest_hold_s']} s",
              flush=True)
    print(json.dumps({"benchmark": "live_path", "engine": args.engine, "preset": args.preset,
                      "gpu": gpu.key, "size": list(args.size[0]), "quantize": quantize,
                      "plan": {"batch_s": round(timing.batch_s, 4), "cadence": timing.cadence,
                               "fps": round(timing.fps, 2),
                               "latency_s": round(timing.latency_s, 3)},
                      "batch_s": round(batch_s, 4), "start_cadence": start_cadence,
                      "hiccup_every": args.hiccup_every, "first_call_s": args.first_call_s,
                      "nobody_every": args.nobody_every,
                      "hiccup_s": args.hiccup_s if args.hiccup_every else 0.0,
                      "load": round(os.getloadavg()[0], 2),
                      "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
