"""The real-size models on the meta device (no weights, no memory: built in seconds on any
machine) and what ``FlopCounterMode`` counts on them, per shape."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from faceswap_cam.models.diffusers_logs import quiet_diffusers
from faceswap_cam.models.plan.animate import ANIMATE_14B_TRANSFORMER, counted_dit_flops
from faceswap_cam.models.plan.animate2 import (
    ANIMATE_2_14B_TRANSFORMER,
    ANIMATE_2_UNCOND_SKIPPED_BLOCK,
    counted_animate_2_flops,
)
from faceswap_cam.models.plan.counter import counted_vae_flops
from faceswap_cam.models.plan.engines import PLANNED_ENGINES
from faceswap_cam.models.plan.work import VAE_SCALE_TEMPORAL, Params, Shape, Work


@contextmanager
def _first_blocks(transformer: Any, count: int) -> Iterator[None]:
    """The transformer with only its first ``count`` blocks (the face adapters go by block
    index, so a multiple of their period keeps the same pattern)."""
    import torch

    blocks = transformer.blocks
    transformer.blocks = torch.nn.ModuleList(list(blocks)[:count])
    try:
        yield
    finally:
        transformer.blocks = blocks


def _extrapolate(at_a: int, at_b: int, a: int, b: int, x: int) -> int:
    """The value at ``x`` of the straight line through (a, at_a) and (b, at_b), exact for
    integer multiples of b - a."""
    return at_a + (x - a) // (b - a) * (at_b - at_a)


@dataclass
class MetaModels:
    """The real-size transformer and VAE on the meta device, and what is counted on them.

    The counter's cost is Python dispatch per operator, so identical repeats are counted
    twice and extrapolated rather than run in full: the DiT with its first one and two
    face-adapter periods of blocks (5 and 10 of 40: every block has the same shape, so the
    count is linear in blocks, exactly), the VAE at L = 5 and 9 per size (it runs causal chunks
    of one, then four frames: linear in (L - 1) / 4, exactly). tests/models/test_plan.py checks
    the extrapolation against a full count.
    """

    transformer: Any
    vae: Any
    params: Params
    #: By (width, height, L): what is carried does not change a forward.
    _work: dict[tuple[int, int, int], Work] = field(default_factory=dict)
    _vae: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

    def work(self, shape: Shape) -> Work:
        key = (shape.width, shape.height, shape.segment)
        if key not in self._work:
            dit, linear = self._dit(shape)
            self._work[key] = Work(dit, linear, self._vae_flops(shape), "FlopCounterMode")
        return self._work[key]

    def _dit(self, shape: Shape) -> tuple[int, int]:
        config = self.transformer.config
        period, layers = int(config.inject_face_latents_blocks), int(config.num_layers)
        if layers % period or layers < 2 * period:
            return counted_dit_flops(self.transformer, shape)
        with _first_blocks(self.transformer, period):
            one = counted_dit_flops(self.transformer, shape)
        with _first_blocks(self.transformer, 2 * period):
            two = counted_dit_flops(self.transformer, shape)
        return (_extrapolate(one[0], two[0], period, 2 * period, layers),
                _extrapolate(one[1], two[1], period, 2 * period, layers))

    def share_vae(self, other: MetaModels) -> None:
        """Take ``other``'s VAE and what was counted on it (the engines share the Wan VAE)."""
        self.vae, self._vae = other.vae, other._vae

    def _vae_flops(self, shape: Shape) -> int:
        size = (shape.width, shape.height)
        if size not in self._vae:
            self._vae[size] = tuple(  # type: ignore[assignment]
                counted_vae_flops(self.vae, Shape(shape.width, shape.height, 1, segment))
                for segment in (5, 9))
        at5, at9 = self._vae[size]
        if (shape.segment - 1) % VAE_SCALE_TEMPORAL:
            return counted_vae_flops(self.vae, shape)
        return _extrapolate(at5, at9, 5, 9, shape.segment)


@dataclass
class Animate2MetaModels(MetaModels):
    """:class:`MetaModels` of Wan-Animate-2: per shape, its reference pass and a denoising
    forward, counted with one and two blocks and extrapolated to all (every block has the same
    shape); the unconditional forward is the conditional one less a block."""

    def work(self, shape: Shape) -> Work:
        key = (shape.width, shape.height, shape.segment)
        if key not in self._work:
            layers = int(self.transformer.config.num_layers)
            with _first_blocks(self.transformer, 1):
                one = counted_animate_2_flops(self.transformer, shape)
            with _first_blocks(self.transformer, 2):
                two = counted_animate_2_flops(self.transformer, shape)
            full = {name: tuple(_extrapolate(a, b, 1, 2, layers) for a, b in
                                zip(one[name], two[name], strict=True)) for name in one}
            block = [b - a for a, b in zip(one["cond"], two["cond"], strict=True)]
            skipped = 1 if layers > ANIMATE_2_UNCOND_SKIPPED_BLOCK else 0
            uncond = [total - skipped * per_block
                      for total, per_block in zip(full["cond"], block, strict=True)]
            self._work[key] = Work(full["cond"][0], full["cond"][1], self._vae_flops(shape),
                                   "FlopCounterMode", uncond[0], uncond[1], full["extract"][0],
                                   full["extract"][1])
        return self._work[key]


def build_meta_models(engine: str = "wan-animate") -> MetaModels:
    """Real-size models with no storage: built in seconds on any machine."""
    import torch

    diffusers: Any = importlib.import_module("diffusers")
    if engine not in PLANNED_ENGINES:
        raise ValueError(f"no model for engine {engine!r} in the plan")
    # diffusers warns about fp32 modules on ``.to(bfloat16)``: true and irrelevant here.
    with quiet_diffusers(), torch.device("meta"):
        if engine == "wan-animate-2":
            transformer = diffusers.WanAnimate2Transformer3DModel(**ANIMATE_2_14B_TRANSFORMER)
        else:
            transformer = diffusers.WanAnimateTransformer3DModel(**ANIMATE_14B_TRANSFORMER)
        vae = diffusers.AutoencoderKLWan()
        transformer = transformer.to(torch.bfloat16).eval().requires_grad_(False)
        vae = vae.to(torch.bfloat16).eval().requires_grad_(False)
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    linear = fp32 = total = 0
    for name, module in transformer.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            total += param.numel()
            if isinstance(module, torch.nn.Linear) and pname == "weight":
                linear += param.numel()
            elif keep.intersection(f"{name}.{pname}".split(".")):
                fp32 += param.numel()
    kind = Animate2MetaModels if engine == "wan-animate-2" else MetaModels
    return kind(transformer, vae,
                Params(total, linear, fp32, sum(p.numel() for p in vae.parameters())))
