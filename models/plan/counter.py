"""Counting with ``torch.utils.flop_counter.FlopCounterMode``, shared by the engines' counts:
a run's total and linear-layer FLOPs, and one batch's VAE work. Imports torch lazily."""

from __future__ import annotations

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


def counted_vae_flops(vae: Any, shape: Shape, *, scale_t: int = VAE_SCALE_TEMPORAL,
                      scale_s: int = VAE_SCALE_SPATIAL) -> int:
    """FLOPs of one batch's VAE work: the pose and conditioning encodes of L frames and the
    decode of the segment's latents."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(vae.parameters())
    device, dtype = param.device, param.dtype
    video = torch.zeros(1, 3, shape.segment, shape.height, shape.width, device=device,
                        dtype=dtype)
    latents = torch.zeros(1, int(vae.config.z_dim), shape.latent_frames(scale_t),
                          shape.height // scale_s, shape.width // scale_s, device=device,
                          dtype=dtype)
    encode, decode = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with torch.no_grad():
        with encode:
            vae.encode(video)
        with decode:
            vae.decode(latents, return_dict=False)
    return 2 * int(encode.get_total_flops()) + int(decode.get_total_flops())
