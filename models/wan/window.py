"""Where in the camera frame Wan-Animate generates: a window around the person, or the frame.

In replace mode only the person comes from the generator; the room is the camera's own pixels
(compositing.py). Generating the whole frame spends most of the work on room that is then thrown
away: a head-and-shoulders person in a 16:9 webcam frame is about 40 % of its width. So the
engine generates a window around the person instead, at the same short side (480 by default):
the person at the same or a higher pixel density, for about half the tokens of 848x480, and
attention's share falls faster than that.

The window is chosen when a segment chain starts and stays for the chain: the frames carried
from one segment to the next and SAM2's tracking memory are in its coordinates. A few shapes
(square, then 4:3, then the whole frame) each have one generation size, so the reference is
encoded once per shape and a compiled transformer sees few shapes. Geometry only: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.engine import Box as FrameBox
from faceswap_cam.models.preprocessing.person import Box

#: Room kept around the person box, as multiples of its sides. People in a call sway and lean
#: sideways more than they rise, and leaving the window costs a new chain (a seam), not frames.
MARGIN_X = 1.3
MARGIN_Y = 1.2
#: Window shapes tried before the whole frame, as long side / short side, narrowest first.
ASPECTS = (1.0, 4 / 3)
#: How far inside the window (a share of its short side) a person box must stay from a side
#: that lies inside the frame. Below the margins' room, so a new window holds its person.
INSET = 0.05
#: The window's short side is at least this share of the frame's: a far-away person is not
#: blown up from a handful of pixels.
MIN_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Window:
    """A part of the camera frame and the size it is generated at."""

    #: ``(x, y, width, height)`` in frame pixels.
    box: FrameBox
    #: ``(width, height)`` of the generation, multiples of 16.
    gen_size: tuple[int, int]
    #: True when the window is the whole frame (no crop).
    whole: bool

    def inner_sides(self, frame_size: tuple[int, int]) -> tuple[bool, bool, bool, bool]:
        """(left, top, right, bottom): which of the window's sides lie inside the frame, where
        the camera's own picture of the person goes on past them."""
        x, y, width, height = self.box
        return x > 0, y > 0, x + width < frame_size[0], y + height < frame_size[1]

    def holds(self, people: Sequence[Box], frame_size: tuple[int, int]) -> bool:
        """Whether every box (cut to the frame) keeps :data:`INSET` of the window's short side
        away from each side of the window that lies inside the frame. The mask the model is
        given reaches past the person (dilated), and where it met such a side the generated
        person would end in a hard edge against the camera's."""
        x, y, width, height = self.box
        inset = INSET * min(width, height)
        left, top, right, bottom = self.inner_sides(frame_size)
        for person in people:
            inside = person.clip(frame_size)
            if not inside.is_finite or (inside.x0 < x + (inset if left else 0) - 1
                    or inside.y0 < y + (inset if top else 0) - 1
                    or inside.x1 > x + width - (inset if right else 0) + 1
                    or inside.y1 > y + height - (inset if bottom else 0) + 1):
                return False
        return True


def whole_frame(frame_size: tuple[int, int], gen_size: tuple[int, int]) -> Window:
    return Window((0, 0, *frame_size), gen_size, whole=True)


def _round16(value: float) -> int:
    return max(16, 16 * round(value / 16))


def window_sizes(frame_size: tuple[int, int], full_gen_size: tuple[int, int]
                 ) -> list[tuple[int, int]]:
    """The generation size of each window shape smaller than the whole frame's generation,
    in the order they are tried. The short side is the frame generation's."""
    width, height = frame_size
    landscape = width >= height
    short = min(full_gen_size)
    frame_aspect = max(width, height) / min(width, height)
    sizes = []
    for aspect in ASPECTS:
        if aspect >= frame_aspect:
            continue
        long = _round16(short * aspect)
        size = (long, short) if landscape else (short, long)
        if size[0] * size[1] < full_gen_size[0] * full_gen_size[1]:
            sizes.append(size)
    return sizes


def choose_window(people: Sequence[Box], frame_size: tuple[int, int], *,
                  full_gen_size: tuple[int, int] | None = None,
                  short_side: int = 480) -> Window:
    """The smallest window shape that holds every person box with its margin, placed around
    them inside the frame; the whole frame when none does (someone close to the camera)."""
    full = full_gen_size or generation_size(frame_size, short_side)
    width, height = frame_size
    boxes = [b for b in (p.clip(frame_size) for p in people)
             if not b.is_empty and b.is_finite]
    if not boxes:
        return whole_frame(frame_size, full)
    union = Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                max(b.x1 for b in boxes), max(b.y1 for b in boxes))
    # The margin stops at the frame's edges: nobody can move past them.
    need_w = min(float(width), union.width * MARGIN_X)
    need_h = min(float(height), union.height * MARGIN_Y)
    least = MIN_SHARE * min(width, height)
    for gen_size in window_sizes(frame_size, full):
        ratio = gen_size[0] / gen_size[1]  # the shape's own width / height
        win_h = max(need_h, need_w / ratio)
        win_h *= max(1.0, least / min(win_h, win_h * ratio))
        win_w = win_h * ratio
        if win_w > width + 0.5 or win_h > height + 0.5:
            continue
        placed = Box.from_center(*union.center, win_w, win_h).shift_inside(frame_size)
        return Window(_pixels(placed, frame_size), gen_size, whole=False)
    return whole_frame(frame_size, full)


def _pixels(box: Box, frame_size: tuple[int, int]) -> FrameBox:
    """Whole pixels inside the frame, the size kept (rounding may not push it out)."""
    width, height = frame_size
    box_w = min(width, max(1, math.floor(box.width + 0.5)))
    box_h = min(height, max(1, math.floor(box.height + 0.5)))
    x = min(max(0, math.floor(box.x0 + 0.5)), width - box_w)
    y = min(max(0, math.floor(box.y0 + 0.5)), height - box_h)
    return x, y, box_w, box_h
