"""Whole-body pose: the tiny random ViTPose loads and runs through the real loading code, heatmaps
decode to the right frame pixels, and skeletons are drawn the way Wan-Animate draws them."""

from __future__ import annotations

import colorsys
import importlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from faceswap_cam.models.preprocessing.pose import (
    FACE,
    LEFT_HAND,
    NUM_KEYPOINTS,
    RIGHT_HAND,
    WAN_BODY_COLOURS,
    WAN_HAND_COLOURS,
    WAN_HAND_EDGES,
    WAN_HAND_POINT_COLOUR,
    WAN_LIMB_COLOURS,
    Keypoints,
    PoseModelError,
    WholeBodyPoseEstimator,
    convert_mmpose_checkpoint,
    decode_heatmaps,
    draw_skeleton,
    stick_widths,
    wan_body,
)
from tests.shared_data import SHARED_DATA, needs_shared_data
from tests.tiny_preprocessing import (
    VITPOSE_INPUT_H,
    VITPOSE_INPUT_W,
    save_tiny_vitpose,
    tiny_vitpose_config,
)

INPUT_H, INPUT_W = VITPOSE_INPUT_H, VITPOSE_INPUT_W  # the tiny model's crop
BLACK = (0, 0, 0)


@pytest.fixture(scope="module")
def estimator(tmp_path_factory: pytest.TempPathFactory) -> WholeBodyPoseEstimator:
    folder = save_tiny_vitpose(tmp_path_factory.mktemp("pose") / "tiny-vitpose-wholebody", 133)
    return WholeBodyPoseEstimator(folder, device="cpu")


def _frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(count)]


def _roi(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The crop region by hand: the box grown to 48:64 (3:4), then by 1.25; (x0, y0, x1, y1)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    w, h = max(w, h * 0.75), max(h, w / 0.75)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - w * 0.625, cy - h * 0.625, cx + w * 0.625, cy + h * 0.625


# --- estimation -------------------------------------------------------------------------------


def test_estimates_133_keypoints_per_box_in_one_batch(estimator: WholeBodyPoseEstimator) -> None:
    boxes: list[tuple[float, float, float, float] | None] = [
        (40, 20, 88, 84), None, (10, 30, 150, 110)]
    results = estimator.estimate(_frames(3), boxes)
    assert results[1] is None
    for result, box in ((results[0], boxes[0]), (results[2], boxes[2])):
        assert result is not None and box is not None
        assert result.xy.shape == (NUM_KEYPOINTS, 2) and result.xy.dtype == np.float32
        assert result.scores.shape == (NUM_KEYPOINTS,) and result.scores.dtype == np.float32
        assert np.isfinite(result.xy).all() and np.isfinite(result.scores).all()
        x0, y0, x1, y1 = _roi(box)
        cell_w, cell_h = (x1 - x0) / 11, (y1 - y0) / 15  # sub-pixel steps stay within a cell
        assert (result.xy[:, 0] >= x0 - cell_w).all() and (result.xy[:, 0] <= x1 + cell_w).all()
        assert (result.xy[:, 1] >= y0 - cell_h).all() and (result.xy[:, 1] <= y1 + cell_h).all()


def test_empty_and_missing_boxes_give_none(estimator: WholeBodyPoseEstimator) -> None:
    assert estimator.estimate(_frames(2), [None, (50, 50, 50, 90)]) == [None, None]
    assert estimator.estimate([], []) == []
    with pytest.raises(ValueError, match="2 frames but 1 boxes"):
        estimator.estimate(_frames(2), [None])


def test_heatmap_peaks_map_back_to_frame_pixels(estimator: WholeBodyPoseEstimator,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A peak at heatmap cell (3, 7) of keypoint k must land at the frame pixel that cell
    covers: the ROI's left/top edge plus 3/11 (7/15) of its width (height)."""
    import torch

    class PeakModel:
        def __call__(self, pixel_values: Any, **_: Any) -> Any:
            maps = torch.zeros(pixel_values.shape[0], NUM_KEYPOINTS, 16, 12)
            ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
            maps[:] = torch.exp(-((xs - 3) ** 2 + (ys - 7) ** 2) / (2 * 1.5**2))
            return type("Out", (), {"heatmaps": maps})()

    monkeypatch.setattr(estimator, "model", PeakModel())
    box = (40.0, 20.0, 88.0, 84.0)
    result = estimator.estimate(_frames(1), [box])[0]
    assert result is not None
    x0, y0, x1, y1 = _roi(box)
    expected = (x0 + 3 * (x1 - x0) / 11, y0 + 7 * (y1 - y0) / 15)
    np.testing.assert_allclose(result.xy, np.tile(expected, (NUM_KEYPOINTS, 1)), atol=0.05)
    np.testing.assert_allclose(result.scores, 1.0, atol=1e-5)


def test_decode_refines_to_sub_pixel_peaks() -> None:
    import torch

    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    peaks = [(10.3, 20.7), (30.5, 5.25), (2.2, 60.6)]
    maps = torch.stack([torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2)) * 0.9
                        for x, y in peaks]).unsqueeze(0)
    coords, scores = decode_heatmaps(maps)
    assert coords.shape == (1, 3, 2) and scores.shape == (1, 3)
    np.testing.assert_allclose(coords[0].numpy(), np.array(peaks), atol=0.1)
    assert (scores > 0.8).all()
    flat, _ = decode_heatmaps(torch.zeros(1, 2, 16, 12))  # no peak: argmax, no wild step
    assert torch.isfinite(flat).all()


def test_crop_shows_the_box_upright_in_rgb(estimator: WholeBodyPoseEstimator) -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[30:40, 50:60] = (255, 0, 0)  # a red square near the box's top-left
    roi = estimator._roi((40, 20, 88, 84))
    assert roi is not None
    crop = estimator._crop(frame, roi)
    assert crop.shape == (INPUT_H, INPUT_W, 3)
    red = np.argwhere(crop[..., 0] > 128)
    x0, y0, x1, y1 = _roi((40, 20, 88, 84))
    centre = ((55 - x0) * (INPUT_W - 1) / (x1 - x0), (35 - y0) * (INPUT_H - 1) / (y1 - y0))
    assert abs(red[:, 1].mean() - centre[0]) < 1 and abs(red[:, 0].mean() - centre[1]) < 1
    assert crop[..., 1:].max() == 0


def test_a_17_keypoint_checkpoint_is_refused_with_the_fix(tmp_path: Path) -> None:
    folder = save_tiny_vitpose(tmp_path / "vitpose-coco", 17)
    with pytest.raises(PoseModelError, match="gives 17 keypoints, Wan-Animate needs 133") as err:
        WholeBodyPoseEstimator(folder)
    assert "convert_mmpose_checkpoint" in str(err.value)
    with pytest.raises(PoseModelError, match="convert it once"):
        WholeBodyPoseEstimator(tmp_path / "vitpose-h-wholebody.pth")


def test_mixture_of_experts_checkpoint_runs_the_wholebody_expert(tmp_path: Path) -> None:
    estimator = WholeBodyPoseEstimator(save_tiny_vitpose(tmp_path / "vitpose-plus", 133, experts=6))
    assert estimator.dataset_index == 5
    (result,) = estimator.estimate(_frames(1), [(40, 20, 88, 84)])
    assert result is not None and result.xy.shape == (NUM_KEYPOINTS, 2)


def test_mmpose_checkpoint_converts_to_an_equivalent_model(tmp_path: Path) -> None:
    import torch

    transformers: Any = importlib.import_module("transformers")
    torch.manual_seed(1)
    reference = transformers.VitPoseForPoseEstimation(tiny_vitpose_config(133, simple=False)).eval()
    # The same weights under mmpose's names (ViTPose's vit.py / TopdownHeatmapSimpleHead).
    ours = reference.state_dict()
    mmpose: dict[str, Any] = {"backbone.cls_token": torch.zeros(1, 1, 32)}
    names = {"backbone.embeddings.position_embeddings": "backbone.pos_embed",
             "backbone.embeddings.patch_embeddings.projection.": "backbone.patch_embed.proj.",
             "backbone.layernorm.": "backbone.last_norm.", "head.deconv1.":
             "keypoint_head.deconv_layers.0.", "head.batchnorm1.": "keypoint_head.deconv_layers.1.",
             "head.deconv2.": "keypoint_head.deconv_layers.3.", "head.batchnorm2.":
             "keypoint_head.deconv_layers.4.", "head.conv.": "keypoint_head.final_layer."}
    for key, value in ours.items():
        for new, old in names.items():
            if key.startswith(new):
                mmpose[old + key.removeprefix(new)] = value
    for layer in range(2):
        ours_prefix, old = f"backbone.encoder.layer.{layer}.", f"backbone.blocks.{layer}."
        for kind in ("weight", "bias"):
            mmpose[f"{old}attn.qkv.{kind}"] = torch.cat(
                [ours[f"{ours_prefix}attention.attention.{p}.{kind}"]
                 for p in ("query", "key", "value")])
            mmpose[f"{old}attn.proj.{kind}"] = ours[f"{ours_prefix}attention.output.dense.{kind}"]
            mmpose[f"{old}norm1.{kind}"] = ours[f"{ours_prefix}layernorm_before.{kind}"]
            mmpose[f"{old}norm2.{kind}"] = ours[f"{ours_prefix}layernorm_after.{kind}"]
            for fc in ("fc1", "fc2"):
                mmpose[f"{old}mlp.{fc}.{kind}"] = ours[f"{ours_prefix}mlp.{fc}.{kind}"]
    torch.save({"state_dict": mmpose, "meta": {"epoch": 210}}, tmp_path / "wholebody.pth")

    folder = convert_mmpose_checkpoint(tmp_path / "wholebody.pth", tmp_path / "converted",
                                       image_size=(INPUT_H, INPUT_W), num_attention_heads=2)
    estimator = WholeBodyPoseEstimator(folder)
    pixels = torch.randn(2, 3, INPUT_H, INPUT_W)
    with torch.inference_mode():
        expected = reference(pixel_values=pixels).heatmaps
        got = estimator.model(pixel_values=pixels).heatmaps
    torch.testing.assert_close(got, expected)


# --- drawing ----------------------------------------------------------------------------------


def _keypoints(points: dict[int, tuple[float, float]], score: float = 0.9) -> Keypoints:
    xy = np.zeros((NUM_KEYPOINTS, 2), np.float32)
    scores = np.zeros(NUM_KEYPOINTS, np.float32)
    for index, (x, y) in points.items():
        xy[index] = (x, y)
        scores[index] = score
    return Keypoints(xy, scores)


def _rgb(image: np.ndarray, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image[y, x])


SHOULDERS = {6: (500.0, 300.0), 5: (700.0, 300.0)}  # COCO: 5 left, 6 right shoulder


def test_keypoints_validate_and_expose_coco_wholebody_parts() -> None:
    kp = _keypoints({0: (1, 2), 23: (3, 4), 91: (5, 6), 132: (7, 8)})
    assert kp.body.shape == (17, 3) and kp.feet.shape == (6, 3) and kp.face.shape == (68, 3)
    assert kp.left_hand.shape == (21, 3) and kp.right_hand.shape == (21, 3)
    assert tuple(kp.face[0]) == (3, 4, pytest.approx(0.9))
    assert tuple(kp.left_hand[0, :2]) == (5, 6) and tuple(kp.right_hand[-1, :2]) == (7, 8)
    assert (kp.part(FACE) == kp.face).all()
    assert (LEFT_HAND.start, RIGHT_HAND.stop) == (91, 133)
    np.testing.assert_allclose(kp.scaled(2, 0.5).xy[0], (2, 1))
    with pytest.raises(ValueError, match="133"):
        Keypoints(np.zeros((17, 2)), np.zeros(17))


def test_wan_body_folds_coco_into_openpose_order() -> None:
    kp = _keypoints({0: (10, 10), 5: (700, 300), 6: (500, 300), 17: (100, 900), 18: (120, 900)})
    kp.scores[6] = 0.4
    body = wan_body(kp)
    assert body.shape == (20, 3)
    np.testing.assert_allclose(body[1], (600, 300, 0.65), atol=1e-6)  # neck: mid-shoulders
    np.testing.assert_allclose(body[2, :2], (500, 300))  # right shoulder is COCO 6
    np.testing.assert_allclose(body[5, :2], (700, 300))  # left shoulder is COCO 5
    np.testing.assert_allclose(body[18, :2], (110, 900))  # left toe: big and small toe


def test_neck_to_shoulder_limbs_have_wans_colours() -> None:
    image = draw_skeleton(_keypoints(SHOULDERS), (1280, 720))
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
    assert _rgb(image, 550, 300) == (153, 0, 0)  # neck - right shoulder: (255, 0, 0) * 0.6
    assert _rgb(image, 650, 300) == (153, 51, 0)  # neck - left shoulder: (255, 85, 0) * 0.6
    assert _rgb(image, 600, 300) == WAN_BODY_COLOURS[1]  # neck joint
    assert _rgb(image, 500, 300) == WAN_BODY_COLOURS[2]  # right shoulder joint
    assert _rgb(image, 700, 300) == WAN_BODY_COLOURS[5]  # left shoulder joint
    assert _rgb(image, 550, 305) == BLACK  # 2 px thick at 720p
    assert _rgb(image, 100, 600) == BLACK
    painted = image[image.any(axis=2)]  # a few thousand pixels: cheap to list
    colours = {tuple(int(v) for v in c) for c in np.unique(painted, axis=0)}
    assert colours == {(153, 0, 0), (153, 51, 0), *WAN_BODY_COLOURS[1:3], WAN_BODY_COLOURS[5]}


def test_head_and_arm_limbs_in_order() -> None:
    points = {**SHOULDERS, 0: (600.0, 150.0), 8: (500.0, 450.0), 2: (560.0, 130.0)}
    image = draw_skeleton(_keypoints(points), (1280, 720))
    assert _rgb(image, 600, 225) == (0, 0, 153)  # neck - nose: limb 12, (0, 0, 255) * 0.6
    assert _rgb(image, 500, 375) == (153, 102, 0)  # right upper arm: limb 2
    assert _rgb(image, 580, 140) == (51, 0, 153)  # nose - right eye (COCO 2): limb 13
    no_head = draw_skeleton(_keypoints(points), (1280, 720), draw_head=False)
    assert _rgb(no_head, 600, 225) == BLACK and _rgb(no_head, 580, 140) == BLACK
    assert _rgb(no_head, 500, 375) == (153, 102, 0)


def test_points_below_the_threshold_are_not_drawn() -> None:
    assert not draw_skeleton(_keypoints(SHOULDERS, score=0.49), (1280, 720)).any()
    kp = _keypoints(SHOULDERS)
    kp.scores[6] = 0.3  # right shoulder gone; the neck (mean 0.6) stays
    image = draw_skeleton(kp, (1280, 720))
    assert _rgb(image, 550, 300) == BLACK and _rgb(image, 500, 300) == BLACK
    assert _rgb(image, 650, 300) == (153, 51, 0)
    assert not draw_skeleton(_keypoints(SHOULDERS), (1280, 720), score_threshold=0.95).any()
    assert not draw_skeleton(None, (64, 32)).any()
    assert draw_skeleton(None, (64, 32)).shape == (32, 64, 3)


def test_hands_use_the_rainbow_bones_and_blue_joints() -> None:
    hand = {91: (300.0, 500.0), 92: (340.0, 500.0), 96: (300.0, 560.0)}  # wrist, thumb, index
    image = draw_skeleton(_keypoints(hand), (1280, 720))
    assert _rgb(image, 320, 500) == WAN_HAND_COLOURS[0]  # wrist - thumb 1
    assert _rgb(image, 300, 530) == WAN_HAND_COLOURS[4]  # wrist - index 1
    assert _rgb(image, 340, 500) == WAN_HAND_POINT_COLOUR
    assert not draw_skeleton(_keypoints(hand), (1280, 720), draw_hands=False).any()
    # Wan skips hand points on row/column 0 (its marker for "missing").
    edge = draw_skeleton(_keypoints({112: (0.0, 50.0), 113: (40.0, 50.0)}), (1280, 720))
    assert _rgb(edge, 20, 50) == BLACK and _rgb(edge, 40, 50) == WAN_HAND_POINT_COLOUR


def test_colour_tables_match_wans_formulas() -> None:
    assert WAN_HAND_EDGES == (
        (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
        (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19),
        (19, 20))
    for index, colour in enumerate(WAN_HAND_COLOURS):
        # matplotlib's hsv_to_rgb(i / 20, 1, 1) * 255, as cv2 rounds a float colour.
        rgb = np.array(colorsys.hsv_to_rgb(index / 20.0, 1.0, 1.0)) * 255
        pixel = np.zeros((1, 3, 3), np.uint8)
        cv2.line(pixel, (0, 0), (2, 0), rgb.tolist(), 1)
        assert _rgb(pixel, 1, 0) == colour
    assert WAN_LIMB_COLOURS[0] == (153, 0, 0) and WAN_LIMB_COLOURS[-1] == (120, 120, 0)
    assert len(WAN_LIMB_COLOURS) == 19 and len(WAN_BODY_COLOURS) == 20


def test_line_widths_scale_with_the_short_side() -> None:
    assert stick_widths((1280, 720)) == (2, 1)
    assert stick_widths((720, 1280)) == (2, 1)
    assert stick_widths((3840, 2160)) == (9, 4)
    assert stick_widths((256, 256)) == (1, 1)
    small = draw_skeleton(_keypoints(SHOULDERS), (1280, 720))
    big = draw_skeleton(_keypoints(SHOULDERS).scaled(3, 3), (3840, 2160))
    thickness_small = int((small[:, 550] != 0).any(axis=1).sum())
    thickness_big = int((big[:, 1650] != 0).any(axis=1).sum())
    assert thickness_small == 5 and thickness_big == 19  # 2 * width + 1


# --- the real photos --------------------------------------------------------------------------


def _upper_body(width: int, height: int) -> Keypoints:
    """A hand-placed, centred head-and-torso pose in a width x height frame."""
    def at(fx: float, fy: float) -> tuple[float, float]:
        return fx * width, fy * height

    points = {0: at(0.50, 0.30), 1: at(0.53, 0.27), 2: at(0.47, 0.27), 3: at(0.56, 0.29),
              4: at(0.44, 0.29), 5: at(0.62, 0.55), 6: at(0.38, 0.55), 7: at(0.66, 0.80),
              8: at(0.34, 0.80), 11: at(0.58, 0.98), 12: at(0.42, 0.98)}
    return _keypoints(points)


@needs_shared_data
@pytest.mark.parametrize("name", ["person-720p.jpg", "reference-portrait.jpg"])
def test_skeleton_for_a_real_photo_has_its_size(name: str) -> None:
    photo = cv2.imread(str(SHARED_DATA / name))
    assert photo is not None
    height, width = photo.shape[:2]
    image = draw_skeleton(_upper_body(width, height), (width, height))
    assert image.shape == photo.shape and image.dtype == np.uint8
    neck = wan_body(_upper_body(width, height))[1]
    nose = _upper_body(width, height).xy[0]
    mid = (int((neck[0] + nose[0]) / 2), int((neck[1] + nose[1]) / 2))
    assert _rgb(image, *mid) == (0, 0, 153)  # neck - nose
    assert _rgb(image, 5, 5) == BLACK
    body_width = stick_widths((width, height))[0]
    assert (image.any(axis=2).mean()) < 0.02 * max(body_width, 1)  # thin lines on black


@needs_shared_data
def test_crop_of_the_real_photo_is_the_padded_box(estimator: WholeBodyPoseEstimator) -> None:
    bgr = cv2.imread(str(SHARED_DATA / "person-720p.jpg"))
    assert bgr is not None
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    box = (500.0, 160.0, 780.0, 600.0)  # well inside the frame once padded
    roi = estimator._roi(box)
    assert roi is not None
    crop = estimator._crop(photo, roi)
    x0, y0, x1, y1 = (round(v) for v in _roi(box))
    assert min(x0, y0) >= 0 and x1 <= 1280 and y1 <= 720
    resized = cv2.resize(photo[y0:y1, x0:x1], (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - resized.astype(int)).mean() < 12
