"""Wan-Animate preprocessing per stage, and its share of a batch's latency.

The live path of one batch of camera frames (``WanAnimateEngine.process``) is: preprocessing
(:class:`~faceswap_cam.models.preprocessing.wan.WanPreprocessor`: resize to the generation size,
RT-DETR person box, ViTPose whole-body keypoints, face crops, Wan's skeleton drawing, the person
mask (SAM2's, or the detector's box) + Wan's dilated/boxed mask + background), then the
streaming engine's ``generate``, then compositing (the engine's own
:func:`~faceswap_cam.models.wan.engine.paste_batch`, the frames side by side on its threads:
each generated frame blended into the full-resolution camera frame through the mask). This
script times each of these for batches of N new frames (the segment is L = N + P frames, P
carried) of a camera-like clip and prints milliseconds per frame and per batch by stage, and
the share of preprocessing in the batch latency, preprocessing / (preprocessing + generate).

``--gen-window person`` (the default, what the daemon runs for wan-animate's replace mode)
takes the engine's windowed path: the person located on the whole frame at its generation
size, a window around them chosen on the first batch and kept (models/wan/window.py; 480x480
for a 720p camera), the conditioning made from the window's crop, and the generated window
composited and pasted back into the frame. ``--gen-window frame`` makes it from the whole
frame.

The clip: ``shared/data/person-720p.jpg`` beside the repo (a photo of a person), slowly
shifted and zoomed frame by frame at the camera size (default 1280x720); where that file is
absent, a drawn room with a person-like figure, moved the same way. Frames are consecutive
across batches, so the box smoothers and SAM2's streaming memory carry over as they do live.

Sections:

* ``cpu-tiny`` (always): the tiny random-weight models of the tests
  (``tests.tiny_preprocessing``, ``tests.wan_tiny``), loaded by the product's
  loaders, on the CPU. Preprocessing runs at the product's generation size (848x480 for a
  720p camera) because resizing, skeleton drawing and mask work scale with it; the tiny Wan
  model cannot generate at that size in a CPU budget, so it generates at its test geometry
  (32x32, the pipeline resizes the conditioning to it) and its frames are scaled to the
  generation size, untimed, before compositing, so compositing costs what it costs live.
* ``gpu-real`` (with ``--gpu``, or whenever torch sees CUDA; ``--no-gpu`` skips it): REAL-SIZE
  models with random weights, on the GPU in the product's precisions (``--dtype``):
  RT-DETRv2-r18vd (``RTDetrV2Config`` defaults with the r18vd backbone/encoder settings of the
  PekingU checkpoint, 80 classes, 640x640 input), ViTPose-H whole-body (hidden 1280, 32 layers,
  16 heads, 256x192 input, 133 keypoints, classic deconvolution decoder) and SAM2.1 hiera-tiny
  (``Sam2VideoConfig`` defaults, 1024 px input), face crops at Wan's 512 px. They are written
  to a temporary folder and loaded by the product's loaders, like the tiny ones. ``generate``
  is still the tiny Wan model (on the GPU): the 14B model's batch time comes from
  ``benchmarks/gpu_engine.py``; pass it with ``--wan-batch-s`` to get the share of
  preprocessing against it. The section's detector and pose times and its SAM2 mask stage
  become the preprocessing efficiency the capacity plan reads (``--efficiency-file``; see
  models/plan/preprocessing.py), when the run is the product's: its precisions, batches of 8.

``--count-flops`` counts the three models' FLOPs a frame at real size on the CPU instead and
prints them beside the plan's constants.

The table's person mask is ``--person-mask``'s (default ``sam2``). Under each section's
table, the mask stage is measured for each way of making it, on the same frames: SAM2 with a
batch's frames through its image encoder in one call (what ``PersonMasker`` does on a CUDA
GPU), SAM2 encoding frame by frame (transformers' own way; what it does on a CPU, where
batching measured slower), and the detector's box (``box``, the live preset's: Wan fills its
mask to a box either way). Then the engine's conversions around the model, each way, at the
section's generation size: the conditioning handed to diffusers' processors as PIL images
(what the engine did) or as the uint8 arrays (converted on the device, what it does), and the
decoded frames made uint8 through numpy or on the device; the results are checked equal.

A last line of figures, ``[compositing]``, composites a person-shaped mask in the square
window of a centred person (the frame's height) on the engine's threads and on one: the
sections' random SAM2 masks the whole window, which skips the feather's distance transform,
most of a real person's compositing cost.

Random weights decide nothing here, so the thresholds are pinned as the end-to-end test pins
them, and the heads that decide "is there a person" are set to say yes: the detector's class
heads score "person" on every query (threshold 0), keypoint scores count from -inf (every
keypoint is seen), SAM2's object score head says "the person is there"; so every batch takes the
"someone is there" path (a batch that does not is reported and ends the run with code 1).

After warm-up (the first segment of L frames, then ``--warmup`` batches), every repeat times
one batch; the median over repeats is printed for each row (so rows need not add up exactly:
totals are medians of per-batch totals). Figures are printed, never asserted.

    .venv/bin/python benchmarks/preprocess.py [--frames 8] [--carry 1] [--repeats 5]
        [--warmup 1] [--steps 4] [--camera 1280x720] [--gen-size 848x480]
        [--gen-window person|frame] [--person-mask sam2|box] [--threads N]
        [--gpu | --no-gpu] [--dtype bf16] [--wan-batch-s S] [--real-on-cpu]

``--gpu`` without CUDA exits with code 2. ``--real-on-cpu`` runs the real-size section on the
CPU instead (slow: a check of the script on a machine without a GPU; use ``--frames 4
--repeats 1 --warmup 0``, about 2.5 minutes on 2 cores). Defaults take about 15 s on a 2-core
CPU; the GPU section adds building the real-size models (this script has not yet run on a GPU).
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import unittest.mock
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.plan import host as plan_host
from faceswap_cam.models.plan import preprocessing as plan_preprocessing
from faceswap_cam.models.plan.gpus import EFFICIENCY_FILE, Gpu, gpu_for_name
from faceswap_cam.models.preprocessing.face import WAN_FACE_SIZE
from faceswap_cam.models.preprocessing.person import PersonDetector
from faceswap_cam.models.preprocessing.pose import WholeBodyPoseEstimator
from faceswap_cam.models.preprocessing.segmentation import PersonMasker, Prompt
from faceswap_cam.models.preprocessing.wan import WanPreprocessor
from faceswap_cam.models.wan import streaming
from faceswap_cam.models.wan.engine import (
    compositing_threads,
    compositor,
    paste,
    paste_batch,
)
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline
from faceswap_cam.models.wan.streaming import (
    SegmentInputs,
    StreamingWanAnimate,
    check_segment,
    converts_on,
    frames_to_video,
    video_to_uint8,
)
from faceswap_cam.models.wan.window import Window, choose_window, whole_frame

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the tiny model builders live in tests/

from benchmarks._timing import quiet  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
CAMERA_IMAGE = SHARED_DATA / "person-720p.jpg"
REFERENCE_IMAGE = SHARED_DATA / "reference-portrait.jpg"
PROMPT = "a person talking to the camera"
FEATHER_PX = 8  # WanAnimateEngine's default

# Rows of the table, in order. The first six are WanPreprocessor.timings' keys.
STAGES = ("resize", "detector", "pose", "face", "skeleton", "mask")
ROWS = (*STAGES, "rest of process()", "preprocessing", "generate", "compositing", "batch",
        "compositing, 1 thread")
LABELS = {
    "resize": "resize + RGB",
    "detector": "detector (RT-DETR)",
    "pose": "pose (ViTPose)",
    "face": "face crops",
    "skeleton": "skeleton drawing",
    "mask": "person mask + bg",
    "rest of process()": "rest of process()",
    "preprocessing": "= preprocessing",
    "generate": "generate (tiny Wan)",
    "compositing": "compositing",
    "batch": "= batch latency",
    # The baseline for compositing on the engine's threads, not part of the batch.
    "compositing, 1 thread": "(compositing, 1 thread)",
}

# Keypoint scores of random heatmaps can be negative: -inf keeps every keypoint, so the face
# box and SAM2's prompt always exist. Detector scores are sigmoids, so 0 keeps every box.
PERSON_THRESHOLD = 0.0
KEYPOINT_THRESHOLD = -math.inf
OBJECT_SCORE = 10.0  # SAM2's "object is there" logit, pinned

# RT-DETRv2-r18vd where it differs from RTDetrV2Config's defaults (R50-vd): transformers'
# conversion script for PekingU/rtdetr_v2_r18vd sets exactly these.
RTDETR_R18_BACKBONE: dict[str, Any] = {
    "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "layer_type": "basic",
    "out_features": ["stage2", "stage3", "stage4"]}
RTDETR_R18: dict[str, Any] = {
    "encoder_in_channels": [128, 256, 512], "hidden_expansion": 0.5, "decoder_layers": 3}
COCO_CLASSES = 80
# ViTPose-H whole-body (Wan-Animate's pose model, vitpose_h_wholebody).
VITPOSE_H: dict[str, Any] = {
    "image_size": [256, 192], "patch_size": [16, 16], "hidden_size": 1280,
    "num_hidden_layers": 32, "num_attention_heads": 16, "mlp_ratio": 4, "qkv_bias": True,
    "layer_norm_eps": 1e-6, "out_indices": [32]}
VITPOSE_KEYPOINTS = 133


def _untyped(module: str) -> Any:
    """transformers' constructors are not annotated: hold the module as Any."""
    return importlib.import_module(module)


# --- the camera clip ---------------------------------------------------------------------------

def drawn_scene(size: tuple[int, int], seed: int = 3) -> np.ndarray:
    """A room with a person-like figure (head, neck, shoulders, torso), BGR, when the photo
    is not there. Textured a little, so resizing and codecs have something to chew on."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    wall = np.array([150, 170, 185], np.float32) * (0.75 + 0.25 * ramp)
    scene = np.broadcast_to(wall, (height, width, 3)).copy()
    scene += rng.normal(0, 4, scene.shape).astype(np.float32)
    frame: np.ndarray = np.clip(scene, 0, 255).astype(np.uint8)
    s = height / 720
    cv2.rectangle(frame, (int(60 * s), int(80 * s)), (int(360 * s), int(380 * s)),
                  (210, 190, 160), -1)  # window
    cv2.rectangle(frame, (int(920 * s), int(420 * s)), (width, height), (60, 80, 110), -1)
    cx = width // 2
    cv2.ellipse(frame, (cx, int(720 * s)), (int(300 * s), int(260 * s)), 0, 180, 360,
                (70, 60, 140), -1)  # shoulders and torso
    cv2.rectangle(frame, (cx - int(45 * s), int(330 * s)), (cx + int(45 * s), int(470 * s)),
                  (120, 150, 200), -1)  # neck
    cv2.ellipse(frame, (cx, int(250 * s)), (int(105 * s), int(135 * s)), 0, 0, 360,
                (125, 160, 215), -1)  # face
    cv2.ellipse(frame, (cx, int(160 * s)), (int(115 * s), int(70 * s)), 0, 180, 360,
                (40, 45, 60), -1)  # hair
    for dx in (-40, 40):
        cv2.circle(frame, (cx + int(dx * s), int(235 * s)), max(2, int(10 * s)), (40, 40, 40), -1)
    cv2.ellipse(frame, (cx, int(320 * s)), (int(35 * s), int(12 * s)), 0, 0, 180, (60, 60, 150),
                -1)
    return frame


class CameraClip:
    """Frame i of a camera-like clip at ``size`` (W, H), BGR uint8: one still image (the
    photo, else :func:`drawn_scene`) slowly panned and zoomed, as a person sways in front
    of a webcam; the border is mirrored so no black edge appears."""

    def __init__(self, size: tuple[int, int], image: Path | None = CAMERA_IMAGE) -> None:
        self.size = size
        base = cv2.imread(str(image)) if image is not None and image.is_file() else None
        self.source = str(image) if base is not None else "drawn scene (photo not found)"
        if base is None:
            base = drawn_scene(size)
        elif (base.shape[1], base.shape[0]) != size:
            base = cv2.resize(base, size, interpolation=cv2.INTER_AREA)
        self.base = base

    def frame(self, index: int) -> np.ndarray:
        width, height = self.size
        zoom = 1.04 + 0.04 * math.sin(2 * math.pi * index / 48)
        dx = 0.02 * width * math.sin(2 * math.pi * index / 64)
        dy = 0.012 * height * math.sin(2 * math.pi * index / 40 + 1.0)
        cx, cy = width / 2, height / 2
        matrix = np.array([[zoom, 0.0, (1 - zoom) * cx + dx],
                           [0.0, zoom, (1 - zoom) * cy + dy]], np.float64)
        return np.asarray(cv2.warpAffine(self.base, matrix, self.size, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT_101))

    def frames(self, start: int, count: int) -> list[np.ndarray]:
        return [self.frame(i) for i in range(start, start + count)]


def reference_image() -> PIL.Image.Image:
    if REFERENCE_IMAGE.is_file():
        return PIL.Image.open(REFERENCE_IMAGE).convert("RGB")
    rng = np.random.default_rng(7)
    return PIL.Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8))


# --- models ------------------------------------------------------------------------------------

@dataclass
class Setup:
    """One section's models: the preprocessor, the streaming generator and what they are."""

    name: str
    title: str
    device: str
    dtype: str
    preprocessor: WanPreprocessor
    stream: StreamingWanAnimate
    face_size: int
    build_s: float
    parameters: dict[str, int] = field(default_factory=dict)
    #: ``--gen-window person``: the window of this run's segment chain, chosen around the
    #: person of its first batch and kept, as the engine keeps it while the person stays.
    window: Window | None = None
    #: The engine's compositing threads.
    compositor: ThreadPoolExecutor = field(default_factory=compositor)


def count_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _pin_person_class(model: Any) -> None:
    """Every RT-DETR query says "person" (class 0) with a score near 1. Random class heads
    spread the scores over 80 classes, and post-processing keeps only the top 300 of
    queries x classes, so a random detector finds no person in many frames."""
    heads = [module for name, module in model.named_modules()
             if name.endswith("enc_score_head") or ".class_embed." in f".{name}"]
    with torch.no_grad():
        for head in heads:
            if isinstance(head, torch.nn.Linear):
                head.weight[0].zero_()
                head.bias[0] = OBJECT_SCORE


def _pin_sam2_object_score(model: Any) -> None:
    """SAM2 says "the person is there" on every frame (as the tests' tiny SAM2 does)."""
    head = model.mask_decoder.pred_obj_score_head.proj_out
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(OBJECT_SCORE)


def real_detector(device: str | torch.device) -> Any:
    """RT-DETRv2-r18vd at real size, random weights."""
    transformers = _untyped("transformers")
    rt_detr = _untyped("transformers.models.rt_detr")
    id2label = {0: "person", **{i: f"coco_{i}" for i in range(1, COCO_CLASSES)}}
    config = transformers.RTDetrV2Config(
        backbone_config=rt_detr.RTDetrResNetConfig(**RTDETR_R18_BACKBONE), **RTDETR_R18,
        id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.RTDetrV2ForObjectDetection(config)


def real_pose(device: str | torch.device) -> Any:
    """ViTPose-H whole-body at real size, random weights."""
    transformers = _untyped("transformers")
    backbone = transformers.VitPoseBackboneConfig(**VITPOSE_H)
    config = transformers.VitPoseConfig(backbone_config=backbone, num_labels=VITPOSE_KEYPOINTS,
                                        use_simple_decoder=False)
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.VitPoseForPoseEstimation(config)


def save_real_sam2(folder: Path, device: str, dtype: torch.dtype) -> Path:
    """SAM2.1 Hiera-T (``Sam2VideoConfig``'s defaults) at real size, random weights, saying
    "the person is there", with its processor, saved in ``dtype``."""
    transformers = _untyped("transformers")
    sam2_image = _untyped("transformers.models.sam2.image_processing_sam2")
    sam2_video = _untyped("transformers.models.sam2_video.video_processing_sam2_video")
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.Sam2VideoModel(transformers.Sam2VideoConfig())
    _pin_sam2_object_score(model)
    model.to(dtype).save_pretrained(folder)
    transformers.Sam2VideoProcessor(
        image_processor=sam2_image.Sam2ImageProcessor(),
        video_processor=sam2_video.Sam2VideoVideoProcessor()).save_pretrained(folder)
    return folder


def save_real_models(folder: Path, device: str, dtype: torch.dtype) -> dict[str, Path]:
    """Real-size random-weight detector, pose and SAM2 folders in transformers format, built
    directly on ``device`` (fast initialisation) and saved in ``dtype``."""
    transformers = _untyped("transformers")
    paths = {name: folder / name for name in ("detector", "pose", "sam2")}
    real_detector(device).to(dtype).save_pretrained(paths["detector"])
    transformers.RTDetrImageProcessor().save_pretrained(paths["detector"])  # 640x640
    real_pose(device).to(dtype).save_pretrained(paths["pose"])
    transformers.VitPoseImageProcessor(size={"height": 256, "width": 192}).save_pretrained(
        paths["pose"])
    save_real_sam2(paths["sam2"], device, dtype)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return paths


def save_tiny_models(folder: Path) -> dict[str, Path]:
    from tests.tiny_preprocessing import save_tiny_rtdetr, save_tiny_sam2, save_tiny_vitpose
    from tests.wan_tiny import save_tiny_wan_animate

    return {
        "detector": save_tiny_rtdetr(folder / "detector", {0: "person", 1: "chair"}, v2=True),
        "pose": save_tiny_vitpose(folder / "pose", VITPOSE_KEYPOINTS),
        "sam2": save_tiny_sam2(folder / "sam2", object_score=OBJECT_SCORE),
        "wan": save_tiny_wan_animate(folder / "wan"),
    }


#: ``--dtype``'s default: each model in the precision the product loads it in (the detector
#: and the pose model float32, their products on TF32 on a GPU; SAM2 "auto", bf16 on a GPU).
PRODUCT_DTYPES = "product"
#: The default batch (the daemon's and the live preset's new frames): the only one whose
#: efficiency is written, since a smaller batch runs further from the peak.
PLAN_NEW_FRAMES = defaults.SEGMENT_FRAMES - defaults.CARRY


def load_preprocessor(paths: dict[str, Path], device: str, dtype: str, person_mask: str
                      ) -> WanPreprocessor:
    """The three models through the product's own loaders, thresholds pinned (SAM2 loaded for
    either person mask: the sections compare them). ``dtype``: one for all three, or
    :data:`PRODUCT_DTYPES`, the loaders' own defaults (``WanPreprocessor.load`` passes none)."""
    precision: dict[str, Any] = {} if dtype == PRODUCT_DTYPES else {"dtype": dtype}
    detector = PersonDetector(str(paths["detector"]), device=device, **precision,
                              threshold=PERSON_THRESHOLD)
    _pin_person_class(detector.model)
    return WanPreprocessor(
        detector,
        WholeBodyPoseEstimator(paths["pose"], device=device, **precision),
        PersonMasker(paths["sam2"], device=device, **precision),
        keypoint_threshold=KEYPOINT_THRESHOLD, person_mask=person_mask)


def tiny_stream(wan: Path, device: str, args: argparse.Namespace) -> StreamingWanAnimate:
    from tests.wan_tiny import HEIGHT, PROMPT_MAX_LEN, WIDTH

    pipe = load_pipeline(str(wan), LoadOptions(device=device))
    stream = StreamingWanAnimate(
        pipe, height=HEIGHT, width=WIDTH, mode="replace", segment_frames=args.segment,
        carry=args.carry, steps=args.steps, seed=0, prompt=PROMPT,
        max_sequence_length=PROMPT_MAX_LEN)
    stream.set_reference(reference_image())
    return stream


def model_parameters(preprocessor: WanPreprocessor, stream: StreamingWanAnimate
                     ) -> dict[str, int]:
    return {
        "detector": count_parameters(preprocessor.detector.model),
        "pose": count_parameters(preprocessor.pose.model),
        "sam2": count_parameters(preprocessor.masker._model),  # type: ignore[union-attr]
        "wan_transformer": count_parameters(stream.pipe.transformer),
    }


def build_tiny(folder: Path, args: argparse.Namespace) -> Setup:
    start = time.perf_counter()
    paths = save_tiny_models(folder)
    preprocessor = load_preprocessor(paths, "cpu", "fp32", args.person_mask)
    stream = tiny_stream(paths["wan"], "cpu", args)
    return Setup("cpu-tiny", "tiny random models (tests' builders) on the CPU, fp32", "cpu",
                 "fp32", preprocessor, stream, face_size=int(
                     stream.pipe.transformer.config.motion_encoder_size),
                 build_s=time.perf_counter() - start,
                 parameters=model_parameters(preprocessor, stream))


def build_real(folder: Path, args: argparse.Namespace, device: str) -> Setup:
    dtype_name = "fp32" if device == "cpu" else args.dtype
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype_name, torch.float32)
    start = time.perf_counter()
    paths = save_real_models(folder / "real", device, dtype)
    from tests.wan_tiny import save_tiny_wan_animate

    wan = save_tiny_wan_animate(folder / "wan-for-real")
    preprocessor = load_preprocessor(paths, device, dtype_name, args.person_mask)
    stream = tiny_stream(wan, device, args)
    synchronize(device)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "the CPU"
    return Setup("gpu-real" if device != "cpu" else "cpu-real",
                 f"REAL-SIZE random-weight models on {where}, {dtype_name}", device, dtype_name,
                 preprocessor, stream, face_size=WAN_FACE_SIZE,
                 build_s=time.perf_counter() - start,
                 parameters=model_parameters(preprocessor, stream))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- measuring ---------------------------------------------------------------------------------

@dataclass
class Batch:
    """Seconds of one batch by row, and what the batch looked like."""

    seconds: dict[str, float]
    frames: int
    present: bool
    mask_cover: float  # mean share of the generation-size frame inside Wan's mask
    stopped_after: str = ""  # the last stage run, when the batch took the "nobody" path


def run_batch(setup: Setup, frames: list[np.ndarray], args: argparse.Namespace) -> Batch:
    """One batch the way WanAnimateEngine.process runs it, each part timed."""
    clock = time.perf_counter
    stream = setup.stream
    full_size = (int(args.gen_size[0]), int(args.gen_size[1]))
    frame_size = (frames[0].shape[1], frames[0].shape[0])
    start = clock()
    window = None
    if args.gen_window == "person":
        # The engine's order: the person located on the whole frame first, then the window's
        # crop made into the conditioning (locate's time is in the resize and detector rows).
        people = setup.preprocessor.locate(frames, size=full_size)
        found = [box for box in people if box is not None]
        if len(found) == len(people):
            if setup.window is None:
                setup.window = choose_window(found, frame_size, full_gen_size=full_size)
            window = setup.window
        batch = setup.preprocessor.process(
            frames, size=window.gen_size if window else full_size, face_size=setup.face_size,
            with_background=True, window=None if window is None or window.whole else window.box,
            people=people)
    else:
        batch = setup.preprocessor.process(frames, size=full_size, face_size=setup.face_size,
                                           with_background=True)
    gen_w, gen_h = window.gen_size if window else full_size
    pre_s = clock() - start
    stages = dict(setup.preprocessor.timings)
    seconds = {stage: stages.get(stage, 0.0) for stage in STAGES}
    seconds["rest of process()"] = max(0.0, pre_s - sum(stages.values()))
    seconds["preprocessing"] = pre_s
    if not batch.present or batch.mask is None or batch.background is None:
        return Batch(seconds, len(frames), False, 0.0, stopped_after=list(stages)[-1])

    start = clock()
    inputs = SegmentInputs(pose=batch.pose, face=batch.face, background=batch.background,
                           mask=batch.mask)
    video = stream.generate_uint8(inputs)
    synchronize(setup.device)
    seconds["generate"] = clock() - start

    # The tiny generator's frames, scaled to the generation size the real model would give
    # (untimed: an artefact of the tiny model), then composited as the engine does.
    generated = [cv2.resize(pixels, (gen_w, gen_h), interpolation=cv2.INTER_LINEAR)
                 for pixels in video]
    pasted_into = window or whole_frame(frame_size, full_size)
    start = clock()
    paste_batch(setup.compositor, frames, generated, batch.mask, pasted_into,
                feather_px=FEATHER_PX)
    seconds["compositing"] = clock() - start
    start = clock()
    for frame, pixels, mask in zip(frames, generated, batch.mask, strict=True):
        paste(frame, pixels, mask, pasted_into, feather_px=FEATHER_PX)
    seconds["compositing, 1 thread"] = clock() - start
    seconds["batch"] = pre_s + seconds["generate"] + seconds["compositing"]
    cover = float(np.mean([np.count_nonzero(m) / m.size for m in batch.mask]))
    return Batch(seconds, len(frames), True, cover)


@dataclass
class Result:
    setup: Setup
    batches: list[Batch]
    warmup_s: float

    def median_s(self, row: str) -> float:
        values = [b.seconds[row] for b in self.batches if row in b.seconds]
        return statistics.median(values) if values else float("nan")

    def per_frame_ms(self, row: str) -> float:
        return 1000 * self.median_s(row) / self.batches[0].frames

    @property
    def share(self) -> float:
        """preprocessing / (preprocessing + generate), median over batches."""
        return statistics.median(
            b.seconds["preprocessing"] / (b.seconds["preprocessing"] + b.seconds["generate"])
            for b in self.batches)


def measure(setup: Setup, clip: CameraClip, args: argparse.Namespace) -> Result:
    """Warm-up (first segment of L frames, then ``--warmup`` batches), then ``--repeats``
    timed batches of N new frames, consecutive in the clip."""
    setup.preprocessor.reset()
    setup.stream.reset()
    setup.window = None
    start = time.perf_counter()
    run_batch(setup, clip.frames(0, args.segment), args)
    index = args.segment
    for _ in range(args.warmup):
        run_batch(setup, clip.frames(index, args.frames), args)
        index += args.frames
    warmup_s = time.perf_counter() - start
    batches = []
    for _ in range(args.repeats):
        batches.append(run_batch(setup, clip.frames(index, args.frames), args))
        index += args.frames
        if not batches[-1].present:
            break
    return Result(setup, batches, warmup_s)


# --- report ------------------------------------------------------------------------------------

def print_table(result: Result, args: argparse.Namespace) -> None:
    setup = result.setup
    frames = args.frames
    batch_ms = 1000 * result.median_s("batch")
    params = ", ".join(f"{name} {count / 1e6:.1f}M" for name, count in setup.parameters.items())
    print()
    print(f"[{setup.name}] {setup.title}")
    print(f"  parameters: {params}; built + loaded in {setup.build_s:.1f} s, "
          f"warm-up {result.warmup_s:.1f} s")
    print(f"  {len(result.batches)} timed batches of {frames} new frames (L={args.segment}, "
          f"P={args.carry}), generate: tiny Wan {setup.stream.width}x{setup.stream.height}, "
          f"{args.steps} steps; Wan mask covers {100 * cover(result):.0f} % of the frame")
    if setup.window is not None:
        x, y, width, height = setup.window.box
        print(f"  generation window: {width}x{height} at ({x}, {y}) of the camera frame, "
              f"generated at {setup.window.gen_size[0]}x{setup.window.gen_size[1]}"
              + (" (the whole frame: no smaller window holds the person)"
                 if setup.window.whole else ""))
    header = f"  {'stage':<22}{'ms/frame':>10}{'ms/batch':>10}{'% batch':>9}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in ROWS:
        if row in ("preprocessing", "generate", "batch"):
            print("  " + "-" * (len(header) - 2))
        ms = 1000 * result.median_s(row)
        print(f"  {LABELS[row]:<22}{ms / frames:>10.2f}{ms:>10.1f}"
              f"{100 * ms / batch_ms if batch_ms else float('nan'):>9.1f}")
    print(f"  preprocessing share of preprocessing + generate: {100 * result.share:.1f} %")
    if args.wan_batch_s is not None and setup.device != "cpu":
        pre_s = result.median_s("preprocessing")
        print(f"  against the 14B model's {args.wan_batch_s:.3f} s/batch (--wan-batch-s): "
              f"{100 * pre_s / (pre_s + args.wan_batch_s):.1f} %")


def conversions(setup: Setup, args: argparse.Namespace, repeats: int = 5) -> dict[str, float]:
    """The engine's conversions around the model for one batch at the section's generation
    size (faces at Wan's 512 px), each way, on the section's device, both through the
    product's own functions with ``streaming.converts_on`` set: the conditioning (pose, face,
    background, mask) into diffusers' processors as PIL images or, the device's way, as the
    uint8 arrays (:func:`~faceswap_cam.models.wan.streaming.frames_to_video`), and the decoded
    frames to uint8 through numpy or on the device (:func:`~...streaming.video_to_uint8`). ms
    per batch, median of ``repeats``; the two ways' results are checked equal."""
    pipe, device = setup.stream.pipe, setup.device
    width, height = args.gen_size if setup.window is None else setup.window.gen_size
    rng = np.random.default_rng(5)
    frames = args.frames + args.carry
    rgb = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames)]
    faces = [rng.integers(0, 256, (WAN_FACE_SIZE, WAN_FACE_SIZE, 3), dtype=np.uint8)
             for _ in range(frames)]
    masks = [np.where(rng.random((height, width)) < 0.3, 255, 0).astype(np.uint8)
             for _ in range(frames)]
    inputs = ((pipe.video_processor, rgb, (height, width)),
              (pipe.video_processor, faces, (WAN_FACE_SIZE, WAN_FACE_SIZE)),
              (pipe.video_processor, rgb, (height, width)),
              (pipe.video_processor_for_mask, masks, (height, width)))
    decoded = torch.rand(1, 3, args.frames, height, width, device=device) * 2 - 1

    def the_way(on_device: bool) -> Any:
        # Both ways run the product's own functions, the switch set: the device's way even on
        # the CPU (where the engine keeps PIL and numpy), so two pieces of code are compared,
        # and the CPU's figure says why it keeps them.
        return unittest.mock.patch.object(streaming, "converts_on", lambda _device: on_device)

    def conditioning() -> list[torch.Tensor]:
        return [frames_to_video(processor, arrays, size, device).to(device)
                for processor, arrays, size in inputs]

    def output() -> np.ndarray:
        return video_to_uint8(pipe.video_processor, decoded)

    made = {}
    for on_device in (False, True):
        with the_way(on_device):
            made[on_device] = (conditioning(), output())
    same = (all(torch.equal(a, b) for a, b in zip(made[False][0], made[True][0], strict=True))
            and np.array_equal(made[False][1], made[True][1]))
    out: dict[str, float] = {}
    for name, run, on_device in (("conditioning_from_pil", conditioning, False),
                                 ("conditioning_from_arrays", conditioning, True),
                                 ("output_through_numpy", output, False),
                                 ("output_on_device", output, True)):
        times = []
        with the_way(on_device):
            for _ in range(repeats):
                synchronize(device)
                start = time.perf_counter()
                run()
                synchronize(device)
                times.append(time.perf_counter() - start)
        out[name] = round(1000 * statistics.median(times), 2)
    out["equal"] = same
    return out


def person_compositing(clip: CameraClip, args: argparse.Namespace, repeats: int = 5
                       ) -> dict[str, float]:
    """Compositing with a person-shaped mask in the square window a centred person gets (the
    frame's height): random SAM2 weights mask the whole window, and a whole mask skips the
    feather's distance transform, which with a real person is most of the cost. Milliseconds
    per batch, median of ``repeats``, on the engine's threads and on one."""
    width, height = clip.size
    side = 16 * round(min(width, height) / 16)
    window = Window(((width - side) // 2, 0, side, side), (480, 480), whole=False)
    mask = np.zeros((480, 480), np.uint8)
    cv2.ellipse(mask, (240, 330), (170, 220), 0, 0, 360, 1, -1)  # head and shoulders
    cv2.circle(mask, (240, 130), 90, 1, -1)
    rng = np.random.default_rng(11)
    frames = clip.frames(0, args.frames)
    generated = [rng.integers(0, 255, (480, 480, 3), dtype=np.uint8) for _ in frames]
    masks = [mask] * len(frames)
    executor = compositor()
    try:
        def threads() -> None:
            paste_batch(executor, frames, generated, masks, window, feather_px=FEATHER_PX)

        def one_thread() -> None:
            for frame, pixels in zip(frames, generated, strict=True):
                paste(frame, pixels, mask, window, feather_px=FEATHER_PX)

        out = {}
        for name, run in (("threads", threads), ("one_thread", one_thread)):
            run()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            out[f"{name}_ms_per_batch"] = round(1000 * statistics.median(times), 2)
    finally:
        executor.shutdown()
    out["window"] = side
    out["threads"] = compositing_threads()
    return out


#: The person mask variants the sections compare: (name, --person-mask, SAM2's batched
#: image encoding).
MASK_VARIANTS = (("sam2 batched", "sam2", True), ("sam2 frame by frame", "sam2", False),
                 ("box", "box", True))


def person_mask_costs(setup: Setup, clip: CameraClip, result: Result,
                      args: argparse.Namespace) -> dict[str, float]:
    """The mask stage (mask + Wan's dilation and box + background) in ms per batch, median,
    for each of :data:`MASK_VARIANTS`: SAM2 with a batch's frames encoded in one call (the
    product's way on a CUDA device), SAM2 encoding frame by frame (transformers' own way, the
    product's on a CPU), and the detector's box (``--person-mask box``). The section's own run
    (``result``) is the variant it ran; the others are measured the same way, on the same
    frames, after it."""
    preprocessor = setup.preprocessor
    masker = preprocessor.masker
    assert masker is not None
    together_ran = bool(masker.encode_together)
    ran = (preprocessor.person_mask.value, together_ran)

    def variant(person_mask: str, together: bool) -> tuple[str, bool | None]:
        return person_mask, together if person_mask == defaults.PersonMask.SAM2 else None

    costs: dict[str, float] = {}
    try:
        for name, person_mask, together in MASK_VARIANTS:
            measured = result
            if variant(person_mask, together) != variant(*ran):
                preprocessor.person_mask = defaults.PersonMask(person_mask)
                masker.encode_together = together
                measured = measure(setup, clip, args)
            costs[name] = round(1000 * measured.median_s("mask"), 2)
    finally:
        preprocessor.person_mask = defaults.PersonMask(ran[0])
        masker.encode_together = together_ran
    return costs


def count_stage_flops(names: Sequence[str] = tuple(plan_preprocessing.STAGES),
                      sam2_frames: int = 10) -> dict[str, float]:
    """FLOPs a frame of each named preprocessing model at real size, counted with
    FlopCounterMode as the plan's constants were (models/plan/preprocessing.py): the
    detector at 640x640 on the CPU (its post-processing reads values, which the meta device
    cannot), the pose model at 256x192 on the meta device, SAM2 through the product's
    ``PersonMasker`` on the CPU, the mean of two frames once its memory is full (after
    ``sam2_frames - 2``). Attention runs PyTorch's reference kernel, the one the counter has
    a formula for."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counts: dict[str, float] = {}
    with sdpa_kernel(SDPBackend.MATH), torch.inference_mode():
        if "detector" in names:
            model = real_detector("cpu").eval()
            with FlopCounterMode(display=False) as counter:
                model(pixel_values=torch.zeros(1, 3, 640, 640))
            counts["detector"] = float(counter.get_total_flops())
        if "pose" in names:
            model = real_pose("meta")
            with FlopCounterMode(display=False) as counter:
                model(pixel_values=torch.empty(1, 3, 256, 192, device="meta"))
            counts["pose"] = float(counter.get_total_flops())
        if "sam2" in names:
            with tempfile.TemporaryDirectory(prefix="sam2-flops-") as folder:
                masker = PersonMasker(save_real_sam2(Path(folder), "cpu", torch.float32),
                                      device="cpu", dtype="fp32")
            masker.encode_together = False
            frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
                      for f in CameraClip((640, 480)).frames(0, sam2_frames)]
            start = Prompt(box=(160.0, 60.0, 480.0, 470.0))
            masker.masks(frames[:-2], [start] + [None] * (len(frames) - 3))
            with FlopCounterMode(display=False) as counter:
                masker.masks(frames[-2:])
            counts["sam2"] = counter.get_total_flops() / 2
    return counts


def preprocess_efficiency(result: Result, costs: dict[str, float], gpu: Gpu
                          ) -> dict[str, Any]:
    """The efficiency-file entry for the plan (models/plan/preprocessing.py) from a GPU
    section run in the product's precisions: the detector's and the pose model's stage
    seconds against their FLOPs at the TF32 peak, SAM2's at the BF16 peak (the mask stage
    the product's way on a GPU, its batch's frames encoded in one call, less the same stage
    with the detector's box: Wan's dilation and the background cost both alike). The stages'
    seconds include their CPU work (the processors' resizing, the crops, the decoding), so
    this is the efficiency that predicts their time, not the kernels' own."""
    frames = result.batches[0].frames
    plan = plan_preprocessing

    def at_peak(*stages: plan_preprocessing.Stage) -> float:
        """The plan's seconds for ``stages`` at 100 % of their precision's peak."""
        return plan.preprocess_seconds(stages, frames, gpu, plan.PreprocessEfficiency(
            1.0, 1.0, False, False, "the peak"))

    batched_s = result.median_s("detector") + result.median_s("pose")
    sam2_s = (costs["sam2 batched"] - costs["box"]) / 1000
    entry: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "batched_efficiency": round(at_peak(plan.DETECTOR, plan.POSE) / batched_s, 4),
        "frames": frames,
        "detector_pose_s": round(batched_s, 4),
        "sam2_s": round(sam2_s, 4),
        "measured": time.strftime("%Y-%m-%d"),
        "by": "benchmarks/preprocess.py --gpu",
    }
    tracker = at_peak(plan.SAM2) / sam2_s if sam2_s > 0 else math.inf
    # Over the peak means the difference was noise: SAM2's figure stays assumed.
    if tracker <= 1:
        entry["tracker_efficiency"] = round(tracker, 4)
    return entry


#: The section's stages that run on the CPU whatever the device (plan/host.py).
HOST_STAGES = ("resize", "face", "skeleton", "rest of process()")


def host_work(result: Result, costs: dict[str, float], composited: dict[str, float]
              ) -> dict[str, float]:
    """The CPU's work a new frame in ms, as the plan's host cost (models/plan/host.py): the
    section's CPU stages, and apart, what replace mode adds: the mask stage's CPU part (the
    detector's box variant: Wan's dilation and background, which SAM2's variant does as well)
    and compositing a person-shaped mask on the engine's threads (the section's own random
    mask skips the feather's distance transform)."""
    frames = result.batches[0].frames
    stages_ms = sum(1000 * result.median_s(stage) for stage in HOST_STAGES)
    return {"preprocess_ms": round(stages_ms / frames, 2),
            "replace_ms": round((costs["box"] + composited["threads_ms_per_batch"]) / frames, 2)}


def not_the_products_run(args: argparse.Namespace) -> str | None:
    """Why the GPU section's figures do not stand for the product's (its precisions, the live
    preset's batches), or None where they do."""
    if args.dtype != PRODUCT_DTYPES:
        return f"--dtype {args.dtype} is not what the product runs"
    if args.frames != PLAN_NEW_FRAMES:
        return f"batches of {args.frames} frames, not the live preset's {PLAN_NEW_FRAMES}"
    return None


def save_gpu_efficiency(result: Result, costs: dict[str, float], args: argparse.Namespace
                        ) -> dict[str, Any]:
    """Write the GPU section's preprocessing efficiency into the efficiency file when it ran
    what the product runs on a GPU the plan knows; say why not otherwise."""
    name = torch.cuda.get_device_name()
    gpu = gpu_for_name(name)
    if gpu is None:
        print(f"  (efficiency not written: {name} is not in the plan's GPU table")
        return {}
    entry = preprocess_efficiency(result, costs, gpu)
    why = not_the_products_run(args)
    if why:
        print(f"  (efficiency not written: {why})")
        return entry
    plan_preprocessing.save_preprocess_efficiency(args.efficiency_file, gpu, entry)
    tracker = entry.get("tracker_efficiency")
    print(f"  preprocessing efficiency on {gpu.key}: detector + pose "
          f"{entry['batched_efficiency']:.1%} of the TF32 peak, SAM2 "
          + (f"{tracker:.1%} of the BF16 peak" if tracker is not None else
             "not measured (its stage was no slower than the box's)")
          + f" -> {args.efficiency_file}")
    return entry


def save_host_work(measured: dict[str, float], args: argparse.Namespace) -> None:
    """The GPU machine's host work into the efficiency file's ``host`` section, on the same
    terms as the efficiency (the product's precisions and batches)."""
    why = not_the_products_run(args)
    if why:
        print(f"  (host work not written: {why})")
        return
    if args.gen_window != "person" or tuple(args.camera) != (1280, 720):
        # What the plan's figure stands for (models/plan/host.py).
        print("  (host work not written: the plan's is the person window of a 1280x720 camera)")
        return
    plan_host.save_host_cost(args.efficiency_file, "wan-animate", plan_host.host_entry(
        measured["preprocess_ms"], measured["replace_ms"], device=torch.cuda.get_device_name(),
        camera=tuple(args.camera), by="benchmarks/preprocess.py --gpu"))
    print(f"  host work written to {args.efficiency_file}")


def print_flop_counts() -> dict[str, Any]:
    counted = count_stage_flops()
    print("Preprocessing models' GFLOP a frame at real size: counted now / the plan's constant")
    out: dict[str, Any] = {}
    for name, stage in plan_preprocessing.STAGES.items():
        ratio = counted[name] / stage.flops_per_frame
        print(f"  {name:<9} {counted[name] / 1e9:8.2f} / {stage.flops_per_frame / 1e9:8.2f} "
              f"({ratio:.3f})")
        out[name] = {"counted": counted[name], "plan": stage.flops_per_frame}
    return out


def cover(result: Result) -> float:
    return statistics.median(b.mask_cover for b in result.batches)


def result_json(result: Result, args: argparse.Namespace) -> dict[str, Any]:
    setup = result.setup
    out: dict[str, Any] = {
        "device": setup.device if setup.device == "cpu" else torch.cuda.get_device_name(),
        "dtype": setup.dtype,
        "parameters": setup.parameters,
        "build_s": round(setup.build_s, 2),
        "warmup_s": round(result.warmup_s, 2),
        "batches": len(result.batches),
        "tiny_wan_size": f"{setup.stream.width}x{setup.stream.height}",
        "face_size": setup.face_size,
        "mask_cover": round(cover(result), 3),
        "window": None if setup.window is None else {
            "box": list(setup.window.box), "gen_size": list(setup.window.gen_size),
            "whole": setup.window.whole},
        "ms_per_frame": {row: round(result.per_frame_ms(row), 3) for row in ROWS},
        "ms_per_batch": {row: round(1000 * result.median_s(row), 2) for row in ROWS},
        "preprocessing_share": round(result.share, 4),
    }
    if args.wan_batch_s is not None and setup.device != "cpu":
        pre_s = result.median_s("preprocessing")
        out["preprocessing_share_vs_14b"] = round(pre_s / (pre_s + args.wan_batch_s), 4)
    return out


# --- main --------------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=PLAN_NEW_FRAMES,
                        help="new frames per batch N; the segment is L = N + carry (4n+1)")
    parser.add_argument("--carry", type=int, default=defaults.CARRY,
                        choices=defaults.CARRY_CHOICES, help="carried frames P")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches (median)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed batches after the first segment")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps of the tiny Wan")
    parser.add_argument("--camera", type=parse_size, default=(1280, 720),
                        help="camera frame WxH (default 1280x720)")
    parser.add_argument("--gen-size", type=parse_size, default=None,
                        help="generation size WxH that preprocessing makes (default: the "
                             "product's for the camera, 848x480 for 720p)")
    parser.add_argument("--gen-window", choices=defaults.GEN_WINDOWS, default=defaults.GEN_WINDOW,
                        help="person (default, as the daemon generates wan-animate's replace "
                             "mode): locate the person on the whole frame, then make the "
                             "conditioning of a window around them; frame: the whole frame")
    parser.add_argument("--person-mask", choices=defaults.PERSON_MASKS,
                        default=defaults.PERSON_MASK,
                        help="the person mask of the sections' tables (default "
                             f"{defaults.PERSON_MASK}); each section then measures the others")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's)")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", action="store_true",
                     help="also time real-size models on the GPU (default when CUDA is there)")
    gpu.add_argument("--no-gpu", action="store_true", help="skip the real-size GPU section")
    gpu.add_argument("--real-on-cpu", action="store_true",
                     help="run the real-size section on the CPU (slow; checks the script)")
    parser.add_argument("--dtype", choices=(PRODUCT_DTYPES, "bf16", "fp16"),
                        default=PRODUCT_DTYPES,
                        help="precision of the real-size models on the GPU: the product's "
                             "own (default; the only one whose figures go into the efficiency "
                             "file), or all three in bf16 or fp16")
    parser.add_argument("--efficiency-file", type=Path, default=EFFICIENCY_FILE,
                        help="where a GPU run writes the preprocessing efficiency the "
                             f"capacity plan reads (default {EFFICIENCY_FILE})")
    parser.add_argument("--count-flops", action="store_true",
                        help="count the real-size models' FLOPs a frame on the CPU, print "
                             "them beside the plan's constants and exit (about a minute)")
    parser.add_argument("--wan-batch-s", type=float, default=None,
                        help="the 14B model's seconds per batch (benchmarks/gpu_engine.py) to "
                             "compare the GPU preprocessing with")
    args = parser.parse_args(argv)
    args.segment = args.frames + args.carry
    try:
        check_segment(args.segment, args.carry)
    except ValueError as exc:
        parser.error(f"{args.frames} new + {args.carry} carried frames: {exc}")
    if args.repeats < 1 or args.warmup < 0 or args.steps < 1:
        parser.error("--repeats and --steps must be >= 1, --warmup >= 0")
    if args.gen_size is None:
        args.gen_size = generation_size(args.camera)
    if args.gen_size[0] % 16 or args.gen_size[1] % 16:
        parser.error(f"--gen-size must be multiples of 16, got {args.gen_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.count_flops:
        quiet(logging.ERROR)
        print(json.dumps({"benchmark": "preprocess", "flops_per_frame": print_flop_counts()}))
        return 0
    cuda = torch.cuda.is_available()
    if args.gpu and not cuda:
        print("preprocess.py --gpu needs a CUDA GPU and torch sees none (torch "
              f"{torch.__version__}). Run without --gpu for the CPU figures, or with "
              "--real-on-cpu to check the real-size section on the CPU.", file=sys.stderr)
        return 2
    quiet(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    real_device = "cpu" if args.real_on_cpu else ("cuda" if cuda and not args.no_gpu else None)
    clip = CameraClip(args.camera)
    load_before = os.getloadavg()[0]
    print("Wan-Animate preprocessing by stage, and its share of a batch's latency")
    print(f"  torch {torch.__version__}, CPU threads {torch.get_num_threads()} of "
          f"{os.cpu_count()}; camera {args.camera[0]}x{args.camera[1]} from {clip.source}; "
          f"preprocessing at {args.gen_size[0]}x{args.gen_size[1]} ({args.gen_window} "
          f"window); batch of {args.frames} "
          f"new frames; {args.repeats} timed batches after warm-up (medians)")

    results: list[Result] = []
    efficiency: dict[str, dict[str, Any]] = {}
    mask_costs: dict[str, dict[str, float]] = {}
    conversion_costs: dict[str, dict[str, float]] = {}
    host: dict[str, dict[str, float]] = {}
    # Before the sections: their host-work lines need it.
    composited = person_compositing(clip, args)
    sections: list[Callable[[Path], Setup]] = [lambda folder: build_tiny(folder, args)]
    if real_device is not None:
        device = real_device
        sections.append(lambda folder: build_real(folder, args, device))
    for build in sections:
        with tempfile.TemporaryDirectory(prefix="preprocess-bench-") as folder:
            setup = build(Path(folder))
        try:
            result = measure(setup, clip, args)
            absent = [b for b in result.batches if not b.present]
            if absent:
                print(f"[{setup.name}] a batch took the 'nobody there' path after the "
                      f"{absent[0].stopped_after} stage: the figures would not be those of the "
                      "preprocessing; the thresholds are not pinned as expected",
                      file=sys.stderr)
                return 1
            print_table(result, args)
            costs = person_mask_costs(setup, clip, result, args)
        finally:
            setup.compositor.shutdown()
        print(f"  person mask + bg, ms a batch: SAM2 {costs['sam2 batched']:.1f} with a "
              f"batch's frames encoded in one call, {costs['sam2 frame by frame']:.1f} frame "
              f"by frame; the detector's box {costs['box']:.1f}")
        mask_costs[setup.name] = costs
        host[setup.name] = host_work(result, costs, composited)
        print(f"  host work (CPU), ms a new frame: {host[setup.name]['preprocess_ms']:.2f} "
              f"(resize, face crops, skeleton, the rest of process()) + "
              f"{host[setup.name]['replace_ms']:.2f} replacing (the mask's dilation and "
              "background, compositing a person)")
        if setup.name == "gpu-real":
            efficiency[setup.name] = save_gpu_efficiency(result, costs, args)
            save_host_work(host[setup.name], args)
        converted = conversions(setup, args)
        print(f"  conversions around the model, ms a batch: conditioning "
              f"{converted['conditioning_from_pil']:.1f} from PIL images, "
              f"{converted['conditioning_from_arrays']:.1f} from the arrays; output "
              f"{converted['output_through_numpy']:.1f} through numpy, "
              f"{converted['output_on_device']:.1f} on the device"
              + ("" if converts_on(setup.device) else
                 " (the device's way run on the CPU, where the engine keeps PIL and numpy)")
              + ("" if converted["equal"] else " (RESULTS DIFFER)"))
        conversion_costs[setup.name] = converted
        results.append(result)
        del setup
        if real_device is not None and real_device != "cpu":
            torch.cuda.empty_cache()
    print()
    print(f"[compositing] a person-shaped mask in a {composited['window']}x"
          f"{composited['window']} window, {args.frames} frames: "
          f"{composited['threads_ms_per_batch']:.1f} ms a batch on the engine's threads "
          f"({compositing_threads()} here), {composited['one_thread_ms_per_batch']:.1f} ms "
          "on one")
    load_after = os.getloadavg()[0]
    print()
    print(f"  load average {load_before:.2f} before, {load_after:.2f} after, on "
          f"{os.cpu_count()} CPUs"
          + (" (other work competed for the CPU: expect noise)"
             if max(load_before, load_after) > 0.5 + (os.cpu_count() or 1) else ""))
    if real_device is None and not args.no_gpu:
        print("  (no CUDA: the real-size GPU section was skipped; --gpu on a GPU machine runs it)")

    print(json.dumps({
        "benchmark": "preprocess",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "camera": f"{args.camera[0]}x{args.camera[1]}",
        "camera_source": clip.source,
        "gen_size": f"{args.gen_size[0]}x{args.gen_size[1]}",
        "gen_window": args.gen_window,
        "new_frames_per_batch": args.frames,
        "segment_frames": args.segment,
        "carry": args.carry,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "wan_batch_s": args.wan_batch_s,
        "sections": {r.setup.name: result_json(r, args) for r in results},
        "person_compositing": composited,
        "person_mask_ms_per_batch": mask_costs,
        "preprocess_efficiency": efficiency,
        "host_ms_per_frame": host,
        "conversions_ms_per_batch": conversion_costs,
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
