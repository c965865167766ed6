"""Wan-Animate-2's two checkpoints and which one an engine's options ask for.

Constants only (no torch): the engine registry's availability check and ``doctor`` read this.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from faceswap_cam.models import defaults


class Wan2Variant(StrEnum):
    BASE = "base"  # 40 steps with classifier-free guidance
    DISTILLED = "distilled"  # 10 steps, no guidance


#: What the engine runs unless the options say otherwise: the product is a live camera.
VARIANT = Wan2Variant.DISTILLED
VARIANTS = tuple(variant.value for variant in Wan2Variant)

#: The registered weights (models/weights) of each checkpoint.
WEIGHTS: dict[Wan2Variant, str] = {
    Wan2Variant.BASE: "wan-animate-2-base",
    Wan2Variant.DISTILLED: "wan-animate-2",
}
REPOS: dict[Wan2Variant, str] = {
    Wan2Variant.BASE: defaults.WAN_ANIMATE_2_REPO,
    Wan2Variant.DISTILLED: defaults.WAN_ANIMATE_2_DISTILLED_REPO,
}
#: The checkpoint each preset runs (a preset names steps and sizes, not a checkpoint).
PRESET_VARIANTS: dict[str, Wan2Variant] = {
    "quality": Wan2Variant.BASE,
    "balanced": Wan2Variant.DISTILLED,
    "live": Wan2Variant.DISTILLED,
}
#: The setting that may name a local folder (or another repo id) for the checkpoint.
MODEL_SETTING = "wan2_model"
#: The setting that picks a checkpoint whatever the preset says.
VARIANT_SETTING = "wan2_variant"


def variant_of(options: Mapping[str, Any]) -> Wan2Variant:
    """``wan2_variant`` if given, else the preset's checkpoint, else :data:`VARIANT`."""
    explicit = options.get(VARIANT_SETTING)
    if explicit is not None:
        try:
            return Wan2Variant(str(explicit))
        except ValueError:
            raise ValueError(f"wan2_variant must be one of {', '.join(VARIANTS)}, "
                             f"got {explicit!r}") from None
    preset = options.get("preset")
    return PRESET_VARIANTS.get(str(preset), VARIANT) if preset is not None else VARIANT


def required_weights(options: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(registered model name, what its setting says or None) for what the engine loads: one
    checkpoint and nothing else, since the raw camera frames need no preprocessing models."""
    value = options.get(MODEL_SETTING)
    return [(WEIGHTS[variant_of(options)], None if value is None else str(value))]
