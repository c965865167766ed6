"""Which registered weights the Wan-Animate engine loads, given its options.

One answer for the engine's availability check and for ``faceswap-cam doctor``, so the doctor
never asks for a download the engine does not need, or misses one it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faceswap_cam.models import defaults

#: The setting that may name a local folder (or another repo id) for each registered model.
WEIGHT_SETTINGS: dict[str, str] = {
    "wan-animate": "wan_model",
    "detector": "detector_model",
    "pose": "pose_model",
    "sam2": "sam2_model",
}


def required_weights(options: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(registered model name, what its setting says or None) for every model the engine
    loads with ``options`` (the engine options, as the daemon passes them)."""
    names = ["wan-animate"]
    # The stand-in preprocessor uses image operations only; the real one runs the detector
    # and pose model, and SAM2 masks only where the person is composited into the room.
    if str(options.get("preprocessor", defaults.PREPROCESSOR)) != "stand-in":
        names += ["detector", "pose"]
        if str(options.get("mode", defaults.MODE)) == defaults.WanMode.REPLACE:
            names.append("sam2")
    return [(name, _setting(options, WEIGHT_SETTINGS[name])) for name in names]


def _setting(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    return None if value is None else str(value)
