"""The ``wan-animate`` engine's presets (see :mod:`faceswap_cam.models.presets`).

- ``quality``: the model as its authors run it, 20 steps, at 720p, with long segments that
  carry 5 frames (smoother seams): for ``render`` and for several GPUs, not one live.
- ``balanced``: the step-distillation LoRA at 6 steps (the upper end of the 4-6 the community
  runs it with), 480p, long segments carrying 5 frames.
- ``live``: the LoRA at 4 steps (what it was distilled for), 480p, the shortest segment that
  carries 1 frame, so each call makes 8 new frames with the least delay, the transformer
  in fp8 where the GPU has fp8 tensor cores (twice bf16's peak; unquantized elsewhere), and
  the detector's person box as the person mask instead of SAM2's: Wan fills its mask to a box
  anyway, and SAM2 was most of the preprocessing (benchmarks/preprocess.py).

The LoRA runs without classifier-free guidance (it distils CFG away) at LightX2V's flow shift.
The starting cadence is left to the capacity plan: it depends on the GPU, not the preset.
"""

from __future__ import annotations

from faceswap_cam.models import defaults
from faceswap_cam.models.presets import Preset, PresetName, register_preset

ENGINE = "wan-animate"
#: The registered weights name of the step-distillation LoRA (models/weights/registry.py).
DISTILL_LORA = "lightx2v-lora"

QUALITY = register_preset(Preset(
    name=PresetName.QUALITY, engine=ENGINE, steps=20, segment_frames=17, carry=5,
    gen_short_side=720, guidance_scale=defaults.GUIDANCE_SCALE))
BALANCED = register_preset(Preset(
    name=PresetName.BALANCED, engine=ENGINE, steps=6, segment_frames=17, carry=5,
    gen_short_side=480, guidance_scale=1.0, shift=defaults.LIGHTX2V_SHIFT,
    lora=DISTILL_LORA))
LIVE = register_preset(Preset(
    name=PresetName.LIVE, engine=ENGINE, steps=4, segment_frames=9, carry=1,
    gen_short_side=480, guidance_scale=1.0, shift=defaults.LIGHTX2V_SHIFT,
    lora=DISTILL_LORA, quantize=defaults.Quantize.FP8.value,
    person_mask=defaults.PersonMask.BOX.value))
