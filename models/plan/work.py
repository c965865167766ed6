"""What the plan counts: the generation :class:`Shape`, one batch's :class:`Work` (FLOPs) and a
model's :class:`Params`, and the constants both engines share (text and image tokens, the Wan
VAE's scales and its FLOPs per pixel, the CLIP vision tower)."""

from __future__ import annotations

from dataclasses import dataclass

TEXT_TOKENS = 512  # UMT5 max_sequence_length the pipeline pads to
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 16 x 16 patches + class token
#: The Wan 2.1 VAE (``AutoencoderKLWan()``'s defaults) that Animate uses.
VAE_SCALE_TEMPORAL = 4
VAE_SCALE_SPATIAL = 8
#: Parameters of the CLIP ViT-H/14 vision tower that encodes the reference (it stays on the GPU
#: for reference changes; the UMT5 text encoder leaves it after the prompt is encoded).
CLIP_VISION_PARAMS = 632_000_000

# The VAE's FLOPs per output pixel and frame, counted once with FlopCounterMode at 848x480
# (encode of L frames, decode of L frames from their latents): the analytic path scales them
# by pixels x frames. They are within 1 % at 1280x720 L=17.
VAE_ENCODE_FLOPS_PER_PIXEL_FRAME = 5.24e6
VAE_DECODE_FLOPS_PER_PIXEL_FRAME = 8.75e6


@dataclass(frozen=True)
class Shape:
    """One generation: ``width x height``, segment length L, ``new_frames`` = L - P."""

    width: int
    height: int
    new_frames: int
    segment: int  # L

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height} L={self.segment}"

    def latent_frames(self, scale_t: int = VAE_SCALE_TEMPORAL) -> int:
        return (self.segment - 1) // scale_t + 1

    def analytic_vae_flops(self) -> int:
        """A segment's VAE work, the same for both engines: the driving slice and the previous
        segment's tail (padded to L frames) encoded, the segment decoded."""
        pixels = self.width * self.height * self.segment
        return int(pixels * (2 * VAE_ENCODE_FLOPS_PER_PIXEL_FRAME
                             + VAE_DECODE_FLOPS_PER_PIXEL_FRAME))


@dataclass(frozen=True)
class Work:
    """FLOPs of one batch's parts at one shape."""

    dit_flops: int  # one denoising forward (the conditional one)
    dit_linear_flops: int  # of which the linear layers (faster with fp8)
    vae_flops: int  # two encodes of L frames and one decode
    source: str  # "FlopCounterMode" or "analytic"
    #: The unconditional CFG forward where it differs from the conditional one (Wan-Animate-2
    #: skips a block there); None: the same.
    uncond_flops: int | None = None
    uncond_linear_flops: int | None = None
    #: Transformer work once per batch besides the steps (Wan-Animate-2's reference pass).
    batch_flops: int = 0
    batch_linear_flops: int = 0

    def dit_per_batch(self, steps: int, cfg: bool) -> tuple[int, int]:
        """All of a batch's transformer FLOPs and those of its linear layers."""
        total = steps * self.dit_flops + self.batch_flops
        linear = steps * self.dit_linear_flops + self.batch_linear_flops
        if cfg:
            total += steps * (self.dit_flops if self.uncond_flops is None else self.uncond_flops)
            linear += steps * (self.dit_linear_flops if self.uncond_linear_flops is None
                               else self.uncond_linear_flops)
        return total, linear


@dataclass(frozen=True)
class Params:
    dit: int
    dit_linear: int  # the weights fp8/int8 store in one byte
    dit_fp32: int  # kept in fp32 as from_pretrained does
    vae: int
