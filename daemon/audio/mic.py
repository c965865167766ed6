"""The FaceSwap Mic service: the user's microphone, late by exactly the swapped video's delay.

One thread ("faceswap-mic") owns the backend, both streams and the delay line. Each turn reads
a 10 ms block from the microphone, delays it and writes it into the virtual microphone; the
blocking read (or, without a microphone, the blocking write) paces the loop.

The delay applied is the video's delay minus the time the audio already spends in the streams
(the input's latency plus the output's), so what the call app records is as late as the video
it shows. It never breaks the call: without a microphone, or when it vanishes mid-call, the
virtual mic stays and plays silence while the input is retried with backoff; when the sound
server restarts, everything is opened again (and the virtual mic made again) with backoff.
Memory is bounded by the delay line (``max_delay_s``); nothing else grows.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from faceswap_cam.daemon.audio.backend import (
    BLOCK_FRAMES,
    CHANNELS,
    SAMPLE_RATE,
    AudioBackend,
    AudioDeviceError,
    InputStream,
    OutputStream,
    SoundServerGone,
)
from faceswap_cam.daemon.audio.delay_line import DelayLine

log = logging.getLogger(__name__)

THREAD_NAME = "faceswap-mic"
# Latencies jitter block to block; the delay follows their average (about 0.5 s) and moves
# only when the wanted delay drifted this far, so the delay line is not re-faded constantly.
_LATENCY_SMOOTHING = 0.02
_RETARGET_S = 0.005
_FIRST_RETRY_S = 0.25
_JOIN_S = 3.0


class DelaySource(Protocol):
    """What the mic needs from the AudioDelayTracker."""

    def target_delay_s(self, now_ns: int | None = None) -> float: ...

    def video_age_s(self, now_ns: int | None = None) -> float | None: ...


def default_backend() -> AudioBackend:
    """The platform's backend: the sound server on Linux, a loopback driver elsewhere."""
    platform: str = sys.platform  # a plain str: mypy would call one branch unreachable
    if platform.startswith("linux"):
        from faceswap_cam.daemon.audio.pulse import PulseBackend

        return PulseBackend()
    from faceswap_cam.daemon.audio.portable import SoundDeviceBackend

    return SoundDeviceBackend()


class _Backoff:
    def __init__(self, longest_s: float) -> None:
        self._longest = longest_s
        self._next = _FIRST_RETRY_S

    def reset(self) -> None:
        self._next = _FIRST_RETRY_S

    def next(self) -> float:
        wait, self._next = self._next, min(self._next * 2, self._longest)
        return min(wait, self._longest)


class FaceSwapMic:
    """Owns the "faceswap-mic" thread; ``close()`` stops it and undoes the virtual mic."""

    def __init__(self, backend_factory: Callable[[], AudioBackend], tracker: DelaySource,
                 input_name: str | None, max_delay_s: float = 8.0, *,
                 retry_max_s: float = 5.0) -> None:
        self._factory = backend_factory
        self._tracker = tracker
        self._input_name = input_name
        self._delay = DelayLine(SAMPLE_RATE, CHANNELS, max_delay_s=max_delay_s)
        self._retry_max_s = retry_max_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # guards the status fields below
        self._state = "stopped"
        self._device: str | None = None
        self._detail: str | None = None
        self._fix: str | None = None
        self._in_latency_s = 0.0
        self._out_latency_s = 0.0
        self._delay_s = 0.0
        self._target_s = 0.0
        self._restarts = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("FaceSwapMic was closed")
        if self._thread is not None:
            return
        self._set_state("starting", None, None)
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_JOIN_S)
            if thread.is_alive():  # a hung sound server: the thread cleans up when it returns
                log.warning("the %s thread did not stop within %.0f s", THREAD_NAME, _JOIN_S)
        self._set_state("stopped", None, None)

    def __enter__(self) -> FaceSwapMic:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        video_age = self._tracker.video_age_s()
        with self._lock:
            heard_s = self._delay_s + self._in_latency_s + self._out_latency_s
            return {
                "state": self._state,
                "device": self._device,
                "input": self._input_name or "default",
                "delay_ms": round(self._delay_s * 1e3, 1),
                "target_ms": round(self._target_s * 1e3, 1),
                "input_latency_ms": round(self._in_latency_s * 1e3, 1),
                "output_latency_ms": round(self._out_latency_s * 1e3, 1),
                # Positive: the voice comes after the lips.
                "av_offset_ms": (None if video_age is None
                                 else round((heard_s - video_age) * 1e3, 1)),
                "restarts": self._restarts,
                "detail": self._detail,
                "fix": self._fix,
            }

    def _set_state(self, state: str, detail: str | None, fix: str | None) -> None:
        with self._lock:
            if state != self._state:
                log.info("FaceSwap Mic: %s%s", state, f" ({detail})" if detail else "")
            self._state, self._detail, self._fix = state, detail, fix

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        server_backoff = _Backoff(self._retry_max_s)
        while not self._stop.is_set():
            backend: AudioBackend | None = None
            try:
                backend = self._factory()
                backend.remove_stale()
                self._serve(backend, server_backoff)
            except AudioDeviceError as exc:  # no server, or the virtual mic cannot be made
                self._set_state("no_server", str(exc), exc.fix)
            except Exception as exc:  # never let the call lose its microphone for good
                log.exception("FaceSwap Mic failed; starting again")
                self._set_state("no_server", f"internal error: {exc!r}",
                                "report this bug; FaceSwap Mic starts again by itself")
            finally:
                if backend is not None:
                    with contextlib.suppress(Exception):
                        backend.close()
            if self._stop.is_set():
                break
            with self._lock:
                self._restarts += 1
            self._stop.wait(server_backoff.next())

    def _serve(self, backend: AudioBackend, server_backoff: _Backoff) -> None:
        """Runs until stopped, or until the server or the virtual mic fails (raises)."""
        input_backoff = _Backoff(self._retry_max_s)
        silence = np.zeros((BLOCK_FRAMES, CHANNELS), np.float32)
        inp: InputStream | None = None
        out: OutputStream | None = None
        next_input_try = 0.0
        in_latency = out_latency = 0.0
        try:
            while not self._stop.is_set():
                if out is None:
                    device = backend.ensure_virtual_mic()  # made again if someone removed it
                    with self._lock:
                        self._device = device
                    out = backend.open_output()
                    server_backoff.reset()
                if inp is None and time.monotonic() >= next_input_try:
                    try:
                        inp = backend.open_input(self._input_name)
                        input_backoff.reset()
                    except SoundServerGone:
                        raise
                    except AudioDeviceError as exc:
                        self._set_state("no_input", str(exc), exc.fix)
                        next_input_try = time.monotonic() + input_backoff.next()
                block = silence
                if inp is not None:
                    try:
                        block = inp.read(BLOCK_FRAMES)
                        in_latency += _LATENCY_SMOOTHING * (inp.latency_s - in_latency)
                        self._set_state("running", None, None)
                    except SoundServerGone:
                        raise
                    except AudioDeviceError as exc:
                        log.warning("lost the microphone: %s", exc)
                        inp.close()
                        inp = None
                        self._set_state("no_input", str(exc), exc.fix)
                        next_input_try = time.monotonic() + input_backoff.next()
                if inp is None:
                    in_latency = 0.0
                # Without a microphone, silence still goes through the delay line: what was
                # said just before plays out, and the timing stays continuous.
                target = self._retarget(in_latency + out_latency)
                delayed = self._delay.process(block)
                try:
                    out.write(delayed)  # blocks while the output is full: paces the loop
                    out_latency += _LATENCY_SMOOTHING * (out.latency_s - out_latency)
                except SoundServerGone:
                    raise
                except AudioDeviceError as exc:
                    log.warning("the virtual mic's stream failed, opening it again: %s", exc)
                    out.close()
                    out = None
                with self._lock:
                    self._in_latency_s, self._out_latency_s = in_latency, out_latency
                    self._delay_s, self._target_s = self._delay.delay_s, target
        finally:
            for stream in (inp, out):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()

    def _retarget(self, stream_latency_s: float) -> float:
        """Sets the delay line's target from the video's delay; returns the video's delay."""
        video_s = self._tracker.target_delay_s()
        wanted = max(0.0, video_s - stream_latency_s)
        if abs(wanted - self._delay.target_delay_s) >= _RETARGET_S:
            self._delay.set_target_delay(wanted)
        return video_s
