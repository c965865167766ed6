"""Engines that need no model: ``passthrough`` and the pipeline-checking ``debug`` engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from faceswap_cam.models.engine import (
    Box,
    EngineError,
    EngineInterrupted,
    GenerationWindow,
    SwapResult,
)


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

    By default the whole frame; ``box`` (x, y, width, height as fractions of the frame) limits
    it to one box, as an engine that pastes a swapped person into the room changes only the
    person's box (reported in ``SwapResult.changed`` either way).

    Its batch shape mimics Wan-Animate (a first segment, then new frames per call) so the
    processor's first/next batching and cadence logic run exactly as with the real engine.
    ``interrupt()`` (and ``close()``) cut a delay in progress short and make the call raise,
    as a real engine's denoising loop checks an interrupt flag. Like a model engine it says
    where it worked (``generation_window``: its box, "generated" at its own size).
    """

    def __init__(self, *, delay_ms: float = 0.0, first_batch: int = 5, next_batch: int = 4,
                 box: Sequence[float] | None = None, **_options: Any) -> None:
        if delay_ms < 0:
            raise EngineError(f"debug engine delay must be >= 0 ms, got {delay_ms}")
        if box is not None:
            x, y, box_w, box_h = (float(v) for v in box)
            if min(x, y, box_w, box_h) < 0 or x + box_w > 1 or y + box_h > 1:
                raise EngineError(f"debug engine box must be fractions inside the frame, "
                                  f"got {tuple(box)}")
        self.box = None if box is None else (x, y, box_w, box_h)
        if first_batch < 1 or next_batch < 1:
            raise EngineError("debug engine batch sizes must be >= 1")
        self.delay_s = delay_ms / 1000
        self.first_batch = first_batch
        self.next_batch = next_batch
        self.calls = 0
        self.resets = 0
        self.generation_window: GenerationWindow | None = None
        self._closed = False
        self._interrupted = threading.Event()

    def set_reference(self, image: np.ndarray) -> None:
        pass

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if self._closed:
            raise EngineError("debug engine is closed")
        if self._interrupted.wait(self.delay_s):  # the delay, cut short by interrupt()
            raise EngineInterrupted("debug engine call interrupted")
        self.calls += 1
        outputs = [np.empty_like(frame) for frame in frames]
        return SwapResult(outputs, changed=self._invert(frames, outputs))

    def process_into(self, frames: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> bool:
        if self._closed:
            raise EngineError("debug engine is closed")
        if self._interrupted.wait(self.delay_s):
            raise EngineInterrupted("debug engine call interrupted")
        self.calls += 1
        self._invert(frames, outputs)
        return True

    def _invert(self, frames: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> list[Box]:
        boxes = []
        for frame, output in zip(frames, outputs, strict=True):
            height, width = frame.shape[:2]
            x, y, box_w, box_h = 0, 0, width, height
            if self.box is not None:
                x, y = round(self.box[0] * width), round(self.box[1] * height)
                box_w, box_h = round(self.box[2] * width), round(self.box[3] * height)
                box_w, box_h = min(box_w, width - x), min(box_h, height - y)
                output[...] = frame
            inside = (slice(y, y + box_h), slice(x, x + box_w))
            np.subtract(255, frame[inside], out=output[inside], dtype=np.uint8)
            boxes.append((x, y, box_w, box_h))
            self.generation_window = GenerationWindow(x, y, box_w, box_h, box_w, box_h)
        return boxes

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
