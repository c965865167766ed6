"""Soak: run the daemon for N minutes and print whether memory and timing stay flat.

The daemon runs in this process on a demo (or any) source with the ``debug`` engine by default,
so capture, feeder, processor, engine worker and publisher all work the whole time; with
``--engine-host child`` the engine runs in a child engine host (frames through shared memory),
whose RSS and what /dev/shm holds are sampled too. Every few
seconds it samples RSS; at the end it prints RSS once warmed up and at the end, the RSS slope
per hour fitted after the stats buffers are full (the latency/jitter sample rings hold 10,000
ticks: 333 s at 30 fps, and grow until then by design), missed ticks, and latency and jitter
p99. Figures are printed, never asserted; the last line is JSON.

    .venv/bin/python benchmarks/soak.py --minutes 20 [--engine debug|passthrough]
        [--engine-host inline|child] [--source demo] [--size 1280x720] [--fps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import threading
import time
from typing import Any

import numpy as np
import psutil

from faceswap_cam.daemon.config import load_settings
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.daemon.stats import Samples

SAMPLE_EVERY_S = 5.0


def slope_mb_per_hour(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, in MB per hour."""
    if len(points) < 3:
        return None
    seconds = np.array([t for t, _ in points])
    megabytes = np.array([rss / 2**20 for _, rss in points])
    slope_per_s = float(np.polyfit(seconds, megabytes, 1)[0])
    return round(slope_per_s * 3600, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--engine", default="debug")
    parser.add_argument("--engine-delay-ms", type=float, default=80.0)
    parser.add_argument("--source", default="demo")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--engine-host", choices=["inline", "child"], default="inline")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = load_settings({"source": args.source, "sinks": ["null"], "engine": args.engine,
                              "engine_delay_ms": args.engine_delay_ms, "size": args.size,
                              "fps": args.fps, "log_level": "WARNING",
                              "engine_host": args.engine_host}, environ={})
    app = RealtimeFaceSwapApp(settings)
    process = psutil.Process()
    samples: list[tuple[float, int]] = []
    host_samples: list[tuple[float, int]] = []
    shm_used: list[float] = []
    stop = threading.Event()
    warmup_s = min(60.0, args.minutes * 60 / 4)
    buffers_full_s = Samples().capacity / args.fps

    running_s = args.minutes * 60

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(SAMPLE_EVERY_S):
            now = time.monotonic() - start
            samples.append((now, process.memory_info().rss))
            pid = app.engine_host.report().pid if app.engine_host is not None else None
            # Not once the daemon closes: the host unmaps its frames as it stops.
            if pid is not None and now < running_s:
                with contextlib.suppress(psutil.NoSuchProcess):  # restarted meanwhile
                    host_samples.append((now, psutil.Process(pid).memory_info().rss))
                shm_used.append(_shm_used_mb())

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    sampler.start()
    stats = app.run(args.minutes * 60)
    stop.set()
    sampler.join()

    warm = [p for p in samples if p[0] >= warmup_s]
    full = [p for p in samples if p[0] >= buffers_full_s]
    result: dict[str, Any] = {
        "minutes": args.minutes,
        "engine": args.engine,
        "source": args.source,
        "rss_warm_mb": round(warm[0][1] / 2**20, 1) if warm else None,
        "rss_end_mb": round(samples[-1][1] / 2**20, 1) if samples else None,
        "rss_slope_mb_per_hour_after_buffers_full": slope_mb_per_hour(full),
        "buffers_full_after_s": round(buffers_full_s),
        "frames_published": stats["frames_published"],
        "frames_swapped": stats["frames_swapped"],
        "ticks_missed": stats["ticks_missed"],
        "latency_p99_ms": stats["latency_p99_ms"],
        "jitter_p99_ms": stats["jitter_p99_ms"],
        "engine_failures": stats["engine_failures"],
    }
    if host_samples:
        host_warm = [p for p in host_samples if p[0] >= warmup_s]
        result.update({
            "host_rss_warm_mb": round(host_warm[0][1] / 2**20, 1) if host_warm else None,
            "host_rss_end_mb": round(host_samples[-1][1] / 2**20, 1),
            "host_rss_slope_mb_per_hour_after_warmup": slope_mb_per_hour(host_warm),
            "shm_used_mb_min_max": f"{min(shm_used):.0f}-{max(shm_used):.0f}",
        })
    for key, value in result.items():
        print(f"{key:44}{value!s:>12}")
    if not full or len(full) < 3:
        print(f"note: run longer than {buffers_full_s / 60:.1f} min for a slope after the "
              "stats buffers are full")
    print(json.dumps(result))


def _shm_used_mb() -> float:
    """What /dev/shm holds (mapped segments count, named or not): a host that leaked
    segments would grow it."""
    try:
        return shutil.disk_usage("/dev/shm").used / 2**20
    except OSError:
        return 0.0


if __name__ == "__main__":
    main()
