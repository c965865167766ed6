"""Linux: the FaceSwap Mic on the desktop's sound server (PulseAudio, or PipeWire through its
PulseAudio interface, which is what every current desktop runs).

The virtual microphone is two server modules: a private null sink we play into, and a remap
source on that sink's monitor described as "FaceSwap Mic". Call apps hide monitors (or list
them as "Monitor of ..."), but they list the remap source as an ordinary microphone.

Control (modules, device lists) goes through pulsectl (MIT), a well-kept binding of libpulse's
introspection API. pulsectl does not move audio, so the streams use libpulse-simple, the
PulseAudio project's own blocking stream API, called through ctypes the way pulsectl calls
libpulse. It ships in libpulse0 (LGPL-2.1+, loaded dynamically at run time), which every
PulseAudio or PipeWire desktop has. Each stream is its own server connection, so a sound server
restart costs only a reopen. The alternatives were worse:
- pasimple (MIT) wraps the same library but is a 0.0.x package whose errors are bare strings,
  so "the server is gone" could not be told from "the device is gone";
- soundcard (BSD) connects once, at import, as a module global, and cannot reconnect after the
  sound server restarts (PipeWire restarts on every update);
- sounddevice (PortAudio's ALSA backend) cannot address a PulseAudio device by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceswap_cam.daemon.audio.backend import (
    BLOCK_FRAMES,
    CHANNELS,
    SAMPLE_RATE,
    VIRTUAL_MIC_NAME,
    AudioDeviceError,
    SoundServerGone,
)

log = logging.getLogger(__name__)

# Every module we load carries this in its arguments: the daemon holds a one-per-user lock, so
# at start anything with the marker was left by an earlier run that crashed.
MARKER = "faceswap_cam_mic"
SINK_NAME = f"{MARKER}_sink"
SOURCE_NAME = MARKER

_FRAME_BYTES = 4 * CHANNELS  # float32
_BLOCK_BYTES = BLOCK_FRAMES * _FRAME_BYTES
# Playback buffer: small so the delay we apply is the delay heard, with a cushion. Microphones
# deliver in bursts; without prebuffered audio each late burst would underrun the sink and cut
# a gap into the voice. Playback starts (and restarts after an underrun) with 30 ms queued and
# the writer blocks at 60 ms; the latency we report includes this, and the delay subtracts it.
_OUTPUT_TARGET_BYTES = 6 * _BLOCK_BYTES
_OUTPUT_PREBUF_BYTES = 3 * _BLOCK_BYTES
# Record buffer bound on the server: at most 1 s waits for us (the server drops the oldest
# beyond that), so a stalled thread never makes memory grow.
_INPUT_MAX_BYTES = SAMPLE_RATE * _FRAME_BYTES
# A call app wants the present: an input that fell this far behind (the server delivered a
# burst, or we stalled) drops its backlog rather than carry the lag for the rest of the call.
_MAX_INPUT_BACKLOG_S = 0.1
# How often (in blocks, 0.1 s) a stream asks the server about itself: whether it was moved
# (PulseAudio moves a stream whose device vanished to another one, which could be our own
# virtual mic, a feedback loop, or for our output the user's speakers), and for the output how
# long a sample waits (libpulse-simple's own figure for a playback stream into a null sink
# comes out negative, and reads 0, because the null sink renders ahead of its clock).
_PROBE_BLOCKS = 10
_MONITOR_TAG = " (monitor)"  # ends the name of an input stream that records a monitor on purpose

_PA_INVALID_INDEX = 0xFFFFFFFF
_PA_STREAM_PLAYBACK = 1
_PA_STREAM_RECORD = 2
_PA_SAMPLE_FLOAT32LE = 5
# libpulse error codes (pulse/def.h) that mean the server, not a device, is the problem:
# connection refused, protocol, timeout, connection terminated, invalid server.
_SERVER_GONE_CODES = frozenset({6, 7, 8, 11, 13})

SERVER_FIX = ("start the sound server: systemctl --user start pipewire-pulse "
              "(or, without PipeWire, pulseaudio --start)")
_LIB_FIX = "install the PulseAudio client library: sudo apt install libpulse0"


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32),
                ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [("maxlength", ctypes.c_uint32), ("tlength", ctypes.c_uint32),
                ("prebuf", ctypes.c_uint32), ("minreq", ctypes.c_uint32),
                ("fragsize", ctypes.c_uint32)]


@dataclass(frozen=True)
class _Lib:
    simple: ctypes.CDLL
    strerror: Any


@functools.cache
def _simple_lib() -> _Lib:
    """libpulse-simple with typed signatures, loaded once (ctypes releases the GIL in calls)."""
    try:
        lib = ctypes.CDLL("libpulse-simple.so.0")
        core = ctypes.CDLL("libpulse.so.0")
    except OSError as exc:
        raise AudioDeviceError(f"the PulseAudio client library is missing: {exc}",
                               _LIB_FIX) from exc
    err = ctypes.POINTER(ctypes.c_int)
    lib.pa_simple_new.restype = ctypes.c_void_p
    lib.pa_simple_new.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
        ctypes.POINTER(_SampleSpec), ctypes.c_void_p, ctypes.POINTER(_BufferAttr), err]
    lib.pa_simple_free.restype = None
    lib.pa_simple_free.argtypes = [ctypes.c_void_p]
    for fn in (lib.pa_simple_read, lib.pa_simple_write):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, err]
    lib.pa_simple_get_latency.restype = ctypes.c_uint64
    lib.pa_simple_get_latency.argtypes = [ctypes.c_void_p, err]
    core.pa_strerror.restype = ctypes.c_char_p
    core.pa_strerror.argtypes = [ctypes.c_int]
    return _Lib(lib, core.pa_strerror)


def _stream_error(lib: _Lib, code: int, what: str, fix: str) -> AudioDeviceError:
    text = (lib.strerror(code) or b"unknown error").decode(errors="replace")
    if code in _SERVER_GONE_CODES:
        return SoundServerGone(f"{what}: {text}", SERVER_FIX)
    return AudioDeviceError(f"{what}: {text}", fix)


class _SimpleStream:
    """One libpulse-simple stream; used by one thread (the delay thread) only."""

    _probe_blocks = _PROBE_BLOCKS

    def __init__(self, direction: int, device: str, stream_name: str, attr: _BufferAttr, *,
                 fix: str, probe: Callable[[str], float | None]) -> None:
        lib = _simple_lib()
        self._lib = lib.simple
        self._strerror = lib
        self._device = device
        self._name = stream_name
        self._fix = fix
        self._probe = probe
        self._blocks = 0
        self._latency_s = 0.0
        spec = _SampleSpec(_PA_SAMPLE_FLOAT32LE, SAMPLE_RATE, CHANNELS)
        error = ctypes.c_int(0)
        handle = self._lib.pa_simple_new(
            None, b"faceswap-cam", direction, device.encode(), stream_name.encode(),
            ctypes.byref(spec), None, ctypes.byref(attr), ctypes.byref(error))
        if not handle:
            raise _stream_error(lib, error.value, f"cannot open {device}", fix)
        self._handle: int | None = handle

    @property
    def latency_s(self) -> float:
        return self._latency_s

    def _live(self) -> int:
        if self._handle is None:
            raise AudioDeviceError(f"the stream on {self._device} is closed", self._fix)
        return self._handle

    def _after_block(self) -> None:
        """Every ``_probe_blocks`` blocks, the server's figure for this stream (a playback
        stream's: libpulse-simple's own reads 0 on a null sink, see ``_PROBE_BLOCKS``)."""
        self._blocks += 1
        if self._blocks % self._probe_blocks == 0:
            server_latency = self._probe(self._name)
            if server_latency is not None:
                self._latency_s = server_latency

    def _call(self, fn: Any, data: int, nbytes: int, what: str) -> None:
        error = ctypes.c_int(0)
        if fn(self._live(), data, nbytes, ctypes.byref(error)) != 0:
            raise _stream_error(self._strerror, error.value, f"{what} {self._device}",
                                self._fix)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.pa_simple_free(handle)


class PulseInput(_SimpleStream):
    """A record stream. Its latency (libpulse-simple's figure: the source's own latency plus
    what waits in the stream for us) is what the voice has aged when we read it. Only the
    waiting part is a backlog that can be dropped; the source's part (a remapped monitor of
    a null sink, a Bluetooth headset) is there for good and is compensated, not flushed."""

    max_backlog_s = _MAX_INPUT_BACKLOG_S
    # A move onto our own mic is a feedback loop: caught within 20 ms (one small query).
    _probe_blocks = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source_latency_s = 0.0

    def _after_block(self) -> None:
        self._blocks += 1
        if self._blocks % self._probe_blocks == 0:
            source_latency = self._probe(self._name)
            if source_latency is not None:
                self._source_latency_s = source_latency
        error = ctypes.c_int(0)
        usec = self._lib.pa_simple_get_latency(self._live(), ctypes.byref(error))
        if error.value == 0:  # no timing yet right after the start: keep the last one
            self._latency_s = usec / 1e6

    def read(self, frames: int) -> np.ndarray:
        block = np.empty((frames, CHANNELS), np.float32)
        self._call(self._lib.pa_simple_read, block.ctypes.data, block.nbytes, "cannot read from")
        self._after_block()
        backlog = self._latency_s - self._source_latency_s
        if backlog > self.max_backlog_s:
            # Most of a backlog sits in libpulse's own queue, which pa_simple_flush does not
            # empty: read it out (it is there, so this does not wait) and drop it, keeping
            # the newest block. Bounded by the 1 s the server keeps.
            dropped = min(int(backlog * SAMPLE_RATE) // frames, SAMPLE_RATE // frames)
            for _ in range(dropped):
                self._call(self._lib.pa_simple_read, block.ctypes.data, block.nbytes,
                           "cannot read from")
            self._after_block()
            log.info("input %s was %.0f ms behind: dropped %d ms of it", self._device,
                     backlog * 1e3, dropped * frames * 1000 // SAMPLE_RATE)
        return block


class PulseOutput(_SimpleStream):
    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != CHANNELS:
            raise ValueError(f"expected (frames, {CHANNELS}) samples, got {data.shape}")
        self._call(self._lib.pa_simple_write, data.ctypes.data, data.nbytes, "cannot play into")
        self._after_block()


class PulseBackend:
    """backend.AudioBackend on the desktop's sound server. Owned by one thread (the delay
    thread): pulsectl connections are not thread-safe, and neither are the streams."""

    name = "pulseaudio"

    def __init__(self, client_name: str = "faceswap-cam") -> None:
        self._modules: list[int] = []  # what we loaded, in load order
        self._input_route: dict[str, tuple[int, int]] = {}  # stream: (its index, its source)
        self._streams = itertools.count()
        try:
            import pulsectl
        except ImportError as exc:
            raise AudioDeviceError("the pulsectl package is missing",
                                   "reinstall faceswap-cam (pip install pulsectl)") from exc
        self._pulsectl: Any = pulsectl
        _simple_lib()  # fail here, not mid-call, when libpulse-simple is missing
        try:
            self._pulse: Any = pulsectl.Pulse(client_name)
        except pulsectl.PulseError as exc:
            raise SoundServerGone(f"no sound server: {exc}", SERVER_FIX) from exc

    # -- control -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _control(self, what: str) -> Iterator[None]:
        try:
            yield
        except (self._pulsectl.PulseError, self._pulsectl.PulseDisconnected) as exc:
            if not self._pulse.connected:
                raise SoundServerGone(f"{what}: the sound server went away", SERVER_FIX) from exc
            raise AudioDeviceError(f"{what}: {exc!r}", SERVER_FIX) from exc

    def _source_ours(self, name: str) -> bool:
        return name.startswith(MARKER)

    def _real_sources(self) -> list[Any]:
        return [s for s in self._pulse.source_list()
                if s.monitor_of_sink == _PA_INVALID_INDEX and not self._source_ours(s.name)]

    def ensure_virtual_mic(self) -> str:
        with self._control("cannot make the FaceSwap Mic"):
            loaded = {m.index for m in self._pulse.module_list()}
            sources = {s.name for s in self._pulse.source_list()}
            if self._modules and set(self._modules) <= loaded and SOURCE_NAME in sources:
                return VIRTUAL_MIC_NAME
            self.remove_virtual_mic()
            # Our sink is an output too, so sound settings list it: its name says to leave it.
            self._modules.append(self._pulse.module_load(
                "module-null-sink",
                f"sink_name={SINK_NAME} rate={SAMPLE_RATE} channels={CHANNELS} "
                "sink_properties='device.description=\"FaceSwap Mic (internal, do not select)\"'"))
            self._modules.append(self._pulse.module_load(
                "module-remap-source",
                f"source_name={SOURCE_NAME} master={SINK_NAME}.monitor channels={CHANNELS} "
                f"source_properties='device.description=\"{VIRTUAL_MIC_NAME}\" "
                "device.icon_name=audio-input-microphone'"))
        log.info("made the virtual microphone %r (modules %s)", VIRTUAL_MIC_NAME, self._modules)
        return VIRTUAL_MIC_NAME

    def remove_virtual_mic(self) -> None:
        modules, self._modules = self._modules, []
        for index in reversed(modules):  # the source first: it depends on the sink
            with contextlib.suppress(self._pulsectl.PulseError, self._pulsectl.PulseDisconnected):
                # Already gone (unloaded by someone, or the server restarted): nothing to undo.
                self._pulse.module_unload(index)

    def remove_stale(self) -> int:
        with self._control("cannot list the sound server's modules"):
            stale = [m for m in self._pulse.module_list()
                     if m.name in ("module-null-sink", "module-remap-source")
                     and MARKER in (m.argument or "") and m.index not in self._modules]
            stale.sort(key=lambda m: m.name != "module-remap-source")
            removed = 0
            for module in stale:
                try:
                    self._pulse.module_unload(module.index)
                    removed += 1
                except self._pulsectl.PulseOperationFailed:
                    pass  # unloaded with its sink already
        if removed:
            log.info("removed %d modules an earlier run left", removed)
        return removed

    def input_names(self) -> list[str]:
        with self._control("cannot list microphones"):
            return [s.name for s in self._real_sources()]

    def _inputs_hint(self) -> str:
        sources = self._real_sources()
        listed = ", ".join(f"{s.name} ({s.description})" for s in sources) or "none found"
        return f"pick another input: faceswap-cam run --mic NAME; inputs: {listed}"

    def resolve_input(self, name: str) -> str:
        with self._control("cannot list microphones"):
            return self._resolve_input(name)

    def _resolve_input(self, name: str | None) -> str:
        if name is None:
            default = self._pulse.server_info().default_source_name or ""
            by_name = {s.name: s for s in self._pulse.source_list()}
            chosen = by_name.get(default)
            if chosen is None or chosen.monitor_of_sink != _PA_INVALID_INDEX:
                if not self._real_sources():
                    raise AudioDeviceError("no microphone found",
                                           "plug in a microphone (FaceSwap Mic plays silence "
                                           "meanwhile)")
                raise AudioDeviceError(
                    f"the system's default input {default!r} is not a microphone",
                    "make your microphone the default input in the sound settings, or "
                    + self._inputs_hint())
            if self._source_ours(chosen.name):
                raise AudioDeviceError(
                    f"the system's default microphone is {VIRTUAL_MIC_NAME} itself "
                    "(recording it would feed it back into itself)",
                    "make your real microphone the default input in the sound settings, or "
                    + self._inputs_hint())
            return str(chosen.name)
        for source in self._pulse.source_list():
            if name in (source.name, source.description):
                if self._source_ours(source.name):
                    raise AudioDeviceError(f"{name!r} is {VIRTUAL_MIC_NAME} itself",
                                           self._inputs_hint())
                return str(source.name)
        raise AudioDeviceError(f"no microphone named {name!r}", self._inputs_hint())

    def _probe_input(self, stream_name: str) -> float | None:
        """The input's source latency (seconds), after checking the stream was not moved
        onto our own mic or a monitor; None before the stream is listed."""
        with self._control("cannot check the microphone stream"):
            known = self._input_route.get(stream_name)
            if known is not None:  # small queries each time: did the server move it?
                output = self._pulse.source_output_info(known[0])
                if output.source == known[1]:
                    return float(output.source_usec) / 1e6
            else:
                found = [o for o in self._pulse.source_output_list()
                         if o.proplist.get("media.name") == stream_name]
                if not found:
                    return None
                output = found[0]
            source = self._pulse.source_info(output.source)
            # The server moves a stream whose microphone vanished to another source: a real
            # microphone is fine (the user may also move it on purpose), but ours would feed
            # back and a monitor would send the desktop's sound into the call.
            was_monitor = stream_name.endswith(_MONITOR_TAG)
            if self._source_ours(source.name) or (
                    source.monitor_of_sink != _PA_INVALID_INDEX and not was_monitor):
                raise AudioDeviceError(
                    f"the microphone went away and the sound server moved our input onto "
                    f"{source.description}", self._inputs_hint())
            self._input_route = {stream_name: (output.index, output.source)}
        return float(output.source_usec) / 1e6

    def _probe_output(self, stream_name: str) -> float | None:
        with self._control("cannot check the FaceSwap Mic stream"):
            for sink_input in self._pulse.sink_input_list():
                if sink_input.proplist.get("media.name") != stream_name:
                    continue
                sink = self._pulse.sink_info(sink_input.sink)
                if sink.name != SINK_NAME:
                    # Our sink was removed and the server rescued our stream onto a real
                    # output: the user would hear their own delayed voice. Stop at once.
                    raise AudioDeviceError(
                        f"the sound server moved our output onto {sink.description}",
                        "nothing to do: FaceSwap Mic is being made again")
                # What is queued in our stream plus the sink's latency (it takes a latency's
                # worth at a time), as PulseAudio defines a playback stream's latency.
                return float(sink_input.buffer_usec + sink_input.sink_usec) / 1e6
        return None

    def _stream_name(self, kind: str) -> str:
        # Unique per stream, so the route checks find exactly this one.
        return f"{MARKER} {os.getpid()}-{next(self._streams)} {kind}"

    def open_input(self, name: str | None) -> PulseInput:
        with self._control("cannot open the microphone"):
            device = self._resolve_input(name)
            source = self._pulse.get_source_by_name(device)
            hint = self._inputs_hint()
        kind = "input" + (_MONITOR_TAG if source.monitor_of_sink != _PA_INVALID_INDEX else "")
        attr = _BufferAttr(_INPUT_MAX_BYTES, _PA_INVALID_INDEX, _PA_INVALID_INDEX,
                           _PA_INVALID_INDEX, _BLOCK_BYTES)
        stream = PulseInput(_PA_STREAM_RECORD, device, self._stream_name(kind), attr, fix=hint,
                            probe=self._probe_input)
        log.info("recording from %s", device)
        return stream

    def open_output(self) -> PulseOutput:
        with self._control("cannot open the FaceSwap Mic"):
            if SINK_NAME not in {s.name for s in self._pulse.sink_list()}:
                raise AudioDeviceError(f"{VIRTUAL_MIC_NAME} is not set up",
                                       "nothing to do: it is made again on the next try")
        attr = _BufferAttr(2 * _OUTPUT_TARGET_BYTES, _OUTPUT_TARGET_BYTES,
                           _OUTPUT_PREBUF_BYTES, _BLOCK_BYTES, _PA_INVALID_INDEX)
        return PulseOutput(_PA_STREAM_PLAYBACK, SINK_NAME, self._stream_name("output"), attr,
                           fix=SERVER_FIX, probe=self._probe_output)

    def close(self) -> None:
        if self._pulse is None:
            return
        self.remove_virtual_mic()
        self._pulse.close()
        self._pulse = None
