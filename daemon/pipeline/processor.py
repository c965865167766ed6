"""Layer 3: the processing thread that batches frames for the engine and survives its failures."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.pipeline.cadence import CadenceController
from faceswap_cam.daemon.states import EngineState
from faceswap_cam.daemon.stats import RateMeter
from faceswap_cam.models import batching
from faceswap_cam.models.batching import CADENCE_MARGIN, MAX_CADENCE
from faceswap_cam.models.engine import (
    EngineError,
    EngineLost,
    GenerationWindow,
    SwapEngine,
    SwapResult,
    generation_window,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class EngineTimeout(RuntimeError):
    pass


class _Stopped(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SwappedFrame:
    """An engine output stamped with its source frame's index and capture time."""

    frame: Frame
    arrived_ns: int
    cadence: int  # k: the engine saw every k-th camera frame when this was made
    #: From the first call after the engine loaded, slowed by the device's warm-up: how late
    #: it came says nothing of the engine's pace (smooth playout's delay leaves it out).
    warm_up: bool = False
    #: Not a swapped frame but a mark: from this camera frame on the engine swapped nothing
    #: (nobody in view), so the fallback may take over from here without waiting for the
    #: grace a late batch gets. ``frame`` is the camera's own.
    untouched: bool = False


class _EngineWorker:
    """A daemon thread that runs the engine's calls, so a hung call can be abandoned.

    Python cannot kill a thread: on a timeout the worker is left behind (it exits when the
    call returns) and a new engine gets a new worker. A daemon thread never blocks exit.
    """

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._job: Callable[[], Any] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = True
        self._retired = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._retired:
                    self._cond.wait()
                if self._job is None:
                    return
                job = self._job
            result: Any = None
            error: BaseException | None = None
            try:
                result = job()
            except BaseException as exc:  # handed to the caller, who decides
                error = exc
            with self._cond:
                self._job = None
                self._result, self._error, self._done = result, error, True
                self._cond.notify_all()

    def call(self, job: Callable[[], T], timeout: float | None, stop: threading.Event) -> T:
        with self._cond:
            if not self._done:
                raise RuntimeError("engine worker is busy")
            self._job, self._done, self._error = job, False, None
            self._cond.notify_all()
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._done:
                if stop.is_set():
                    raise _Stopped
                remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if remaining <= 0:
                    raise EngineTimeout(f"engine call exceeded {timeout:.1f} s")
                self._cond.wait(remaining)
            if self._error is not None:
                raise self._error
            result: T = self._result
            return result

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._done

    def wait_idle(self, timeout: float) -> bool:
        """Wait for a call in progress to return; False if it is still running."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done, timeout)

    def retire(self) -> None:
        with self._cond:
            self._retired = True
            self._cond.notify_all()


class AsyncFaceSwapProcessor:
    """Owns the input queue, the engine and its thread, and the buffer of swapped frames.

    Queues and their drop policies:
    - input (``input_capacity``, default 60): the feeder appends every k-th camera frame; when
      full the oldest is dropped (``dropped_input``).
    - output (``output_capacity``, default 60): swapped frames for the publisher, and a mark
      (``SwappedFrame.untouched``) where a batch found nobody; when full the oldest goes (it
      is stale by then).
    Batches (the rule in :mod:`faceswap_cam.models.batching`): ``first_batch`` contiguous
    frames after any gap, then ``next_batch`` frames that continue the last one. When more
    than a batch is waiting the engine has fallen behind: the older frames are skipped whole
    (``skipped``) and the engine is reset, so latency never builds up. The cadence k is chosen
    from the engine's measured speed (:class:`.cadence.CadenceController`).
    The processor alone owns segment continuity: a gap, a backlog, a cadence or reference
    change, or a batch the engine swapped nothing in ends the chain, and the engine is reset
    on its own thread before the next batch.
    """

    def __init__(
        self,
        engine_factory: Callable[[], SwapEngine],
        *,
        fps: float,
        engine_name: str = "engine",
        timeout_s: float = 60.0,
        load_timeout_s: float | None = None,
        input_capacity: int = 60,
        output_capacity: int = 60,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        cadence_margin: float = CADENCE_MARGIN,
        max_cadence: int = MAX_CADENCE,
        start_cadence: int = 1,
    ) -> None:
        self._engine_factory = engine_factory
        self.engine_name = engine_name
        self.fps = fps
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s

        self._input: deque[Frame] = deque(maxlen=input_capacity)
        self._input_cond = threading.Condition()
        self._output: deque[SwappedFrame] = deque(maxlen=output_capacity)
        self._output_lock = threading.Condition()

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: SwapEngine | None = None
        #: The engine's optional ``stage(pixels)`` (an engine host's proxy has one).
        self._stage: Callable[[np.ndarray], None] | None = None
        self._worker: _EngineWorker | None = None
        self._state_lock = threading.Lock()
        self._state = EngineState.LOADING
        self.last_error = ""
        # The capacity plan's guess for a model engine, so the first batches are not all
        # skipped while the measured speed catches up; measurements take over from there.
        self._cadence = CadenceController(fps, start=start_cadence, margin=cadence_margin,
                                          max_cadence=max_cadence)
        self._continue_from: int | None = None  # index of the last frame of the last batch
        self._needs_reset = False
        self._abandoned: _EngineWorker | None = None
        self._reference: np.ndarray | None = None
        self._accepted_reference: np.ndarray | None = None
        self.reference_error = ""
        self._reference_dirty = False
        self._closed = False

        self.rate = RateMeter(window=60)
        self.dropped_input = 0
        self.skipped = 0
        self.batches = 0
        self.frames_swapped = 0
        self.frames_untouched = 0  # the engine swapped nothing (nobody in view)
        #: Where the engine generated its last swapped batch, where it says (status).
        self.generation_window: GenerationWindow | None = None
        self.engine_failures = 0
        self.engine_timeouts = 0
        self.engine_restarts = 0
        self.resets = 0
        self.max_input_depth = 0

    # --- feeder side ---------------------------------------------------------------------

    @property
    def cadence(self) -> int:
        return self._cadence.cadence

    def wants(self, frame_index: int) -> bool:
        """Whether the feeder should hand this camera frame to the engine (every k-th)."""
        return frame_index % self._cadence.cadence == 0

    def submit(self, frame: Frame) -> None:
        # An engine in another process takes each frame as it comes, so that a batch is
        # already there when it is complete (the caller's thread pays: the feeder's). Before
        # the frame is queued: a batch taken while its last frame was still being staged
        # would go without it, and a remote host's batch then goes whole, re-encoded.
        stage = self._stage
        if stage is not None:
            try:
                stage(frame.pixels)
            except Exception:  # the frame goes with its batch instead; the camera goes on
                logger.debug("staging a frame failed", exc_info=True)
        with self._input_cond:
            if len(self._input) == self._input.maxlen:
                self.dropped_input += 1
            self._input.append(frame)
            self.max_input_depth = max(self.max_input_depth, len(self._input))
            self._input_cond.notify_all()

    def input_depth(self) -> int:
        with self._input_cond:
            return len(self._input)

    # --- publisher side ------------------------------------------------------------------

    def swapped_frames(self) -> list[SwappedFrame]:
        """The output, oldest first: swapped frames, and the marks of batches that found
        nobody (``untouched``)."""
        with self._output_lock:
            return list(self._output)

    def wait_swapped(self, total: int, timeout: float, *, untouched_too: bool = False) -> bool:
        """Wait until ``total`` frames have been swapped since start (counting frames the
        engine returned untouched too, if asked); False on timeout."""
        def done() -> bool:
            count = self.frames_swapped + (self.frames_untouched if untouched_too else 0)
            return count >= total

        with self._output_lock:
            return self._output_lock.wait_for(done, timeout)

    def wait_batches(self, total: int, timeout: float) -> bool:
        """Wait until ``total`` batches have been handled since start, the cadence's
        measurement included; False on timeout."""
        with self._output_lock:
            return self._output_lock.wait_for(lambda: self.batches >= total, timeout)

    def output_depth(self) -> int:
        with self._output_lock:
            return len(self._output)

    @property
    def state(self) -> EngineState:
        with self._state_lock:
            return self._state

    def _set_state(self, state: EngineState, error: str = "") -> None:
        with self._state_lock:
            self._state = state
            if error:
                self.last_error = error

    def set_reference(self, image: np.ndarray) -> None:
        """Use a new reference from the next batch on (applied in the processing thread)."""
        with self._input_cond:
            self._reference = image
            self._reference_dirty = True

    @property
    def expected_batch_period_s(self) -> float:
        engine = self._engine
        frames = batching.new_frames(engine, continuing=True) if engine is not None else 1
        return frames * self._cadence.cadence / self.fps

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("processor already started")
        self._thread = threading.Thread(target=self._run, name="processor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the engine; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._input_cond:
            self._input_cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._finish_call_in_progress()
        self._drop_engine(graceful=True)
        self._set_state(EngineState.STOPPED)

    def __enter__(self) -> AsyncFaceSwapProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the processing thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_initial_s
        started_once = False
        while not self._stop.is_set():
            try:
                if self._engine is None:
                    if started_once:
                        self.engine_restarts += 1
                    started_once = True
                    self._load_engine()
                batch = self._take_batch()
                if batch is None:
                    break
                self._process(batch)
                backoff = self.backoff_initial_s
            except _Stopped:
                break
            except EngineTimeout as exc:
                self.engine_timeouts += 1
                self._fail(EngineState.HUNG, f"{self.engine_name} hung: {exc}", graceful=False)
            except EngineError as exc:  # it says what went wrong: no stack needed
                self.engine_failures += 1
                self._fail(EngineState.FAILED, f"{self.engine_name} failed: {exc}",
                           graceful=True, trace=False)
            except Exception as exc:
                self.engine_failures += 1
                self._fail(EngineState.FAILED, f"{self.engine_name} failed: {exc!r}",
                           graceful=True)
            else:
                continue
            logger.warning("restarting engine %s in %.1f s", self.engine_name, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max_s)

    def _finish_call_in_progress(self) -> None:
        """Let an engine call that is still running end before the engine is closed: closing
        (or exiting the process) under a running torch call can abort the whole process."""
        worker, engine = self._worker, self._engine
        if worker is None or worker.idle:
            return
        if engine is not None:
            engine.interrupt()
        if not worker.wait_idle(self.timeout_s):
            logger.warning("engine %s did not finish its call within %.0f s of stopping",
                           self.engine_name, self.timeout_s)

    def _fail(self, state: EngineState, message: str, *, graceful: bool,
              trace: bool = True) -> None:
        logger.error("%s; the camera keeps publishing meanwhile", message,
                     exc_info=graceful and trace)
        self._set_state(state, message)
        self._drop_engine(graceful=graceful)

    def _drop_engine(self, *, graceful: bool) -> None:
        engine, worker = self._engine, self._worker
        self._engine, self._worker = None, None
        self._stage = None
        self._continue_from = None
        if engine is None:
            return
        if graceful:
            try:
                engine.close()
            except Exception:
                logger.exception("closing engine %s failed", self.engine_name)
        else:
            # The worker may be stuck inside the engine: ask it to let go, and close from a
            # bystander thread so a close that blocks too cannot stall the processor. The
            # next load waits for that worker first (two copies of a model rarely fit).
            engine.interrupt()
            self._abandoned = worker
            threading.Thread(target=engine.close, name="engine-close", daemon=True).start()
        if worker is not None:
            worker.retire()

    def _load_engine(self) -> None:
        self._set_state(EngineState.LOADING)
        abandoned, self._abandoned = self._abandoned, None
        if abandoned is not None and not abandoned.wait_idle(self.timeout_s):
            logger.warning("the hung engine call has not returned; loading a new engine anyway")
        worker = _EngineWorker(f"engine-{self.engine_name}")
        self._worker = worker
        try:
            engine = worker.call(self._engine_factory, self.load_timeout_s, self._stop)
        except BaseException:
            worker.retire()
            self._worker = None
            raise
        self._engine = engine
        self._cadence.engine_loaded()
        self.generation_window = None  # the old engine's: says nothing of this one's calls
        self._stage = getattr(engine, "stage", None)
        self._continue_from = None
        self._needs_reset = False
        largest = max(batching.new_frames(engine, continuing=False),
                      batching.new_frames(engine, continuing=True))
        with self._input_cond:
            self._reference_dirty = self._reference is not None
            capacity = self._input.maxlen or 0
            if largest > capacity:
                # A batch must fit in the input, or none ever forms (a long segment, say
                # --segment-frames 161, takes 160 new frames a call).
                logger.info("engine %s takes batches of up to %d frames: the input holds "
                            "%d now (was %d)", self.engine_name, largest, largest, capacity)
                self._input = deque(self._input, maxlen=largest)
        self._set_state(EngineState.RUNNING)
        logger.info("engine %s ready (first batch %d, then %d)", self.engine_name,
                    batching.new_frames(engine, continuing=False),
                    batching.new_frames(engine, continuing=True))

    def _take_batch(self) -> list[Frame] | None:
        engine = self._engine
        assert engine is not None
        k = self._cadence.cadence
        with self._input_cond:
            while not self._stop.is_set():
                batch = self._select(list(self._input), engine, k)
                if batch:
                    last = batch[-1].index
                    while self._input and self._input[0].index <= last:
                        self._input.popleft()
                    return batch
                self._input_cond.wait()
        return None

    def _select(self, frames: Sequence[Frame], engine: SwapEngine, k: int) -> list[Frame]:
        """The batch to run now, or [] to wait. Drops (counts) frames that can never be used."""
        if not frames:
            return []
        if self._continue_from is not None:
            need = batching.new_frames(engine, continuing=True)
            expected = self._continue_from + k
            # Continue the segment only if the engine is keeping up: a full second batch
            # already waiting means latency would grow, so skip ahead instead.
            if frames[0].index == expected and len(frames) < 2 * need:
                run = self._contiguous_prefix(frames, k)
                if len(run) >= need:
                    return list(run[:need])
                if len(run) == len(frames):
                    return []  # still arriving
            self._reset_continuity("gap in the stream" if frames[0].index != expected
                                   else "engine fell behind")
        need = batching.new_frames(engine, continuing=False)
        run = self._contiguous_suffix(frames, k)
        if len(run) < need:
            stale = len(frames) - len(run)
            if stale:
                self.skipped += stale
                for _ in range(stale):
                    self._input.popleft()
            return []
        batch = list(run[-need:])
        self.skipped += len(frames) - need
        return batch

    @staticmethod
    def _contiguous_prefix(frames: Sequence[Frame], k: int) -> Sequence[Frame]:
        end = 1
        while end < len(frames) and frames[end].index - frames[end - 1].index == k:
            end += 1
        return frames[:end]

    @staticmethod
    def _contiguous_suffix(frames: Sequence[Frame], k: int) -> Sequence[Frame]:
        start = len(frames) - 1
        while start > 0 and frames[start].index - frames[start - 1].index == k:
            start -= 1
        return frames[start:]

    def _reset_continuity(self, why: str) -> None:
        if self._continue_from is None:
            return
        logger.debug("engine state reset: %s", why)
        self._continue_from = None
        self.resets += 1
        self._needs_reset = True  # done on the engine's own thread before the next batch

    def _process(self, batch: list[Frame]) -> None:
        engine, worker = self._engine, self._worker
        assert engine is not None and worker is not None
        with self._input_cond:
            reference = self._reference if self._reference_dirty else None
            self._reference_dirty = False
        if reference is not None:
            self._apply_reference(engine, worker, reference)
            if self._continue_from is None \
                    and len(batch) != batching.new_frames(engine, continuing=False):
                # The batch was picked to continue the old chain, which the new reference
                # ended: skip it (a new chain starts with the next frames) rather than hand
                # the engine a batch of the wrong length.
                self.skipped += len(batch)
                return
        if self._needs_reset:
            self._needs_reset = False
            worker.call(engine.reset, self.timeout_s, self._stop)
        started = time.monotonic()
        pixels = [frame.pixels for frame in batch]
        result = worker.call(lambda: engine.process(pixels), self.timeout_s, self._stop)
        elapsed = time.monotonic() - started
        self._check_result(batch, result)
        arrived_ns = time.monotonic_ns()
        self._continue_from = batch[-1].index
        # A call at a new generation size (the person moved to another window shape) made its
        # stream, maybe compiled new kernels: its time is not the engine's pace either.
        resized = False
        if result.swapped:
            window, last = generation_window(engine), self.generation_window
            resized = window is not None and last is not None \
                and (window.gen_width, window.gen_height) != (last.gen_width, last.gen_height)
            self.generation_window = window
        else:
            # Nothing to swap (nobody in view): the camera shows as passthrough meanwhile,
            # and the next batch starts a new segment chain from a reset engine.
            self.frames_untouched += len(batch)
            self._reset_continuity("engine swapped nothing")
        warm_up = self._cadence.warming_up
        with self._output_lock:
            if result.swapped:
                self._output.extend(
                    SwappedFrame(source.with_pixels(out), arrived_ns, self._cadence.cadence,
                                 warm_up)
                    for source, out in zip(batch, result.frames, strict=True))
                self.frames_swapped += len(batch)
            else:
                self._output.append(SwappedFrame(batch[0], arrived_ns, self._cadence.cadence,
                                                 untouched=True))
            self._output_lock.notify_all()
        for _ in batch:
            self.rate.tick(arrived_ns)
        # A call that found nobody stopped early and says nothing of the engine's speed. A
        # chain's first call takes more frames than a continuing one for about the same
        # work, so the time is per new frame of a continuing call, the steady rate.
        if result.swapped and not resized and self._cadence.observe(
                elapsed / batching.new_frames(engine, continuing=True)):
            self._reset_continuity("cadence changed")
        with self._output_lock:  # last: a batch counted is a batch wholly handled
            self.batches += 1
            self._output_lock.notify_all()

    def _apply_reference(self, engine: SwapEngine, worker: _EngineWorker,
                         reference: np.ndarray) -> None:
        """Hand a new reference to the engine; one it refuses is reported and the reference
        in use stays (a bad image must not stop the swap or restart the engine). An engine
        that hangs or goes away meanwhile has judged nothing: it is restarted, and the new
        reference is the one the next engine gets."""
        try:
            worker.call(lambda: engine.set_reference(reference), self.timeout_s, self._stop)
        except (EngineTimeout, _Stopped, EngineLost):
            raise  # the reference stays: _load_engine hands it to the next engine
        except Exception as exc:
            self.reference_error = str(exc)
            logger.error("reference refused, keeping the previous one: %s", exc)
            with self._input_cond:
                if self._reference is reference:
                    self._reference = self._accepted_reference
            return
        self._accepted_reference = reference
        self.reference_error = ""
        self._reset_continuity("reference changed")

    @staticmethod
    def _check_result(batch: Sequence[Frame], result: object) -> None:
        if not isinstance(result, SwapResult):
            raise RuntimeError(f"engine returned a {type(result).__name__}, not a SwapResult")
        outputs = result.frames
        if len(outputs) != len(batch):
            raise RuntimeError(f"engine returned {len(outputs)} frames for {len(batch)}")
        for source, out in zip(batch, outputs, strict=True):
            if not isinstance(out, np.ndarray) or out.dtype != np.uint8 \
                    or out.shape != source.pixels.shape:
                got = getattr(out, "shape", type(out).__name__)
                raise RuntimeError(f"engine returned {got} for a {source.pixels.shape} uint8 frame")

    def stats(self) -> dict[str, Any]:
        return {
            "engine": self.engine_name,
            "engine_state": self.state.value,
            "engine_error": self.last_error,
            "reference_error": self.reference_error,
            "cadence": self._cadence.cadence,
            "process_fps": round(self.rate.rate(), 2),
            "batches": self.batches,
            "frames_swapped": self.frames_swapped,
            "frames_untouched": self.frames_untouched,
            "dropped_input": self.dropped_input,
            "skipped": self.skipped,
            "engine_failures": self.engine_failures,
            "engine_timeouts": self.engine_timeouts,
            "engine_restarts": self.engine_restarts,
            "engine_resets": self.resets,
            "input_depth": self.input_depth(),
            "max_input_depth": self.max_input_depth,
            "output_depth": self.output_depth(),
        }
