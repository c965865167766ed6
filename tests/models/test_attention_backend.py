"""--attention-backend auto: FlashAttention-3 on Hopper, SageAttention or FlashAttention-2 from
Ampere on, else native; the engine sets what is chosen and doctor reports the same choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceswap_cam.daemon.config import Settings
from faceswap_cam.models import attention
from faceswap_cam.models.attention import choose_attention_backend

H200 = ((9, 0), "NVIDIA H200")
RTX_4090 = ((8, 9), "NVIDIA GeForce RTX 4090")
A100 = ((8, 0), "NVIDIA A100-SXM4-80GB")
T4 = ((7, 5), "Tesla T4")


def choose(gpu: tuple[tuple[int, int], str] | None, *installed: str,
           device: str = "cuda") -> str:
    return choose_attention_backend(device, installed=lambda name: name in installed,
                                    gpu=lambda _device: gpu).name


def test_choice_follows_the_gpu_and_what_is_installed() -> None:
    everything = ("_flash_3", "sage", "flash")
    assert choose(H200, *everything) == "_flash_3"
    assert choose(H200, "sage", "flash") == "sage"
    assert choose(H200, "flash") == "flash"
    assert choose(H200) == "native"
    # FlashAttention-3 is built for Hopper only; SageAttention and FA2 need Ampere or newer.
    assert choose(RTX_4090, *everything) == "sage"
    assert choose(A100, "_flash_3", "flash") == "flash"
    assert choose(T4, *everything) == "native"
    assert choose(((12, 0), "NVIDIA GeForce RTX 5090"), "sage") == "sage"
    # No CUDA device: native, whatever is installed (and the GPU is not even asked).
    assert choose(H200, *everything, device="cpu") == "native"
    assert choose(H200, *everything, device="mps") == "native"
    assert choose(None, *everything) == "native"  # "cuda" asked, torch sees none


def test_reasons_name_the_gpu_and_what_would_be_faster() -> None:
    chosen = choose_attention_backend("cuda:0", installed=lambda name: name == "_flash_3",
                                      gpu=lambda _device: H200)
    assert chosen.reason == "FlashAttention-3 on NVIDIA H200, compute capability 9.0"
    native = choose_attention_backend("cuda", installed=lambda name: False,
                                      gpu=lambda _device: RTX_4090)
    assert native.reason.endswith("faster with sageattention installed")
    assert "no CUDA GPU" in choose_attention_backend("cpu").reason


def test_nothing_optional_is_installed_here() -> None:
    # The real probe: this test machine has none of the optional kernels.
    assert not any(attention._installed(name) for name in ("_flash_3", "sage", "flash"))
    assert choose_attention_backend("cpu").name == "native"


def test_doctor_reports_the_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.daemon.ops.doctor import GpuInfo, _attention_check

    monkeypatch.setattr(attention, "_installed", lambda name: name == "sage")
    monkeypatch.setattr(attention, "_cuda_info", lambda device: RTX_4090)
    gpus = [GpuInfo("cuda:0", "NVIDIA GeForce RTX 4090", 24 << 30)]
    check = _attention_check(Settings(), lambda: gpus)
    assert (check.name, check.status) == ("attention", "PASS")
    assert check.detail == "sage: SageAttention on NVIDIA GeForce RTX 4090, compute capability 8.9"
    fixed = _attention_check(Settings(attention_backend="flash"), lambda: gpus)
    assert fixed.detail.startswith("flash, as configured (auto would choose sage")
    cpu = _attention_check(Settings(device="cpu"), lambda: gpus)
    assert cpu.detail.startswith("native: ")

    def no_torch() -> list[GpuInfo]:
        raise ImportError("torch")

    assert _attention_check(Settings(), no_torch).detail.startswith("native: ")


def test_auto_is_the_default() -> None:
    assert Settings().attention_backend == "auto"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from tests.wan_tiny import save_tiny_wan_animate

    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


def test_the_chosen_backend_reaches_diffusers(tiny: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline

    pipe = load_pipeline(str(tiny), LoadOptions(device="cpu", attention_backend="auto"))
    processor = pipe.transformer.blocks[0].attn1.processor
    assert processor._attention_backend.value == "native"  # the CPU's choice
    asked: list[str] = []

    def fake_choice(device: str) -> attention.AttentionChoice:
        asked.append(device)
        return attention.AttentionChoice("_native_math", "test")

    monkeypatch.setattr(attention, "choose_attention_backend", fake_choice)
    pipe = load_pipeline(str(tiny), LoadOptions(device="cpu", attention_backend="auto"))
    assert asked == ["cpu"]
    for block in pipe.transformer.blocks:
        assert block.attn1.processor._attention_backend.value == "_native_math"
        assert block.attn2.processor._attention_backend.value == "_native_math"
