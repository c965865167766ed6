"""How far a quantized engine's frames are from the unquantized engine's (the quantization
tests of both engines)."""

from __future__ import annotations

import numpy as np

#: fp8 (weights and activations, per-row scales) against unquantized, both bf16, on the same
#: CPU: 0.0078 of full scale (2 levels of 255) and 56.5 dB, about bf16's own distance from
#: fp32 on this model (0.013, 57.9 dB).
FP8_MIN_PSNR_DB = 45.0
FP8_MAX_ABS_ERROR = 0.03


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def check_fp8_close(quantized: np.ndarray, reference: np.ndarray) -> None:
    """fp8's frames are numbers, and within its bounds of the unquantized ones."""
    error = float(np.abs(quantized - reference).max())
    measured = psnr(quantized, reference)
    print(f"fp8 vs none (bf16): max abs {error:.4f}, PSNR {measured:.1f} dB")
    assert not np.isnan(quantized).any()
    assert 0 < error <= FP8_MAX_ABS_ERROR
    assert measured >= FP8_MIN_PSNR_DB
