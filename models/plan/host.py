"""The CPU's share of a batch: the work around the models that the engine's batch call does on
the host, between and after the GPU's, so that it adds to the batch's time as the GPU's does.

- ``wan-animate``: scaling the camera frames to the generation size, the face crops and
  drawing the skeleton; in replace mode also Wan's dilated mask and background (the person
  mask's own model is a GPU stage, :mod:`.preprocessing`) and compositing each generated
  window into its camera frame on the engine's threads (``replace_ms``). Measured for the
  person window of a 1280x720 camera (480x480 generated, the live preset's): a whole-frame
  row composites two to three times the pixels, so its CPU share reads low.
- ``wan-animate-2``: the camera frames to RGB images, the pipeline's letterboxing of them (PIL,
  on the CPU), and the generated frames back to BGR at the camera's size.

Milliseconds per new frame, measured on a GPU machine's host by ``benchmarks/preprocess.py
--gpu`` (wan-animate) and ``benchmarks/gpu_engine.py --engine wan-animate-2 --preset ...``,
which write them to the efficiency file's ``host`` section; until then assumed (the figures
below). The cost is the CPU's, not the GPU's, so one measurement stands for every GPU in the
table; a slower CPU than the measuring one makes a batch slower than the plan says, and the
daemon's cadence then follows what it measures (daemon/pipeline/cadence.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceswap_cam.models import defaults
from faceswap_cam.models.plan import gpus as plan_gpus
from faceswap_cam.models.plan.gpus import read_measurements, write_measurements


@dataclass(frozen=True)
class HostCost:
    """One engine's CPU work a new frame, in milliseconds."""

    preprocess_ms: float  # whatever the mode
    replace_ms: float  # replace mode's own: the mask's dilation, the background, compositing
    assumed: bool
    source: str

    def seconds(self, frames: int, mode: str = defaults.MODE) -> float:
        """The CPU's seconds in a batch of ``frames`` new frames."""
        replace = self.replace_ms if mode == "replace" else 0.0
        return frames * (self.preprocess_ms + replace) / 1000


def _per_frame(preprocess_ms: float, replace_ms: float, spec: str) -> str:
    return f"{preprocess_ms:{spec}} ms a frame" + (
        f" + {replace_ms:{spec}} replacing" if replace_ms else "")


def _assumed(preprocess_ms: float, replace_ms: float) -> HostCost:
    return HostCost(preprocess_ms, replace_ms, True,
                    f"ASSUMED {_per_frame(preprocess_ms, replace_ms, 'g')} (a 2-core CPU): not "
                    "measured on a GPU machine yet")


#: Measured on the 2-core CI machine (no GPU), the only host measured so far; a GPU server's
#: CPU is faster and has more cores for compositing's threads, so these lean slow.
#: wan-animate: ``benchmarks/preprocess.py --no-gpu``'s "host work" line, 1.93 / 1.54 / 1.93
#: ms + 8.24 / 6.62 / 7.38 ms replacing in three runs (its CPU stages at 848x480 with the
#: person window; the box mask's dilation and background, and compositing a person-shaped
#: mask into a 1280x720 frame on 2 threads), batches of 8; wan-animate-2: ``benchmarks/
#: gpu_engine.py --preset all --engine wan-animate-2 --tiny``'s "host work" line, 37.5 / 40.0
#: / 44.3 ms for 4 / 8 / 16 frames (1280x720 <-> 848x480; diffusers' letterboxing is most of
#: it: its PIL resize about 15 ms, its float conversion about 16).
ASSUMED_HOST = {
    "wan-animate": _assumed(1.9, 7.4),
    "wan-animate-2": _assumed(40.0, 0.0),
}
NO_HOST_WORK = HostCost(0.0, 0.0, False, "none")


def load_host_cost(engine: str, path: Path | None = None) -> HostCost:
    """What a GPU machine's host measured for ``engine``, else assumed."""
    path = plan_gpus.EFFICIENCY_FILE if path is None else path
    section = read_measurements(path).get("host")
    entry = section.get(engine) if isinstance(section, dict) else None
    if not isinstance(entry, dict):
        return ASSUMED_HOST.get(engine, NO_HOST_WORK)
    pre, replace = entry.get("preprocess_ms"), entry.get("replace_ms", 0.0)
    if not (isinstance(pre, (int, float)) and isinstance(replace, (int, float))
            and pre >= 0 and replace >= 0):
        return ASSUMED_HOST.get(engine, NO_HOST_WORK)
    where = f"{entry.get('cpus', '?')} CPUs beside {entry.get('device', 'a GPU')}"
    return HostCost(float(pre), float(replace), False,
                    f"{_per_frame(pre, replace, '.1f')}, measured on {where} ({path.name})")


def host_entry(preprocess_ms: float, replace_ms: float, *, device: str,
                   camera: tuple[int, int], by: str) -> dict[str, Any]:
    """A host measurement as the efficiency file keeps it: the figures, this machine's CPU
    count, the GPU beside it, the camera the work was measured for, the date and the
    benchmark that measured it."""
    return {"preprocess_ms": round(preprocess_ms, 2), "replace_ms": round(replace_ms, 2),
            "cpus": os.cpu_count(), "device": device, "camera": f"{camera[0]}x{camera[1]}",
            "measured": time.strftime("%Y-%m-%d"), "by": by}


def save_host_cost(path: Path, engine: str, entry: dict[str, Any]) -> None:
    """Merge one engine's measured host cost into the efficiency file, keeping the rest."""
    document = read_measurements(path)
    document.setdefault("host", {})[engine] = entry
    write_measurements(path, document)
