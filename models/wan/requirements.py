"""Which registered weights the Wan-Animate engine loads, given its options.

One answer for the engine's availability check and for ``faceswap-cam doctor``, so the doctor
never asks for a download the engine does not need, or misses one it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceswap_cam.models import defaults

#: The setting that may name a local folder (or another repo id) for each registered model.
WEIGHT_SETTINGS: dict[str, str] = {
    "wan-animate": "wan_model",
    "detector": "detector_model",
    "pose": "pose_model",
    "sam2": "sam2_model",
}


def preprocessing_models(options: Mapping[str, Any]) -> list[str]:
    """The registered preprocessing models the engine runs with ``options`` (the preset
    applied): none for the stand-in preprocessor, which uses image operations only; else the
    detector and the pose model, and SAM2 for a sam2 person mask, which only replace mode
    makes."""
    # mode and preprocessor read as the engine reads them (a None mode is not replace mode).
    if str(options.get("preprocessor", defaults.PREPROCESSOR)) == "stand-in":
        return []
    if (str(options.get("mode", defaults.MODE)) == defaults.WanMode.REPLACE
            and str(options.get("person_mask") or defaults.PERSON_MASK)
            == defaults.PersonMask.SAM2):
        return ["detector", "pose", "sam2"]
    return ["detector", "pose"]


def required_weights(options: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(registered model name, what its setting says or None) for every model the engine
    loads with ``options`` (the engine options, as the daemon passes them)."""
    resolved = _with_preset(options)
    names = ["wan-animate", *preprocessing_models(resolved)]
    needed = [(name, _setting(options, WEIGHT_SETTINGS[name])) for name in names]
    # A LoRA named by its registered weights (the live preset's step-distillation LoRA).
    return needed + [(name, None) for name in _registered_loras(resolved)]


def _with_preset(options: Mapping[str, Any]) -> dict[str, Any]:
    from faceswap_cam.models.presets import apply_preset
    from faceswap_cam.models.wan.presets import ENGINE

    try:
        return apply_preset(options, ENGINE)
    except ValueError:
        return dict(options)  # the engine itself reports a preset that does not fit


def _registered_loras(resolved: Mapping[str, Any]) -> list[str]:
    """The registered weights among the LoRAs the options (the preset applied) load."""
    from faceswap_cam.models import weights
    from faceswap_cam.models.wan.loading import parse_lora

    names = []
    for spec in resolved.get("loras") or []:
        name = parse_lora(str(spec))[0]
        if name in weights.model_names() and not Path(name).expanduser().exists():
            names.append(name)
    return names


def _setting(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    return None if value is None else str(value)
