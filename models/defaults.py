"""The models FaceSwap Cam uses and the engine's default settings, each written down once.

The daemon's settings, the engine, the streaming generator, the preprocessing models, the
weights registry and ``doctor`` all read these, so changing a default here changes it
everywhere. Constants only: the CLI and the tray import this without the model stack.
"""

from __future__ import annotations

from enum import StrEnum

# --------------------------------------------------------------------------- Hub repos

#: Wan2.2-Animate-14B in diffusers layout: the generative swap model.
WAN_ANIMATE_REPO = "Wan-AI/Wan2.2-Animate-14B-Diffusers"

#: Wan-Animate-2 (14B) in diffusers' modular layout: it takes the raw driving video (no pose,
#: face or mask preprocessing). The base checkpoint samples 40 steps with classifier-free
#: guidance, the distilled one 10 steps without. Both ids are the ones diffusers' Wan-Animate-2
#: documentation loads (docs/source/en/api/pipelines/wan_animate_2.md).
WAN_ANIMATE_2_REPO = "Wan-AI/Wan2.2-Animate-2-14B-Diffusers"
WAN_ANIMATE_2_DISTILLED_REPO = "Wan-AI/Wan2.2-Animate-2-14B-Distilled-Diffusers"

# RT-DETRv2 with a ResNet-18-vd backbone, COCO-trained (id 0 = "person"), Apache-2.0, ~20M
# parameters (81 MB). It is the smallest model of PekingU's (the RT-DETR authors') hub
# organisation and is a few AP better than v1's PekingU/rtdetr_r18vd at the same cost; the
# whole pipeline's time goes to the 14B video model, so the detector only has to be cheap
# and good enough to find one large person. It loads as RTDetrV2ForObjectDetection through
# AutoModelForObjectDetection; any RT-DETR (v1 or v2) checkpoint with a "person" class works.
DETECTOR_REPO = "PekingU/rtdetr_v2_r18vd"

# The ViTPose-H whole-body (133-keypoint) network Wan-Animate's preprocessing runs is public
# only in mmpose format; this repo hosts it, and pose.convert_mmpose_checkpoint turns the file
# into a transformers folder (see pose.py for why no transformers checkpoint will do).
POSE_REPO = "JunkyByte/easy_ViTPose"
POSE_FILE = "torch/wholebody/vitpose-h-wholebody.pth"

# Wan-Animate's preprocessing uses SAM2 Hiera-L (``sam2/sam2_hiera_large.pt``), but a camera
# has one frame time for the whole pipeline, and the 2.1 Tiny tracker is the fastest of Meta's
# checkpoints. The Hub repo carries transformers weights (config ``model_type`` ``sam2_video``,
# processor ``Sam2VideoProcessor``), so it loads with ``Sam2VideoModel.from_pretrained`` as is.
SAM2_REPO = "facebook/sam2.1-hiera-tiny"

# LightX2V's step- and CFG-distillation LoRA for Wan2.1-I2V-14B-480P, from its authors' own
# repo. Its card names no licence (checked 2026-11); LightX2V's other Wan distillations and the
# Wan2.1 weights it adapts are Apache-2.0. The rank-64 file (739 MB) is the one the
# community runs with Wan-Animate at 4-6 steps and no CFG; the Animate transformer shares the
# I2V blocks it targets. The `live` preset loads it; it is fetched only by
# `faceswap-cam models download --only lightx2v-lora`.
LIGHTX2V_LORA_REPO = "lightx2v/Wan2.1-Distill-Loras"
LIGHTX2V_LORA_FILE = "wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors"
#: Flow shift LightX2V's own 4-step Wan2.1 distill configs sample with (``sample_shift``).
LIGHTX2V_SHIFT = 5.0

# --------------------------------------------------------------------------- engine


class WanMode(StrEnum):
    REPLACE = "replace"  # keep the user's room, replace the person
    ANIMATE = "animate"  # the reference character, animated, in its own scene


MODES = tuple(mode.value for mode in WanMode)
MODE = WanMode.REPLACE.value
#: Denoising steps per segment.
STEPS = 20
#: Segment length L (4n+1 frames): the first call takes L frames, each later one L - P.
SEGMENT_FRAMES = 9
#: Frames P carried from one segment to the next; Wan-Animate was trained with 1 and 5 only.
CARRY = 1
CARRY_CHOICES = (1, 5)
SEED = 0
#: Classifier-free guidance off: one transformer pass per step.
GUIDANCE_SCALE = 1.0
#: Short side of the generation size when none is set (1280x720 generates at 848x480).
GEN_SHORT_SIDE = 480
#: "wan": Wan-Animate's preprocessing models; "stand-in": image operations only.
PREPROCESSOR = "wan"


class GenWindow(StrEnum):
    """Where replace mode generates (models/wan/window.py)."""

    PERSON = "person"  # a window around the person: about half the work, the same detail
    FRAME = "frame"  # the whole frame, as Wan-Animate's own preprocessing does


GEN_WINDOWS = tuple(window.value for window in GenWindow)
GEN_WINDOW = GenWindow.PERSON.value


class PersonMask(StrEnum):
    """Where replace mode's person mask comes from (models/preprocessing/wan.py). Either way
    the mask Wan-Animate gets is a box: Wan's recipe fills the dilated mask to its bounding
    box (``segmentation.WAN_GRID``)."""

    SAM2 = "sam2"  # Wan's recipe: SAM2's tracked person, dilated, filled to its box
    BOX = "box"  # the detector's person box, dilated: the same kind of box without SAM2


PERSON_MASKS = tuple(source.value for source in PersonMask)
PERSON_MASK = PersonMask.SAM2.value
#: Soft edge, in camera pixels, of the swapped person composited into the room.
FEATHER_PX = 8
#: What the product asks Wan-Animate for. The streaming generator's own default stays "", as
#: the diffusers pipeline's does, so that class alone matches the pipeline call for call.
PROMPT = "a person talking to the camera"


class Quantize(StrEnum):
    NONE = "none"
    FP8 = "fp8"  # fp8 weights and activations: compute capability 8.9+ (Ada, Hopper, Blackwell)
    INT8 = "int8"  # int8 weights, computed in the model's dtype: any GPU, and the CPU


QUANTIZE = Quantize.NONE.value
#: ``auto``: FlashAttention-3 or SageAttention where installed and supported, else native.
ATTENTION_BACKEND = "auto"

# --------------------------------------------------------------------------- install

#: Installs the model stack (torch, diffusers, transformers, huggingface_hub).
MODELS_EXTRA_INSTALL = "pip install 'faceswap-cam[models]'"
