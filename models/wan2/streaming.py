"""Wan-Animate-2 generation as a stream of segments, equal to the modular pipeline.

diffusers' ``WanAnimate2Blocks`` (base, CFG) and ``WanAnimate2DistilledBlocks`` (few steps, no
CFG) render a whole driving video in segments of L = 4n+1 frames that overlap by P frames.
Each segment VAE-encodes its own slice of the driving video (the VAE is causal in time, so a
slice is not a slice of the whole clip's latents), extracts the slice's reference K/V, denoises
against it and the previous segment's decoded tail, and decodes. The loop's own comment says a
streaming mode would feed that per-segment encoder incrementally; :class:`StreamingWanAnimate2`
does exactly that: one call per segment, keeping between calls what a segment hands the next:

* the last P letterboxed driving frames (the overlap of the next slice),
* the last P decoded frames (the next segment's pixel-space conditioning),
* the CLIP features of the chain's first driving frame (the pipeline encodes the clip's first
  frame once and conditions every segment's reference pass on it),
* the random generator.

Per reference (encoded once, in :meth:`set_reference`): the letterboxed reference image, the
resolved frame size and crop box, its CLIP features and VAE latents. Per stream (once, at
construction): the prompt, negative-prompt and reference-prompt embeddings.

The letterboxing, text/image encoding, noise and KV-cache preparation, reference extraction and
decoding are diffusers' own blocks; this module replaces the per-segment VAE-encoder block (fed
incrementally) and the inner timestep loop (the same guider arithmetic, with an interrupt check
per step and no progress bar).

Imports torch and diffusers at the top: the engine factory imports it lazily.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

import numpy as np
import PIL.Image
import torch

from faceswap_cam.models.diffusers_logs import quiet_diffusers
from faceswap_cam.models.wan.streaming import GenerationInterrupted

logger = logging.getLogger(__name__)

# diffusers' modular blocks are unannotated: typed as Any here, once.
_WAN2 = "diffusers.modular_pipelines.wan_animate_2"
_modular: Any = importlib.import_module("diffusers.modular_pipelines.modular_pipeline")
blocks_encoders: Any = importlib.import_module(f"{_WAN2}.encoders")
blocks_before: Any = importlib.import_module(f"{_WAN2}.before_denoise")
blocks_denoise: Any = importlib.import_module(f"{_WAN2}.denoise")

#: The reference prompt diffusers' text step defaults to (it guides the reference pass).
PROMPT_REF = "人物动作的参考视频"


def check_segment(segment_frames: int, carry: int) -> None:
    if segment_frames < 5 or (segment_frames - 1) % 4:
        raise ValueError(f"segment length must be 4n+1 and at least 5, got {segment_frames}")
    if carry < 1:
        raise ValueError(f"carried frames must be at least 1, got {carry}")
    # The next segment's conditioning frames are the tail of this segment's *new* frames.
    if segment_frames - carry < carry:
        raise ValueError(f"segment length {segment_frames} is too short to carry {carry} frames")


def _run(block: Any, pipe: Any, **inputs: Any) -> Any:
    """Run one diffusers block standalone on ``inputs``; its outputs are in the state."""
    state = _modular.PipelineState()
    for key, value in inputs.items():
        state.set(key, value)
    _, state = block(pipe, state)
    return state


class StreamingWanAnimate2:
    """Segment-by-segment Wan-Animate-2 over a loaded ``WanAnimate2ModularPipeline`` (either
    variant: the pipeline's guider decides whether classifier-free guidance runs)."""

    def __init__(
        self,
        pipe: Any,  # diffusers WanAnimate2(Distilled)ModularPipeline (untyped)
        *,
        height: int,
        width: int,
        segment_frames: int,
        carry: int,
        steps: int,
        seed: int = 0,
        prompt: str = "",
        negative_prompt: str | None = None,
        prompt_ref: str = PROMPT_REF,
        max_sequence_length: int = 512,
        release_text_encoder: bool = True,
    ) -> None:
        check_segment(segment_frames, carry)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        #: The target *area* of the generated frames; the reference image sets their aspect.
        self.height, self.width = height, width
        self.pipe: Any = pipe
        self.segment_frames = segment_frames
        self.carry = carry
        self.steps = steps
        self.seed = seed
        self.device = pipe._execution_device
        text = _run(blocks_encoders.WanAnimate2TextEncoderStep(), pipe, prompt=prompt,
                    negative_prompt=negative_prompt, prompt_ref=prompt_ref,
                    max_sequence_length=max_sequence_length)
        self.prompt_embeds: torch.Tensor = text.get("prompt_embeds")
        self.negative_prompt_embeds: torch.Tensor | None = text.get("negative_prompt_embeds")
        self.prompt_ref_embeds: torch.Tensor = text.get("prompt_ref_embeds")
        if release_text_encoder:
            self._release_text_encoder()
        self._reference: dict[str, Any] | None = None
        self.generator = torch.Generator(device=self.device)
        self._interrupt = False
        self.reset()

    @property
    def first_batch(self) -> int:
        return self.segment_frames

    @property
    def next_batch(self) -> int:
        return self.segment_frames - self.carry

    def _release_text_encoder(self) -> None:
        """The prompts are fixed: the text encoder (UMT5-XXL, ~11 GB) leaves the pipeline.
        Dropped, not moved to the CPU: a modular pipeline places every block's tensors on the
        device of its first model, which the text encoder is, so a text encoder on the CPU
        would send the whole denoising loop there."""
        encoder = getattr(self.pipe, "text_encoder", None)
        if encoder is None or self.device.type == "cpu" or hasattr(encoder, "_hf_hook"):
            return
        del encoder
        with quiet_diffusers():  # it warns that the component becomes None: that is the point
            self.pipe.update_components(text_encoder=None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("text encoder released from %s after encoding the prompts", self.device)

    # --- encode once -----------------------------------------------------------------------

    @torch.no_grad()
    def set_reference(self, image: PIL.Image.Image) -> None:
        """Letterbox and encode the reference character once (CLIP features, VAE latents);
        it applies from the next segment, and it decides the generated frames' aspect."""
        pipe = self.pipe
        state = _run(blocks_encoders.WanAnimate2ProcessImagesInputStep(), pipe, image=image,
                     height=self.height, width=self.width)
        pixels = state.get("image_pixels")
        clip = _run(blocks_encoders.WanAnimate2ImageClipEncoderStep(), pipe, image_pixels=pixels)
        vae = _run(blocks_encoders.WanAnimate2ImageVaeEncoderStep(), pipe, image_pixels=pixels)
        # All or nothing: a failed encode leaves the previous reference whole.
        self._reference = {
            "height": state.get("height"), "width": state.get("width"),
            "crop_region": state.get("crop_region"),
            "encoder_hidden_states_image": clip.get("encoder_hidden_states_image"),
            "reference_image_latents": vae.get("reference_image_latents"),
        }

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(W, H) of the frames :meth:`generate` returns (the reference's crop box)."""
        if self._reference is None:
            return None
        _, _, height, width = self._reference["crop_region"]
        return int(width), int(height)

    # --- temporal state --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the previous segment: the next call starts a new chain (L frames)."""
        self.generator.manual_seed(self.seed)
        self._interrupt = False
        self._segment = 0
        self._driving_tail: torch.Tensor | None = None
        self._output_tail: torch.Tensor | None = None
        self._condition_clip_context: torch.Tensor | None = None

    @property
    def expects(self) -> int:
        """How many new frames the next call takes."""
        return self.first_batch if self._segment == 0 else self.next_batch

    def interrupt(self) -> None:
        """Stop the segment being generated (from another thread) at its next step."""
        self._interrupt = True

    def _check_interrupt(self) -> None:
        if self._interrupt:
            raise GenerationInterrupted("segment interrupted")

    # --- one segment -----------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, frames: list[PIL.Image.Image]) -> np.ndarray:
        """The next segment's new frames from as many new driving frames: ``(T, H, W, 3)``
        float RGB in [0, 1], at :attr:`frame_size`."""
        video = self._generate(frames).cpu()
        return np.asarray(self.pipe.video_processor.postprocess_video(video, output_type="np")[0])

    @torch.no_grad()
    def generate_uint8(self, frames: list[PIL.Image.Image]) -> np.ndarray:
        """:meth:`generate`'s frames as ``(T, H, W, 3)`` uint8 RGB, made on the device on a
        GPU (:func:`~faceswap_cam.models.wan.streaming.video_to_uint8`)."""
        from faceswap_cam.models.wan.streaming import video_to_uint8

        return video_to_uint8(self.pipe.video_processor, self._generate(frames))

    def _generate(self, frames: list[PIL.Image.Image]) -> torch.Tensor:
        """The next segment's new frames as decoded, cropped to :attr:`frame_size`:
        (1, 3, T, H, W) in [-1, 1], on the device."""
        reference = self._reference
        if reference is None:
            raise RuntimeError("no reference image set")
        if len(frames) != self.expects:
            raise ValueError(f"this segment takes {self.expects} new frames, got {len(frames)}")
        self._check_interrupt()
        pipe, k = self.pipe, self._segment
        height, width = reference["height"], reference["width"]
        # Letterboxing is per frame, so the new frames joined to the carried ones equal the
        # pipeline's slice of the whole preprocessed clip.
        new = pipe.video_processor.preprocess_video(
            frames, height=height, width=width, resize_mode="fill").to(self.device, torch.float32)
        driving = new if self._driving_tail is None else torch.cat([self._driving_tail, new], 2)
        if self._condition_clip_context is None:
            self._condition_clip_context = _run(
                blocks_encoders.WanAnimate2VideoClipEncoderStep(), pipe,
                driving_video_pixels=driving).get("condition_clip_context")
        geometry = _run(blocks_before.WanAnimate2PrepareSegmentsStep(), pipe,
                        segment_frame_length=self.segment_frames,
                        reference_image_latents=reference["reference_image_latents"],
                        driving_video_pixels=driving)

        state: Any = _modular.BlockState(
            driving_video_pixels=driving, effective_segment=self.next_batch,
            segment_frame_length=self.segment_frames,
            prev_segment_conditioning_frames=self.carry,
            reference_image_latents=reference["reference_image_latents"],
            out_frames=self._output_tail, segment_frames=[], generator=self.generator,
            num_inference_steps=self.steps, num_segments=k + 1, height=height, width=width,
            condition_clip_context=self._condition_clip_context,
            prompt_ref_embeds=self.prompt_ref_embeds,
            grid_sizes_ref=geometry.get("grid_sizes_ref"),
            max_seq_len=geometry.get("max_seq_len"),
            max_seq_len_ref=geometry.get("max_seq_len_ref"))
        self._encode_segment(state)
        for step in (blocks_denoise.WanAnimate2SegmentPrevFramesStep(),
                     blocks_denoise.WanAnimate2SegmentPrepareStep(),
                     blocks_denoise.WanAnimate2SegmentSchedulerResetStep(),
                     blocks_denoise.WanAnimate2RefExtractStep()):
            _, state = step(pipe, state, k)
        self._denoise(state, reference["encoder_hidden_states_image"])
        _, state = blocks_denoise.WanAnimate2SegmentDecodeStep()(pipe, state, k)

        out = state.out_frames  # [1, 3, T, H, W] in [-1, 1]: this segment's new frames
        # Only a finished segment moves the stream on. Clones, so the carried tails do not pin
        # whole segment tensors in (GPU) memory between calls.
        self._output_tail = out[:, :, -self.carry:].clone()
        self._driving_tail = driving[:, :, -self.carry:].clone()
        self._segment += 1
        top, left, crop_h, crop_w = reference["crop_region"]
        return torch.as_tensor(out[:, :, :, top:top + crop_h, left:left + crop_w])

    def _encode_segment(self, state: Any) -> None:
        """The segment VAE encoder, fed incrementally: ``driving_video_pixels`` is this
        segment's own slice (carried + new frames), so no offset into a whole clip."""
        latent_h, latent_w = state.reference_image_latents.shape[-2:]
        latents = blocks_encoders.encode_vae(self.pipe.vae, state.driving_video_pixels)
        mask = blocks_encoders.get_i2v_mask(
            latents.shape[2], latent_h, latent_w, self.segment_frames, device=self.device,
        ).to(latents.dtype)
        state.driving_video_latents = latents
        state.driving_video_condition = torch.cat([mask, latents[0]], dim=0)

    def _denoise(self, state: Any, image_embeds: torch.Tensor) -> None:
        """The inner timestep loop of diffusers' segment denoiser (guider and all), checking
        for an interrupt before every step."""
        pipe = self.pipe
        transformer, guider, scheduler = pipe.transformer, pipe.guider, pipe.scheduler
        dtype = transformer.dtype
        branches = {"encoder_hidden_states": (self.prompt_embeds, self.negative_prompt_embeds),
                    "is_uncondtion": (False, True)}
        extra: dict[str, Any] = {}
        if "encoder_hidden_states_image" in inspect.signature(transformer.forward).parameters:
            extra["encoder_hidden_states_image"] = image_embeds.to(dtype)
        for i, t in enumerate(state.timesteps):
            self._check_interrupt()
            guider.set_state(step=i, num_inference_steps=self.steps, timestep=t)
            batches = guider.prepare_inputs(branches)
            for batch in batches:
                guider.prepare_models(transformer)
                batch.noise_pred = transformer(
                    [state.latents.to(dtype)], timestep=torch.stack([t]),
                    encoder_hidden_states=[batch.encoder_hidden_states[0].to(dtype)],
                    condition_latents=[state.reference_latents.to(dtype)],
                    kv_cache=state.kv_cache, kv_cache_mode="cached", seq_len=state.max_seq_len,
                    reference_grid_sizes=state.grid_sizes_ref,
                    origin_len=self.segment_frames, origin_area=[state.height, state.width],
                    is_uncondtion=batch.is_uncondtion, **extra,
                ).sample[0]
                guider.cleanup_models(transformer)
            noise = guider(batches)[0]
            latents = scheduler.step(noise.unsqueeze(0), t, state.latents.unsqueeze(0),
                                     return_dict=False, generator=state.generator)[0]
            state.latents = latents.squeeze(0)

