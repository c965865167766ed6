"""The live person mask (SAM2 streaming session) and compositing the generated person back.

SAM2 runs as a tiny random-weight model built from a config, saved and loaded through the
real loading code: the masks mean nothing, but the session plumbing, shapes and memory are real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from faceswap_cam.models.preprocessing.segmentation import (
    WAN_DILATE_PX,
    Prompt,
    blockify,
    dilate,
    feather,
    prompt_from_keypoints,
    wan_mask,
)
from faceswap_cam.models.wan.compositing import background, composite, match_colour
from tests.shared_data import SHARED_DATA, needs_shared_data
from tests.tiny_preprocessing import save_tiny_sam2

FRAME_H, FRAME_W = 48, 80


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models spend their time syncing threads, and on a busy CI box that waiting
    dominates (seconds per frame instead of milliseconds): run them on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sam2_present(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sam2(tmp_path_factory.mktemp("sam2") / "present", object_score=10.0)


@pytest.fixture(scope="module")
def sam2_absent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sam2(tmp_path_factory.mktemp("sam2") / "absent", object_score=-10.0)


def _frames(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8) for _ in range(count)]


def _prompt() -> Prompt:
    return Prompt(points=np.array([[40.0, 12.0], [38.0, 30.0]]), labels=np.array([1, 1]))


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _current(masker: Any) -> Any:
    """The masker's session, read afresh (past narrowing of ``masker.session``)."""
    return masker.session


def _check_masks(masks: list[np.ndarray], count: int) -> None:
    assert len(masks) == count
    for mask in masks:
        assert mask.shape == (FRAME_H, FRAME_W)
        assert mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}


# --- SAM2 streaming session ------------------------------------------------------------------


def test_streaming_session_carries_memory_across_batches(
    sam2_present: Path, tmp_path: Path
) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    masker = PersonMasker(sam2_present, device="cpu", dtype="fp32")
    before, cwd_before = _listing(tmp_path), set(os.listdir(Path.cwd()))

    first = masker.masks(_frames(3, 1), [_prompt(), None, None])
    _check_masks(first, 3)
    session = masker.session
    assert session is not None
    assert masker.frames_in_session == 3

    for batch, seed in ((2, 2), (3, 3)):
        _check_masks(masker.masks(_frames(3, seed)), 3)
        assert masker.session is session  # the same streaming session, memory carried on
        assert masker.frames_in_session == 3 * batch

    outputs = session.output_dict_per_obj[0]
    assert list(outputs["cond_frame_outputs"]) == [0]  # the prompted frame conditions the rest
    tracked = outputs["non_cond_frame_outputs"]
    assert sorted(tracked) == list(range(1, 9))
    assert all("maskmem_features" in tracked[i] for i in tracked)
    # Only the frame being segmented is kept as pixels; the rest lives on as memory.
    assert list(session.processed_frames) == [8]

    masker.reset()
    assert masker.frames_in_session == 0
    assert masker.session is None
    _check_masks(masker.masks(_frames(1, 4), [_prompt()]), 1)
    assert _current(masker) not in (None, session)
    assert masker.frames_in_session == 1

    assert _listing(tmp_path) == before  # nothing written: no frame ever goes to disk
    assert set(os.listdir(Path.cwd())) == cwd_before


def _encoder_calls(masker: Any) -> list[int]:
    """The batch size of each call of the masker's SAM2 image encoder, as it happens."""
    calls: list[int] = []
    masker._model.vision_encoder.register_forward_hook(
        lambda _module, args, _output: calls.append(int(args[0].shape[0])))
    return calls


def test_a_batch_is_encoded_in_one_call_with_the_masks_of_frame_by_frame(
        sam2_present: Path) -> None:
    """The batched image encoding changes nothing SAM2 tracks: the masks equal those of
    transformers' own frame-by-frame encoding, across batches, a refresh prompt, frames before
    the track starts and a restarted track."""
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    together = PersonMasker(sam2_present, device="cpu", dtype="fp32", refresh_every=3,
                            encode_together=True)
    one_by_one = PersonMasker(sam2_present, device="cpu", dtype="fp32", refresh_every=3,
                              encode_together=False)
    batched_calls, single_calls = _encoder_calls(together), _encoder_calls(one_by_one)
    batches = [
        (_frames(4, 20), [None, _prompt(), None, None]),  # the track starts at frame 1
        (_frames(4, 21), [None, None, _prompt(), None]),  # a refresh mid-batch
        (_frames(3, 22), None),
    ]
    for frames, prompts in batches:
        expected = one_by_one.masks(frames, prompts)
        got = together.masks(frames, prompts)
        assert [m.tobytes() for m in got] == [m.tobytes() for m in expected]
    # Frame 0 of the first batch is before any track: encoded by neither.
    assert single_calls == [1] * 10
    assert batched_calls == [3, 4, 3]
    together.reset()
    one_by_one.reset()
    frames = _frames(2, 23)
    assert [m.tobytes() for m in together.masks(frames, [_prompt(), None])] == \
        [m.tobytes() for m in one_by_one.masks(frames, [_prompt(), None])]
    assert batched_calls[-1] == 2
    # Batched only on CUDA by default: on a CPU it measured slower.
    assert PersonMasker(sam2_present, device="cpu", dtype="fp32").encode_together is False


def _features_read(masker: Any) -> list[Any]:
    """The image features each of the masker's tracker steps reads, as it reads them."""
    read: list[Any] = []
    model = masker._model
    prepare = model._prepare_vision_features

    def recorded(*args: Any, **kwargs: Any) -> Any:
        features = prepare(*args, **kwargs)
        read.append(features[0][-1].clone())  # the coarsest level, the tracker's input
        return features

    model._prepare_vision_features = recorded
    return read


def test_batched_encoding_survives_a_track_lost_and_restarted_mid_batch(
        sam2_absent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tracker step reads its own frame's features, through a restarted session and
    across encoder calls (two frames to a call here)."""
    import torch

    from faceswap_cam.models.preprocessing import segmentation
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    monkeypatch.setattr(segmentation, "ENCODE_CHUNK", 2)
    maskers = [PersonMasker(sam2_absent, device="cpu", dtype="fp32", lost_after=2,
                            encode_together=together) for together in (True, False)]
    read = [_features_read(m) for m in maskers]
    calls = _encoder_calls(maskers[0])
    frames = _frames(5, 24)
    prompts = [_prompt(), None, None, _prompt(), None]  # lost after 2, restarted at frame 3
    results = [m.masks(frames, prompts) for m in maskers]
    assert [m.tobytes() for m in results[0]] == [m.tobytes() for m in results[1]]
    assert all(m.frames_in_session == 2 for m in maskers)  # frames 3 and 4, a new session
    assert calls == [2, 2, 1]
    # Every step of the five frames (transformers reads them twice: tracking, memory).
    assert len(read[0]) == len(read[1]) == 10
    for together, alone in zip(*read, strict=True):
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    # Different frames' features differ: a step reading a neighbour's would be caught.
    assert not torch.allclose(read[1][0], read[1][-1])


def test_no_prompt_before_a_track_gives_empty_masks(sam2_present: Path) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    masker = PersonMasker(sam2_present, device="cpu", dtype="fp32")
    masks = masker.masks(_frames(2, 5))
    _check_masks(masks, 2)
    assert all(not m.any() for m in masks)
    assert masker.session is None  # nothing to track, SAM2 not even run
    masker.masks(_frames(2, 6), [None, _prompt()])
    assert masker.frames_in_session == 1  # the track starts at the prompted frame


def test_prompts_refresh_and_old_conditioning_frames_are_dropped(sam2_present: Path) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    masker = PersonMasker(sam2_present, device="cpu", dtype="fp32", refresh_every=2,
                          max_cond_frames=2, lost_after=None)
    masker.masks(_frames(8, 7), [_prompt()] * 8)
    session = masker.session
    # Prompted every 2nd frame (0, 2, 4, 6); only the newest 2 conditioning frames are kept.
    assert sorted(session.output_dict_per_obj[0]["cond_frame_outputs"]) == [4, 6]
    assert sorted(session.point_inputs_per_obj[0]) == [4, 6]
    assert masker.frames_in_session == 8


def test_memory_older_than_the_window_is_dropped(sam2_present: Path) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    masker = PersonMasker(sam2_present, device="cpu", dtype="fp32")
    config = masker._model.config
    window = max(config.num_maskmem, config.max_object_pointers_in_encoder)
    frames = _frames(1, 8) * (window + 4)
    masker.masks(frames, [_prompt()] + [None] * (len(frames) - 1))
    last = len(frames) - 1
    tracked = masker.session.output_dict_per_obj[0]["non_cond_frame_outputs"]
    assert min(tracked) == last - window and max(tracked) == last


def test_lost_track_restarts_the_session_with_the_next_prompt(sam2_absent: Path) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    masker = PersonMasker(sam2_absent, device="cpu", dtype="fp32", lost_after=2)
    masks = masker.masks(_frames(2, 9), [_prompt(), None])
    assert all(not m.any() for m in masks)  # SAM2 says nobody is there
    first = masker.session
    masker.masks(_frames(1, 10), [None])  # lost, but nothing to restart with: keep tracking
    assert masker.session is first
    masker.masks(_frames(1, 11), [_prompt()])
    assert masker.session is not first and masker.frames_in_session == 1


def test_frame_size_change_restarts_the_track(sam2_present: Path) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker

    masker = PersonMasker(sam2_present, device="cpu", dtype="fp32")
    masker.masks(_frames(2, 12), [_prompt(), None])
    first = masker.session
    bigger = np.zeros((FRAME_H * 2, FRAME_W * 2, 3), np.uint8)
    assert not masker.masks([bigger])[0].any()  # a new video: no track until a prompt
    assert masker.session is None and first is not None


def test_missing_weights_name_the_model(tmp_path: Path) -> None:
    from faceswap_cam.models.preprocessing.segmentation import PersonMasker
    from faceswap_cam.models.weights import WeightsError

    with pytest.raises(WeightsError, match="SAM2"):
        PersonMasker(tmp_path / "nowhere", device="cpu", dtype="fp32")


# --- keypoint prompts ------------------------------------------------------------------------


def _wholebody() -> tuple[np.ndarray, np.ndarray]:
    xy = np.zeros((133, 2), np.float32)
    scores = np.zeros(133, np.float32)
    named = {0: (100, 50), 5: (130, 90), 6: (70, 90), 11: (120, 200), 12: (80, 200),
             15: (120, 380), 16: (80, 380)}
    for index, point in named.items():
        xy[index] = point
        scores[index] = 0.9
    return xy, scores


def test_prompt_from_keypoints_uses_wans_body_points() -> None:
    xy, scores = _wholebody()
    prompt = prompt_from_keypoints(xy, scores, threshold=0.5)
    assert prompt is not None and prompt.points is not None and prompt.labels is not None
    expected = [(100, 50), (100, 90), (70, 90), (130, 90), (80, 200), (120, 200), (80, 380),
                (120, 380)]  # nose, neck, R/L shoulder, R/L hip, R/L ankle
    np.testing.assert_array_equal(prompt.points, np.array(expected, np.float32))
    np.testing.assert_array_equal(prompt.labels, np.ones(8))
    assert prompt.box is None


def test_prompt_from_keypoints_thresholds() -> None:
    xy, scores = _wholebody()
    scores[[15, 16]] = 0.2  # ankles out of view: a webcam's usual case
    scores[5] = 0.4  # one shoulder unsure: the neck averages 0.65
    prompt = prompt_from_keypoints(xy, scores, threshold=0.5)
    assert prompt is not None and prompt.points is not None
    assert [tuple(p) for p in prompt.points] == [(100, 50), (100, 90), (70, 90), (80, 200),
                                                 (120, 200)]
    assert prompt_from_keypoints(xy, scores, threshold=0.95) is None
    assert prompt_from_keypoints(xy, np.zeros(133, np.float32), threshold=0.5) is None
    in_frame = prompt_from_keypoints(xy, np.full(133, 0.9, np.float32), threshold=0.5,
                                     frame_size=(200, 300))
    assert in_frame is not None and in_frame.points is not None
    assert len(in_frame.points) == 6  # the ankles at y=380 are below a 300-high frame
    with pytest.raises(ValueError):
        prompt_from_keypoints(xy[:17], scores[:17], threshold=0.5)


def test_prompt_validation() -> None:
    with pytest.raises(ValueError):
        Prompt()
    with pytest.raises(ValueError):
        Prompt(points=np.zeros((2, 2)), labels=np.ones(3))
    with pytest.raises(ValueError):
        Prompt(points=np.zeros((1, 2)), labels=np.array([2]))
    with pytest.raises(ValueError):
        Prompt(box=(10, 10, 5, 20))
    assert Prompt(box=(1, 2, 3, 4)).box == (1.0, 2.0, 3.0, 4.0)


# --- mask geometry ---------------------------------------------------------------------------


def _square(size: int = 64, lo: int = 20, hi: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


@pytest.mark.parametrize("k", [0, 1, 4, 9])
def test_dilate_grows_a_square_by_exactly_k(k: int) -> None:
    grown = dilate(_square(), k)
    assert grown.dtype == np.uint8 and set(np.unique(grown).tolist()) == {0, 255}
    np.testing.assert_array_equal(grown, _square(lo=20 - k, hi=40 + k))


def test_wan_dilation_matches_its_kernel_and_iterations() -> None:
    mask = np.zeros((80, 80), np.uint8)
    mask[30:50, 35:45] = 1
    cv2.circle(mask, (20, 20), 6, 1, -1)
    wan = cv2.dilate(mask, np.ones((7, 7), np.uint8), iterations=3)  # Wan's k=7, iterations=3
    np.testing.assert_array_equal(dilate(mask, WAN_DILATE_PX) > 0, wan > 0)


def test_blockify_and_wan_mask() -> None:
    mask = np.zeros((60, 60), np.uint8)
    mask[10, 10] = 255
    mask[40, 30] = 255
    box = blockify(mask)
    assert (box[10:41, 10:31] == 255).all() and box.sum() == 255 * 31 * 21
    cells = blockify(mask, (2, 2))
    assert cells[10, 10] == 255 and cells[40, 30] == 255 and cells[10, 30] == 0
    assert not blockify(np.zeros((8, 8), np.uint8)).any()
    full = wan_mask(mask)
    assert (full[10 - WAN_DILATE_PX:41 + WAN_DILATE_PX, 10 - WAN_DILATE_PX:31 + WAN_DILATE_PX]
            == 255).all()


def test_feather_ramps_inward_only() -> None:
    alpha = feather(_square(), 4)
    assert alpha.dtype == np.float32 and alpha.min() == 0.0 and alpha.max() == 1.0
    row = alpha[30]
    np.testing.assert_array_equal(row[:20], 0.0)  # outside: untouched
    np.testing.assert_allclose(row[20:25], [0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(row[35:40], [1.0, 1.0, 0.75, 0.5, 0.25])
    np.testing.assert_array_equal(row[40:], 0.0)
    assert (alpha[24:36, 24:36] == 1.0).all()
    np.testing.assert_array_equal(feather(_square(), 0), _square() / 255.0)
    # A person cut by the frame edge does not fade out at the edge.
    edge = np.zeros((20, 20), np.uint8)
    edge[:, :10] = 255
    assert (feather(edge, 3)[:, 0] == 1.0).all()


# --- compositing -----------------------------------------------------------------------------


def _room(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_composite_keeps_the_room_bit_identical() -> None:
    room = _room(120, 160)
    generated = _room(120, 160, seed=1)
    mask = np.zeros((120, 160), np.uint8)
    mask[20:100, 50:110] = 255
    out, box = composite(room, generated, mask, feather_px=5)
    assert box == (50, 20, 60, 80)  # the mask's bounding box: nothing outside it changed
    outside = mask == 0
    np.testing.assert_array_equal(out[outside], room[outside])
    core = np.zeros_like(outside)
    core[25:95, 55:105] = True  # 5 px in from the edge: alpha 1
    np.testing.assert_array_equal(out[core], generated[core])
    ramp = (mask > 0) & ~core
    assert not np.array_equal(out[ramp], room[ramp])
    assert out.dtype == np.uint8 and out.shape == room.shape


@pytest.mark.parametrize("seed", range(12))
def test_composite_feathers_the_box_as_the_whole_frame_would(seed: int) -> None:
    # The ramp is cut from the mask's box and a margin, not the whole frame: people of every
    # shape, near the edges or not, with holes, get the whole frame's blend.
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(40, 160, 2))
    mask = np.zeros((height, width), np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(3, width // 2)), int(rng.integers(3, height // 2)))
        cv2.ellipse(mask, centre, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    cv2.circle(mask, (width // 2, height // 2), 3, 0, -1)
    room, generated = _room(height, width, seed), _room(height, width, seed + 100)
    pixels = int(rng.integers(1, 12))
    out, _ = composite(room, generated, mask, feather_px=pixels)
    alpha = feather(mask > 0, pixels)[..., None]
    whole_frame = np.clip(room * (1 - alpha) + generated * alpha, 0, 255)
    assert np.abs(out.astype(np.float32) - whole_frame).max() <= 1.0


def test_composite_scales_a_smaller_generated_frame_and_mask() -> None:
    room = _room(120, 160)
    generated = np.full((60, 80, 3), (10, 200, 30), np.uint8)  # half size, one colour
    small_mask = np.zeros((60, 80), np.uint8)
    small_mask[10:50, 20:60] = 255
    out, box = composite(room, generated, small_mask, feather_px=3)
    x, y, box_w, box_h = box
    changed = np.zeros((120, 160), bool)
    changed[y:y + box_h, x:x + box_w] = True
    np.testing.assert_array_equal(out[~changed], room[~changed])
    assert (out != room).any(axis=2)[changed].mean() > 0.5
    full_mask = cv2.resize(small_mask, (160, 120), interpolation=cv2.INTER_NEAREST)
    outside = cv2.dilate(full_mask, np.ones((3, 3), np.uint8)) == 0
    np.testing.assert_array_equal(out[outside], room[outside])
    np.testing.assert_array_equal(out[40:80, 60:100], np.full((40, 40, 3), (10, 200, 30)))
    nobody, empty = composite(room, generated, np.zeros((60, 80), np.uint8))
    np.testing.assert_array_equal(nobody, room)
    assert empty[2:] == (0, 0)
    with pytest.raises(ValueError):
        composite(room, generated, np.zeros((30, 30), np.uint8))


def test_background_zeroes_the_person() -> None:
    frame = _room(40, 50)
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 10:30] = 255
    bg = background(frame, mask)
    assert bg.dtype == np.uint8
    assert not bg[5:20, 10:30].any()
    np.testing.assert_array_equal(bg[mask == 0], frame[mask == 0])
    np.testing.assert_array_equal(background(frame, mask // 255), bg)  # {0, 1} masks too
    # Any nonzero value is the person, and a view of a bigger frame (channels reversed) works.
    rng = np.random.default_rng(4)
    big = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    view = big[10:50, 5:55, ::-1]
    spotty = rng.integers(0, 4, (40, 50)).astype(np.uint8)
    np.testing.assert_array_equal(background(view, spotty), view * (spotty == 0)[..., None])


def test_match_colour_removes_a_cast_measured_on_the_room() -> None:
    rng = np.random.default_rng(3)
    reference = rng.integers(40, 200, (64, 64, 3), dtype=np.uint8)
    shift = np.array([25, -10, 5], np.int16)
    cast = np.clip(reference.astype(np.int16) + shift, 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    matched = match_colour(cast, reference, mask)
    before = np.abs(cast.astype(int) - reference).mean()
    after = np.abs(matched.astype(int) - reference).mean()
    assert after < before / 3
    tiny = np.zeros((64, 64), np.uint8)
    tiny[:] = 255
    np.testing.assert_array_equal(match_colour(cast, reference, tiny), cast)  # nothing to measure


@needs_shared_data
def test_composite_into_the_real_720p_photo() -> None:
    photo = cv2.imread(str(SHARED_DATA / "person-720p.jpg"), cv2.IMREAD_COLOR)
    assert photo is not None
    height, width = photo.shape[:2]
    # What Wan-Animate would hand back: a 480p-ish frame, here a synthetic gradient person.
    gen_h, gen_w = 480, 480 * width // height
    ramp = np.linspace(0, 255, gen_w, dtype=np.float32)
    generated = np.dstack([np.tile(ramp, (gen_h, 1))] * 3).astype(np.uint8)
    mask = np.zeros((gen_h, gen_w), np.uint8)
    cv2.ellipse(mask, (gen_w // 2, gen_h // 2), (gen_w // 6, gen_h // 3), 0, 0, 360, 255, -1)
    mask = wan_mask(mask, dilate_px=9, grid=None)

    out, _ = composite(photo, generated, mask, feather_px=8)
    assert out.shape == photo.shape and out.dtype == np.uint8
    full = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) >= 128
    np.testing.assert_array_equal(out[~full], photo[~full])
    assert not np.array_equal(out[full], photo[full])
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    bg = background(rgb, full.astype(np.uint8) * 255)
    assert not bg[full].any()
    np.testing.assert_array_equal(bg[~full], rgb[~full])
