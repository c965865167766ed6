"""The generation window: replace mode generates a window around the person, not the frame.

The geometry runs without torch; the engine tests run the tiny random Wan-Animate with a
stand-in preprocessor whose person box the test moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.preprocessing.base import StandInPreprocessor
from faceswap_cam.models.preprocessing.person import Box
from faceswap_cam.models.wan.window import choose_window, window_sizes

HD = (1280, 720)


def inside(outer: tuple[int, int, int, int], box: Box) -> bool:
    x, y, width, height = outer
    return x <= box.x0 and y <= box.y0 and box.x1 <= x + width and box.y1 <= y + height


@pytest.mark.parametrize(("person", "gen_size", "whole"), [
    (Box(500, 60, 780, 720), (480, 480), False),  # head and shoulders, centred
    (Box(300, 20, 980, 720), (640, 480), False),  # broad shoulders: 4:3
    (Box(60, 0, 1220, 720), (848, 480), True),  # filling the frame: the whole frame
    (Box(1100, 200, 1280, 720), (480, 480), False),  # at the right edge
    (Box(600, 300, 640, 360), (480, 480), False),  # far away
])
def test_the_narrowest_shape_that_holds_the_person_with_room_to_move(
        person: Box, gen_size: tuple[int, int], whole: bool) -> None:
    window = choose_window([person], HD)
    x, y, width, height = window.box
    assert window.gen_size == gen_size and window.whole == whole
    assert x >= 0 and y >= 0 and x + width <= HD[0] and y + height <= HD[1]
    assert inside(window.box, person)
    # The window's shape is its generation's, so the person is not stretched.
    assert width / height == pytest.approx(gen_size[0] / gen_size[1], abs=0.02)
    if not whole:
        # Room to move where the frame has it: the margin, unless an edge is in the way.
        assert width >= min(HD[0], person.width * 1.3) - 1
    assert window.holds([person], HD)


def test_a_far_away_person_is_not_blown_up_from_a_few_pixels() -> None:
    window = choose_window([Box(600, 300, 640, 360)], HD)
    assert min(window.box[2:]) >= 0.25 * 720 - 1


def test_the_window_holds_only_what_stays_inside_it() -> None:
    person = Box(500, 60, 780, 720)
    window = choose_window([person], HD)
    x, _, width, _ = window.box
    assert window.holds([Box(x + 5, 100, x + width - 5, 720)], HD)
    assert not window.holds([Box(x - 40, 100, x + 200, 720)], HD)
    # A box reaching past the frame's edge counts as far as the frame goes.
    assert window.holds([Box(500, 60, 780, 900)], HD)


def test_window_shapes_per_camera() -> None:
    assert window_sizes(HD, (848, 480)) == [(480, 480), (640, 480)]
    assert window_sizes((720, 1280), (480, 848)) == [(480, 480), (480, 640)]
    # A 4:3 camera: only the square is smaller than its own shape.
    assert window_sizes((640, 480), (640, 480)) == [(480, 480)]
    # Generation sizes stay multiples of 16.
    for width, height in window_sizes(HD, generation_size(HD, 720)):
        assert width % 16 == 0 and height % 16 == 0
    # What the square saves: tokens scale with the generated area.
    assert 480 * 480 / (848 * 480) < 0.6


def test_a_portrait_camera_gets_portrait_windows() -> None:
    person = Box(160, 500, 560, 1280)  # too tall for a square
    window = choose_window([person], (720, 1280))
    assert window.gen_size == (480, 640) and inside(window.box, person)


def test_no_person_box_means_the_whole_frame() -> None:
    assert choose_window([Box(2000, 2000, 2100, 2100)], HD).whole


# --------------------------------------------------------------------------- the engine

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from faceswap_cam.models.engine import EngineError  # noqa: E402
from faceswap_cam.models.wan.engine import WanAnimateEngine  # noqa: E402
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline  # noqa: E402
from tests.wan_tiny import save_tiny_wan_animate  # noqa: E402

#: A 16:9 camera frame and a 32-pixel short side: the whole frame generates at 64x32, the
#: square window at 32x32 and the 4:3 one at 48x32 (the tiny model's sizes).
FRAME = (192, 108)
SHORT = 32


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan-window"))


class MovablePerson(StandInPreprocessor):
    """The stand-in, with the person's box where the test puts it; records what it was
    asked for."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.windows: list[tuple[int, int, int, int] | None] = []
        self.sizes: list[tuple[int, int]] = []
        self.resets = 0

    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        return [self.box for _ in frames]

    def process(self, frames: Sequence[np.ndarray], **kwargs: Any) -> Any:
        self.windows.append(kwargs.get("window"))
        self.sizes.append(kwargs["size"])
        return super().process(frames, **kwargs)

    def reset(self) -> None:
        self.resets += 1


def camera(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (FRAME[1], FRAME[0], 3), np.uint8) for _ in range(count)]


def make_engine(tiny_model: Path, preprocessor: StandInPreprocessor, **options: Any
                ) -> WanAnimateEngine:
    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    engine = WanAnimateEngine(wan_model=str(tiny_model), pipeline=pipe, steps=1,
                              segment_frames=5, carry=1, gen_short_side=SHORT,
                              preprocessor=preprocessor, **options)
    engine.set_reference(np.full((80, 64, 3), 90, np.uint8))
    return engine


def test_replace_mode_generates_only_a_window_around_the_person(tiny_model: Path) -> None:
    person = MovablePerson(Box(80, 20, 112, 108))  # a narrow person in the middle
    engine = make_engine(tiny_model, person)
    frames = camera(5)
    result = engine.process(frames)
    assert result.swapped and person.sizes == [(32, 32)]
    window = person.windows[0]
    assert window is not None
    x, y, width, height = window
    assert width == height == 106 and inside(window, person.box)  # 88 px tall, x 1.2
    # Outside the window every pixel is the camera's; each changed box lies in the window.
    assert result.changed is not None
    for frame, out, (bx, by, bw, bh) in zip(frames, result.frames, result.changed,
                                            strict=True):
        assert out.shape == frame.shape
        assert x <= bx and y <= by and bx + bw <= x + width and by + bh <= y + height
        assert bw * bh > 0
        outside = np.ones(frame.shape[:2], bool)
        outside[by:by + bh, bx:bx + bw] = False
        np.testing.assert_array_equal(out[outside], frame[outside])
    assert len(engine.process(camera(4, 1)).frames) == 4
    assert person.windows[1] == window  # the chain keeps its window
    engine.close()


def test_the_window_is_crop_swap_paste(tiny_model: Path) -> None:
    """A window's result is what the whole-frame engine makes of the cropped frames, pasted
    back: the window changes where the model looks, nothing else."""
    person = MovablePerson(Box(80, 20, 112, 108))
    windowed = make_engine(tiny_model, person)
    frames = camera(5, 2)
    swapped = windowed.process(frames)
    x, y, width, height = person.windows[0] or (0, 0, 0, 0)
    cropped = make_engine(tiny_model, StandInPreprocessor(), gen_window="frame")
    crops = [np.ascontiguousarray(f[y:y + height, x:x + width]) for f in frames]
    reference = cropped.process(crops)
    for whole, part in zip(swapped.frames, reference.frames, strict=True):
        np.testing.assert_array_equal(whole[y:y + height, x:x + width], part)
    windowed.close()
    cropped.close()


def test_leaving_the_window_starts_a_new_chain_without_showing_the_real_person(
        tiny_model: Path) -> None:
    person = MovablePerson(Box(20, 20, 52, 108))  # near the left edge
    engine = make_engine(tiny_model, person)
    assert engine.process(camera(5)).swapped
    first = person.windows[0]
    person.box = Box(150, 20, 182, 108)  # walked to the right
    resets = person.resets
    result = engine.process(camera(4, 1))
    # The caller's chain goes on (L - P new frames in, as many out), all swapped, in a new
    # window around the person, from the last call's kept frame plus these: L frames.
    assert result.swapped and len(result.frames) == 4
    assert engine.window_restarts == 1 and person.resets == resets + 1
    second = person.windows[-1]
    assert second is not None and second != first and inside(second, person.box)
    assert result.changed is not None
    assert all(box[0] >= second[0] for box in result.changed)
    assert len(engine.process(camera(4, 2)).frames) == 4  # and it continues from there
    assert engine.window_restarts == 1
    # A batch of the wrong length is still the caller's error, never a silent restart.
    person.box = Box(20, 20, 52, 108)
    with pytest.raises(EngineError, match="takes 4 new frames"):
        engine.process(camera(5, 3))
    engine.close()


def test_a_wide_person_gets_a_wider_window_or_the_whole_frame(tiny_model: Path) -> None:
    person = MovablePerson(Box(40, 0, 150, 108))
    engine = make_engine(tiny_model, person)
    assert engine.process(camera(5)).swapped
    assert person.sizes[-1] == (48, 32)  # 4:3
    engine.reset()
    person.box = Box(0, 0, 192, 108)
    assert engine.process(camera(5)).swapped
    assert person.sizes[-1] == (64, 32) and person.windows[-1] is None  # the whole frame
    engine.close()


@pytest.mark.parametrize("options", [{"gen_window": "frame"}, {"mode": "animate"}])
def test_the_whole_frame_when_asked_or_when_animating(tiny_model: Path,
                                                      options: dict[str, Any]) -> None:
    person = MovablePerson(Box(80, 20, 112, 108))
    engine = make_engine(tiny_model, person, **options)
    result = engine.process(camera(5))
    assert result.swapped and person.sizes == [(64, 32)] and person.windows == [None]
    assert result.frames[0].shape == (FRAME[1], FRAME[0], 3)
    engine.close()


def test_a_new_reference_is_encoded_only_for_the_window_in_use(tiny_model: Path) -> None:
    person = MovablePerson(Box(80, 20, 112, 108))
    engine = make_engine(tiny_model, person)
    engine.process(camera(5))
    engine.reset()
    person.box = Box(0, 0, 192, 108)
    engine.process(camera(5))
    assert set(engine._streams) == {(32, 32), (64, 32)}
    engine.set_reference(np.full((80, 64, 3), 30, np.uint8))
    assert set(engine._streams) == {(64, 32)}  # the other encodes it when it comes back
    engine.reset()
    person.box = Box(80, 20, 112, 108)
    assert engine.process(camera(5)).swapped
    assert set(engine._streams) == {(32, 32), (64, 32)}
    engine.close()
    assert engine._streams == {}


def test_a_person_who_sits_back_moves_the_chain_to_a_smaller_window(tiny_model: Path) -> None:
    from faceswap_cam.models.wan.engine import SHRINK_AFTER

    person = MovablePerson(Box(0, 0, 192, 108))  # leaning in: the whole frame
    engine = make_engine(tiny_model, person)
    assert engine.process(camera(5)).swapped and person.sizes[-1] == (64, 32)
    person.box = Box(80, 20, 112, 108)  # sat back: a square would do
    for call in range(SHRINK_AFTER - 1):
        assert engine.process(camera(4, call)).swapped
        assert person.sizes[-1] == (64, 32)  # a moment is not enough to move
    result = engine.process(camera(4, 9))
    assert result.swapped and len(result.frames) == 4
    assert person.sizes[-1] == (32, 32) and engine.window_restarts == 1
    window = person.windows[-1]
    assert window is not None and inside(window, person.box)
    for call in range(SHRINK_AFTER + 1):  # and it stays there
        engine.process(camera(4, 20 + call))
    assert engine.window_restarts == 1 and person.sizes[-1] == (32, 32)
    engine.close()
