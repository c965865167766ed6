"""What the engine host's process boundary costs, with the ``debug`` engine on both sides.

For each frame size, a batch of 9 frames goes through the same engine three ways:

* in-process: ``DebugEngine.process`` called directly (the baseline);
* local child: :class:`~faceswap_cam.daemon.engine_host.child.ChildEngineHost` starts
  ``faceswap-cam engine serve`` over a Unix socket, frames in shared memory;
* loopback TCP: a host on ``127.0.0.1`` reached by
  :class:`~faceswap_cam.daemon.engine_host.remote.RemoteEngineHost`, frames as JPEG.

The debug engine inverts every pixel, so every result goes back whole. Over TCP a host sends
back only the box an engine reports changed (``SwapResult.changed``), which for Wan-Animate's
replacement is the person's box; a fourth path, "TCP, box" (beside its own in-process
baseline), has the debug engine invert only a person-sized box (``PERSON_BOX``).

Each is warmed up, then timed over ``--batches`` batches (milliseconds per batch, p50 and p99),
from the arrival of a batch's last frame to having its results. The host paths take each frame
of a batch as it arrives (``stage``, what the daemon's feeder calls before it queues the frame
for the processor): locally it is copied into an input slot, remotely encoded, sent, and
decoded by the host on arrival. That cost is printed apart, per frame ("staging"): for all but
the last frame it is paid on the feeder's thread while the batch fills; the last frame's is on
the batch's way to the screen, so the timed span includes it. By default batches run back to
back, so a remote host may still be decoding the last staged frames when the batch comes (the
batch waits for them); ``--paced`` spaces a batch's frames one frame period apart, as a camera
does (on a cloud VM, memory work after an idle gap is 2-5x slower, for every path alike).

The three paths take turns in blocks of 10 so that other work on the machine weighs on each
alike; each keeps its last results as the daemon's output buffer does (60 frames), so memory
is reused at the daemon's pace. Overhead = host - in-process at the same percentile. Bytes per
frame are what crossed the WebSocket (headers and payload, both ways). The empty round trip (a
``reset`` request) is the fixed cost of one exchange: socket, event loop and the host's engine
thread. JPEG's cost is measured apart: encode + decode per frame on one core, and the quality
at the setting used (PSNR and the largest per-pixel error). The restart time is from
``kill -9`` of an idle local host to the next swapped batch, the way the processor does it:
the call fails, the proxy is closed, a new host is started and connected, the batch is sent
(the processor's backoff comes on top).

Where the local time goes: the debug engine writes its results straight into result slots of
the shared memory (``process_into``), which the daemon shows without copying them out; an
engine without ``process_into`` costs one copy more (a 25 MB memory copy for 9 frames at 720p,
~2-3 ms on a 2-core cloud VM). The exchange itself is the empty round trip. Remotely, on the
batch's way: the host encodes the results and the daemon decodes them (both on all cores;
on a 2-core VM the two processes share them), after the last staged frame's decode on the
host.

The frames are a camera-like scene (gradients, shapes, text) with sensor-like noise
(sigma 3), so JPEG sizes are near a webcam's; pure noise would inflate them, a flat scene
flatter them. Timings are printed, never asserted; the load average is printed to tell a busy
machine.

Goals (issue 10): local overhead <= 5 ms per batch; remote <= one frame period (33 ms) per
batch on loopback.

    .venv/bin/python benchmarks/engine_host.py [--batches 50] [--sizes 1280x720,848x480]
        [--restarts 3] [--batch 9] [--paced]

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from faceswap_cam.daemon.engine_host import codec  # noqa: E402
from faceswap_cam.daemon.engine_host.address import (  # noqa: E402
    parse_engine_url,
    parse_pairing_line,
)
from faceswap_cam.daemon.engine_host.child import OPTIONS_ENV, ChildEngineHost  # noqa: E402
from faceswap_cam.daemon.engine_host.proxy import EngineHostError, EngineHostProxy  # noqa: E402
from faceswap_cam.daemon.engine_host.remote import RemoteEngineHost  # noqa: E402
from faceswap_cam.models.engine import SwapEngine  # noqa: E402
from faceswap_cam.models.simple_engines import DebugEngine  # noqa: E402

FRAME_PERIOD_MS = 1000 / 30
FRAME_PERIOD_S = FRAME_PERIOD_MS / 1000
#: Swapped frames the processor keeps (daemon/pipeline/processor.py's output buffer).
OUTPUT_BUFFER = 60
CALL_TIMEOUT_S = 30.0
#: The box a swapped person changes in a head-and-torso webcam frame (x, y, width, height as
#: fractions): in tests' shared 720p photo (shared/data/person-720p.jpg, centred, head to
#: the bottom edge) the person spans about 29-71 % of the width and the whole height.
PERSON_BOX = (0.28, 0.0, 0.44, 1.0)


def scene(width: int, height: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-like BGR frame: smooth background, a face-sized disc, text, sensor noise."""
    ramp_x = np.linspace(40, 160, width, dtype=np.float32)
    ramp_y = np.linspace(60, 130, height, dtype=np.float32)
    frame = np.empty((height, width, 3), np.float32)
    frame[..., 0] = ramp_x[None, :] + ramp_y[:, None] * 0.5
    frame[..., 1] = ramp_y[:, None] + 10 * np.sin(ramp_x[None, :] / 7)
    frame[..., 2] = ramp_x[None, :] * 0.6 + 20
    image = np.clip(frame, 0, 255).astype(np.uint8)
    radius = height // 4
    centre = (width // 2 + 6 * index, height // 2)
    cv2.circle(image, centre, radius, (90, 170, 230), -1, cv2.LINE_AA)
    for dx in (-radius // 3, radius // 3):
        cv2.circle(image, (centre[0] + dx, centre[1] - radius // 5), radius // 7, (40, 40, 40),
                   -1, cv2.LINE_AA)
    cv2.rectangle(image, (width // 12, height // 8), (width // 4, height - height // 8),
                  (30, 60, 120), -1)
    cv2.putText(image, f"frame {index}", (20, height - 24), cv2.FONT_HERSHEY_SIMPLEX,
                height / 720, (255, 255, 255), 2, cv2.LINE_AA)
    noise = rng.normal(0, 3, image.shape).astype(np.int16)
    noisy: np.ndarray = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return noisy


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples)
    return {"p50": round(float(np.percentile(values, 50)), 2),
            "p99": round(float(np.percentile(values, 99)), 2)}


def over_baseline(path: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """A path's time over its in-process baseline, at each percentile."""
    return {key: round(path[key] - baseline[key], 2) for key in baseline}


def time_batches(engines: dict[str, SwapEngine], frames: list[np.ndarray], batches: int, *,
                 warmup: int = 5, block: int = 10, pace_s: float = 0.0
                 ) -> dict[str, list[float]]:
    """Milliseconds per ``process`` call of each engine, after ``warmup`` untimed calls.

    The engines take turns in blocks of ``block`` calls, in a rotating order, so other work
    on the machine weighs on all of them alike while each runs back to back as the daemon
    would. Each keeps the results of its last calls as the processor's output buffer does
    (its newest 60 frames), so memory is freed and reused at the daemon's pace, not at once.
    """
    samples: dict[str, list[float]] = {name: [] for name in engines}
    staging: dict[str, list[float]] = {name: [] for name in engines}
    kept = {name: collections.deque[list[np.ndarray]](maxlen=max(1, OUTPUT_BUFFER
                                                                 // len(frames)))
            for name in engines}
    names = list(engines)

    def call(name: str) -> float:
        # An engine host's proxy takes each frame as it arrives (the feeder calls ``stage``).
        # Paced, the frames arrive one per ``pace_s`` for every engine alike, as from a
        # camera; back to back (0), a remote host may still be decoding the batch's staged
        # frames when it comes, which the batch then waits for.
        # The batch is complete when its last frame arrives: the clock starts there, so that
        # frame's staging counts (the processor takes the batch once it is staged).
        stage = getattr(engines[name], "stage", None)
        for index, frame in enumerate(frames):
            if index and pace_s:
                time.sleep(pace_s)
            start = time.perf_counter()
            if stage is not None:
                stage(frame)
                staging[name].append((time.perf_counter() - start) * 1000)
        result = engines[name].process(frames)
        elapsed = (time.perf_counter() - start) * 1000
        if not result.swapped:
            raise RuntimeError(f"{name}: the debug engine did not swap a batch")
        kept[name].append(result.frames)
        return elapsed

    for name in names:
        for _ in range(warmup):
            call(name)
        staging[name].clear()  # first touches of the slots: not what a running daemon pays
    turn = 0
    while any(len(taken) < batches for taken in samples.values()):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            for _ in range(min(block, batches - len(samples[name]))):
                samples[name].append(call(name))
        turn += 1
    for name, costs in staging.items():
        if costs:
            samples[f"{name}_stage"] = costs
    return samples


def time_calls(call: Callable[[], object], count: int, warmup: int = 5) -> list[float]:
    samples = []
    for index in range(warmup + count):
        start = time.perf_counter()
        call()
        if index >= warmup:
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def check_swapped(proxy: EngineHostProxy, frames: list[np.ndarray], exact: bool,
                  options: dict[str, Any]) -> None:
    """The path under test must work before it is timed (the debug engine inverts)."""
    result = proxy.process(frames)
    made = DebugEngine(**options).process(frames).frames
    for out, expected in zip(result.frames, made, strict=True):
        if exact and not np.array_equal(out, expected):
            raise RuntimeError("the local host returned other frames than the engine made")
        if not exact and np.abs(out.astype(np.int16) - expected).mean() > 4:
            raise RuntimeError("the TCP host returned frames far from the engine's")


@contextmanager
def local_proxy(options: dict[str, Any], size: tuple[int, int]) -> Iterator[EngineHostProxy]:
    host = ChildEngineHost("debug", options, frame_size=size, call_timeout_s=CALL_TIMEOUT_S,
                           log_level="WARNING")
    try:
        proxy = host.connect()
        try:
            yield proxy
        finally:
            proxy.close()
    finally:
        host.close()


@contextmanager
def tcp_proxy(options: dict[str, Any], size: tuple[int, int]) -> Iterator[EngineHostProxy]:
    process = subprocess.Popen(
        [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve", "--engine", "debug",
         "--listen", "127.0.0.1:0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, OPTIONS_ENV: json.dumps(options)})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        pairing = parse_pairing_line(line)
        if pairing is None:
            raise RuntimeError(f"the TCP host printed no pairing line: {line!r}")
        url = parse_engine_url(pairing)
        remote = RemoteEngineHost(url, url.token or "", frame_size=size,
                                  call_timeout_s=CALL_TIMEOUT_S)
        proxy = remote.connect()
        try:
            yield proxy
        finally:
            proxy.close()
            remote.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(options: dict[str, Any], size: tuple[int, int], frames: list[np.ndarray],
            batches: int, pace_s: float) -> dict[str, Any]:
    boxed = {**options, "box": PERSON_BOX}
    with local_proxy(options, size) as shm, tcp_proxy(options, size) as jpeg, \
            tcp_proxy(boxed, size) as jpeg_box:
        check_swapped(shm, frames, True, options)
        check_swapped(jpeg, frames, False, options)
        check_swapped(jpeg_box, frames, False, boxed)
        proxies = {"local": shm, "tcp": jpeg, "tcp_box": jpeg_box}
        before = {name: proxy.bytes_sent + proxy.bytes_received
                  for name, proxy in proxies.items()}
        samples = time_batches({"in_process": DebugEngine(**options),
                                "in_process_box": DebugEngine(**boxed), **proxies}, frames,
                               batches, pace_s=pace_s)
        figures: dict[str, Any] = {"in_process_ms": percentiles(samples["in_process"]),
                                   "in_process_box_ms": percentiles(samples["in_process_box"])}
        for name, proxy in proxies.items():
            moved = proxy.bytes_sent + proxy.bytes_received - before[name]
            figures[name] = {
                "ms": percentiles(samples[name]),
                "stage_ms_per_frame": percentiles(samples[f"{name}_stage"]),
                "wire_bytes_per_frame": round(moved / (batches + 5) / len(frames)),
                "empty_round_trip_ms": percentiles(time_calls(proxy.reset, 50))}
    return figures


def jpeg_cost(frames: list[np.ndarray], repeats: int = 3) -> dict[str, float]:
    height, width = frames[0].shape[:2]
    encode_ms, decode_ms, psnr, worst = [], [], [], 0
    for _ in range(repeats):
        for frame in frames:
            start = time.perf_counter()
            data = codec.encode_jpeg([frame])
            middle = time.perf_counter()
            (back,) = codec.decode_jpeg(data, [(width, height)])
            end = time.perf_counter()
            encode_ms.append((middle - start) * 1000)
            decode_ms.append((end - middle) * 1000)
            error = back.astype(np.int16) - frame
            mse = float(np.mean(error.astype(np.float64) ** 2))
            psnr.append(10 * np.log10(255 ** 2 / mse) if mse else float("inf"))
            worst = max(worst, int(np.abs(error).max()))
    return {"quality": codec.JPEG_QUALITY,
            "encode_ms_per_frame": round(float(np.median(encode_ms)), 2),
            "decode_ms_per_frame": round(float(np.median(decode_ms)), 2),
            "psnr_db": round(float(np.median(psnr)), 1), "max_abs_error": worst}


def restart(options: dict[str, Any], size: tuple[int, int], frames: list[np.ndarray],
            tries: int) -> dict[str, Any]:
    """kill -9 an idle local host, then time until a new one swaps the next batch."""
    host = ChildEngineHost("debug", options, frame_size=size, call_timeout_s=CALL_TIMEOUT_S,
                           log_level="WARNING")
    totals, detect, start = [], [], []
    try:
        proxy = host.connect()
        proxy.process(frames)
        for _ in range(tries):
            pid = host.pid
            assert pid is not None
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            try:
                proxy.process(frames)
            except EngineHostError:
                pass  # what the processor sees
            else:
                raise RuntimeError("a batch was swapped by a killed host")
            noticed = time.perf_counter()
            proxy.close()
            proxy = host.connect()
            connected = time.perf_counter()
            if not proxy.process(frames).swapped:
                raise RuntimeError("the new host did not swap")
            done = time.perf_counter()
            totals.append((done - killed) * 1000)
            detect.append((noticed - killed) * 1000)
            start.append((connected - noticed) * 1000)
        proxy.close()
    finally:
        host.close()
    return {"tries": tries, "ms_median": round(float(np.median(totals)), 1),
            "ms_max": round(max(totals), 1),
            "noticed_ms_median": round(float(np.median(detect)), 1),
            "new_host_ms_median": round(float(np.median(start)), 1)}


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch", type=int, default=9, help="frames per batch")
    parser.add_argument("--sizes", default="1280x720,848x480")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--paced", action="store_true",
                        help="frames arrive one frame period apart, as from a camera (on a "
                        "cloud VM, memory work after an idle gap is 2-5x slower, for every "
                        "path alike)")
    args = parser.parse_args()
    options = {"delay_ms": 0, "first_batch": args.batch, "next_batch": args.batch}
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; batches of "
          f"{args.batch} frames, {args.batches} timed batches per path, "
          + ("frames one frame period apart" if args.paced else "back to back"))
    report: dict[str, Any] = {"batch": args.batch, "batches": args.batches,
                              "paced": args.paced,
                              "load_average": round(os.getloadavg()[0], 2), "sizes": {}}
    for text in args.sizes.split(","):
        size = parse_size(text)
        frames = [scene(size[0], size[1], index, rng) for index in range(args.batch)]
        figures = measure(options, size, frames, args.batches,
                          FRAME_PERIOD_S if args.paced else 0.0)
        inline, shm, jpeg = figures["in_process_ms"], figures["local"], figures["tcp"]
        inline_box, jpeg_box = figures["in_process_box_ms"], figures["tcp_box"]
        figures["local_overhead_ms"] = over_baseline(shm["ms"], inline)
        figures["tcp_overhead_ms"] = over_baseline(jpeg["ms"], inline)
        figures["tcp_box_overhead_ms"] = over_baseline(jpeg_box["ms"], inline_box)
        figures["jpeg"] = jpeg_cost(frames)
        report["sizes"][text] = figures
        print(f"\n{text}, {args.batch} frames ({codec.frame_bytes(*size) * args.batch / 1e6:.1f}"
              " MB of pixels) per batch")
        print(f"  in-process      p50 {inline['p50']:7.2f} ms   p99 {inline['p99']:7.2f} ms")
        print(f"  in-process, box p50 {inline_box['p50']:7.2f} ms   p99 {inline_box['p99']:7.2f}"
              " ms")
        for name, got, overhead in (
                ("local (shm)", shm, figures["local_overhead_ms"]),
                ("TCP (JPEG)", jpeg, figures["tcp_overhead_ms"]),
                ("TCP, box", jpeg_box, figures["tcp_box_overhead_ms"])):
            print(f"  {name:<15} p50 {got['ms']['p50']:7.2f} ms   p99 {got['ms']['p99']:7.2f} ms"
                  f"   overhead p50 {overhead['p50']:6.2f} ms  p99 {overhead['p99']:6.2f} ms"
                  f"   {got['wire_bytes_per_frame']:,} B/frame on the wire"
                  f"   empty round trip p50 {got['empty_round_trip_ms']['p50']:.2f} ms"
                  f"   staging p50 {got['stage_ms_per_frame']['p50']:.2f} ms per frame"
                  " (feeder thread; the last frame's is in the batch's time)")
        cost = figures["jpeg"]
        print(f"  JPEG q{cost['quality']}: encode {cost['encode_ms_per_frame']:.2f} + decode "
              f"{cost['decode_ms_per_frame']:.2f} ms per frame, PSNR {cost['psnr_db']:.1f} dB, "
              f"max abs error {cost['max_abs_error']}")
        print(f"  goals: local overhead p50 {figures['local_overhead_ms']['p50']:.2f} ms "
              f"(<= 5); TCP overhead p50 {figures['tcp_overhead_ms']['p50']:.2f} ms, a person's "
              f"box changed {figures['tcp_box_overhead_ms']['p50']:.2f} ms (<= one frame "
              f"period, {FRAME_PERIOD_MS:.1f})")
    if args.restarts:
        first = parse_size(args.sizes.split(",")[0])
        frames = [scene(first[0], first[1], index, rng) for index in range(args.batch)]
        report["restart"] = restart(options, first, frames, args.restarts)
        got = report["restart"]
        print(f"\nrestart after kill -9 ({args.restarts} tries): median {got['ms_median']:.0f} "
              f"ms, max {got['ms_max']:.0f} ms (noticed {got['noticed_ms_median']:.0f} ms, new "
              f"host up {got['new_host_ms_median']:.0f} ms, then one batch)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
