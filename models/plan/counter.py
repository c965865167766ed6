"""Counting with ``torch.utils.flop_counter.FlopCounterMode``, shared by the engines' counts:
a run's total and linear-layer FLOPs, and one batch's VAE work. Imports torch lazily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from faceswap_cam.models.plan.work import VAE_SCALE_SPATIAL, VAE_SCALE_TEMPORAL, Shape

_LINEAR_OPS = ("aten.mm", "aten.addmm")


def count_flops(run: Any) -> tuple[int, int]:
    """(total, linear) FLOPs of ``run()`` by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    by_op = counter.get_flop_counts().get("Global", {})
    linear = sum(int(v) for op, v in by_op.items() if str(op).split(".default")[0] in _LINEAR_OPS)
    return int(counter.get_total_flops()), linear


@contextmanager
def counting(device: Any) -> Iterator[None]:
    """What a count runs under: no autograd and, on the CPU, attention through the math
    backend so that its matmuls are counted too (on the meta device nothing is computed)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    math_attention = sdpa_kernel([SDPBackend.MATH]) if device.type == "cpu" else nullcontext()
    with torch.no_grad(), math_attention:
        yield


def counted_vae_flops(vae: Any, shape: Shape, *, scale_t: int = VAE_SCALE_TEMPORAL,
                      scale_s: int = VAE_SCALE_SPATIAL) -> int:
    """FLOPs of one batch's VAE work: the pose and conditioning encodes of L frames and the
    decode of the segment's latents."""
    import torch

    param = next(vae.parameters())
    device, dtype = param.device, param.dtype
    video = torch.zeros(1, 3, shape.segment, shape.height, shape.width, device=device,
                        dtype=dtype)
    latents = torch.zeros(1, int(vae.config.z_dim), shape.latent_frames(scale_t),
                          shape.height // scale_s, shape.width // scale_s, device=device,
                          dtype=dtype)
    with torch.no_grad():
        encode, _ = count_flops(lambda: vae.encode(video))
        decode, _ = count_flops(lambda: vae.decode(latents, return_dict=False))
    return 2 * encode + decode
