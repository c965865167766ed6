"""How frames are cut into engine calls: the one batching rule, for the live processor and
for offline rendering, with the engine cadence and the generation size that ``plan`` predicts
from and the engines use.

A segment chain starts with a call of ``first_batch`` new frames (Wan-Animate: the segment
length L); every call that continues it takes ``next_batch`` new frames (L - P, the other P
are carried over from the previous segment). A clip of N frames is covered by one first call
and as many continuing calls as needed; the last is filled up by reflecting the clip back and
forth, as ``WanAnimatePipeline`` pads a whole clip, so every call is full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from faceswap_cam.models import defaults

T = TypeVar("T")


class Batched(Protocol):
    """Anything with the two batch sizes: a swap engine, a streaming generator."""

    @property
    def first_batch(self) -> int: ...

    @property
    def next_batch(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BatchShape:
    """The two batch sizes on their own (a :class:`Batched` from plain numbers)."""

    first_batch: int
    next_batch: int


def new_frames(engine: Batched, *, continuing: bool) -> int:
    """How many new frames the engine's next call takes: a chain starts with ``first_batch``
    and goes on with ``next_batch``."""
    return engine.next_batch if continuing else engine.first_batch


def calls(engine: Batched, frames: int) -> list[int]:
    """New frames per call for one chain over a clip of ``frames`` (the last call padded)."""
    first = new_frames(engine, continuing=False)
    step = new_frames(engine, continuing=True)
    more = max(0, frames - first)
    return [first] + [step] * -(-more // step)


def plan(engine: Batched, frames: int) -> tuple[int, list[int]]:
    """(padded length, new frames per call) for a clip of ``frames`` in one chain."""
    sizes = calls(engine, frames)
    return sum(sizes), sizes


def pad_order(count: int, target: int) -> list[int]:
    """Frame indices 0..count-1 reflected back and forth up to ``target`` (the pipeline's
    padding: 0, 1, .., n-1, n-2, .., 0, 1, ..)."""
    if count == 1:
        return [0] * target
    order: list[int] = []
    index, step = 0, 1
    while len(order) < target:
        order.append(index)
        index += step
        if index in (0, count - 1):
            step = -step
    return order


def pad(items: Sequence[T], target: int) -> list[T]:
    """The first ``target`` of ``items``, filled up the pipeline's way when there are fewer."""
    return [items[i] for i in pad_order(len(items), target)]


#: A cadence is chosen with this margin over the engine's time per frame: where the daemon
#: starts (the capacity plan's prediction), rises to and steps down to. The daemon keeps a
#: cadence with less (daemon/pipeline/cadence.py's KEEP_MARGIN), so the two rules leave a
#: band where k stays put; a wider one (this was 1.15) left an engine that fits k = 3 with
#: 12 % to spare, the plan's H200 live window with its preprocessing, at k = 4 for good.
CADENCE_MARGIN = 1.10
MAX_CADENCE = 30


def cadence_for(per_frame_s: float, camera_fps: float, *, margin: float = CADENCE_MARGIN,
                max_cadence: int = MAX_CADENCE) -> int:
    """The engine cadence k (every k-th camera frame) an engine taking ``per_frame_s`` per
    frame keeps up with."""
    return max(1, min(max_cadence, math.ceil(camera_fps * per_frame_s * margin)))


def generation_size(frame_size: tuple[int, int],
                    short_side: int = defaults.GEN_SHORT_SIDE) -> tuple[int, int]:
    """(W, H) for generation: the camera's aspect with the short side near ``short_side``,
    both multiples of 16 as the Wan models need (1280x720 -> 848x480)."""
    width, height = frame_size
    scale = short_side / min(width, height)
    return (max(16, 16 * round(width * scale / 16)), max(16, 16 * round(height * scale / 16)))
