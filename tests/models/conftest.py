"""Fixtures the model tests share."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def fp8_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp8 loads here as on an fp8 GPU: the product's capability check is told this is one
    (compute capability 9.0) and torchao's own hardware check is stubbed; torch then runs the
    fp8 matmuls in software, as torchao's plain (non-MSLK) path does on a GPU."""
    from faceswap_cam.models import quantize

    quant_api: Any = pytest.importorskip("torchao.quantization.quant_api")
    if not hasattr(quant_api, "_check_hardware_support"):
        pytest.skip("this torchao checks the hardware elsewhere")
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda *_: None)
    real = quantize.check_quantize
    monkeypatch.setattr(quantize, "check_quantize", lambda kind, device, **_: real(
        kind, "cuda", capability=(9, 0), gpu_name="a stand-in"))
