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


def test_the_window_holds_only_what_stays_well_inside_it() -> None:
    person = Box(500, 60, 780, 720)
    window = choose_window([person], HD)
    x, y, width, height = window.box
    assert (y, height) == (0, 720)  # the frame's full height: top and bottom are its edges
    inset = 0.05 * 720
    assert window.holds([Box(x + inset + 1, 0, x + width - inset - 1, 720)], HD)
    # Near a side inside the frame the dilated mask would meet it: a new window is due.
    assert not window.holds([Box(x + 5, 100, x + 200, 720)], HD)
    assert not window.holds([Box(x + 100, 100, x + width - 5, 720)], HD)
    assert not window.holds([Box(x - 40, 100, x + 200, 720)], HD)
    # A box reaching past the frame's edge counts as far as the frame goes.
    assert window.holds([Box(500, 60, 780, 900)], HD)
    assert not window.holds([Box(float("nan"), 60, 780, 720)], HD)
    assert window.inner_sides(HD) == (True, False, True, False)


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


class ScriptedPerson(MovablePerson):
    """The person's box per frame of the next call, as the test lists them."""

    def __init__(self, boxes: list[Box]) -> None:
        super().__init__(boxes[0])
        self.script = boxes

    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        return list(self.script[:len(frames)])


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
    assert engine.generation_window == (*window, 32, 32)  # what status shows
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
    before, after = Box(20, 20, 52, 108), Box(78, 20, 110, 108)  # stepping to the right
    person = MovablePerson(before)
    engine = make_engine(tiny_model, person)
    first_frames = camera(5)
    assert engine.process(first_frames).swapped
    first = person.windows[0]
    assert first is not None and not inside(first, after)
    person.box = after
    resets = person.resets
    new_frames = camera(4, 1)
    result = engine.process(new_frames)
    # The caller's chain goes on (L - P new frames in, as many out), all swapped, in a new
    # window around the person, from the last call's kept frame plus these: L frames.
    assert result.swapped and len(result.frames) == 4
    assert engine.window_restarts == 1 and person.resets == resets + 1
    second = person.windows[-1]
    assert second is not None and second != first
    # Around where the person is now and where the kept frame had them: both start it.
    assert inside(second, after) and inside(second, before)
    assert result.changed is not None
    assert all(box[0] >= second[0] for box in result.changed)
    # Exactly a new chain on the kept frame and the new ones, the kept frame's output dropped.
    fresh = make_engine(tiny_model, ScriptedPerson([before] + [after] * 4))
    restarted = fresh.process([first_frames[-1], *new_frames])
    for ours, theirs in zip(result.frames, restarted.frames[1:], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert len(engine.process(camera(4, 2)).frames) == 4  # and it continues from there
    assert engine.window_restarts == 1
    # A batch of the wrong length is still the caller's error, never a silent restart.
    person.box = before
    with pytest.raises(EngineError, match="takes 4 new frames"):
        engine.process(camera(5, 3))
    engine.close()
    fresh.close()


def test_a_restart_that_fails_leaves_no_chain_to_continue(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    person = MovablePerson(Box(20, 20, 52, 108))
    engine = make_engine(tiny_model, person)
    engine.process(camera(5))
    person.box = Box(150, 20, 182, 108)

    def out_of_memory(*_: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    from faceswap_cam.models.wan.streaming import StreamingWanAnimate

    monkeypatch.setattr(StreamingWanAnimate, "_generate", out_of_memory)
    with pytest.raises(EngineError, match="out of GPU memory"):
        engine.process(camera(4, 1))
    assert engine._window is None and engine._kept == []
    engine.close()


def test_a_new_camera_size_mid_chain_goes_on_in_a_new_chain(tiny_model: Path) -> None:
    person = MovablePerson(Box(80, 20, 112, 108))
    engine = make_engine(tiny_model, person, gen_window="frame")
    assert engine.process(camera(5)).swapped
    person.box = Box(160, 40, 224, 216)
    rng = np.random.default_rng(5)
    larger = [rng.integers(0, 256, (216, 384, 3), np.uint8) for _ in range(4)]
    result = engine.process(larger)  # a continuing call at twice the size
    assert result.swapped and [f.shape for f in result.frames] == [(216, 384, 3)] * 4
    assert engine.window_restarts == 1
    assert len(engine.process(larger).frames) == 4
    engine.close()


def test_every_window_size_shares_one_encoded_prompt(tiny_model: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    person = MovablePerson(Box(80, 20, 112, 108))
    engine = make_engine(tiny_model, person)
    encoded: list[Any] = []
    encode = engine.pipe.encode_prompt

    def counted(*args: Any, **kwargs: Any) -> Any:
        encoded.append(kwargs.get("prompt"))
        return encode(*args, **kwargs)

    monkeypatch.setattr(engine.pipe, "encode_prompt", counted)
    engine.process(camera(5))
    engine.reset()
    person.box = Box(0, 0, 192, 108)
    engine.process(camera(5))
    assert set(engine._streams) == {(32, 32), (64, 32)}
    assert len(encoded) == 1  # the first stream's encoding serves the second
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
    assert engine.generation_window == (0, 0, *FRAME, 64, 32)
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
    # The first call still starts from a kept frame of the leaning person; then the person
    # must fit the square for SHRINK_AFTER calls in a row.
    for call in range(SHRINK_AFTER):
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


def test_a_mask_reaching_a_window_side_inside_the_frame_fades_out_there() -> None:
    from faceswap_cam.models.wan.compositing import composite
    from faceswap_cam.models.wan.engine import open_inner_sides

    region = np.full((60, 60, 3), 200, np.uint8)
    generated = np.zeros((32, 32, 3), np.uint8)
    mask = np.full((32, 32), 255, np.uint8)  # the person fills the window
    hard, _ = composite(region, generated, mask, feather_px=8)
    assert (hard[:, 0] == 0).all()  # the generated person cut off at the window's side
    soft, _ = composite(region, generated, open_inner_sides(mask, (True, False, False, False)),
                        feather_px=8)
    # The window's left side lies inside the frame: the camera's pixels there, and a ramp in.
    np.testing.assert_array_equal(soft[:, 0], region[:, 0])
    assert (soft[30, :12, 0] >= soft[30, 1:13, 0]).all() and soft[30, 20, 0] == 0
    # Sides on the frame's edge stay as they were.
    np.testing.assert_array_equal(soft[:, -1], hard[:, -1])


class RingPose:
    """A stand-in pose model: on every frame the face points lie on a ring around (240, 200)
    of the generation-size frame; it records the boxes and frame shape it was given."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def estimate(self, frames: Any, boxes: Any) -> list[Any]:
        from faceswap_cam.models.preprocessing.pose import FACE, Keypoints

        self.seen["boxes"], self.seen["size"] = boxes, frames[0].shape
        xy = np.zeros((133, 2), np.float32)
        ring = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        xy[FACE] = np.stack([240 + 20 * np.cos(ring), 200 + 20 * np.sin(ring)], axis=1)
        return [Keypoints(xy, np.ones(133, np.float32)) for _ in frames]


class LocatedOnly:
    """A detector that must not run: the engine's located boxes are used."""

    def detect(self, frames: Any) -> list[Box | None]:
        raise AssertionError("the engine's located boxes are used")


def test_the_preprocessing_maps_the_window_between_frame_and_generation() -> None:
    """WanPreprocessor with stand-in models: the pose model gets the person box in the
    window's generation pixels, and the face is cut from the camera frame where the pose's
    face points land once mapped back through the window."""
    from faceswap_cam.models.preprocessing.wan import WanPreprocessor

    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[250:350, 650:750] = (0, 0, 255)  # the face, red in BGR
    person = Box(500, 100, 900, 720)
    window = (340, 0, 720, 720)  # 720 px of frame -> 480 px of generation: 2/3
    # The face points around (700, 300) in the frame: ((700 - 340), 300) x 2/3.
    pose = RingPose()
    preprocessor = WanPreprocessor(LocatedOnly(), pose, None, keypoint_threshold=0.0)
    batch = preprocessor.process([frame], size=(480, 480), face_size=64,
                                 with_background=False, window=window, people=[person])
    assert pose.seen["size"] == (480, 480, 3)
    x0, y0, x1, y1 = pose.seen["boxes"][0]
    expected = ((500 - 340) * 2 / 3, 100 * 2 / 3, (900 - 340) * 2 / 3, 720 * 2 / 3)
    assert (x0, y0, x1, y1) == pytest.approx(expected)
    face = batch.face[0]  # RGB: the red square fills it
    assert face.shape == (64, 64, 3) and face[32, 32, 0] > 200 and face[32, 32, 2] < 50


def test_box_person_mask_is_the_detectors_box_grown_as_wan_grows_a_mask() -> None:
    """--person-mask box: the person box in generation pixels, dilated and filled by Wan's
    own rule, without SAM2 (none is loaded); the background is the frame outside it."""
    from faceswap_cam.models.preprocessing.segmentation import WAN_DILATE_PX, wan_mask
    from faceswap_cam.models.preprocessing.wan import WanPreprocessor, box_mask

    frame = np.full((720, 1280, 3), 200, np.uint8)
    window = (340, 0, 720, 720)  # 2/3 of a generation pixel per frame pixel
    person = Box(500.5, 100, 900, 720)  # -> (107, 66.7, 373.3, 480) in the window
    preprocessor = WanPreprocessor(LocatedOnly(), RingPose(), None, keypoint_threshold=0.0,
                                   person_mask="box")
    batch = preprocessor.process([frame, frame], size=(480, 480), face_size=64,
                                 with_background=True, window=window, people=[person, person])
    assert batch.mask is not None and batch.background is not None
    expected = np.zeros((480, 480), np.uint8)
    d = WAN_DILATE_PX
    expected[66 - d:480, 107 - d:374 + d] = 255
    # What Wan's own rule makes of the box.
    in_window = Box(107, 100 * 2 / 3, (900 - 340) * 2 / 3, 480)
    assert wan_mask(box_mask(in_window, (480, 480))).tobytes() == expected.tobytes()
    for mask, background in zip(batch.mask, batch.background, strict=True):
        assert mask.tobytes() == expected.tobytes()
        assert not background[expected > 0].any() and (background[expected == 0] == 200).all()
    assert "mask" in preprocessor.timings
    # Anywhere, edges and fractions included: exactly Wan's rule applied to the box.
    rng = np.random.default_rng(3)
    square = np.full((480, 480, 3), 200, np.uint8)
    corners = [tuple(rng.uniform(-350, 470, 2)) for _ in range(40)]
    # Explicit edges: a box wholly left of / above the frame, one ending on its edge, a
    # zero-width one on the edge, one past the far corner.
    cases = [Box(x0, y0, x0 + rng.uniform(1, 300), y0 + rng.uniform(1, 300))
             for x0, y0 in corners] + [Box(-30, 5, -10, 20), Box(5, -40, 20, -20),
                                       Box(-30, 5, 0, 20), Box(0, 5, 0, 20),
                                       Box(470.5, 470.5, 600, 600)]
    outside = 0
    for box in cases:
        [mask] = preprocessor.process([square], size=(480, 480), face_size=64,
                                      with_background=True, people=[box]).mask or []
        assert mask.tobytes() == wan_mask(box_mask(box.clip((480, 480)), (480, 480))).tobytes()
        outside += not mask.any()
    assert outside >= 4  # the boxes with no pixel in the frame give no mask
    assert box_mask(None, (8, 4)).shape == (4, 8) and not box_mask(None, (8, 4)).any()
    assert wan_mask(box_mask(Box(2.6, 1.0, 5.0, 3.5), (8, 6)), dilate_px=0).sum() == \
        255 * 3 * 3  # the pixels it reaches into, x 2..4 and y 1..3
    # Wan's recipe without its model says what to do.
    sam2 = WanPreprocessor(LocatedOnly(), RingPose(), None, keypoint_threshold=0.0)
    with pytest.raises(RuntimeError, match="--person-mask box"):
        sam2.process([frame], size=(480, 480), face_size=64, with_background=True,
                     window=window, people=[person])


def test_box_person_mask_covers_where_the_detector_sees_the_person_now() -> None:
    """The steadied person box trails someone moving (crops made from it must not jitter);
    the box mask also covers the detector's own box of each frame, or the person's edge
    would be left in Wan's background and in the camera pixels around the swap."""
    from faceswap_cam.models.preprocessing.segmentation import WAN_DILATE_PX
    from faceswap_cam.models.preprocessing.wan import WanPreprocessor

    class Walking:  # the person moves 40 px right per frame, in the detector's 480x480 copy
        x = 100.0

        def detect(self, frames: Any) -> list[Box | None]:
            boxes: list[Box | None] = []
            for _ in frames:
                boxes.append(Box(self.x, 60, self.x + 200, 480))
                self.x += 40
            return boxes

    preprocessor = WanPreprocessor(Walking(), RingPose(), None, keypoint_threshold=0.0,
                                   person_mask="box")
    frames = [np.full((480, 480, 3), 200, np.uint8) for _ in range(4)]
    people = preprocessor.locate(frames, size=(480, 480))
    batch = preprocessor.process(frames, size=(480, 480), face_size=64, with_background=True,
                                 people=people)
    assert batch.mask is not None
    for index, (steadied, mask) in enumerate(zip(people, batch.mask, strict=True)):
        assert steadied is not None
        now = 100 + 40 * index  # where the detector saw them on this frame
        columns = np.flatnonzero(mask[240])
        assert steadied.x1 < now + 200 or index == 0  # the steadied box trails...
        assert columns[0] == max(0, min(now, int(steadied.x0)) - WAN_DILATE_PX)
        assert columns[-1] + 1 == min(480, now + 200 + WAN_DILATE_PX)  # ...the mask does not
    # The preprocessor holds no camera frame (on the engine host they are shared memory):
    # neither after a batch nor after a locate that found nobody.
    import gc
    import weakref

    held = weakref.ref(frames[0])
    del frames, people, batch
    gc.collect()
    assert held() is None
    nobody = [np.full((480, 480, 3), 200, np.uint8)]
    preprocessor.locate(nobody, size=(480, 480))
    held = weakref.ref(nobody[0])
    del nobody
    gc.collect()
    assert held() is None


def test_a_batch_is_composited_side_by_side_in_order() -> None:
    from faceswap_cam.models.wan.engine import compositor, paste, paste_batch

    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, (72, 128, 3), dtype=np.uint8) for _ in range(8)]
    generated = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(8)]
    masks = []
    for n in range(8):
        mask = np.zeros((48, 48), np.uint8)
        mask[4 + n:40, 8:40 - n] = 1  # each frame its own person
        masks.append(mask)
    window = choose_window([Box(50, 20, 70, 60)], (128, 72), full_gen_size=(128, 72))
    assert not window.whole
    executor = compositor()
    try:
        out, boxes = paste_batch(executor, frames, generated, masks, window, feather_px=3)
        with pytest.raises(EngineError, match="7 masks for 8 camera frames"):
            paste_batch(executor, frames, generated, masks[:7], window, feather_px=3)
    finally:
        executor.shutdown()
    serial = [paste(f, g, m, window, feather_px=3) for f, g, m in zip(frames, generated, masks,
                                                                      strict=True)]
    assert boxes == [box for _, box in serial]
    for got, (want, _) in zip(out, serial, strict=True):
        assert np.array_equal(got, want)
