"""Passthrough path benchmark: our daemon against the simplest read -> send loop.

Both run in this process, one after the other, on the same source and sink (by default a
1280x720@30 clip file, made here from the demo scene, -> null, as a camera-shaped decode load).
Prints the figures and the ours/simple ratios, then one JSON line. Targets: no missed tick,
p99 jitter <= 1 ms, added latency <= 1 frame, CPU ratio <= 1.2, RSS flat after warm-up.

    .venv/bin/python benchmarks/passthrough.py [--seconds 20] [--size 1280x720] [--fps 30]
        [--repeats 3] [--source file|demo|SPEC] [--control-api/--no-control-api]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from faceswap_cam.daemon.capture.source import create_source
from faceswap_cam.daemon.config import load_settings
from faceswap_cam.daemon.outputs.base import Tick
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp


def sample(stop: threading.Event, samples: list[tuple[float, int, float]]) -> None:
    """Once a second: (seconds since start, RSS bytes, process CPU seconds)."""
    process = psutil.Process()
    start = time.monotonic()
    while not stop.wait(1.0):
        samples.append((time.monotonic() - start, process.memory_info().rss,
                        time.process_time()))


def measure(run: Any, fps: float) -> dict[str, Any]:
    """Run ``run()`` while sampling; CPU and RSS figures are taken after the warm-up (a third
    of the run, at most 10 s), so one-time start-up costs (imports, servers) do not count as
    per-frame cost."""
    stop = threading.Event()
    samples: list[tuple[float, int, float]] = []
    sampler = threading.Thread(target=sample, args=(stop, samples), daemon=True)
    sampler.start()
    wall0, cpu0 = time.monotonic(), time.process_time()
    result: dict[str, Any] = run()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    stop.set()
    sampler.join()
    warm = [s for s in samples if s[0] >= min(10.0, wall / 3)]
    if len(warm) >= 2:
        steady_s = warm[-1][0] - warm[0][0]
        steady_cpu = warm[-1][2] - warm[0][2]
    else:
        steady_s, steady_cpu = wall, cpu
    result.update({
        "wall_s": round(wall, 2),
        "cpu_percent": round(100 * steady_cpu / steady_s, 2),
        "cpu_ms_per_frame": round(1000 * steady_cpu / (steady_s * fps), 3),
        "cpu_ms_per_frame_with_startup": round(
            1000 * cpu / max(1, result["frames_published"]), 3),
        "rss_peak_mb": round(max(r for _, r, _ in samples) / 2**20, 1) if samples else None,
        "rss_growth_after_warmup_mb": round((warm[-1][1] - warm[0][1]) / 2**20, 1)
        if warm else None,
    })
    return result


def write_clip(folder: Path, size: str, fps: float, seconds: float = 10.0) -> str:
    """A clip of the demo scene, so both loops decode real video like a camera's frames."""
    width, height = (int(v) for v in size.split("x"))
    path = folder / f"passthrough-{size}.mp4"
    demo = create_source("demo", size=(width, height), fps=1000.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    demo.open()
    try:
        for _ in range(round(seconds * fps)):
            writer.write(demo.read())
    finally:
        demo.close()
        writer.release()
    return f"file:{path}"


def run_daemon(source: str, seconds: float, size: str, fps: float,
               control_api: bool) -> dict[str, Any]:
    settings = load_settings({"source": source, "sinks": ["null"], "engine": "passthrough",
                              "size": size, "fps": fps, "log_level": "WARNING",
                              "control_api": control_api}, environ={})
    return RealtimeFaceSwapApp(settings).run(seconds)


def run_simple_loop(source_spec: str, seconds: float, size: str, fps: float) -> dict[str, Any]:
    """The baseline: read a frame (the source paces itself), send it, repeat."""
    width, height = (int(v) for v in size.split("x"))
    source = create_source(source_spec, size=(width, height), fps=fps)
    sink = NullSink()
    source.open()
    period_ns = int(1e9 / fps)
    jitter, latency = [], []
    start = time.monotonic_ns()
    n = 0
    try:
        while n < round(seconds * fps):
            pixels = source.read()
            read_ns = time.monotonic_ns()
            sink.send(pixels, Tick(n, "passthrough", read_ns, 0.0))
            sent_ns = time.monotonic_ns()
            jitter.append(abs(read_ns - (start + n * period_ns)) / 1e6)
            latency.append((sent_ns - read_ns) / 1e6)
            n += 1
    finally:
        source.close()
    return {
        "frames_published": n,
        "ticks_missed": int(sum(1 for j in jitter if j >= period_ns / 1e6)),
        "jitter_p50_ms": round(float(np.percentile(jitter, 50)), 3),
        "jitter_p99_ms": round(float(np.percentile(jitter, 99)), 3),
        "latency_p50_ms": round(float(np.percentile(latency, 50)), 3),
        "latency_p99_ms": round(float(np.percentile(latency, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--source", default="file",
                        help="file (a clip made here), demo, or any --source spec")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating daemon/simple pairs; the ratio is their median")
    parser.add_argument("--control-api", action=argparse.BooleanOptionalAction, default=True,
                        help="serve the control API as the daemon does by default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="faceswap-cam-bench-") as folder:
        source = (write_clip(Path(folder), args.size, args.fps) if args.source == "file"
                  else args.source)
        pairs = []
        for repeat in range(args.repeats):
            # Alternate which loop goes first: on a shared machine the background load
            # drifts, and a fixed order would charge the drift to one side.
            runs = {
                "daemon": lambda: run_daemon(source, args.seconds, args.size, args.fps,
                                             args.control_api),
                "simple": lambda: run_simple_loop(source, args.seconds, args.size, args.fps),
            }
            order = ["daemon", "simple"] if repeat % 2 == 0 else ["simple", "daemon"]
            measured = {name: measure(runs[name], args.fps) for name in order}
            pairs.append((measured["daemon"], measured["simple"]))
    frame_ms = 1000 / args.fps
    print(f"passthrough {args.size}@{args.fps:g}, {args.source} -> null, {args.seconds:g} s "
          f"each, {args.repeats} alternating pairs, control API "
          f"{'on' if args.control_api else 'off'}")
    cpu_ratios = [ours["cpu_ms_per_frame"] / simple["cpu_ms_per_frame"] for ours, simple in pairs]
    added = [(ours["latency_p99_ms"] - simple["latency_p99_ms"]) / frame_ms
             for ours, simple in pairs]
    # The pair whose CPU ratio is the median stands for the run in the table.
    middle = sorted(range(len(pairs)), key=lambda i: cpu_ratios[i])[len(pairs) // 2]
    ours, simple = pairs[middle]
    print(f"{'':28}{'daemon':>12}{'simple loop':>14}")
    for key in ("frames_published", "ticks_missed", "jitter_p50_ms", "jitter_p99_ms",
                "latency_p50_ms", "latency_p99_ms", "cpu_percent", "cpu_ms_per_frame",
                "cpu_ms_per_frame_with_startup", "rss_peak_mb", "rss_growth_after_warmup_mb"):
        print(f"{key:28}{ours.get(key)!s:>12}{simple.get(key)!s:>14}")
    ratios = {
        "cpu_ratio": round(statistics.median(cpu_ratios), 3),
        "cpu_ratios": [round(r, 3) for r in cpu_ratios],
        "added_latency_p99_frames": round(statistics.median(added), 3),
    }
    print(f"cpu ratio (daemon/simple), median of {len(pairs)}: {ratios['cpu_ratio']} "
          f"{ratios['cpu_ratios']}  added latency p99: {ratios['added_latency_p99_frames']} "
          "frames")
    print(json.dumps({"daemon": ours, "simple": simple, **ratios}, default=str))


if __name__ == "__main__":
    main()
