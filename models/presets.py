"""Presets: named bundles of the engine settings that decide speed against quality.

``--preset quality|balanced|live`` picks one bundle per engine; any flag given as well
overrides its part of the bundle. ``plan`` predicts what each preset does on a GPU, and the GPU
benchmark measures it. Constants only (no torch): the CLI, the config and ``plan`` import this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class PresetName(StrEnum):
    QUALITY = "quality"
    BALANCED = "balanced"
    LIVE = "live"


@dataclass(frozen=True, slots=True)
class Preset:
    name: PresetName
    engine: str
    #: Denoising steps per segment.
    steps: int
    #: Segment length L = 4n+1 and frames carried P: each later call makes L - P new frames.
    segment_frames: int
    carry: int
    #: Short side of the generation size (480 -> 848x480 from a 16:9 camera).
    gen_short_side: int
    #: Classifier-free guidance (two transformer passes per step) or not.
    guidance_scale: float
    #: Scheduler flow shift; None keeps the model's own.
    shift: float | None = None
    #: A registered weights name (models/weights) of a LoRA loaded only with this preset.
    lora: str | None = None
    lora_scale: float = 1.0
    #: Starting engine cadence k (every k-th camera frame); None: chosen from the plan.
    cadence: int | None = None
    #: The transformer's quantization where the device can run it (fp8: compute capability
    #: 8.9+); elsewhere the preset runs unquantized. A --quantize the user gives wins.
    quantize: str | None = None
    #: Replace mode's person mask (``defaults.PersonMask``); None keeps the engine's default.
    person_mask: str | None = None


#: Filled in per engine by the modules that define the engines' presets.
PRESETS: dict[tuple[str, PresetName], Preset] = {}
#: The preset an engine runs when none is asked for, for an engine whose checkpoint comes with
#: its own settings (none: the plain settings, as for wan-animate).
DEFAULT_PRESETS: dict[str, PresetName] = {}


def _registered() -> None:
    """Every engine's presets in :data:`PRESETS`: their modules register them on import, and
    a caller that never imported one (a script, a test alone) would find none."""
    from faceswap_cam.models.wan import presets as _wan  # noqa: F401
    from faceswap_cam.models.wan2 import presets as _wan2  # noqa: F401


def register_preset(preset: Preset) -> Preset:
    PRESETS[(preset.engine, preset.name)] = preset
    return preset


def default_preset(engine: str) -> str | None:
    """The preset ``engine`` runs when none is asked for (see :data:`DEFAULT_PRESETS`)."""
    _registered()
    name = DEFAULT_PRESETS.get(engine)
    return None if name is None else name.value


def presets_for(engine: str) -> list[Preset]:
    """The engine's presets in quality -> live order."""
    _registered()
    return [PRESETS[(engine, name)] for name in PresetName if (engine, name) in PRESETS]


def get_preset(engine: str, name: str) -> Preset:
    _registered()
    try:
        return PRESETS[(engine, PresetName(name))]
    except (KeyError, ValueError):
        known = ", ".join(p.name.value for p in presets_for(engine)) or "none"
        raise ValueError(f"engine {engine} has no preset {name!r} (presets: {known})") from None


#: The options (engine options, as the daemon passes them) each preset sets.
PRESET_OPTIONS = ("steps", "segment_frames", "carry", "gen_short_side", "guidance_scale",
                  "shift", "loras", "cadence", "quantize", "person_mask")


#: The key of :func:`apply_preset`'s result that lists the options the preset chose.
FROM_PRESET = "from_preset"


def apply_preset(options: Mapping[str, Any], engine: str) -> dict[str, Any]:
    """``options`` with its preset's values (``options["preset"]``) for ``engine`` wherever the
    user gave none: ``options["explicit"]`` names the settings given in the config file, the
    environment or a flag, and each of those keeps its value (an explicit ``gen_size`` keeps
    the preset's size out; explicit ``loras`` replace the preset's). A caller that lists none
    (tests, scripts) gave every option it passed: the result lists them. No preset (nor a
    default one for the engine), or an engine without presets: the options as they are."""
    _registered()
    resolved = dict(options)
    resolved.setdefault("explicit", [key for key in options if key != "preset"])
    name = options.get("preset") or DEFAULT_PRESETS.get(engine)
    if not name or not presets_for(engine):
        return resolved
    preset = get_preset(engine, str(name))
    explicit = set(resolved["explicit"] or ())
    if "gen_size" in explicit:
        explicit.add("gen_short_side")
    values: dict[str, Any] = {
        "steps": preset.steps, "segment_frames": preset.segment_frames, "carry": preset.carry,
        "gen_short_side": preset.gen_short_side, "guidance_scale": preset.guidance_scale,
        "shift": preset.shift, "cadence": preset.cadence, "quantize": preset.quantize,
        "person_mask": preset.person_mask,
        "loras": [f"{preset.lora}:{preset.lora_scale:g}"] if preset.lora else None}
    chosen = []
    for key, value in values.items():
        # None: the preset leaves this one to the model (shift), the plan (cadence) or the
        # engine (person_mask).
        if key not in explicit and value is not None:
            resolved[key] = value
            chosen.append(key)
    #: What the preset chose: its fp8 gives way where the device has none (quantize.py).
    resolved[FROM_PRESET] = chosen
    segment, carry = int(resolved.get("segment_frames", 0)), int(resolved.get("carry", 0))
    if segment and segment - carry < carry:
        shortest = next(n for n in range(5, 200, 4) if n >= 2 * carry)
        raise ValueError(f"preset {preset.name.value}: segment_frames {segment} is too short to "
                         f"carry {carry} frames (use {shortest} or more, or set carry as well)")
    return resolved
