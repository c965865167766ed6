"""The tiny random-weight Wan-Animate pipeline saves, loads and runs end to end on CPU."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.wan_tiny import (
    FACE_SIZE,
    HEIGHT,
    PROMPT_MAX_LEN,
    VOCAB_SIZE,
    WIDTH,
    build_tiny_components,
    save_tiny_wan_animate,
)

COMPONENTS = (
    "tokenizer",
    "text_encoder",
    "image_encoder",
    "image_processor",
    "vae",
    "transformer",
    "scheduler",
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


@pytest.fixture(scope="module")
def pipe(tiny_folder: Path) -> Any:
    import torch

    diffusers: Any = importlib.import_module("diffusers")  # from_pretrained is not annotated
    pipeline = diffusers.WanAnimatePipeline.from_pretrained(tiny_folder, dtype=torch.float32)
    pipeline.to("cpu")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _frames(count: int, size: tuple[int, int], seed: int, mode: str = "RGB") -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    width, height = size
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return [
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(count)
    ]


def _run(
    pipe: Any, mode: str, *, frames: int, segment: int, prev: int, seed: int = 0
) -> np.ndarray:
    import torch

    kwargs: dict[str, Any] = {}
    if mode == "replace":
        kwargs["background_video"] = _frames(frames, (WIDTH, HEIGHT), 3)
        # White = generate, black = keep the background: generate the left half.
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[:, : WIDTH // 2] = 255
        kwargs["mask_video"] = [Image.fromarray(mask, "L") for _ in range(frames)]
    result = pipe(
        image=_frames(1, (WIDTH, HEIGHT), 0)[0],
        pose_video=_frames(frames, (WIDTH, HEIGHT), 1),
        face_video=_frames(frames, (FACE_SIZE, FACE_SIZE), 2),
        prompt="a person talking to the camera",
        height=HEIGHT,
        width=WIDTH,
        mode=mode,
        segment_frame_length=segment,
        prev_segment_conditioning_frames=prev,
        num_inference_steps=2,
        guidance_scale=1.0,
        output_type="np",
        max_sequence_length=PROMPT_MAX_LEN,
        generator=torch.Generator("cpu").manual_seed(seed),
        **kwargs,
    )
    video = result.frames
    assert video.shape[0] == 1  # batch of one video
    return np.asarray(video[0])


def test_folder_has_diffusers_layout(tiny_folder: Path) -> None:
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanAnimatePipeline"
    assert index["scheduler"] == ["diffusers", "UniPCMultistepScheduler"]
    for name in COMPONENTS:
        assert name in index
        assert (tiny_folder / name).is_dir()


def test_tokenizer_loads_with_autotokenizer(tiny_folder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_folder / "tokenizer")
    encoded = tokenizer(
        ["a person smiling", "zebra"],
        padding="max_length",
        max_length=PROMPT_MAX_LEN,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    assert tuple(encoded.input_ids.shape) == (2, PROMPT_MAX_LEN)
    assert encoded.attention_mask[0].sum().item() == 4  # three words and </s>
    assert encoded.input_ids[0, 3].item() == tokenizer.eos_token_id
    assert encoded.input_ids[1, 0].item() == tokenizer.unk_token_id
    assert encoded.input_ids[0, -1].item() == tokenizer.pad_token_id == 0
    assert len(tokenizer) == VOCAB_SIZE


def test_same_seed_same_weights() -> None:
    import torch

    first, second = build_tiny_components(0), build_tiny_components(0)
    for name in ("text_encoder", "image_encoder", "vae", "transformer"):
        a, b = first[name].state_dict(), second[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert first["transformer"].config.image_dim == first["image_encoder"].config.hidden_size
    assert first["transformer"].config.text_dim == first["text_encoder"].config.d_model
    assert first["transformer"].config.motion_encoder_size == FACE_SIZE


@pytest.mark.parametrize("mode", ["animate", "replace"])
def test_runs_in_three_short_segments(pipe: Any, mode: str) -> None:
    # 13 frames = 5 + 4 + 4: each segment after the first re-uses one frame of the previous.
    video = _run(pipe, mode, frames=13, segment=5, prev=1)
    assert video.shape == (13, HEIGHT, WIDTH, 3)
    assert video.dtype == np.float32
    assert np.isfinite(video).all()
    assert video.min() >= 0.0 and video.max() <= 1.0

    again = _run(pipe, mode, frames=13, segment=5, prev=1)
    np.testing.assert_array_equal(video, again)

    other_seed = _run(pipe, mode, frames=13, segment=5, prev=1, seed=1)
    assert not np.array_equal(video, other_seed)


def test_runs_long_segments_with_five_conditioning_frames(pipe: Any) -> None:
    # 29 frames = 13 + 8 + 8: each segment after the first re-uses five frames of the previous.
    video = _run(pipe, "replace", frames=29, segment=13, prev=5)
    assert video.shape == (29, HEIGHT, WIDTH, 3)
    assert np.isfinite(video).all()
    np.testing.assert_array_equal(video, _run(pipe, "replace", frames=29, segment=13, prev=5))
