"""The ``wan-animate-2`` presets (registered on import; constants only, no torch).

* ``quality``: the base checkpoint as released, 40 steps with guidance 3.0 (two transformer
  passes per step), 17-frame segments.
* ``balanced``: the distilled checkpoint as released, 10 steps without guidance, 9-frame
  segments: a fifth of quality's transformer passes per segment.
* ``live``: the distilled checkpoint at 4 steps and 5-frame segments (4 new frames a call).
  Fewer steps cut the generation time of a segment proportionally; the shorter segment cuts
  what the camera waits to fill a batch (4 frames instead of 8) and the forward's size, at a
  somewhat higher cost per new frame (3 latent frames of tokens for 4 new frames instead of 4
  for 8). Together they aim at the 1.5 s capture-to-screen goal; 4 steps is below what the
  checkpoint was distilled for, so its quality is the price (unmeasured on real weights yet).
  The transformer runs in fp8 where the GPU has fp8 tensor cores (unquantized elsewhere).
"""

from __future__ import annotations

from faceswap_cam.models.defaults import Quantize
from faceswap_cam.models.presets import DEFAULT_PRESETS, Preset, PresetName, register_preset

ENGINE = "wan-animate-2"

QUALITY = register_preset(Preset(
    name=PresetName.QUALITY, engine=ENGINE, steps=40, segment_frames=17, carry=1,
    gen_short_side=480, guidance_scale=3.0))
BALANCED = register_preset(Preset(
    name=PresetName.BALANCED, engine=ENGINE, steps=10, segment_frames=9, carry=1,
    gen_short_side=480, guidance_scale=1.0))
LIVE = register_preset(Preset(
    name=PresetName.LIVE, engine=ENGINE, steps=4, segment_frames=5, carry=1,
    gen_short_side=480, guidance_scale=1.0, quantize=Quantize.FP8.value))
#: The distilled checkpoint's own settings: the daemon's plain defaults (20 steps, guidance 5)
#: are wan-animate's and mean nothing to this engine.
DEFAULT_PRESETS[ENGINE] = PresetName.BALANCED
