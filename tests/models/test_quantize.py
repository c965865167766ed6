"""--quantize: int8 and fp8 stay close to the unquantized engine on the tiny model; fp8 is refused
where the hardware has no fp8, with the reason and the alternative."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")
pytest.importorskip("torchao", reason="torchao (model extra) is needed for --quantize")

from faceswap_cam.models.engine import EngineError  # noqa: E402
from faceswap_cam.models.quantize import QuantizeError, check_quantize  # noqa: E402
from faceswap_cam.models.wan.engine import create  # noqa: E402
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline  # noqa: E402
from faceswap_cam.models.wan.streaming import SegmentInputs, StreamingWanAnimate  # noqa: E402
from tests.models.quantized import check_fp8_close, psnr  # noqa: E402
from tests.wan_tiny import FACE_SIZE, HEIGHT, PROMPT_MAX_LEN, WIDTH, save_tiny_wan_animate  # noqa: E402

#: Measured on the tiny model (2 segments of 5 frames, 2 steps, fp32 activations, CPU): int8
#: weight-only against unquantized gives a largest error of 0.0013 of full scale (a third of one
#: 8-bit level) and a PSNR of 79 dB. The bounds leave room for other CPUs and library versions
#: and still fail on a broken quantization (wrong scales give noise, PSNR near 10 dB).
MIN_PSNR_DB = 50.0
MAX_ABS_ERROR = 0.01  # 2.5 levels of 255


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


def segments(pipe: Any, count: int = 2) -> np.ndarray:
    """Decoded frames in [0, 1] of ``count`` streamed segments (animate mode: every pixel is
    generated, none copied from the camera)."""
    stream = StreamingWanAnimate(pipe, height=HEIGHT, width=WIDTH, mode="animate",
                                 segment_frames=5, carry=1, steps=2, seed=3,
                                 prompt="a person talking", max_sequence_length=PROMPT_MAX_LEN)
    rng = np.random.default_rng(5)
    stream.set_reference(PIL.Image.fromarray(rng.integers(0, 255, (48, 40, 3), np.uint8)))
    pose = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    face = rng.integers(0, 255, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    out = []
    for _ in range(count):
        new = stream.expects
        out.append(stream.generate(SegmentInputs(
            pose=[PIL.Image.fromarray(np.roll(pose, i, axis=1)) for i in range(new)],
            face=[PIL.Image.fromarray(np.roll(face, i, axis=0)) for i in range(new)])))
    return np.concatenate(out)


def test_int8_output_stays_close_to_the_unquantized_output(tiny_model: Path) -> None:
    reference = segments(load_pipeline(str(tiny_model), LoadOptions(device="cpu")))
    quantized_pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu", quantize="int8"))
    weight = quantized_pipe.transformer.blocks[0].attn1.to_q.weight
    assert "Int8" in type(weight).__name__  # the weights really are int8
    assert quantized_pipe.vae.decoder.conv_in.weight.dtype == torch.float32  # only the DiT
    quantized = segments(quantized_pipe)
    assert quantized.shape == reference.shape == (9, HEIGHT, WIDTH, 3)
    error = float(np.abs(quantized - reference).max())
    measured = psnr(quantized, reference)
    print(f"int8 vs none: max abs {error:.4f}, PSNR {measured:.1f} dB")
    assert 0 < error <= MAX_ABS_ERROR
    assert measured >= MIN_PSNR_DB


def test_fp8_needs_compute_capability_8_9() -> None:
    with pytest.raises(QuantizeError, match=r"this run is on cpu: use --quantize int8"):
        check_quantize("fp8", "cpu")
    with pytest.raises(QuantizeError,
                       match=r"NVIDIA A100-SXM4-80GB is 8\.0: use --quantize int8"):
        check_quantize("fp8", "cuda:0", capability=(8, 0), gpu_name="NVIDIA A100-SXM4-80GB")
    for capability in ((8, 9), (9, 0), (10, 0), (12, 0)):  # Ada, Hopper, Blackwell
        check_quantize("fp8", "cuda", capability=capability, gpu_name="GPU")
    check_quantize("int8", "cpu")
    check_quantize("none", "cpu")
    with pytest.raises(QuantizeError, match="quantize must be none, fp8, int8"):
        check_quantize("int4", "cpu")


def test_fp8_on_the_cpu_is_refused_by_the_engine(tiny_model: Path) -> None:
    options = {"wan_model": str(tiny_model), "device": "cpu", "quantize": "fp8",
               "preprocessor": "stand-in"}
    with pytest.raises(EngineError, match=r"--quantize fp8 needs an NVIDIA GPU.*int8"):
        create(**options)


def test_a_presets_fp8_runs_unquantized_where_fp8_cannot_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.models import quantize

    assert quantize.runnable_quantize("fp8", "cpu", explicit=False) == "none"
    assert quantize.runnable_quantize("fp8", "cpu", explicit=True) == "fp8"  # fails at load
    assert quantize.runnable_quantize("int8", "cpu", explicit=False) == "int8"
    # A GPU with fp8 tensor cores keeps it; an older one runs unquantized.
    real = quantize.check_quantize
    for capability, expected in (((9, 0), "fp8"), ((8, 0), "none")):
        monkeypatch.setattr(quantize, "check_quantize", functools.partial(
            real, capability=capability, gpu_name="GPU"))
        assert quantize.runnable_quantize("fp8", "cuda:0", explicit=False) == expected
    # A torchao that does not import (built for another torch) is the same: no fp8 here.
    import importlib

    import_module = importlib.import_module

    def no_torchao(name: str, package: str | None = None) -> object:
        if name.startswith("torchao"):
            raise ImportError("torchao built for another torch")
        return import_module(name, package)

    monkeypatch.setattr(importlib, "import_module", no_torchao)
    assert quantize.runnable_quantize("fp8", "cuda:0", explicit=False) == "none"


@pytest.mark.usefixtures("fp8_on_the_cpu")
def test_fp8_output_stays_close_to_the_unquantized_output(tmp_path: Path) -> None:
    """fp8 as the daemon loads it on an fp8 GPU (diffusers' torchao config, per-row scales),
    here on the CPU (tests/models/conftest.py says how). torchao's fp8 takes bf16 weights, so
    both runs are bf16 and the difference is fp8's alone. It found every frame NaN: the
    prompt's zero padding rows got a zero scale (0/0), which
    ``quantize.FP8_ACTIVATION_FLOOR`` now prevents."""
    # Layers 32 wide: torchao converts only layers whose sizes are multiples of 16.
    model = str(save_tiny_wan_animate(tmp_path / "tiny", attention_head_dim=16))
    reference = segments(load_pipeline(model, LoadOptions(device="cpu", dtype="bf16")))
    quantized_pipe = load_pipeline(model, LoadOptions(device="cpu", dtype="bf16", quantize="fp8"))
    block = quantized_pipe.transformer.blocks[0]
    for layer in (block.attn1.to_q, block.attn2.to_k, block.ffn.net[2]):
        assert "Float8" in type(layer.weight).__name__  # the weights really are fp8
    check_fp8_close(segments(quantized_pipe), reference)
