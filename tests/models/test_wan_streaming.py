"""Wan-Animate streaming equals offline, on tiny random models loaded by our loading code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline  # noqa: E402
from faceswap_cam.models.wan.streaming import SegmentInputs, StreamingWanAnimate  # noqa: E402
from tests.wan_tiny import FACE_SIZE, HEIGHT, PROMPT_MAX_LEN, WIDTH, save_tiny_wan_animate  # noqa: E402

PROMPT = "a person talking to the camera"
STEPS = 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


@pytest.fixture(scope="module")
def pipe(tiny_model: Path) -> Any:
    # The real loading code, as real weights take it (local folder, no downloads).
    return load_pipeline(str(tiny_model), LoadOptions(device="cpu"))


def clip_inputs(frames: int, seed: int = 1) -> dict[str, list[PIL.Image.Image]]:
    """A clip whose frames change smoothly, with a moving square as the 'person'."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    face_base = rng.integers(0, 255, (FACE_SIZE * 2, FACE_SIZE * 2, 3), dtype=np.uint8)
    pose, face, background, mask = [], [], [], []
    for i in range(frames):
        shifted = np.roll(base, i, axis=1)
        pose.append(PIL.Image.fromarray(shifted))
        face.append(PIL.Image.fromarray(np.roll(face_base, i, axis=0)))
        person = np.zeros((HEIGHT, WIDTH), np.uint8)
        x = (i * 2) % (WIDTH // 2)
        person[8:24, x:x + 12] = 255
        mask.append(PIL.Image.fromarray(person, mode="L"))
        background.append(PIL.Image.fromarray(shifted * (person[..., None] == 0)))
    return {"pose": pose, "face": face, "background": background, "mask": mask}


def reference() -> PIL.Image.Image:
    rng = np.random.default_rng(7)
    return PIL.Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))


def offline(pipe: Any, clip: dict[str, list[PIL.Image.Image]], mode: str, segment: int,
            carry: int, *, seed: int = 0) -> np.ndarray:
    replace = mode == "replace"
    result = pipe(
        image=reference(), pose_video=clip["pose"], face_video=clip["face"],
        background_video=clip["background"] if replace else None,
        mask_video=clip["mask"] if replace else None, prompt=PROMPT, height=HEIGHT, width=WIDTH,
        segment_frame_length=segment, num_inference_steps=STEPS, mode=mode,
        prev_segment_conditioning_frames=carry, guidance_scale=1.0,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
        max_sequence_length=PROMPT_MAX_LEN)
    return np.asarray(result.frames[0])


def streamed(stream: StreamingWanAnimate, clip: dict[str, list[PIL.Image.Image]]
             ) -> np.ndarray:
    frames, start, total = [], 0, len(clip["pose"])
    while start < total:
        new = stream.expects
        window = slice(start, start + new)
        replace = stream.mode == "replace"
        frames.append(stream.generate(SegmentInputs(
            pose=clip["pose"][window], face=clip["face"][window],
            background=clip["background"][window] if replace else None,
            mask=clip["mask"][window] if replace else None)))
        start += new
    return np.concatenate(frames)


@pytest.mark.parametrize(("mode", "segment", "carry", "frames"), [
    ("animate", 5, 1, 13),   # 3 segments: 5 + 4 + 4
    ("replace", 5, 1, 13),
    ("animate", 13, 5, 29),  # 3 segments: 13 + 8 + 8
    ("replace", 13, 5, 29),
])
def test_streaming_equals_offline(pipe: Any, mode: str, segment: int, carry: int,
                                  frames: int) -> None:
    clip = clip_inputs(frames)
    expected = offline(pipe, clip, mode, segment, carry)
    stream = StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, mode=mode,
                                 segment_frames=segment, carry=carry, steps=STEPS, seed=0,
                                 prompt=PROMPT, max_sequence_length=PROMPT_MAX_LEN)
    stream.set_reference(reference())
    got = streamed(stream, clip)
    assert got.shape == expected.shape == (frames, HEIGHT, WIDTH, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Not trivially equal: the segments differ from one another.
    assert not np.allclose(got[0], got[-1])


def test_reset_restarts_the_stream_identically(pipe: Any) -> None:
    clip = clip_inputs(9)
    stream = StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, mode="animate",
                                 segment_frames=5, carry=1, steps=STEPS, seed=3, prompt=PROMPT,
                                 max_sequence_length=PROMPT_MAX_LEN)
    stream.set_reference(reference())
    first = streamed(stream, clip)
    stream.reset()
    assert stream.expects == 5
    again = streamed(stream, clip)
    np.testing.assert_array_equal(first, again)


def test_encoders_run_once_per_reference(pipe: Any) -> None:
    calls = {"text": 0, "image": 0, "vae_encode": 0}
    hooks = [
        pipe.text_encoder.register_forward_hook(lambda *a: calls.__setitem__(
            "text", calls["text"] + 1)),
        pipe.image_encoder.register_forward_hook(lambda *a: calls.__setitem__(
            "image", calls["image"] + 1)),
    ]
    try:
        stream = StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, mode="animate",
                                     segment_frames=5, carry=1, steps=STEPS, prompt=PROMPT,
                                     max_sequence_length=PROMPT_MAX_LEN)
        assert calls == {"text": 1, "image": 0, "vae_encode": 0}
        stream.set_reference(reference())
        streamed(stream, clip_inputs(13))  # three segments
        assert (calls["text"], calls["image"]) == (1, 1)
        stream.set_reference(reference())  # a new reference: encoded once more
        assert stream.expects == 4  # the chain goes on until the caller restarts it
        stream.reset()
        streamed(stream, clip_inputs(5))
        assert (calls["text"], calls["image"]) == (1, 2)
    finally:
        for hook in hooks:
            hook.remove()


def test_wrong_frame_counts_are_refused(pipe: Any) -> None:
    stream = StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, mode="replace",
                                 segment_frames=5, carry=1, steps=STEPS, prompt=PROMPT,
                                 max_sequence_length=PROMPT_MAX_LEN)
    stream.set_reference(reference())
    clip = clip_inputs(5)
    with pytest.raises(ValueError, match=r"takes 5 new frames.*mask: 4"):
        stream.generate(SegmentInputs(pose=clip["pose"], face=clip["face"],
                                      background=clip["background"], mask=clip["mask"][:4]))
    with pytest.raises(ValueError, match="carried frames must be 1 or 5"):
        StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, carry=2, prompt=PROMPT)
    with pytest.raises(ValueError, match="too short to carry 5"):
        StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, segment_frames=9, carry=5,
                            prompt=PROMPT)


def _arrays(clip: dict[str, list[PIL.Image.Image]]) -> dict[str, list[np.ndarray]]:
    return {name: [np.asarray(image) for image in images] for name, images in clip.items()}


@pytest.mark.parametrize("mode", ["animate", "replace"])
def test_arrays_at_the_generation_size_give_the_frames_of_pil_images(
        pipe: Any, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, uint8 arrays at the generation size (faces at the motion encoder's) skip
    PIL: they are scaled on the device and handed to diffusers' processors as tensors, and the
    frames are the PIL path's exactly, as floats and as generate_uint8's uint8 (converted on
    the device, rounded as uint8_frames rounds). Arrays at another size take the PIL path, and
    so does everything on the CPU. The GPU's path runs here on the CPU: the same operations."""
    from faceswap_cam.models.wan import streaming
    from faceswap_cam.models.wan.streaming import uint8_frames

    assert not streaming.converts_on("cpu") and streaming.converts_on("cuda:0")
    monkeypatch.setattr(streaming, "converts_on", lambda device: True)

    clip = clip_inputs(9)
    clip["face"] = [image.resize((FACE_SIZE, FACE_SIZE)) for image in clip["face"]]
    seen: list[str] = []
    for processor in (pipe.video_processor, pipe.video_processor_for_mask):
        original = processor.preprocess_video

        def recorded(video: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append(type(video).__name__)
            return _original(video, *args, **kwargs)

        monkeypatch.setattr(processor, "preprocess_video", recorded)

    def run(inputs: dict[str, Any], uint8: bool = False) -> np.ndarray:
        stream = StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, mode=mode,
                                     segment_frames=5, carry=1, steps=STEPS, seed=0,
                                     prompt=PROMPT, max_sequence_length=PROMPT_MAX_LEN)
        stream.set_reference(reference())
        replace = mode == "replace"
        out = []
        for window in (slice(0, 5), slice(5, 9)):
            segment = SegmentInputs(
                pose=inputs["pose"][window], face=inputs["face"][window],
                background=inputs["background"][window] if replace else None,
                mask=inputs["mask"][window] if replace else None)
            out.append(stream.generate_uint8(segment) if uint8 else stream.generate(segment))
        return np.concatenate(out)

    from_pil = run(clip)
    assert set(seen) == {"list"}
    seen.clear()
    from_arrays = run(_arrays(clip))
    assert set(seen) == {"Tensor"}
    np.testing.assert_array_equal(from_arrays, from_pil)
    as_uint8 = run(_arrays(clip), uint8=True)
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8, uint8_frames(from_pil))
    # Faces at twice the motion encoder's size: resized by the processor, from PIL images.
    seen.clear()
    bigger = _arrays(clip_inputs(9))
    run(bigger)
    assert seen.count("list") == 2 and "Tensor" in seen  # the faces of the 2 segments only
    # The CPU's own way: PIL images throughout, the same frames.
    monkeypatch.setattr(streaming, "converts_on", lambda device: False)
    seen.clear()
    np.testing.assert_array_equal(run(_arrays(clip), uint8=True), as_uint8)
    assert set(seen) == {"list"}
