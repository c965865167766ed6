"""Wan-Animate generation as a stream of segments, equal to the offline pipeline.

``WanAnimatePipeline.__call__`` renders a whole clip in segments of L = 4n+1 frames, each later
segment conditioned on the last P output frames of the one before. :class:`StreamingWanAnimate`
runs exactly those per-segment steps, one call per segment, and keeps what a segment hands to
the next between calls: the previous output frames, the preprocessed conditioning inputs of the
P overlapping frames, and the random generator. Feeding a clip L frames first and L-P frames
per later call therefore gives the frames the pipeline gives for the whole clip with the same
seed, segment length, steps and inputs.

The expensive per-reference work (prompt embeds, CLIP image embeds, reference VAE latents) is
done once in :meth:`set_reference` / at construction, never per segment.

This module imports torch and diffusers at the top: import it only where the model stack is
wanted (the engine factory imports it lazily).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.engine import EngineInterrupted

logger = logging.getLogger(__name__)


def check_segment(segment_frames: int, carry: int) -> None:
    if carry not in defaults.CARRY_CHOICES:
        choices = " or ".join(map(str, defaults.CARRY_CHOICES))
        raise ValueError(f"carried frames must be {choices}, got {carry}")
    if segment_frames < 5 or (segment_frames - 1) % 4:
        raise ValueError(f"segment length must be 4n+1 and at least 5, got {segment_frames}")
    # The pipeline takes the P conditioning frames from the previous segment's *new* frames.
    if segment_frames - carry < carry:
        raise ValueError(f"segment length {segment_frames} is too short to carry {carry} frames: "
                         f"use at least {4 * ((2 * carry - 1 + 3) // 4) + 1}")


@dataclass
class SegmentInputs:
    """One segment's conditioning frames: PIL images, as the pipeline takes them, or uint8
    arrays (RGB (H, W, 3); masks (H, W)), which at the generation size (the face crops at the
    motion encoder's) go to the device as they are and become the same tensors there (see
    :func:`frames_to_video`)."""

    pose: Sequence[PIL.Image.Image] | Sequence[np.ndarray]
    face: Sequence[PIL.Image.Image] | Sequence[np.ndarray]
    background: Sequence[PIL.Image.Image] | Sequence[np.ndarray] | None = None
    #: White (nonzero) = person (generated); "L" images or (H, W) arrays.
    mask: Sequence[PIL.Image.Image] | Sequence[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.pose)


@dataclass
class _Conditioning:
    """Preprocessed tensors of one segment's inputs, (B, C, T, H, W)."""

    pose: torch.Tensor
    face: torch.Tensor
    background: torch.Tensor | None
    mask: torch.Tensor | None

    def tail(self, frames: int) -> _Conditioning:
        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, :, -frames:]

        pose, face = cut(self.pose), cut(self.face)
        assert pose is not None and face is not None
        return _Conditioning(pose, face, cut(self.background), cut(self.mask))

    def cloned(self) -> _Conditioning:
        return _Conditioning(self.pose.clone(), self.face.clone(),
                             None if self.background is None else self.background.clone(),
                             None if self.mask is None else self.mask.clone())

    def join(self, new: _Conditioning) -> _Conditioning:
        def cat(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            return None if a is None or b is None else torch.cat([a, b], dim=2)

        pose, face = cat(self.pose, new.pose), cat(self.face, new.face)
        assert pose is not None and face is not None
        return _Conditioning(pose, face, cat(self.background, new.background),
                             cat(self.mask, new.mask))


class GenerationInterrupted(EngineInterrupted):
    """``interrupt()`` stopped a segment midway; the stream must be reset."""


class StreamingWanAnimate:
    """Segment-by-segment Wan-Animate generation over a loaded ``WanAnimatePipeline``."""

    def __init__(
        self,
        pipe: Any,  # diffusers.WanAnimatePipeline (untyped)
        *,
        height: int,
        width: int,
        mode: str = defaults.MODE,
        segment_frames: int = defaults.SEGMENT_FRAMES,
        carry: int = defaults.CARRY,
        steps: int = defaults.STEPS,
        guidance_scale: float = defaults.GUIDANCE_SCALE,
        seed: int = defaults.SEED,
        prompt: str = "",
        negative_prompt: str = "",
        max_sequence_length: int = 512,
        release_text_encoder: bool = True,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> None:
        if mode not in defaults.MODES:
            raise ValueError(f"mode must be one of {defaults.MODES}, got {mode!r}")
        check_segment(segment_frames, carry)
        if height % 16 or width % 16:
            raise ValueError(f"generation size must be divisible by 16, got {width}x{height}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.pipe: Any = pipe
        self.height, self.width = height, width
        self.mode = mode
        self.segment_frames = segment_frames
        self.carry = carry
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.device = pipe._execution_device
        self.transformer_dtype = pipe.transformer.dtype
        # State the pipeline's own __call__ would set and its helpers read.
        pipe._guidance_scale = guidance_scale
        pipe._interrupt = False
        if prompt_embeds is not None:
            # Another stream of the same engine encoded this prompt already; once released,
            # the text encoder would run on the CPU.
            self.prompt_embeds, self.negative_prompt_embeds = prompt_embeds
        else:
            self.prompt_embeds, self.negative_prompt_embeds = self._encode_prompt(
                prompt, negative_prompt, max_sequence_length)
            if release_text_encoder:
                self._release_text_encoder()
        self._image_embeds: torch.Tensor | None = None
        self._reference_latents: torch.Tensor | None = None
        self.generator = torch.Generator(device=self.device)
        self.reset()

    @property
    def first_batch(self) -> int:
        return self.segment_frames

    @property
    def next_batch(self) -> int:
        return self.segment_frames - self.carry

    # --- encode once -----------------------------------------------------------------------

    @torch.no_grad()
    def _encode_prompt(self, prompt: str, negative_prompt: str, max_sequence_length: int
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        positive, negative = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt,
            do_classifier_free_guidance=self.guidance_scale > 1.0,
            max_sequence_length=max_sequence_length, device=self.device)
        positive = positive.to(self.transformer_dtype)
        return positive, None if negative is None else negative.to(self.transformer_dtype)

    def _release_text_encoder(self) -> None:
        """The prompt is fixed: the text encoder (UMT5-XXL, ~11 GB) leaves the accelerator."""
        encoder = self.pipe.text_encoder
        if encoder is not None and self.device.type != "cpu" and not hasattr(encoder, "_hf_hook"):
            encoder.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            logger.info("text encoder moved off %s after encoding the prompt", self.device)

    @torch.no_grad()
    def set_reference(self, image: PIL.Image.Image) -> None:
        """Encode the reference character once (CLIP embeds + VAE latents); it takes effect
        with the next segment. The stream goes on: whether a new reference restarts it is the
        caller's decision (``reset()``), as for every restart."""
        pipe = self.pipe
        pixels = pipe.vae_image_processor.preprocess(
            image, height=self.height, width=self.width, resize_mode="fill",
        ).to(self.device, dtype=torch.float32)
        embeds = pipe.encode_image(image, self.device).to(self.transformer_dtype)
        # The latent distribution's mode, as the pipeline takes it: the generator is handed
        # over but not drawn from, so encoding leaves the stream's random sequence alone.
        latents = pipe.prepare_reference_image_latents(
            pixels, 1, generator=self.generator, device=self.device)
        # Both or neither: a failed encode must leave the previous reference whole.
        self._image_embeds, self._reference_latents = embeds, latents

    # --- temporal state --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the previous segment: the next call starts a new stream (L frames)."""
        self.generator.manual_seed(self.seed)
        self.pipe._interrupt = False
        self._previous_output: torch.Tensor | None = None
        self._carried: _Conditioning | None = None

    @property
    def expects(self) -> int:
        """How many new frames the next call takes."""
        return self.first_batch if self._previous_output is None else self.next_batch

    # --- one segment -----------------------------------------------------------------------

    def _preprocess(self, inputs: SegmentInputs) -> _Conditioning:
        pipe, device = self.pipe, self.device
        processor = pipe.video_processor
        face_size = pipe.transformer.config.motion_encoder_size
        size = (self.height, self.width)
        pose = frames_to_video(processor, inputs.pose, size, device)
        face = frames_to_video(processor, inputs.face, (face_size, face_size), device)
        background = mask = None
        if self.mode == "replace":
            if inputs.background is None or inputs.mask is None:
                raise ValueError("replace mode needs background and mask frames")
            background = frames_to_video(processor, inputs.background, size, device).to(
                device, torch.float32)
            mask = frames_to_video(pipe.video_processor_for_mask, inputs.mask, size, device).to(
                device, torch.float32)
        return _Conditioning(pose.to(device, torch.float32), face.to(device, torch.float32),
                             background, mask)

    def _check(self, inputs: SegmentInputs) -> None:
        expected = self.expects
        counts = {"pose": len(inputs.pose), "face": len(inputs.face)}
        if self.mode == "replace":
            counts["background"] = len(inputs.background or [])
            counts["mask"] = len(inputs.mask or [])
        wrong = {k: v for k, v in counts.items() if v != expected}
        if wrong:
            raise ValueError(f"this segment takes {expected} new frames of each input, got "
                             + ", ".join(f"{k}: {v}" for k, v in wrong.items()))

    @torch.no_grad()
    def generate(self, inputs: SegmentInputs) -> np.ndarray:
        """Generate the next segment's new frames: ``(T, H, W, 3)`` float RGB in [0, 1]."""
        video = self.pipe.video_processor.postprocess_video(self._generate(inputs),
                                                            output_type="np")
        return np.asarray(video[0])

    @torch.no_grad()
    def generate_uint8(self, inputs: SegmentInputs) -> np.ndarray:
        """:meth:`generate`'s frames as ``(T, H, W, 3)`` uint8 RGB, rounded as
        :func:`uint8_frames` rounds them, on a GPU made there (:func:`video_to_uint8`)."""
        return video_to_uint8(self.pipe.video_processor, self._generate(inputs))

    def _generate(self, inputs: SegmentInputs) -> torch.Tensor:
        """The next segment's new frames as the VAE decodes them, (1, C, T, H, W) in [-1, 1]."""
        if self._reference_latents is None or self._image_embeds is None:
            raise RuntimeError("no reference image set")
        self._check(inputs)
        pipe = self.pipe
        new = self._preprocess(inputs)
        first = self._previous_output is None
        segment = new if first or self._carried is None else self._carried.join(new)

        latents = pipe.prepare_latents(
            1, num_channels_latents=pipe.vae.config.z_dim, height=self.height, width=self.width,
            num_frames=self.segment_frames, dtype=torch.float32, device=self.device,
            generator=self.generator)
        pose_latents = pipe.prepare_pose_latents(
            segment.pose, 1, generator=self.generator, device=self.device,
        ).to(dtype=self.transformer_dtype)
        previous = None if first else self._previous_output
        condition_latents = pipe.prepare_prev_segment_cond_latents(
            previous, background_video=segment.background, mask_video=segment.mask,
            batch_size=1, segment_frame_length=self.segment_frames, start_frame=0 if first else 1,
            height=self.height, width=self.width, prev_segment_cond_frames=self.carry,
            task=self.mode, generator=self.generator, device=self.device)
        reference_latents = torch.cat([self._reference_latents, condition_latents], dim=2)
        latents = self._denoise(latents, reference_latents, pose_latents,
                                segment.face.to(self.transformer_dtype))
        frames = self._decode(latents)
        if not first:
            frames = frames[:, :, self.carry:]
        # Only a finished segment moves the stream on. Clones, so the carried frames do not
        # pin whole segment tensors in (GPU) memory between calls.
        self._carried = segment.tail(self.carry).cloned()
        self._previous_output = frames[:, :, -self.carry:].clone()
        return frames

    def _denoise(self, latents: torch.Tensor, reference_latents: torch.Tensor,
                 pose_latents: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        pipe = self.pipe
        scheduler = pipe.scheduler
        # A fresh schedule per segment, as the pipeline resets it between segments.
        scheduler.set_timesteps(self.steps, device=self.device)
        for t in scheduler.timesteps:
            if pipe.interrupt:
                raise GenerationInterrupted("segment interrupted")
            model_input = torch.cat([latents, reference_latents], dim=1).to(self.transformer_dtype)
            timestep = t.expand(latents.shape[0])
            with pipe.transformer.cache_context("cond"):
                noise = pipe.transformer(
                    hidden_states=model_input, timestep=timestep,
                    encoder_hidden_states=self.prompt_embeds,
                    encoder_hidden_states_image=self._image_embeds,
                    pose_hidden_states=pose_latents, face_pixel_values=face,
                    return_dict=False)[0]
            if self.guidance_scale > 1.0:
                with pipe.transformer.cache_context("uncond"):
                    uncond = pipe.transformer(
                        hidden_states=model_input, timestep=timestep,
                        encoder_hidden_states=self.negative_prompt_embeds,
                        encoder_hidden_states_image=self._image_embeds,
                        pose_hidden_states=pose_latents, face_pixel_values=face * 0 - 1,
                        return_dict=False)[0]
                noise = uncond + self.guidance_scale * (noise - uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        return latents

    def interrupt(self) -> None:
        """Stop the segment being generated (from another thread) at its next step."""
        self.pipe._interrupt = True

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        # The same arithmetic as the pipeline (divide by 1/std), so results match bit for bit.
        recip_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(
            latents.device, latents.dtype)
        latents = latents / recip_std + mean
        # The first latent frame is the reference image's: not part of the video.
        decoded: Any = vae.decode(latents[:, :, 1:], return_dict=False)[0]
        return torch.as_tensor(decoded)


def converts_on(device: Any) -> bool:
    """Whether the frames' conversions around the model run on ``device`` (a GPU) rather than
    through PIL and numpy (the CPU, where torch's tensor ops measured slower)."""
    return torch.device(device).type != "cpu"


_UNIT_SCALES: dict[torch.device, torch.Tensor] = {}


def _unit_scale(device: torch.device) -> torch.Tensor:
    """uint8 value -> its float32 value / 255, as diffusers' ``pil_to_numpy`` computes it."""
    table = _UNIT_SCALES.get(device)
    if table is None:
        table = _UNIT_SCALES[device] = torch.from_numpy(
            np.arange(256, dtype=np.float32) / np.float32(255)).to(device)
    return table


def frames_to_video(processor: Any, frames: Sequence[PIL.Image.Image] | Sequence[np.ndarray],
                    size: tuple[int, int], device: Any) -> torch.Tensor:
    """``processor.preprocess_video`` of ``frames`` at ``size`` (height, width): (1, C, T, H, W).

    On a GPU (any device but the CPU), uint8 arrays already at ``size`` go to ``device`` as
    they are (a quarter of the bytes of float32) and are scaled to [0, 1] there, then handed to
    the processor as the tensor it would have made of the same frames as PIL images: ``x /
    255`` in float32 (numpy's values, looked up), which a resize to the same size leaves
    alone. What the processor does
    next (normalising, a mask's single channel) it does on the device too. The PIL path's
    per-image conversions cost about 220 ms of this 2-core CPU for a batch's four inputs at
    480x480; on the CPU itself torch's tensor path measured slower still (360 ms), so there,
    and for anything else (PIL images, other sizes, other types), the processor takes PIL
    images as it always did.
    """
    height, width = size
    arrays = [f for f in frames if isinstance(f, np.ndarray)]
    # The mask processor makes one channel of (H, W) images; the others take RGB.
    shape = (height, width) if processor.config.do_convert_grayscale else (height, width, 3)
    # A size off the VAE's grid the PIL path rounds down and resizes (lanczos).
    scale = int(processor.config.vae_scale_factor)
    if (not converts_on(device) or len(arrays) != len(frames) or height % scale or width % scale
            or {(a.dtype, a.shape) for a in arrays} != {(np.dtype(np.uint8), shape)}):
        images = [PIL.Image.fromarray(np.ascontiguousarray(f)) if isinstance(f, np.ndarray)
                  else f for f in frames]
        return torch.as_tensor(processor.preprocess_video(images, height=height, width=width))
    pixels = torch.from_numpy(np.stack(arrays)).to(device)
    # Not pixels / 255.0: CUDA divides by a CPU scalar as x * (1 / 255), one ulp off numpy's
    # division for 126 of the 256 values. A table numpy made is exact on any device.
    scaled = _unit_scale(pixels.device)[pixels.int()]
    if scaled.ndim == 4:
        scaled = scaled.permute(0, 3, 1, 2)  # (T, C, H, W)
    return torch.as_tensor(processor.preprocess_video(scaled, height=height, width=width))


def uint8_frames(video: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounded the way the diffusers exporters do."""
    return np.asarray((np.clip(video, 0, 1) * 255).round(), dtype=np.uint8)


def video_to_uint8(processor: Any, video: torch.Tensor) -> np.ndarray:
    """The first video of decoded ``video`` (B, C, T, H, W) as ``(T, H, W, 3)`` uint8 frames:
    ``processor.postprocess_video`` to [0, 1] and :func:`uint8_frames`' rounding, on the
    video's device: on a GPU a quarter of the bytes come back and the CPU does no per-pixel
    work. On the CPU numpy does it (torch measured 115 ms a batch of 8 at 480x480 there,
    numpy 69)."""
    if not converts_on(video.device):
        return uint8_frames(processor.postprocess_video(video, output_type="np")[0])
    frames = processor.postprocess_video(video, output_type="pt")[0]  # (T, C, H, W)
    pixels = (frames.to(torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
    return np.asarray(pixels.permute(0, 2, 3, 1).cpu().numpy())
