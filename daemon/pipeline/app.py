"""Layer 2: RealtimeFaceSwapApp wires capture → feeder → processor → publisher → sinks.

Threads and who owns them (all owned by the app, started in ``start`` and stopped in ``close``
in reverse order):
- capture (WebcamCapture): device → ring of the newest 30 frames, overwriting the oldest.
- feeder: wakes on the ring's condition and hands every k-th frame to the processor's bounded
  input queue (the processor drops the oldest when full).
- processor (AsyncFaceSwapProcessor): batches → engine → bounded buffer of swapped frames.
- publisher: an absolute clock at the output fps; each tick picks the frame to show and hands
  it to every sink's worker, never waiting for the engine or a sink.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.audio.control import MicController
from faceswap_cam.daemon.capture.source import create_source
from faceswap_cam.daemon.capture.thread import WebcamCapture
from faceswap_cam.daemon.config import Fallback, Playout, Settings
from faceswap_cam.daemon.control import status as report
from faceswap_cam.daemon.engine_host.launch import EngineHostLink, plan_engine
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.outputs.base import (
    Sink,
    SinkContext,
    SinkError,
    SinkWorker,
    Tick,
    create_sink,
)
from faceswap_cam.daemon.pipeline.overlay import card, draw_stats, with_banner
from faceswap_cam.daemon.pipeline.processor import AsyncFaceSwapProcessor
from faceswap_cam.daemon.pipeline.selection import Choice, OutputSelector
from faceswap_cam.daemon.references import ReferenceLibrary
from faceswap_cam.daemon.single_instance import take_daemon_lock
from faceswap_cam.daemon.states import CaptureState, Showing
from faceswap_cam.daemon.stats import RateMeter, Samples, rounded
from faceswap_cam.models import batching, defaults
from faceswap_cam.models.engine import GenerationWindow, SwapEngine, create_engine
from faceswap_cam.models.plan.engines import ENGINE_MODELS, load_presets
from faceswap_cam.models.plan.predict import predict_settings
from faceswap_cam.models.presets import apply_preset, default_preset
from faceswap_cam.models.reference import ReferenceError, decode_reference

logger = logging.getLogger(__name__)

#: How long the publisher waits for the first camera frame before showing a card instead.
FIRST_FRAME_WAIT_S = 5.0
#: The capture ring: a second of camera frames for the feeder to pick the engine's batches from.
RING_FRAMES = 30
#: Where ticks sit after camera frames, as a fraction of a period: margin for capture jitter.
PHASE_TARGET = 0.25


def _open_library() -> ReferenceLibrary:
    """The user's reference library; one that cannot be opened is reported, never fatal."""
    folder = paths.references_dir()
    try:
        return ReferenceLibrary(folder, person_check=detector_person_check())
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="faceswap-cam-references-"))
        logger.warning("reference library %s cannot be opened (%s); using %s for this run",
                       folder, exc, fallback)
        return ReferenceLibrary(fallback)


def person_check_unavailable() -> str:
    """Why new references cannot be checked for exactly one person ("" when they can)."""
    import importlib.util

    from faceswap_cam.models import weights

    if importlib.util.find_spec("torch") is None:
        return ("the model stack is not installed (pip install 'faceswap-cam[models]'), so "
                "there is no person detector")
    if not weights.is_present("detector"):
        return ("the person detector's weights are not downloaded "
                "(faceswap-cam models download --only detector)")
    return ""


def detector_person_check() -> Callable[[np.ndarray], str | None] | None:
    """"Exactly one person" for new references, with the engine's detector when the model
    stack and its weights are here (loaded on the first add, on the CPU); else no check."""
    from faceswap_cam.models import weights

    if person_check_unavailable():
        return None
    lock = threading.Lock()
    detector: Any = None

    def check(image_bgr: np.ndarray) -> str | None:
        nonlocal detector
        import cv2

        with lock:
            if detector is None:
                from faceswap_cam.models.preprocessing.person import PersonDetector

                detector = PersonDetector(str(weights.model_dir("detector")), device="cpu")
            people = detector.count_people(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        if people == 1:
            return None
        if people == 0:
            return "no person found in the image: use a photo that shows the character"
        return f"{people} people found: use a photo with exactly one person"

    return check


def _parse(kind: type[Playout] | type[Fallback], value: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"{value!r} is not one of: {allowed}") from None


class StartError(RuntimeError):
    """The daemon cannot start; nothing was left running. The message says why and the fix."""


def read_reference(path: Path) -> np.ndarray:
    """The reference image as BGR pixels, or a StartError that says what is wrong with it."""
    try:
        return decode_reference(path)
    except ReferenceError as exc:
        raise StartError(str(exc)) from exc


#: Settings each engine factory receives (an engine ignores what it does not use).
ENGINE_SETTINGS = ("wan_model", "wan2_model", "wan2_variant", "mode", "steps", "segment_frames",
                   "carry", "seed", "prompt",
                   "device", "dtype", "vae_fp32", "offload", "vae_tiling", "attention_backend",
                   "compile", "loras", "shift", "gen_size", "reference", "detector_model",
                   "pose_model", "sam2_model", "preprocessor", "colour_match", "feather_px",
                   "gen_window", "person_mask", "quantize", "preset")


def engine_options(settings: Settings) -> dict[str, Any]:
    options = settings.model_dump(mode="json", include=set(ENGINE_SETTINGS))
    options["delay_ms"] = settings.engine_delay_ms
    # The engine applies its own preset (`auto` decides the engine only later) and must know
    # which settings the user gave, which the preset does not override.
    options["explicit"] = [name for name in settings.explicit() if name in ENGINE_SETTINGS]
    return options


def _mic_report(mic: dict[str, Any] | None) -> report.MicStatus | None:
    if mic is None:
        return None
    return report.MicStatus(
        state=mic["state"], device=mic["device"], input=mic["input"],
        delay_ms=mic["delay_ms"], target_ms=mic["target_ms"], av_offset_ms=mic["av_offset_ms"],
        detail=mic["detail"] or "", fix=mic["fix"] or "")


def _generation_report(window: GenerationWindow | None) -> report.GenerationStatus | None:
    if window is None:
        return None
    x, y, width, height, gen_width, gen_height = window
    return report.GenerationStatus(window=(x, y, width, height), size=(gen_width, gen_height))


def running_preset(settings: Settings, engine: str) -> str | None:
    """The preset ``engine`` runs: the one asked for, else the engine's own (wan-animate-2's
    checkpoint runs balanced); None: the plain settings."""
    load_presets(engine)
    return settings.preset.value if settings.preset else default_preset(engine)


def planned_cadence(settings: Settings, engine: str) -> int:
    """The engine's starting cadence: the one the user gave, else a local model engine's
    preset's, else the capacity plan's for it on this machine's GPU; 1 when there is no plan
    (stand-in engines, an unknown GPU, an engine host elsewhere)."""
    if settings.cadence is not None:
        return settings.cadence
    if engine not in ENGINE_MODELS or settings.engine_url:
        return 1
    # What the engine will run: its preset's values wherever the user gave none.
    load_presets(engine)
    options = apply_preset(engine_options(settings), engine)
    if options.get("cadence"):
        return int(options["cadence"])
    size = settings.gen_size or batching.generation_size(
        settings.size, int(options.get("gen_short_side") or defaults.GEN_SHORT_SIDE))
    timing = predict_settings(
        engine, steps=int(options["steps"]), segment_frames=int(options["segment_frames"]),
        carry=int(options["carry"]), size=size,
        preset=running_preset(settings, engine),
        quantize=str(options.get("quantize") or settings.quantize.value),
        gpus=settings.engine_gpus, camera_fps=settings.fps,
        person_mask=options.get("person_mask"), mode=str(options.get("mode") or defaults.MODE),
        preprocessor=str(options.get("preprocessor") or defaults.PREPROCESSOR))
    if timing is None:
        return 1
    logger.info("capacity plan: %.2f s per batch, starting at cadence %d (%.1f swapped fps)",
                timing.batch_s, timing.cadence, timing.fps)
    return timing.cadence


class RealtimeFaceSwapApp:
    def __init__(
        self,
        settings: Settings,
        *,
        engine_factory: Callable[[], SwapEngine] | None = None,
        sinks: list[Sink] | None = None,
        references: ReferenceLibrary | None = None,
        start_cadence: int | None = None,
    ) -> None:
        """Build everything from ``settings``; ``engine_factory`` and ``sinks`` let callers
        (tests, benchmarks) supply their own instead of the registry's, and ``start_cadence``
        the cadence the processor starts at instead of the capacity plan's (which has none
        for their engines)."""
        self.settings = settings
        self._stop = threading.Event()
        self._control = threading.Condition()
        self._stack = contextlib.ExitStack()
        self._started = False
        self._closed = False
        self._lock = threading.Lock()
        # One daemon per user: taken before any device or port is opened, held until close().
        self._instance = take_daemon_lock()
        try:
            self._build(settings, engine_factory, sinks, references, start_cadence)
        except BaseException:
            self._release_instance()
            raise

    def _build(self, settings: Settings, engine_factory: Callable[[], SwapEngine] | None,
               sinks: list[Sink] | None, references: ReferenceLibrary | None,
               start_cadence: int | None) -> None:
        try:
            self.source = create_source(settings.source, size=settings.size, fps=settings.fps)
        except Exception as exc:
            raise StartError(str(exc)) from exc
        #: The engine's own process (a local child or a remote host); None: inside the daemon.
        self.engine_host: EngineHostLink | None = None
        if engine_factory is None:
            options = engine_options(settings)
            try:
                self.engine_name, self.engine_host = plan_engine(settings, options)
            except Exception as exc:
                raise StartError(str(exc)) from exc
            name = self.engine_name

            def engine_factory() -> SwapEngine:
                return create_engine(name, **options)

            if self.engine_host is not None:
                # Just another SwapEngine to the processor, whose restarts supervise the host.
                engine_factory = self.engine_host.connect
        else:
            self.engine_name = settings.engine
        # The passthrough engine shows only the newest frame (nothing is fed to an engine), so
        # two frames of ring are enough; a full second of 720p frames would only cycle ~80 MB
        # through the caches for nothing.
        self.capture = WebcamCapture(
            self.source, ring_size=2 if self.engine_name == "passthrough" else RING_FRAMES)
        self.processor = AsyncFaceSwapProcessor(
            engine_factory, fps=settings.fps, engine_name=self.engine_name,
            timeout_s=settings.engine_timeout_s,
            start_cadence=start_cadence if start_cadence is not None
            else planned_cadence(settings, self.engine_name))
        self.preset_name = running_preset(settings, self.engine_name)  # for ``status``
        self.references = references if references is not None else _open_library()
        self.reference_name: str | None = None
        if settings.reference is not None:
            # A reference on the command line wins over the library's selection for this run.
            self.processor.set_reference(read_reference(settings.reference))
            self.reference_name = settings.reference.name
        else:
            self._use_selected_reference()
        self.selector = OutputSelector(fallback=settings.fallback, playout=settings.playout,
                                       fps=settings.fps, grace_s=settings.stale_after_ms / 1000)
        self._sink_context = SinkContext(options=settings.model_dump(mode="json"),
                                         stats=lambda: self.live_stats().model_dump(mode="json"))
        self._explicit_sinks = sinks
        self.control_server: Any = None
        self.sinks: list[Sink] = []
        self.workers: list[SinkWorker] = []
        self.swap_enabled = settings.swap
        self.paused = False
        self.ai_badge = settings.ai_badge
        self.mic = MicController(settings.mic, settings.mic_max_delay_s)
        # The passthrough engine would hand every frame through two more threads to return it
        # unchanged: skip the hop and show the camera directly (same pixels, less latency/CPU).
        self._identity_engine = self.engine_name == "passthrough"

        # Publisher measurements (owned by the publisher thread; read by stats()).
        self.publish_rate = RateMeter(window=60)
        self.latency_ms = Samples()
        self.jitter_ms = Samples()
        self.ticks = 0
        self.ticks_missed = 0
        self.tick_errors = 0
        self._banner: tuple[np.ndarray | None, np.ndarray] = (None, np.empty(0, np.uint8))
        self.shown = dict.fromkeys((s.value for s in Showing), 0)
        self._last_showing = "-"
        self._last_latency: float | None = None
        self._started_ns = 0
        self._duration_ticks: int | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the source and sinks, start the threads. On failure everything already
        started is closed again and :class:`StartError` says why."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        try:
            self._start()
        except BaseException as exc:
            self._stack.close()
            if isinstance(exc, StartError):
                raise
            if isinstance(exc, Exception):
                raise StartError(str(exc)) from exc
            raise

    def _start(self) -> None:
        stack = self._stack
        logger.info("source %s at %s@%g", self.source.description, self.settings.size_text,
                    self.settings.fps)
        self.capture.open()
        stack.callback(self.capture.close)
        for sink, optional in self._build_sinks():
            try:
                sink.open(self.settings.size, self.settings.fps)
            except SinkError as exc:
                if not optional:
                    raise
                logger.warning("%s\nGoing on without it.", exc)
                continue
            worker = SinkWorker(sink, self._draw_overlay)
            stack.callback(worker.close)
            self.sinks.append(sink)
            self.workers.append(worker)
            worker.start()
            logger.info("output %s", sink.description)
        if not self.workers:
            raise StartError("no output could be opened")
        if self.engine_host is not None:
            stack.callback(self.engine_host.close)  # after the processor's: a host starting
        self.processor.start()
        stack.callback(self.processor.close)
        if self.settings.control_api:
            from faceswap_cam.daemon.control.control_file import default_token_file
            from faceswap_cam.daemon.control.server import ControlServer

            self.control_server = ControlServer(self, port=self.settings.control_port,
                                                token_file=default_token_file())
            self.control_server.start()
            stack.callback(self.control_server.close)
            logger.info("control API at %s", self.control_server.url)
        self.mic.start()
        stack.callback(self.mic.close)
        self.capture.start()
        feeder = threading.Thread(target=self._feed, name="feeder", daemon=True)
        feeder.start()
        stack.callback(self._join, feeder)
        publisher = threading.Thread(target=self._publish, name="publisher", daemon=True)
        publisher.start()
        stack.callback(self._join, publisher)
        stack.callback(self.stop)  # first thing on close: stop the clocks
        self._started_ns = time.monotonic_ns()

    def _build_sinks(self) -> list[tuple[Sink, bool]]:
        """The sinks to open, each with whether the run may go on without it."""
        if self._explicit_sinks is not None:
            return [(sink, False) for sink in self._explicit_sinks]
        if self.settings.sinks == ["auto"]:
            # Defaults must work on a machine with no virtual-camera driver: the preview
            # page is always there, the virtual camera when its device exists.
            return [(create_sink("virtualcam", self._sink_context), True),
                    (create_sink("preview", self._sink_context), False)]
        return [(create_sink(spec, self._sink_context), False) for spec in self.settings.sinks]

    @staticmethod
    def _join(thread: threading.Thread) -> None:
        thread.join(timeout=5.0)
        if thread.is_alive():
            logger.warning("thread %s did not stop within 5 s", thread.name)

    def stop(self) -> None:
        """Ask every thread to stop; ``close()`` does the orderly teardown."""
        self._stop.set()
        with self._control:
            self._control.notify_all()

    def close(self) -> None:
        """Stop publishing, flush and close the outputs, stop the threads, release the camera
        (the reverse of start). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop()
        try:
            self._stack.close()
        finally:
            self._release_instance()

    def _release_instance(self) -> None:
        if self._instance is not None:
            self._instance.release()

    def __enter__(self) -> RealtimeFaceSwapApp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, duration: float | None = None) -> dict[str, Any]:
        """Start, publish until ``duration`` seconds of output (or ``stop()``), close, and
        return the run statistics."""
        self._duration_ticks = None if duration is None else round(duration * self.settings.fps)
        with self:
            self._stop.wait()
        return self.stats()

    # --- feeder --------------------------------------------------------------------------

    # --- control (the control API and tray call these from their own threads) -----------

    def set_swap(self, enabled: bool) -> None:
        """Switch swapping on or off while running; applies at the next tick."""
        with self._control:
            self.swap_enabled = enabled
            self._control.notify_all()

    def set_paused(self, paused: bool) -> None:
        """Privacy: publish a still card instead of the camera until resumed."""
        with self._control:
            self.paused = paused
            self._control.notify_all()
        logger.info("output %s", "paused" if paused else "resumed")

    def set_mic(self, enabled: bool) -> None:
        """FaceSwap Mic on or off while running; the sound system's state shows in status."""
        self.mic.set_enabled(enabled)

    def set_ai_badge(self, enabled: bool) -> None:
        """Mark the virtual camera's swapped frames as AI-altered (a corner badge) or not."""
        from faceswap_cam.daemon.outputs.virtualcam import VirtualCameraSink

        self.ai_badge = enabled
        for sink in self.sinks:
            if isinstance(sink, VirtualCameraSink):
                sink.ai_badge = enabled
        logger.info("AI badge on the virtual camera %s", "on" if enabled else "off")

    def set_playout(self, mode: str) -> None:
        self.selector.playout = _parse(Playout, mode)

    def set_fallback(self, mode: str) -> None:
        self.selector.fallback = _parse(Fallback, mode)

    def shutdown(self) -> None:
        self.stop()

    def status(self) -> report.DaemonStatus:
        """Everything a user looks at: the tray's status line and `faceswap-cam status`."""
        preview = next((getattr(s, "url", None) for s in self.sinks
                        if getattr(s, "url", None)), None)
        live = self.live_stats()
        engine_failed = live.engine_state in (report.EngineState.FAILED, report.EngineState.HUNG)
        camera_lost = live.capture_state is report.CaptureState.LOST
        if self._closed or self._stop.is_set():
            state = report.DaemonState.STOPPING
        elif engine_failed:
            state = report.DaemonState.ERROR
        elif not self._started_ns:
            state = report.DaemonState.STARTING
        else:
            state = report.DaemonState.PAUSED if self.paused else report.DaemonState.RUNNING
        return report.DaemonStatus(
            **live.model_dump(),
            state=state,
            paused=self.paused,
            reference=self.reference_name,
            reference_error=self.processor.reference_error,
            camera_error=self.capture.last_error if camera_lost else "",
            camera_fix="check the camera is plugged in and not used by another app; "
                       "the daemon reconnects by itself" if camera_lost else "",
            engine_fix="see the error above; the camera shows the fallback while the engine "
                       "restarts (faceswap-cam doctor checks the set-up)" if engine_failed else "",
            devices=report.Devices(source=self.source.description,
                                   outputs=[s.description for s in self.sinks]),
            output_errors=[report.OutputError(output=w.sink.description, error=w.error, fix=w.fix)
                           for w in self.workers if w.error],
            preview_url=preview,
            api_url=None if self.control_server is None else self.control_server.url,
            engine_host=None if self.engine_host is None else self.engine_host.report(),
            ai_badge=self.ai_badge,
            preset=self.preset_name,
            generation=_generation_report(self.processor.generation_window)
            if self._swapping else None,
            mic=_mic_report(self.mic.status()),
        )

    def _use_selected_reference(self) -> None:
        try:
            name = self.references.selected()
        except OSError as exc:
            logger.warning("reference library unreadable (%s): starting without a reference",
                           exc)
            return
        if name is None:
            return
        try:
            image = self.references.get(name)
        except (KeyError, OSError) as exc:
            logger.warning("selected reference %s cannot be read: %s", name, exc)
            return
        self.processor.set_reference(image)
        self.reference_name = name

    def list_references(self) -> list[dict[str, Any]]:
        return [{"name": info.name, "selected": info.name == self.reference_name,
                 "width": info.width, "height": info.height,
                 "added": info.added.isoformat()} for info in self.references.list()]

    def add_reference(self, name: str | None, data: bytes) -> dict[str, Any]:
        info = self.references.add(data, name)
        skipped = ""
        if self.references.person_check is None:
            # Accepted unchecked: say so, or the user believes it was checked.
            skipped = person_check_unavailable() or "this library has no person detector"
        return {"name": info.name, "width": info.width, "height": info.height,
                "added": info.added.isoformat(), "selected": False,
                "person_check_skipped": skipped}

    def select_reference(self, name: str) -> None:
        """Use a library reference from the next batch on, and remember it across restarts."""
        image = self.references.get(name)  # KeyError for an unknown name
        self.references.select(name)
        self.processor.set_reference(image)
        self.reference_name = name

    def remove_reference(self, name: str) -> None:
        self.references.remove(name)
        if name == self.reference_name:
            # The engine keeps the image it has until another is chosen: the camera must not
            # suddenly show the real face because a file was deleted.
            logger.info("removed the reference in use; it stays active until another is chosen")

    def _feed(self) -> None:
        last = -1
        ring = self.capture.ring
        while not self._stop.is_set():
            if not self._swapping:
                # Nothing to feed: sleep until swapping starts instead of waking per frame.
                with self._control:
                    self._control.wait_for(lambda: self._swapping or self._stop.is_set())
                latest = ring.latest()
                last = latest.index if latest is not None else last
                continue
            for frame in ring.wait_newer(last, timeout=0.5):
                last = frame.index
                if self._swapping and self.processor.wants(frame.index):
                    self.processor.submit(frame)

    @property
    def _swapping(self) -> bool:
        return self.swap_enabled and not self._identity_engine and not self.paused

    # --- publisher -----------------------------------------------------------------------

    def _publish(self) -> None:
        fps = self.settings.fps
        period_ns = int(1e9 / fps)
        # Start the clock on the first camera frame, so a recording starts with real frames;
        # a camera that never delivers gets the "waiting" card after a few seconds instead.
        # The first frame is often late (device warm-up), so the phase comes from the second.
        first: list[Frame] = []
        deadline = time.monotonic() + FIRST_FRAME_WAIT_S
        while not first and not self._stop.is_set() and time.monotonic() < deadline:
            first = self.capture.ring.wait_newer(-1, timeout=0.1)  # short: stop stays prompt
        if first:
            self.capture.ring.wait_newer(first[-1].index, timeout=2 * period_ns / 1e9)
        start_ns = time.monotonic_ns() + int(PHASE_TARGET * period_ns)
        ages: deque[int] = deque(maxlen=max(2, round(fps)))
        n = 0
        while not self._stop.is_set():
            target = start_ns + n * period_ns
            delay = (target - time.monotonic_ns()) / 1e9
            if delay > 0 and self._stop.wait(delay):
                break
            now = time.monotonic_ns()
            repeat = 1
            if now - target >= period_ns:
                # Late by whole ticks: skip them (never burst) and say so.
                missed = (now - target) // period_ns
                self.ticks_missed += missed
                repeat += missed
                n += missed
                target += missed * period_ns
            self.jitter_ms.add(abs(now - target) / 1e6)
            try:
                live = self._tick(n, now, repeat)
                start_ns += self._phase_correction(ages, live, now, period_ns)
            except Exception:
                # A bug in one tick must not freeze the camera: log it (rarely) and go on.
                self.tick_errors += 1
                if self.tick_errors in (1, 10) or self.tick_errors % 1000 == 0:
                    logger.exception("publishing tick %d failed (%d so far)", n, self.tick_errors)
            n += 1
            if self._duration_ticks is not None and n >= self._duration_ticks:
                self.stop()

    def _phase_correction(self, ages: deque[int], live: Frame | None, now_ns: int,
                          period_ns: int) -> int:
        """Nudge the clock so ticks fall just after camera frames arrive.

        A camera runs on its own crystal, so a fixed clock slowly slides against it and the
        frame shown ages anywhere from 0 to a whole period. Tracking the youngest recent age
        towards PHASE_TARGET of a period keeps the added latency small. Steps are tiny (a few
        µs per tick), so jitter stays far below the 2 ms budget and the mean rate is the
        camera's; with no live camera the clock runs free.
        """
        if live is None or self.capture.state is not CaptureState.LIVE:
            ages.clear()
            return 0
        ages.append(now_ns - live.captured_ns)
        if len(ages) < (ages.maxlen or 0):
            return 0
        error = min(ages) - int(PHASE_TARGET * period_ns)
        if abs(error) > 2 * period_ns:  # a stalled or much slower camera: nothing to lock to
            return 0
        limit = period_ns // 100
        return -max(-limit, min(limit, error // 8))

    def _tick(self, number: int, now_ns: int, repeat: int) -> Frame | None:
        live = self.capture.ring.latest()
        swapping = self._swapping
        # Not swapping (passthrough engine, swap off, paused): the processor has nothing to
        # show, so skip copying its buffer under its lock on every tick.
        choice = self.selector.choose(
            now_ns, live, self.processor.swapped_frames() if swapping else (),
            batch_period_s=self.processor.expected_batch_period_s if swapping else 0.0,
            swap_enabled=swapping)
        pixels = self._pixels_for(choice.showing, choice.frame)
        if self.paused:
            choice = Choice(Showing.PAUSED, None)
            pixels = card(self.settings.size, "Paused", "the camera is hidden")
        elif self.capture.state is CaptureState.LOST:
            # The same frame for as long as the camera is away: draw its banner once.
            if self._banner[0] is not pixels:
                self._banner = (pixels, with_banner(pixels, "camera lost - reconnecting"))
            pixels = self._banner[1]
        age_ns = None if choice.frame is None else now_ns - choice.frame.captured_ns
        self.mic.observe(now_ns, age_ns, choice.showing is Showing.SWAPPED)
        latency = None if age_ns is None else age_ns / 1e6
        if latency is not None:
            self.latency_ms.add(latency)
        self._last_latency = latency
        self._last_showing = choice.showing.value
        self.shown[choice.showing.value] += repeat
        self.ticks += repeat
        self.publish_rate.tick(now_ns)
        tick = Tick(number=number, kind=choice.showing.value, published_ns=now_ns,
                    latency_ms=latency, repeat=repeat)
        for worker in self.workers:
            worker.offer(pixels, tick)
        return live

    def _pixels_for(self, showing: Showing, frame: Frame | None) -> np.ndarray:
        if frame is not None:
            return frame.pixels
        if self.capture.frames_captured == 0:
            return card(self.settings.size, "FaceSwap Cam", "waiting for the camera...")
        title = "Face swap starting..." if self.swap_enabled else "FaceSwap Cam"
        return card(self.settings.size, title, "the camera image is hidden until it is ready")

    def _draw_overlay(self, pixels: np.ndarray, tick: Tick) -> np.ndarray:
        return draw_stats(pixels, self.live_stats().model_dump(mode="json"))

    # --- statistics ----------------------------------------------------------------------

    def live_stats(self) -> report.LiveStats:
        """The small, cheap snapshot that the preview and overlay show many times a second."""
        return report.LiveStats(
            capture_fps=round(self.capture.rate.rate(), 2),
            capture_state=self.capture.state.value,
            process_fps=round(self.processor.rate.rate(), 2),
            publish_fps=round(self.publish_rate.rate(), 2),
            latency_ms=rounded(self._last_latency, 1),
            # "-" until the first tick.
            showing=None if self._last_showing == "-" else self._last_showing,
            engine=self.engine_name,
            engine_state=self.processor.state.value,
            engine_error=self.processor.last_error,
            cadence=self.processor.cadence,
            playout=self.selector.playout,
            playout_delay_ms=round(self.selector.playout_delay_ms, 1),
            fallback=self.selector.fallback,
            swap=self.swap_enabled,
            frames_published=self.ticks,
        )

    def stats(self) -> dict[str, Any]:
        """The run statistics printed as one JSON line when the daemon exits."""
        processor = self.processor.stats()
        sink_drops = sum(worker.dropped for worker in self.workers)
        return {
            "frames_captured": self.capture.frames_captured,
            "frames_published": self.ticks,
            "frames_swapped": self.shown[Showing.SWAPPED.value],
            "frames_passthrough": self.shown[Showing.PASSTHROUGH.value],
            "frames_held": self.shown[Showing.HELD.value],
            "frames_placeholder": self.shown[Showing.PLACEHOLDER.value],
            "frames_paused": self.shown[Showing.PAUSED.value],
            "frames_dropped": processor["dropped_input"] + processor["skipped"] + sink_drops,
            "dropped_input_queue": processor["dropped_input"],
            "skipped_by_processor": processor["skipped"],
            "dropped_by_sinks": sink_drops,
            "latency_p50_ms": rounded(self.latency_ms.percentile(50)),
            "latency_p99_ms": rounded(self.latency_ms.percentile(99)),
            "jitter_p50_ms": rounded(self.jitter_ms.percentile(50), 3),
            "jitter_p99_ms": rounded(self.jitter_ms.percentile(99), 3),
            "ticks_missed": self.ticks_missed,
            "tick_errors": self.tick_errors,
            "capture_fps": round(self.capture.rate.rate(), 2),
            "capture_requested_fps": self.capture.requested_fps,
            "capture_missed": self.capture.frames_missed,
            "camera_reconnects": self.capture.reconnects,
            "camera_losses": self.capture.read_errors,
            "camera_freezes": self.capture.freezes,
            "camera_state": self.capture.state.value,
            "engine": self.engine_name,
            "engine_state": processor["engine_state"],
            "engine_error": processor["engine_error"],
            "engine_failures": processor["engine_failures"],
            "engine_timeouts": processor["engine_timeouts"],
            "engine_restarts": processor["engine_restarts"],
            "engine_resets": processor["engine_resets"],
            "engine_host_restarts": None if self.engine_host is None
            else self.engine_host.report().restarts,
            "engine_batches": processor["batches"],
            "engine_frames": processor["frames_swapped"],
            "cadence": processor["cadence"],
            "max_input_depth": processor["max_input_depth"],
            "playout": self.selector.playout.value,
            "playout_delay_ms": round(self.selector.playout_delay_ms, 1),
            "fallback": self.selector.fallback.value,
            "sinks": {worker.sink.description: {"sent": worker.sent, "dropped": worker.dropped,
                                                "error": worker.error, "fix": worker.fix}
                      for worker in self.workers},
        }
