"""How long ``gpu_engine.py --preset`` runs: predicted before it starts, and held to a budget.

A session's GPU is lent for 15 minutes in all and 10 a call, so a preset run has to fit its
slot: every preset in under 8 minutes. Before the first preset the script prints each run's
predicted seconds (:class:`PlannedRun`): the capacity plan's batch time at the efficiency it
holds for the GPU (assumed until a run measured it) times the batches a run makes (warm-ups
at one step, then the timed ones), plus what the plan does not model (quantizing, a fresh
model, compiling), from the ``ASSUMED_*`` allowances. While it runs, :class:`Budget` scales
those predictions by how the runs so far compared with theirs, skips a run that would not end
inside the budget (cheapest runs go first, so what is skipped is the costliest), and at the
budget itself the run stops as at the device call's SIGTERM (:func:`stopped_by_signals`):
the table and the JSON line of what was measured, exit 124.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from faceswap_cam.models.plan.gpus import Efficiency, Gpu
from faceswap_cam.models.plan.timing import predict_timing
from faceswap_cam.models.plan.work import Shape, Work
from faceswap_cam.models.presets import Preset

#: The issue's "under 8 minutes", less the imports before the clock starts and the table and
#: interpreter exit after it stops.
BUDGET_S = 450.0
#: Every preset run first generates this many batches at one step (the first segment and one
#: carrying frames), then ``--iters`` timed ones at its own steps.
WARMUP_BATCHES = 2
#: Allowances for what the plan does not predict, none of them measured on a GPU yet: building
#: the random 17B-parameter transformer and the VAE in bf16 on the GPU, converting its linear
#: layers to fp8, and compiling the repeated blocks for a new shape (wan-animate-2).
ASSUMED_BUILD_S = 60.0
ASSUMED_QUANTIZE_S = 15.0
ASSUMED_COMPILE_S = 45.0
#: The exit code of a run stopped part-way: ``timeout``'s own, so the device call reports a
#: time-out either way.
STOPPED_CODE = 124


@dataclass(frozen=True)
class PlannedRun:
    label: str
    seconds: float


def planned_runs(runs: Sequence[tuple[Preset, Shape, str]], quantize: Mapping[str, str], *,
                 work: Callable[[Shape], Work], gpu: Gpu, efficiency: Efficiency, iters: int,
                 rebuild_s: float, compile_s: float = 0.0,
                 counts_flops: bool = False) -> list[PlannedRun]:
    """Each run's predicted seconds, in the order given (the order they will run in).
    ``quantize``: each run's quantization by label; a quantized run after a different one
    costs a conversion, an unquantized run after a quantized one a fresh model
    (``rebuild_s``: the first build's time). ``compile_s``: compiling for each run's new
    shape. ``counts_flops``: the run counts one forward's FLOPs on the GPU first."""
    planned = []
    running = "none"
    for preset, shape, label in runs:
        wanted = quantize[label]
        extra = compile_s
        if running not in (wanted, "none"):
            extra += rebuild_s
            running = "none"
        if wanted != running:
            extra += ASSUMED_QUANTIZE_S
            running = wanted
        timing = partial(predict_timing, work(shape), segment=shape.segment,
                         carry=preset.carry, gpu=gpu, efficiency=efficiency, quantize=wanted)
        if counts_flops:
            extra += timing(steps=1, guidance_scale=1.0).batch_s
        seconds = (WARMUP_BATCHES * timing(steps=1, guidance_scale=preset.guidance_scale).batch_s
                   + iters * timing(steps=preset.steps,
                                    guidance_scale=preset.guidance_scale).batch_s + extra)
        planned.append(PlannedRun(label, seconds))
    return planned


def planned_text(planned: Sequence[PlannedRun], budget: Budget, source: str) -> list[str]:
    """The lines the script prints before its first run."""
    total = sum(run.seconds for run in planned)
    lines = [f"Predicted run time ({source}; ASSUMED allowances for quantizing, compiling and "
             "a fresh model): " + ", ".join(f"{run.label} {run.seconds:.0f} s" for run in planned)
             + f"; {total:.0f} s in all, {max(0.0, budget.left()):.0f} s of the "
             f"{budget.seconds:.0f} s "
             "budget left"]
    if total > budget.left():
        lines.append("  over the budget: the runs that would not end inside it are skipped, "
                     "the costliest first")
    return lines


class Budget:
    """Seconds a run may take from when this is made; predictions are scaled by how the runs
    so far went against theirs (the plan's efficiency is assumed until measured)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError(f"a budget must be positive, got {seconds}")
        self.seconds = seconds
        self._clock = clock
        self._started = clock()
        self._predicted = 0.0
        self._took = 0.0

    def left(self) -> float:
        return self.seconds - (self._clock() - self._started)

    def scale(self) -> float:
        """Measured over predicted so far (1 before any run)."""
        return self._took / self._predicted if self._predicted > 0 and self._took > 0 else 1.0

    def expected(self, predicted_s: float) -> float:
        return predicted_s * self.scale()

    def allows(self, predicted_s: float) -> bool:
        return self.expected(predicted_s) <= self.left()

    def record(self, predicted_s: float, took_s: float) -> None:
        self._predicted += predicted_s
        self._took += took_s

    def runnable(self, planned: Sequence[PlannedRun], stop: StopSignal,
                 skip: Callable[[str, str], None]) -> Iterator[int]:
        """The indices of ``planned`` to run, in order: none once ``stop`` is set (a budget
        spent before the first run), and none that would not end inside the budget
        (``skip(label, why)`` is told of those)."""
        for index, run in enumerate(planned):
            if stop.stopped:
                return
            if not self.allows(run.seconds):
                skip(run.label, self.why_skipped(run.seconds))
                continue
            yield index

    def why_skipped(self, predicted_s: float) -> str:
        return (f"expected {self.expected(predicted_s):.0f} s "
                f"(predicted {predicted_s:.0f} s x {self.scale():.2f}, how the runs so far "
                f"went), {max(0.0, self.left()):.0f} s of the {self.seconds:.0f} s budget left")


class Stopped(BaseException):
    """The run is being ended early. A BaseException, so that a run's own ``except
    Exception`` lets it through."""


@dataclass
class StopSignal:
    stopped: bool = False
    why: str = ""


@contextmanager
def stopped_by_signals(budget: Budget | None = None) -> Iterator[StopSignal]:
    """SIGTERM (the device call's ``timeout``), or ``budget`` running out, ends the block
    early (:class:`Stopped`, raised in the main thread) and sets ``stopped`` and ``why``, so a
    run stopped part-way still prints its table and JSON line (Python's default for SIGTERM
    ends the process at once). A budget spent before the block starts stops it at once
    (``stopped`` set as it begins: what it runs should check). The budget's timer is a thread
    that interrupts the main thread as SIGTERM would, so the process's own interval timer
    (pytest-timeout's, say) is left alone. The previous SIGTERM handler is put back, and
    neither stop can escape the block once it is closing."""
    state = StopSignal()
    lock = threading.Lock()
    closing = False

    def stop(signum: int, frame: Any) -> None:
        if closing:
            return
        state.why = state.why or "SIGTERM (the call's time limit)"
        raise Stopped

    def out_of_budget() -> None:
        with lock:
            if not closing:
                state.why = f"its {budget.seconds if budget else 0:g} s budget"
                _thread.interrupt_main(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    timer: threading.Timer | None = None
    if budget is not None:
        if budget.left() <= 0:
            state.stopped, state.why = True, f"its {budget.seconds:g} s budget"
        else:
            timer = threading.Timer(budget.left(), out_of_budget)
            timer.daemon = True
            timer.start()
    try:
        yield state
    except Stopped:
        state.stopped = True
    finally:
        with lock:
            closing = True
        if timer is not None:
            timer.cancel()
        signal.signal(signal.SIGTERM, previous)
