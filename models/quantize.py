"""``--quantize none|fp8|int8``: what each means, and where fp8 can run.

fp8 (weights and activations, per-row scales) needs fp8 tensor cores: NVIDIA compute capability
8.9 or newer (Ada, Hopper, Blackwell). int8 stores the weights in int8 and computes in the
model's dtype, so it runs anywhere, the CPU included: half the weight memory of bf16, and on a
GPU faster where loading weights is the limit.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from faceswap_cam.models import defaults

logger = logging.getLogger(__name__)

#: The first compute capability with fp8 tensor cores (Ada Lovelace).
FP8_MIN_CAPABILITY = (8, 9)


class QuantizeError(ValueError):
    """This kind of quantization cannot run here; the message says why and what to use."""


def check_quantize(kind: str, device: str, *,
                   capability: tuple[int, int] | None = None, gpu_name: str | None = None
                   ) -> None:
    """Raise :class:`QuantizeError` when ``kind`` cannot run on ``device``. ``capability`` and
    ``gpu_name`` default to what torch reports for a CUDA device."""
    choices = [q.value for q in defaults.Quantize]
    if kind not in choices:
        raise QuantizeError(f"quantize must be {', '.join(choices)}, got {kind!r}")
    if kind != defaults.Quantize.FP8:
        return
    if not device.startswith("cuda"):
        raise QuantizeError(f"--quantize fp8 needs an NVIDIA GPU with compute capability "
                            f"{_text(FP8_MIN_CAPABILITY)} or newer (Ada, Hopper, Blackwell); "
                            f"this run is on {device}: use --quantize int8")
    if capability is None or gpu_name is None:
        import torch

        major, minor = torch.cuda.get_device_capability(device)
        capability = capability or (major, minor)
        gpu_name = gpu_name or torch.cuda.get_device_name(device)
    if capability < FP8_MIN_CAPABILITY:
        raise QuantizeError(f"--quantize fp8 needs compute capability "
                            f"{_text(FP8_MIN_CAPABILITY)} or newer (Ada, Hopper, Blackwell); "
                            f"{gpu_name} is {_text(capability)}: use --quantize int8")


def runnable_quantize(kind: str, device: str, *, explicit: bool) -> str:
    """``kind``, or ``none`` where a preset's fp8 cannot run on ``device`` (an older GPU, the
    CPU, no torchao): the preset stays usable everywhere. A ``--quantize`` the user gave is
    kept as it is, and fails with its reason when loading."""
    if explicit or kind != defaults.Quantize.FP8:
        return kind
    try:
        torchao_config(kind, device)  # the device's fp8, and a torchao that imports
    except QuantizeError as exc:
        logger.info("the preset's fp8 cannot run here, so the transformer is not quantized (%s)",
                    str(exc).split("; ")[-1])
        return defaults.Quantize.NONE.value
    return kind


#: The smallest largest-magnitude an activation row's fp8 scale is computed from. A row of
#: zeros (the prompt padded to the model's 512 tokens; a learned padding token) would
#: otherwise get a zero scale in torchao's plain fp8 path (the CPU, Ada GPUs, Hopper without
#: its MSLK kernels): 0/0, NaN in every frame after it. Far below any real activation, so
#: only those rows change (they stay zero). The cost: torchao then skips MSLK's fused row
#: quantization on Hopper (not in the lent GPU machine's image, so not measured there).
FP8_ACTIVATION_FLOOR = 1e-12


def transformer_config(kind: str, device: str) -> Any:
    """diffusers' ``TorchAoConfig`` for a transformer's ``--quantize kind`` (not ``none``),
    checked for ``device`` first: a :class:`QuantizeError` says why fp8 cannot run here
    before minutes of loading."""
    diffusers: Any = importlib.import_module("diffusers")  # untyped constructors
    return diffusers.TorchAoConfig(torchao_config(kind, device))


def torchao_config(kind: str, device: str) -> Any:
    """The torchao ``AOBaseConfig`` for ``kind`` (not ``none``), checked for ``device``."""
    check_quantize(kind, device)
    try:
        torchao: Any = importlib.import_module("torchao.quantization")  # untyped
    except Exception as exc:  # not installed, or built for another torch (fails variously)
        raise QuantizeError(f"--quantize {kind} needs torchao: install the model extra "
                            f"({defaults.MODELS_EXTRA_INSTALL})") from exc
    if kind == defaults.Quantize.FP8:
        # Per-row scales: closer to bf16 than one scale per tensor, at the same fp8 speed.
        return torchao.Float8DynamicActivationFloat8WeightConfig(
            granularity=torchao.PerRow(), activation_value_lb=FP8_ACTIVATION_FLOOR)
    return torchao.Int8WeightOnlyConfig()


def _text(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"
