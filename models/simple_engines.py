"""Engines that need no model: ``passthrough`` and the pipeline-checking ``debug`` engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from faceswap_cam.models.engine import EngineError, SwapResult


class PassthroughEngine:
    """Swaps nothing: the pipeline's plumbing with no swap cost (the camera is shown)."""

    first_batch = 1
    next_batch = 1

    def __init__(self, **_options: Any) -> None:
        pass

    def set_reference(self, image: np.ndarray) -> None:
        pass

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        return SwapResult.untouched(frames)

    def reset(self) -> None:
        pass

    def interrupt(self) -> None:
        pass  # a call returns at once anyway

    def close(self) -> None:
        pass


class DebugEngine:
    """Inverts colours after ``delay_ms`` per batch, so swapped frames are obvious on screen.

    Its batch shape mimics Wan-Animate (a first segment, then new frames per call) so the
    processor's first/next batching and cadence logic run exactly as with the real engine.
    ``interrupt()`` (and ``close()``) cut a delay in progress short and make the call raise,
    as a real engine's denoising loop checks an interrupt flag.
    """

    def __init__(self, *, delay_ms: float = 0.0, first_batch: int = 5, next_batch: int = 4,
                 **_options: Any) -> None:
        if delay_ms < 0:
            raise EngineError(f"debug engine delay must be >= 0 ms, got {delay_ms}")
        if first_batch < 1 or next_batch < 1:
            raise EngineError("debug engine batch sizes must be >= 1")
        self.delay_s = delay_ms / 1000
        self.first_batch = first_batch
        self.next_batch = next_batch
        self.calls = 0
        self.resets = 0
        self._closed = False
        self._interrupted = threading.Event()

    def set_reference(self, image: np.ndarray) -> None:
        pass

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if self._closed:
            raise EngineError("debug engine is closed")
        if self._interrupted.wait(self.delay_s):  # the delay, cut short by interrupt()
            raise EngineError("debug engine call interrupted")
        self.calls += 1
        return SwapResult([np.subtract(255, frame, dtype=np.uint8) for frame in frames])

    def process_into(self, frames: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> bool:
        if self._closed:
            raise EngineError("debug engine is closed")
        if self._interrupted.wait(self.delay_s):
            raise EngineError("debug engine call interrupted")
        self.calls += 1
        for frame, output in zip(frames, outputs, strict=True):
            np.subtract(255, frame, out=output, dtype=np.uint8)
        return True

    def reset(self) -> None:
        self.resets += 1
        if not self._closed:
            self._interrupted.clear()

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        self._closed = True
        self._interrupted.set()


def register() -> None:
    from faceswap_cam.models.engine import register_engine

    register_engine("passthrough", PassthroughEngine, description="frames unchanged")
    register_engine("debug", DebugEngine,
                    description="inverts colours after a delay (checks the pipeline)")
