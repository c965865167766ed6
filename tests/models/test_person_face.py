"""Person detection, face boxes, steadying and face crops (models/person.py, models/face.py).

The detector runs as a tiny random-weight RT-DETR written with save_pretrained and read back
through the real loading code, so what is tested is the plumbing (batching, label lookup,
boxes in frame pixels); which box wins is tested on hand-made detections. The geometry is
checked against numbers worked out by hand from Wan-Animate's face-box rule.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.models.preprocessing.face import FaceCropper, crop_resized, face_box
from faceswap_cam.models.preprocessing.person import (
    Box,
    BoxSmoother,
    DetectorError,
    PersonDetector,
    largest_person,
    person_label_ids,
)
from tests.shared_data import SHARED_DATA, needs_shared_data
from tests.tiny_preprocessing import save_tiny_rtdetr

SQRT13 = math.sqrt(1.3)  # 1.140175425...


# ---------------------------------------------------------------------------------------------
# helpers


def wholebody(face_x: tuple[float, float], face_y: tuple[float, float],
              *, face_score: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """133 keypoints whose 68 face points lie on an ellipse spanning exactly ``face_x`` x
    ``face_y``; the body, feet and hands sit far from the face, all with high scores, so a
    box that used any of them would be visibly wrong."""
    points = np.zeros((133, 2))
    points[:23] = (3.0, 3.0)
    points[91:] = (5000.0, 4000.0)
    t = 2 * np.pi * np.arange(68) / 68  # k = 0, 17, 34, 51 hit the four extremes exactly
    cx, cy = (face_x[0] + face_x[1]) / 2, (face_y[0] + face_y[1]) / 2
    a, b = (face_x[1] - face_x[0]) / 2, (face_y[1] - face_y[0]) / 2
    points[23:91, 0] = cx + a * np.cos(t)
    points[23:91, 1] = cy + b * np.sin(t)
    scores = np.full(133, 0.95)
    scores[23:91] = face_score
    return points, scores


def rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return np.ascontiguousarray(image[:, :, ::-1])


# ---------------------------------------------------------------------------------------------
# Box


def test_box_helpers() -> None:
    box = Box(10, 20, 50, 40)
    assert (box.width, box.height, box.area, box.center) == (40, 20, 800, (30, 30))
    assert box.expand(2) == Box(-10, 10, 70, 50)
    assert box.square().area == pytest.approx(800)
    assert box.square().center == (30, 30)
    assert Box(-5, -5, 700, 30).clip((640, 480)) == Box(0, 0, 640, 30)
    assert Box(-10, 470, 30, 510).shift_inside((640, 480)) == Box(0, 440, 40, 480)
    assert Box(0, 0, 900, 100).shift_inside((640, 480)) == Box(0, 0, 640, 100)
    assert Box(10.4, 9.6, 110.3, 109.5).as_int() == (10, 10, 110, 110)
    assert Box(5, 5, 5, 9).is_empty


def test_geometry_modules_do_not_import_torch() -> None:
    code = ("import sys, faceswap_cam.models.preprocessing.person, "
            "faceswap_cam.models.preprocessing.face; "
            "sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------------
# choosing the person


def test_largest_person_picks_the_biggest_person_above_threshold() -> None:
    boxes = np.array([
        [10, 10, 50, 90],      # person, 40x80 = 3200
        [100, 0, 300, 200],    # cat, bigger, not a person
        [60, 10, 120, 110],    # person, 60x100 = 6000 -> the one
        [0, 0, 320, 240],      # person, biggest of all, but under the threshold
        [-400, 0, 20, 100],    # person, 420x100 before clipping, 20x100 in the frame
    ], np.float32)
    scores = np.array([0.9, 0.99, 0.6, 0.3, 0.8])
    labels = np.array([0, 17, 0, 0, 0])
    best = largest_person(scores, labels, boxes, [0], threshold=0.5, frame_size=(320, 240))
    assert best == Box(60, 10, 120, 110)
    # Without the frame, the box reaching far outside would win on area.
    assert largest_person(scores, labels, boxes, [0], threshold=0.5) == Box(-400, 0, 20, 100)


def test_largest_person_none_cases() -> None:
    empty = np.zeros((0,))
    assert largest_person(empty, empty, np.zeros((0, 4)), [0], threshold=0.5) is None
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5, 20], [np.nan, 0, 4, 4]], np.float32)
    got = largest_person(np.array([0.9, 0.9, 0.9]), np.array([3, 0, 0]), boxes, [0],
                         threshold=0.5)
    assert got is None  # not a person / zero width / NaN


def test_person_label_ids() -> None:
    assert person_label_ids({0: "person", 1: "bicycle"}) == [0]
    assert person_label_ids({"3": "cat", "7": " Person "}) == [7]
    with pytest.raises(DetectorError, match="no 'person' class"):
        person_label_ids({0: "cat", 1: "dog"})


# ---------------------------------------------------------------------------------------------
# the detector, tiny and random


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """A model this small is all thread start-up and hand-over: on a busy two-core runner one
    forward took seconds with torch's default threads and milliseconds with one."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["v1", "v2"])
def tiny_detector_dir(request: pytest.FixtureRequest,
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    # Person as the only class: with random weights a second class can take every top
    # query, and which one wins is tested on hand-made detections instead.
    return save_tiny_rtdetr(tmp_path_factory.mktemp("rtdetr"), {0: "person"},
                            v2=request.param == "v2")


def test_detector_runs_batched_and_boxes_lie_in_each_frame(tiny_detector_dir: Path,
                                                           one_torch_thread: None) -> None:
    # Random weights score about 1/3: a zero threshold makes every frame yield a box, so
    # the boxes can be checked against each frame's own size.
    detector = PersonDetector(str(tiny_detector_dir), device="cpu", threshold=0.0)
    assert detector.person_ids == [0]
    rng = np.random.default_rng(0)
    sizes = [(160, 120), (200, 100), (90, 150)]  # (width, height), deliberately different
    frames = [rng.integers(0, 256, (h, w, 3), np.uint8) for w, h in sizes]
    found = detector.detect(frames)
    assert len(found) == 3
    for box, (w, h) in zip(found, sizes, strict=True):
        assert isinstance(box, Box)
        assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
    assert detector.detect([]) == []
    strict = PersonDetector(str(tiny_detector_dir), device="cpu", threshold=1.01)
    assert strict.detect(frames[:1]) == [None]


def test_detector_without_person_class_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    folder = save_tiny_rtdetr(tmp_path / "animals", {0: "cat", 1: "dog"})
    with pytest.raises(DetectorError, match="no 'person' class"):
        PersonDetector(str(folder), device="cpu")


def test_detector_missing_weights_say_so(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(DetectorError, match="not found locally"):
        PersonDetector(str(tmp_path / "nothing-here"), device="cpu")


# ---------------------------------------------------------------------------------------------
# face box: Wan-Animate's rule, by hand
#
# Face points spanning x 100..200 (w = 100) and y 50..130 (h = 80); sqrt(1.3) = 1.1401754:
#   dx = 100 * 0.1401754 / 2 = 7.008771   (each side)
#   dy =  80 * 0.1401754 / 4 = 2.803508   (3*dy = 8.410525 above, dy below)
#   Wan box = (92.991229, 41.589475, 207.008771, 132.803508), area 1.3 * 8000 = 10400
#   square: side sqrt(10400) = 101.980390, centre (150, 87.196492)


def test_face_box_wan_rectangle_matches_hand_numbers() -> None:
    points, scores = wholebody((100, 200), (50, 130))
    box = face_box(points, scores, (640, 480), square=False)
    assert box is not None
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx(
        (92.991229, 41.589475, 207.008771, 132.803508), abs=1e-5)
    assert box.area == pytest.approx(10400)


def test_face_box_square_matches_hand_numbers() -> None:
    points, scores = wholebody((100, 200), (50, 130))
    box = face_box(points, scores, (640, 480))
    assert box is not None
    assert box.width == pytest.approx(101.980390) and box.height == pytest.approx(101.980390)
    assert box.center == pytest.approx((150, 87.196492))
    wider = face_box(points, scores, (640, 480), area_scale=2.0)
    assert wider is not None and wider.area == pytest.approx(16000)


def test_face_box_is_moved_inside_the_frame_not_shrunk() -> None:
    # x -10..60, y 100..180: side sqrt(1.3 * 70 * 80) = 85.322916, centre x 25 -> moved right.
    points, scores = wholebody((-10, 60), (100, 180))
    box = face_box(points, scores, (640, 480))
    assert box is not None
    assert box.x0 == pytest.approx(0) and box.width == pytest.approx(85.322916)
    assert box.height == pytest.approx(85.322916)
    # Bottom-right corner too.
    points, scores = wholebody((600, 660), (430, 500))
    box = face_box(points, scores, (640, 480))
    assert box is not None
    assert (box.x1, box.y1) == pytest.approx((640, 480))
    # Wan's own rectangle is cut instead, as Wan does.
    points, scores = wholebody((-10, 60), (100, 180))
    wan = face_box(points, scores, (640, 480), square=False)
    assert wan is not None and wan.x0 == 0 and wan.x1 == pytest.approx(60 + 70 * (SQRT13 - 1) / 2)


def test_face_box_larger_than_the_frame_is_shrunk_to_it() -> None:
    points, scores = wholebody((-20, 120), (-20, 120))
    assert face_box(points, scores, (100, 100)) == Box(0, 0, 100, 100)


def test_face_box_ignores_low_score_points() -> None:
    points, scores = wholebody((100, 200), (50, 130))
    expected = face_box(points, scores, (640, 480))
    points[30] = (600, 450)  # a stray landmark (not one of the extremes) far from the face
    scores[30] = 0.1
    assert face_box(points, scores, (640, 480)) == expected
    # Trusting every point (scores=None, as Wan does) lets the stray one in.
    trusting = face_box(points, None, (640, 480))
    assert trusting is not None and expected is not None and trusting.area > 4 * expected.area


def test_face_box_none_without_enough_face() -> None:
    points, scores = wholebody((100, 200), (50, 130), face_score=0.05)
    assert face_box(points, scores, (640, 480)) is None
    scores[23:28] = 0.9  # five good points: fewer than min_points
    assert face_box(points, scores, (640, 480)) is None
    assert face_box(points, scores, (640, 480), min_points=5) is not None
    flat = points.copy()
    flat[23:91, 1] = 80.0  # all on one line: no height
    assert face_box(flat, None, (640, 480)) is None
    with pytest.raises(ValueError, match="133, 2"):
        face_box(points[:100], None, (640, 480))


# ---------------------------------------------------------------------------------------------
# steadying


def test_smoother_absorbs_jitter() -> None:
    smoother = BoxSmoother(alpha=0.5, dead_band=0.04, hold=3)
    first = Box(100, 100, 200, 200)
    assert smoother.update(first) == first
    for dx, dy, grow in [(2, -1, 0), (-3, 2, 2), (1, 3, -3), (-2, -2, 1)]:  # < 4 px of 100
        got = smoother.update(Box(100 + dx, 100 + dy, 200 + dx + grow, 200 + dy + grow))
        assert got == first


def test_smoother_follows_a_real_move_and_snaps_on_a_jump() -> None:
    smoother = BoxSmoother(alpha=0.5, dead_band=0.04, snap=1.0, hold=3)
    smoother.update(Box(100, 100, 200, 200))
    target = Box(130, 100, 230, 200)  # 30 px: a real move, not jitter
    got = smoother.update(target)
    assert got is not None and got.center == pytest.approx((165, 150))  # half-way
    for _ in range(10):
        got = smoother.update(target)
    assert got is not None and abs(got.center[0] - 180) <= 4 and got.width == 100
    far = Box(500, 300, 600, 400)  # beyond one box size: another place, taken at once
    assert smoother.update(far) == far


def test_smoother_holds_a_short_miss_then_lets_go() -> None:
    smoother = BoxSmoother(hold=3)
    box = Box(10, 10, 60, 60)
    smoother.update(box)
    assert [smoother.update(None) for _ in range(3)] == [box, box, box]
    assert smoother.update(None) is None
    moved = Box(300, 300, 350, 350)
    assert smoother.update(moved) == moved  # nothing stale carried over the gap
    smoother.reset()
    assert smoother.box is None
    assert smoother.update(box) == box


# ---------------------------------------------------------------------------------------------
# cropping


def test_crop_size_and_black_padding_at_the_edge() -> None:
    frame = np.full((100, 100, 3), 255, np.uint8)
    crop = FaceCropper().crop(frame, Box(-50, 0, 50, 100))
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    # 100 px -> 512: source columns 0..49 are the padding, 50..99 the frame.
    assert crop[:, :250].max() == 0 and crop[:, 262:].min() == 255
    assert FaceCropper().crop(frame, Box(200, 200, 260, 260)).max() == 0  # wholly outside
    assert FaceCropper(size=64).crop(frame, Box(0, 0, 30, 30)).shape == (64, 64, 3)
    assert FaceCropper().crop(frame, Box(0, 0, 30, 30), size=32).shape == (32, 32, 3)
    gray = np.full((40, 40), 7, np.uint8)  # other channel counts and a non-square box
    assert crop_resized(gray, Box(-10, 0, 30, 20), 8).shape == (8, 8)


def test_cropping_a_bgr_frame_then_turning_it_rgb_is_the_crop_of_the_rgb_frame() -> None:
    # WanPreprocessor turns only the crop to RGB, not the whole camera frame.
    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for box in (Box(10.4, 7.2, 90.9, 100.1), Box(-30, -12, 60, 70), Box(130, 90, 200, 150)):
        assert np.array_equal(cv2.cvtColor(crop_resized(bgr, box, 64), cv2.COLOR_BGR2RGB),
                              crop_resized(rgb, box, 64))


def test_cropper_steadies_holds_and_resets() -> None:
    frame = np.zeros((200, 200, 3), np.uint8)
    cropper = FaceCropper(size=16, smoother=BoxSmoother(hold=1))
    box = Box(50, 50, 150, 150)
    first = cropper(frame, box)
    assert first is not None and first.shape == (16, 16, 3)
    assert cropper.update(Box(52, 49, 152, 149)) == box
    assert cropper(frame, None) is not None
    assert cropper(frame, None) is None
    cropper.update(box)
    cropper.reset()
    assert cropper.smoother.box is None


# ---------------------------------------------------------------------------------------------
# real photographs (no learned weights involved)

# person-720p.jpg: the face's landmarks would span about x 580..750 (jaw), y 125..285
# (eyebrows to chin); the picture has black bars left of x 337 and right of x 943.
FACE_720P = ((580.0, 750.0), (125.0, 285.0))


@needs_shared_data
def test_face_crop_of_the_720p_photo() -> None:
    frame = rgb(SHARED_DATA / "person-720p.jpg")
    assert frame.shape == (720, 1280, 3)
    points, scores = wholebody(*FACE_720P)
    box = face_box(points, scores, (1280, 720))
    assert box is not None
    # side sqrt(1.3 * 170 * 160) = 188.042548, centre (665, 205 - 160 * 0.1401754 / 4)
    assert box.width == pytest.approx(188.042548)
    assert box.center == pytest.approx((665, 199.392983))
    crop = FaceCropper().crop(frame, box)
    assert crop.shape == (512, 512, 3)
    x0, y0, x1, y1 = box.as_int()
    expected = cv2.resize(frame[y0:y1, x0:x1], (512, 512), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(crop, expected)
    r, g, b = crop[156:356, 156:356].reshape(-1, 3).mean(axis=0)
    assert r > g > b and r > 150  # skin in the middle of the crop
    bar = FaceCropper().crop(frame, Box(50, 200, 250, 400))
    assert bar.max() < 10  # the black side bar really is black


@needs_shared_data
def test_face_crop_stays_still_under_landmark_jitter_and_follows_a_pan() -> None:
    frame = rgb(SHARED_DATA / "person-720p.jpg")
    rng = np.random.default_rng(1)
    cropper = FaceCropper(size=128)
    points, scores = wholebody(*FACE_720P)
    crops = []
    for _ in range(8):  # a still camera: landmarks wobble by up to 1.5 px
        noisy = points + rng.uniform(-1.5, 1.5, points.shape)
        crops.append(cropper(frame, face_box(noisy, scores, (1280, 720))))
    still = crops[0]
    assert still is not None
    assert all(c is not None and np.array_equal(c, still) for c in crops)

    # The camera pans 120 px left over 6 frames (the face moves right), then stops.
    for step in [*range(1, 7), *[6] * 8]:
        shift = 20.0 * step
        pan = np.array([[1, 0, shift], [0, 1, 0]], np.float32)
        moved = np.asarray(cv2.warpAffine(frame, pan, (1280, 720)))
        noisy = points + np.array([shift, 0.0]) + rng.uniform(-1.5, 1.5, points.shape)
        crop = cropper(moved, face_box(noisy, scores, (1280, 720)))
    assert crop is not None
    steady = cropper.smoother.box
    assert steady is not None
    # Followed to within the dead band (3% of the side) of where the face now is.
    assert abs(steady.center[0] - (665 + 120)) <= 0.03 * steady.width + 1.5
    unfollowed = FaceCropper(size=128).crop(moved, Box.from_center(665, 199.4, 188, 188))

    def off(a: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - still.astype(np.int16)).mean())

    assert off(crop) < off(unfollowed) / 2


@needs_shared_data
def test_tall_reference_portrait() -> None:
    frame = rgb(SHARED_DATA / "reference-portrait.jpg")
    assert frame.shape == (2204, 970, 3)
    # The face's landmarks would span about x 430..700, y 290..560.
    points, scores = wholebody((430, 700), (290, 560))
    box = face_box(points, scores, (970, 2204))
    assert box is not None
    crop = FaceCropper().crop(frame, box)
    r, g, b = crop[156:356, 156:356].reshape(-1, 3).mean(axis=0)
    assert r > g > b and r > 120
    # The same face drawn 300 px higher would leave the top: the box is moved down
    # instead, whole, and the crop has no black in it.
    high = face_box(points - (0, 300), scores, (970, 2204))
    assert high is not None and high.y0 == 0 and high.width == pytest.approx(box.width)
    assert FaceCropper().crop(frame, high)[:8].max() > 0
    # A box that does leave the top gets black rows above the picture.
    over = FaceCropper().crop(frame, Box(300, -100, 700, 300))
    assert over[:120].max() == 0 and over[140:].mean() > 30

