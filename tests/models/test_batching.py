"""The one batching rule: how clips are cut into engine calls, live and offline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceswap_cam.models.batching import BatchShape, calls, pad, plan
from faceswap_cam.models.engine import SwapResult
from faceswap_cam.models.render import render_raw
from faceswap_cam.models.simple_engines import DebugEngine


def test_segment_plan_matches_the_pipeline() -> None:
    # Segment length L and carry P: the first call takes L frames, every later one L - P.
    assert plan(BatchShape(5, 4), 13) == (13, [5, 4, 4])
    assert plan(BatchShape(5, 4), 11) == (13, [5, 4, 4])
    assert plan(BatchShape(13, 8), 29) == (29, [13, 8, 8])
    assert plan(BatchShape(5, 4), 3) == (5, [5])
    assert calls(BatchShape(1, 1), 3) == [1, 1, 1]


def test_padding_reflects_the_clip() -> None:
    assert pad([10, 11, 12], 7) == [10, 11, 12, 11, 10, 11, 12]
    assert pad([7], 3) == [7, 7, 7]
    assert pad([1, 2, 3], 2) == [1, 2]


class NobodyOnSecondCall(DebugEngine):
    """Records each batch (by frame value); the second call finds nobody in view."""

    def __init__(self) -> None:
        super().__init__(first_batch=5, next_batch=4)
        self.batches: list[list[int]] = []

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        self.batches.append([int(f[0, 0, 0]) for f in frames])
        if len(self.batches) == 2:
            return SwapResult.untouched(frames)
        return super().process(frames)


def test_render_raw_batches_like_the_processor_and_restarts_after_nobody() -> None:
    engine = NobodyOnSecondCall()
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(15)]
    out = render_raw(engine, frames)
    # L, then L - P; nobody in view ends the chain: reset, a new first batch, and the last
    # call filled up by reflecting the clip (the fill is dropped).
    assert engine.batches == [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13],
                              [14, 13, 12, 11]]
    assert engine.resets == 1
    assert [int(f[0, 0, 0]) for f in out] == [
        *(255 - i for i in range(5)), 5, 6, 7, 8, *(255 - i for i in range(9, 15))]
