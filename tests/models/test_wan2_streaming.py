"""Wan-Animate-2 streaming equals diffusers' modular pipeline on the whole clip, for both
checkpoints (base: CFG through the guider; distilled: no CFG), on tiny random models saved to a
folder and loaded by our loading code. Bit-exact: the same operations run in the same order on
the same tensors (the per-segment VAE encode sees the same slice either way)."""

from __future__ import annotations

import importlib
from typing import Any
from unittest import mock

import numpy as np
import PIL.Image
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from faceswap_cam.models.wan import streaming  # noqa: E402
from faceswap_cam.models.wan.loading import LoadOptions  # noqa: E402
from faceswap_cam.models.wan.streaming import GenerationInterrupted, uint8_frames  # noqa: E402
from faceswap_cam.models.wan2.loading import load_pipeline  # noqa: E402
from faceswap_cam.models.wan2.streaming import StreamingWanAnimate2  # noqa: E402
from faceswap_cam.models.wan2.variants import Wan2Variant  # noqa: E402
from tests.wan2_tiny import HEIGHT, PROMPT_MAX_LEN, WIDTH, save_tiny_wan_animate_2  # noqa: E402

PROMPT = "a person talking to the camera"
STEPS = 2
SEGMENT, CARRY, FRAMES = 5, 1, 13  # three segments: 5 + 4 + 4 new frames


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    # diffusers' segment loop draws tqdm bars; their monitor thread would outlive the test.
    tqdm: Any = importlib.import_module("tqdm")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> dict[Wan2Variant, Any]:
    loaded = {}
    for variant in Wan2Variant:
        folder = save_tiny_wan_animate_2(tmp_path_factory.mktemp("wan2") / variant.value,
                                         variant.value)
        loaded[variant] = load_pipeline(str(folder), variant, LoadOptions(device="cpu"))
    return loaded


def clip(frames: int, seed: int = 1) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return [PIL.Image.fromarray(np.roll(base, 3 * i, axis=1)) for i in range(frames)]


def reference() -> PIL.Image.Image:
    rng = np.random.default_rng(7)
    return PIL.Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def stream_for(pipe: Any, seed: int = 0) -> StreamingWanAnimate2:
    stream = StreamingWanAnimate2(pipe, height=HEIGHT, width=WIDTH, segment_frames=SEGMENT,
                                  carry=CARRY, steps=STEPS, seed=seed, prompt=PROMPT,
                                  max_sequence_length=PROMPT_MAX_LEN)
    stream.set_reference(reference())
    return stream


def streamed(stream: StreamingWanAnimate2, video: list[PIL.Image.Image]) -> np.ndarray:
    out, start = [], 0
    while start < len(video):
        new = stream.expects
        out.append(stream.generate(video[start:start + new]))
        start += new
    return np.concatenate(out)


@pytest.mark.parametrize("variant", list(Wan2Variant), ids=[v.value for v in Wan2Variant])
def test_streaming_equals_the_modular_pipeline(pipes: dict[Wan2Variant, Any],
                                               variant: Wan2Variant) -> None:
    pipe = pipes[variant]
    video = clip(FRAMES)
    guided = pipe.guider.guidance_scale > 1.0
    assert guided == (type(pipe).__name__ == "WanAnimate2ModularPipeline")  # base: CFG
    expected = np.asarray(pipe(
        image=reference(), driving_video=video, prompt=PROMPT, height=HEIGHT, width=WIDTH,
        segment_frame_length=SEGMENT, prev_segment_conditioning_frames=CARRY,
        num_inference_steps=STEPS, max_sequence_length=PROMPT_MAX_LEN,
        generator=torch.Generator("cpu").manual_seed(0), output="videos")[0])
    got = streamed(stream_for(pipe), video)
    assert got.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(got, expected)
    # Not trivially equal: the segments differ from one another.
    assert not np.allclose(got[0], got[-1])


def test_text_and_reference_are_encoded_once(pipes: dict[Wan2Variant, Any]) -> None:
    pipe = pipes[Wan2Variant.BASE]  # with CFG: the negative prompt too
    calls = {"text": 0, "clip": 0}
    hooks = [
        pipe.text_encoder.register_forward_hook(
            lambda *a: calls.__setitem__("text", calls["text"] + 1)),
        pipe.image_encoder.register_forward_hook(
            lambda *a: calls.__setitem__("clip", calls["clip"] + 1)),
    ]
    try:
        stream = stream_for(pipe, seed=3)
        assert calls == {"text": 3, "clip": 1}  # prompt, negative prompt, reference prompt
        first = streamed(stream, clip(9))  # two segments: the chain's first frame only
        assert calls == {"text": 3, "clip": 2}
        stream.reset()
        assert stream.expects == SEGMENT
        # A new chain starts identically (and CLIP-encodes its own first frame).
        np.testing.assert_array_equal(stream.generate(clip(5)), first[:SEGMENT])
        assert calls == {"text": 3, "clip": 3}
        # The engine's uint8 frames are generate's, rounded as uint8_frames rounds them, also
        # made the GPU's way (here on the CPU).
        for on_device in (False, True):
            with mock.patch.object(streaming, "converts_on", lambda _device, on=on_device: on):
                stream.reset()
                as_uint8 = stream.generate_uint8(clip(5))
            assert as_uint8.dtype == np.uint8
            np.testing.assert_array_equal(as_uint8, uint8_frames(first[:SEGMENT]))
    finally:
        for hook in hooks:
            hook.remove()


def test_wrong_counts_and_interrupt(pipes: dict[Wan2Variant, Any]) -> None:
    pipe = pipes[Wan2Variant.DISTILLED]
    stream = stream_for(pipe)
    with pytest.raises(ValueError, match="takes 5 new frames, got 4"):
        stream.generate(clip(4))
    stream.interrupt()
    with pytest.raises(GenerationInterrupted):
        stream.generate(clip(5))
    stream.reset()
    assert stream.expects == SEGMENT
    with pytest.raises(ValueError, match="too short to carry 3"):
        StreamingWanAnimate2(pipe, height=HEIGHT, width=WIDTH, segment_frames=5, carry=3,
                             steps=1)


def test_releasing_the_text_encoder_keeps_the_pipeline_on_its_device(
        tmp_path: Any) -> None:
    """On a GPU the prompts are encoded once and UMT5 leaves. A modular pipeline runs its
    blocks on its first model's device, which is the text encoder's: moved to the CPU, it
    would take the whole denoising loop along. Here the encoder is put on the meta device
    (standing in for "elsewhere") and the stream is told it runs on another device, so the
    release runs on a CPU-only machine too."""
    folder = save_tiny_wan_animate_2(tmp_path / "distilled", Wan2Variant.DISTILLED.value)
    pipe = load_pipeline(str(folder), Wan2Variant.DISTILLED, LoadOptions(device="cpu"))
    stream = StreamingWanAnimate2(pipe, height=HEIGHT, width=WIDTH, segment_frames=SEGMENT,
                                  carry=CARRY, steps=STEPS, seed=0, prompt=PROMPT,
                                  max_sequence_length=PROMPT_MAX_LEN, release_text_encoder=False)
    pipe.text_encoder.to("meta")
    assert pipe._execution_device.type == "meta"  # what a moved encoder does to the pipeline
    device = stream.device
    stream.device = torch.device("meta")  # "an accelerator": the release applies
    stream._release_text_encoder()
    stream.device = device
    assert pipe.text_encoder is None
    assert pipe._execution_device == device
    stream.set_reference(reference())
    frames = stream.generate(clip(SEGMENT))
    assert frames.shape[0] == SEGMENT and np.isfinite(frames).all()
