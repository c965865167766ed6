"""The wan-animate-2 engine's load options: ``--quantize int8`` quantizes its transformer and
stays close to the unquantized output on the tiny model; fp8 where it cannot run, LoRAs and
offload are refused with what to do instead; ``--attention-backend auto`` (the daemon's
default) loads."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")
pytest.importorskip("torchao", reason="torchao (model extra) is needed for --quantize")

from faceswap_cam.models.engine import EngineError  # noqa: E402
from faceswap_cam.models.wan.loading import LoadOptions  # noqa: E402
from faceswap_cam.models.wan2.engine import create  # noqa: E402
from faceswap_cam.models.wan2.loading import load_pipeline  # noqa: E402
from faceswap_cam.models.wan2.streaming import StreamingWanAnimate2  # noqa: E402
from faceswap_cam.models.wan2.variants import MODEL_SETTING, Wan2Variant  # noqa: E402
from tests.models.quantized import check_fp8_close, psnr  # noqa: E402
from tests.wan2_tiny import HEIGHT, PROMPT_MAX_LEN, WIDTH, save_tiny_wan_animate_2  # noqa: E402

#: Measured on the tiny model (2 segments of 5 and 4 new frames, 2 steps, fp32 activations,
#: CPU): int8 weight-only against unquantized gives a largest error of 0.0018 of full scale
#: (half of one 8-bit level) and a PSNR of 78 dB. The bounds (wan-animate's test's) leave room
#: for other CPUs and library versions and still fail on a broken quantization (wrong scales
#: give noise, PSNR near 10 dB).
MIN_PSNR_DB = 50.0
MAX_ABS_ERROR = 0.01  # 2.5 levels of 255


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading and the segment loop draw tqdm bars; their monitor thread would outlive the test.
    tqdm: Any = importlib.import_module("tqdm")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate_2(tmp_path_factory.mktemp("wan2") / "distilled", "distilled")


def segments(pipe: Any) -> np.ndarray:
    """Decoded frames in [0, 1] of two streamed segments."""
    stream = StreamingWanAnimate2(pipe, height=HEIGHT, width=WIDTH, segment_frames=5, carry=1,
                                  steps=2, seed=3, prompt="a person talking",
                                  max_sequence_length=PROMPT_MAX_LEN)
    rng = np.random.default_rng(5)
    stream.set_reference(PIL.Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3),
                                                          dtype=np.uint8)))
    driving = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = []
    for _ in range(2):
        new = stream.expects
        out.append(stream.generate([PIL.Image.fromarray(np.roll(driving, 3 * i, axis=1))
                                    for i in range(new)]))
    return np.concatenate(out).astype(np.float64)


def test_int8_output_stays_close_to_the_unquantized_output(tiny_model: Path) -> None:
    # "auto" is the daemon's default: diffusers knows no such backend, the loader picks one.
    reference = segments(load_pipeline(str(tiny_model), Wan2Variant.DISTILLED,
                                       LoadOptions(device="cpu", attention_backend="auto")))
    pipe = load_pipeline(str(tiny_model), Wan2Variant.DISTILLED,
                         LoadOptions(device="cpu", quantize="int8"))
    weight = pipe.transformer.blocks[0].self_attn.to_q.weight
    assert "Int8" in type(weight).__name__  # the weights really are int8
    assert pipe.vae.decoder.conv_in.weight.dtype == torch.float32  # only the transformer
    quantized = segments(pipe)
    assert quantized.shape == reference.shape == (9, HEIGHT, WIDTH, 3)
    assert reference.min() >= 0 and reference.max() <= 1
    error = float(np.abs(quantized - reference).max())
    measured = psnr(quantized, reference)
    print(f"int8 vs none: max abs {error:.4f}, PSNR {measured:.1f} dB")
    assert 0 < error <= MAX_ABS_ERROR
    assert measured >= MIN_PSNR_DB


@pytest.mark.usefixtures("fp8_on_the_cpu")
def test_fp8_output_stays_close_to_the_unquantized_output(tmp_path: Path) -> None:
    """fp8 as the daemon loads it on an fp8 GPU, here on the CPU (tests/models/conftest.py
    says how), against the unquantized model, both bf16."""
    # Layers 32 wide: torchao converts only layers whose sizes are multiples of 16.
    model = str(save_tiny_wan_animate_2(tmp_path / "tiny", "distilled", dim=32))
    reference = segments(load_pipeline(model, Wan2Variant.DISTILLED,
                                       LoadOptions(device="cpu", dtype="bf16")))
    pipe = load_pipeline(model, Wan2Variant.DISTILLED,
                         LoadOptions(device="cpu", dtype="bf16", quantize="fp8"))
    assert "Float8" in type(pipe.transformer.blocks[0].self_attn.to_q.weight).__name__
    check_fp8_close(segments(pipe), reference)


@pytest.mark.parametrize(("options", "message"), [
    ({"device": "cpu", "quantize": "fp8"}, r"--quantize fp8 needs an NVIDIA GPU.*int8"),
    ({"loras": ["style.safetensors"]}, r"does not support --lora.*--engine wan-animate"),
    ({"offload": "model"}, r"does not support --offload model.*--offload none.*wan-animate"),
])
def test_what_cannot_run_is_refused_with_what_to_use(
        tiny_model: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        create(**{MODEL_SETTING: str(tiny_model), **options})


def test_compile_is_on_by_default_on_a_cuda_gpu_and_a_given_one_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.models.wan.loading import LoadOptions
    from faceswap_cam.models.wan2 import engine

    monkeypatch.setattr(engine, "pick_device", lambda device: "cuda:0")
    load = LoadOptions(device="auto")
    assert engine.compiled_on_gpus({"explicit": []}, load).compile is True
    assert engine.compiled_on_gpus({"explicit": ["compile"], "compile": False}, load).compile \
        is False
    assert engine.compiled_on_gpus({"compile": False}, load).compile is False  # given
    monkeypatch.setattr(engine, "pick_device", lambda device: "cpu")
    assert engine.compiled_on_gpus({"explicit": []}, load).compile is False
