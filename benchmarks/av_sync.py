"""Lips and words over a minute: the A/V offset of FaceSwap Mic while the engine's delay varies.

The whole daemon runs in this process with ``--mic`` on a headless PulseAudio that the
benchmark starts on a private socket and stops at the end (nothing reaches the desktop's
sound), as ``tests/audio/test_av_sync.py`` does, with its harness (``tests/audio/av_harness.py``):
a ``file:`` clip (looping) shows a white flash every 1.33 s; at the moment the daemon captures
one, the benchmark clicks into a test microphone. The ``debug`` engine swaps the video late,
and its delay per batch follows a sine between ``--min-ms`` and ``--max-ms`` (``--shape
steps``: the same sine held for a sixth of its period at a time), so the processor's cadence,
the playout delay and the mic's delay all have to follow.

Per flash it prints:

* video delay: when the swapped flash first appears on the published output minus when the
  camera captured the flash's first frame;
* voice delay: when the click is heard on "FaceSwap Mic" minus when it was spoken into the
  test microphone (both recorded, on the monotonic clock);
* offset: voice delay minus video delay, the A/V offset a viewer perceives (positive: the
  voice comes after the lips); the test's figure, which it holds to one frame period (33 ms).

The flashes last 12 frames (400 ms), not the test's 2. With ``live`` playout the output shows
the newest frame of each batch and holds it until the next, so a short flash can fall between
two batches' newest frames and never be shown (a batch of 4 at cadence 3 spans 12 frames).
Long flashes are always shown, in both playouts, and both are measured the same way, from the
flash's first appearance: in ``live`` that is a viewer's experience too (a held frame is late
by up to a batch period more than when it arrived, and the mic follows the ages' centre, so
offsets spread wider there by design). A flash is missed when it was captured but its click
was not heard, or its swapped frame not shown (a delay change can cut a click out: a shorter
delay skips audio, a longer one pauses with a fade); the count is printed.

Beside the measured offsets, the mic's own estimate (``status().mic.av_offset_ms``, its delay
plus the streams' latencies minus the shown video's smoothed age) is sampled once a second,
and how often the voice's target delay changed (sampled every 0.1 s: each change is a
cross-fade that skips audio or a fade into a pause, heard on the call) is counted.

Memory stays bounded: the recordings keep only the clicks' times, the output only the flashes'
(a few bytes a second); the clip is 4 s and loops. Figures are printed, never asserted; the
load average is printed to tell a busy machine; the last line is JSON.

    .venv/bin/python benchmarks/av_sync.py [--seconds 60] [--playout smooth|live|both]
        [--min-ms 30] [--max-ms 250] [--period-s 30] [--shape sine|steps]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the A/V harness lives in tests/

from faceswap_cam.daemon.audio.backend import SAMPLE_RATE  # noqa: E402
from faceswap_cam.daemon.audio.pulse import SOURCE_NAME  # noqa: E402
from faceswap_cam.daemon.config import Playout, Settings  # noqa: E402
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp  # noqa: E402
from faceswap_cam.daemon.states import MicState  # noqa: E402
from faceswap_cam.daemon.stats import rounded  # noqa: E402
from faceswap_cam.models.engine import SwapEngine  # noqa: E402
from faceswap_cam.models.simple_engines import DebugEngine  # noqa: E402
from tests.audio.av_harness import (  # noqa: E402
    FLASH_EVERY,
    FPS,
    SIZE,
    ClickRecorder,
    FlashSink,
    FlashWatcher,
    voice_minus_video_ms,
    write_flashing_clip,
)
from tests.audio.conftest import TEST_MIC, Player, PulseServer, wait_for  # noqa: E402

FLASH_FRAMES = 12  # long enough for live playout to show every flash (see the docstring)
FLASH_SPACING_S = FLASH_EVERY / FPS
STEP_S = 0.1  # how often the engine's delay is set
MIC_SAMPLE_S = 1.0


def engine_delay_ms(t_s: float, *, shape: str, low: float, high: float, period_s: float) -> float:
    """The debug engine's delay at ``t_s`` into the run: a sine from ``low`` up to ``high``
    and back each period; ``steps`` holds it for a sixth of a period at a time."""
    if shape == "steps":
        t_s = math.floor(t_s / (period_s / 6)) * (period_s / 6)
    return low + (high - low) * (1 - math.cos(2 * math.pi * t_s / period_s)) / 2


class DebugEngines:
    """The engine factory handed to the app: each engine the processor makes (it makes one
    again after a failure) is kept, so the benchmark can change its delay while it runs."""

    def __init__(self, delay_ms: float) -> None:
        self._delay_ms = delay_ms
        self._current: DebugEngine | None = None

    def __call__(self) -> SwapEngine:
        self._current = DebugEngine(delay_ms=self._delay_ms)
        return self._current

    def set_delay_ms(self, delay_ms: float) -> None:
        # One float attribute, read once per batch by the engine's worker thread.
        self._delay_ms = delay_ms
        if self._current is not None:
            self._current.delay_s = delay_ms / 1000


@dataclass(frozen=True)
class Flash:
    t_s: float  # captured, seconds into the measured run
    engine_ms: float  # the engine's delay then
    video_ms: float | None
    voice_ms: float | None
    offset_ms: float | None
    age_ms: float | None  # how old the frame shown at the flash's first appearance was


def _first_in(times: Sequence[float], start: float, end: float) -> float | None:
    return next((t for t in times if start <= t < end), None)


def measure(captured: Sequence[float], spoken: Sequence[float], voiced: Sequence[float],
            shown: Sequence[tuple[float, float | None]], *, start_s: float,
            delay_at: Callable[[float], float]) -> list[Flash]:
    """Pairs each captured flash with its spoken click (before the next flash), its heard
    click (within a flash spacing after it was spoken: every delay here is shorter) and its
    first swapped frame on the output (before the next flash is captured)."""
    shown_times = [t for t, _ in shown]
    ages = dict(shown)
    flashes = []
    for k, c in enumerate(captured):
        following = captured[k + 1] if k + 1 < len(captured) else c + FLASH_SPACING_S
        s = _first_in(spoken, c, following)
        v = None if s is None else _first_in(voiced, s, s + FLASH_SPACING_S)
        p = _first_in(shown_times, c, following)
        flashes.append(Flash(
            t_s=round(c - start_s, 2),
            engine_ms=round(delay_at(c - start_s), 1),
            video_ms=None if p is None else round((p - c) * 1e3, 1),
            voice_ms=None if s is None or v is None else round((v - s) * 1e3, 1),
            offset_ms=(None if s is None or v is None or p is None
                       else round(voice_minus_video_ms(s, v, p, c), 1)),
            age_ms=rounded(None if p is None else ages[p], 1)))
    return flashes


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if sign else f"{value:.0f}"


def run(playout: Playout, clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One daemon, ``args.seconds`` of flashes and clicks with the varying delay."""

    def delay_at(t_s: float) -> float:
        return engine_delay_ms(t_s, shape=args.shape, low=args.min_ms, high=args.max_ms,
                               period_s=args.period_s)

    engines = DebugEngines(delay_at(0.0))
    output = FlashSink()
    app = RealtimeFaceSwapApp(
        Settings(source=f"file:{clip}", engine="debug", fps=FPS, size=SIZE, playout=playout,
                 mic=TEST_MIC, control_api=False),
        engine_factory=engines, sinks=[output])
    mic_offsets: list[float] = []
    retargets = 0
    with contextlib.ExitStack() as stack:
        player = Player()
        stack.callback(player.close)
        stack.callback(app.close)
        app.start()
        watcher = FlashWatcher(app, player)
        stack.callback(watcher.close)

        def mic_running() -> bool:
            mic = app.status().mic
            return (mic is not None and mic.state is MicState.RUNNING
                    and mic.av_offset_ms is not None and app.status().showing == "swapped")

        wait_for(mic_running, 30, "the mic to follow the swapped video")
        direct = ClickRecorder(TEST_MIC)  # the click as spoken
        stack.callback(direct.close)
        heard = ClickRecorder(SOURCE_NAME)  # what a call app hears from "FaceSwap Mic"
        stack.callback(heard.close)
        wait_for(lambda: min(direct.frames(), heard.frames()) > SAMPLE_RATE // 2, 10,
                 "the recordings")
        start_s = time.monotonic()
        end_s = start_s + args.seconds
        watcher.armed.set()
        next_sample_s = start_s + MIC_SAMPLE_S
        last_target: float | None = None
        while (now_s := time.monotonic()) < end_s:
            engines.set_delay_ms(delay_at(now_s - start_s))
            # Each new target is a fade and a skip or a pause in the voice (the delay line).
            target = (app.mic.status() or {}).get("target_ms")
            if target is not None and last_target is not None and target != last_target:
                retargets += 1
            last_target = target
            if now_s >= next_sample_s:
                next_sample_s += MIC_SAMPLE_S
                mic = app.status().mic
                if mic is not None and mic.av_offset_ms is not None:
                    mic_offsets.append(mic.av_offset_ms)
            time.sleep(STEP_S)
        watcher.armed.clear()
        # The last clicks come out once the voice delay has passed (at most a flash spacing).
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(heard.onsets_s()) >= len(direct.onsets_s()),
                     FLASH_SPACING_S + 1, "the last delayed clicks")
        time.sleep(0.2)
        captured = [ns / 1e9 for ns in watcher.flashes_ns]
        spoken, voiced = direct.onsets_s(), heard.onsets_s()
        shown = [(ns / 1e9, age) for ns, age in output.onsets()]
        errors = [str(r.error) for r in (direct, heard) if r.error is not None]
    flashes = measure(captured, spoken, voiced, shown, start_s=start_s, delay_at=delay_at)
    result = summarize(playout, flashes, mic_offsets, errors)
    result["mic_retargets_per_min"] = round(retargets * 60 / args.seconds, 1)
    print(f"  mic retargets  {result['mic_retargets_per_min']} a minute (the voice's delay "
          "changed; each is a cross-fade or a pause)")
    result["rss_mb_at_end"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    return result


def summarize(playout: Playout, flashes: list[Flash], mic_offsets: list[float],
              errors: list[str]) -> dict[str, Any]:
    print(f"\n{playout.value} playout: per flash (ms; offset = voice delay - video delay)")
    print("    t s  engine   video   voice   offset   age shown")
    for f in flashes:
        print(f"  {f.t_s:5.1f}  {f.engine_ms:6.0f}  {_fmt(f.video_ms):>6}  {_fmt(f.voice_ms):>6}"
              f"  {_fmt(f.offset_ms, sign=True):>7}  {_fmt(f.age_ms):>6}")
    measured = [f for f in flashes if f.offset_ms is not None]
    offsets = [f.offset_ms for f in measured if f.offset_ms is not None]
    videos = [f.video_ms for f in flashes if f.video_ms is not None]
    result: dict[str, Any] = {
        "flashes": len(flashes),
        "measured": len(measured),
        "missed": len(flashes) - len(measured),
        "not_shown": sum(f.video_ms is None for f in flashes),
        "not_heard": sum(f.voice_ms is None for f in flashes),
        "abs_offset_ms": percentiles([abs(o) for o in offsets]),
        "offset_ms": percentiles(offsets),
        "within_one_frame": sum(abs(o) <= 1000 / FPS for o in offsets),
        "video_delay_ms": percentiles(videos),
        "engine_ms": percentiles([f.engine_ms for f in flashes]),
        "mic_abs_av_offset_ms": percentiles([abs(o) for o in mic_offsets]),
        "mic_av_offset_ms": percentiles(mic_offsets),
        "mic_samples": len(mic_offsets),
        "recorder_errors": errors,
        "per_flash": [asdict(f) for f in flashes],
    }
    o, v = result["abs_offset_ms"], result["video_delay_ms"]
    m, ms = result["mic_abs_av_offset_ms"], result["mic_av_offset_ms"]
    print(f"{playout.value}: {len(flashes)} flashes, {len(measured)} measured, "
          f"{result['missed']} missed ({result['not_shown']} not shown, "
          f"{result['not_heard']} not heard)")
    print(f"  |offset|       p50 {_fmt(o['p50'])} ms  p99 {_fmt(o['p99'])} ms  "
          f"(signed p50 {_fmt(result['offset_ms']['p50'], sign=True)} ms; "
          f"{result['within_one_frame']}/{len(measured)} within 33 ms)")
    print(f"  video delay    p50 {_fmt(v['p50'])} ms  p99 {_fmt(v['p99'])} ms")
    print(f"  mic estimate   |av_offset_ms| p50 {_fmt(m['p50'])} ms  p99 {_fmt(m['p99'])} ms "
          f"(signed p50 {_fmt(ms['p50'], sign=True)} ms, {len(mic_offsets)} samples)")
    if errors:
        print(f"  recorder errors: {errors}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured per playout")
    parser.add_argument("--playout", choices=["smooth", "live", "both"], default="both")
    parser.add_argument("--min-ms", type=float, default=30.0, help="engine delay, lowest")
    parser.add_argument("--max-ms", type=float, default=250.0, help="engine delay, highest")
    parser.add_argument("--period-s", type=float, default=30.0, help="of the delay's sine")
    parser.add_argument("--shape", choices=["sine", "steps"], default="sine")
    args = parser.parse_args()
    if shutil.which("pulseaudio") is None:
        sys.exit("av_sync: needs the pulseaudio binary for a headless sound server "
                 "(apt-get install pulseaudio); nothing was measured")
    logging.basicConfig(level=logging.WARNING)
    playouts = ([Playout.SMOOTH, Playout.LIVE] if args.playout == "both"
                else [Playout(args.playout)])
    load_start = os.getloadavg()
    print(f"load average {load_start[0]:.2f} on {os.cpu_count()} CPUs; {args.seconds:.0f} s "
          f"per playout; engine delay {args.shape} {args.min_ms:.0f}-{args.max_ms:.0f} ms, "
          f"period {args.period_s:.0f} s; a flash every {FLASH_SPACING_S:.2f} s")
    runs: dict[str, Any] = {}
    # A short path: a unix socket's address must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="avsync-") as folder:
        base = Path(folder)
        # This run's own daemon lock, control file and (empty) reference library, apart from
        # a daemon the user may be running.
        os.environ["FACESWAP_CAM_CONTROL_FILE"] = str(base / "control.json")
        os.environ["FACESWAP_CAM_REFERENCES_DIR"] = str(base / "references")
        (base / "pa").mkdir()
        server = PulseServer(base / "pa")
        server.start()
        try:
            os.environ["PULSE_SERVER"] = server.address
            server.reset()
            server.load_test_mic()
            clip = write_flashing_clip(base / "flashes.mp4", FLASH_EVERY * 3,
                                       flash_frames=FLASH_FRAMES)
            for playout in playouts:
                runs[playout.value] = run(playout, clip, args)
        finally:
            server.stop()
    load_end = os.getloadavg()
    print(f"\nload average {load_end[0]:.2f} at the end")
    report = {"seconds": args.seconds, "shape": args.shape,
              "engine_delay_ms": [args.min_ms, args.max_ms], "period_s": args.period_s,
              "flash_spacing_s": round(FLASH_SPACING_S, 3), "flash_frames": FLASH_FRAMES,
              "load_average": [round(load_start[0], 2), round(load_end[0], 2)],
              "cpus": os.cpu_count(), "runs": runs}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
