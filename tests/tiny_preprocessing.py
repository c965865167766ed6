"""Tiny random-weight preprocessing models (person detector, pose, SAM2), built offline.

Each builder writes a folder that the product's own loaders open with ``from_pretrained``, the
way a downloaded checkpoint is, so tests and ``benchmarks/preprocess.py`` run the real loading
and inference paths on CPU in seconds. This module does not import pytest: the benchmarks use
it on machines that have only the model stack.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# ViTPose's crop; its heatmaps are a quarter of it: 16 x 12.
VITPOSE_INPUT_H, VITPOSE_INPUT_W = 64, 48
SAM2_SIZE = 64


def save_tiny_rtdetr(folder: Path, id2label: dict[int, str], *, v2: bool = False) -> Path:
    """A random RT-DETR (v2: RT-DETRv2, the default checkpoint's kind) of ~65k parameters."""
    import torch
    from transformers import (
        RTDetrConfig,
        RTDetrForObjectDetection,
        RTDetrImageProcessor,
        RTDetrV2Config,
        RTDetrV2ForObjectDetection,
    )
    from transformers.models.rt_detr import RTDetrResNetConfig

    # Plain dicts: transformers 5 takes out_features / use_timm_backbone as extra keyword
    # arguments its typed signatures do not list (4.x lists them), and both versions work.
    backbone: dict[str, Any] = {
        "embedding_size": 8, "hidden_sizes": [8, 16, 16, 16], "depths": [1, 1, 1, 1],
        "layer_type": "basic", "out_features": ["stage2", "stage3", "stage4"]}
    settings: dict[str, Any] = {
        "backbone_config": RTDetrResNetConfig(**backbone), "use_timm_backbone": False,
        "encoder_in_channels": [16, 16, 16], "encoder_hidden_dim": 16, "d_model": 16,
        "encoder_ffn_dim": 16, "decoder_ffn_dim": 16, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_layers": 1,
        # v2 ties box heads across decoder layers and cannot be built with a single one.
        "decoder_layers": 2 if v2 else 1,
        "decoder_in_channels": [16, 16, 16], "decoder_n_points": 2, "num_queries": 10,
        "num_denoising": 0, "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()}}
    torch.manual_seed(0)
    if v2:
        RTDetrV2ForObjectDetection(RTDetrV2Config(**settings)).save_pretrained(folder)
    else:
        RTDetrForObjectDetection(RTDetrConfig(**settings)).save_pretrained(folder)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def tiny_vitpose_config(num_labels: int, *, experts: int = 1, simple: bool = True) -> Any:
    transformers: Any = importlib.import_module("transformers")
    backbone = transformers.VitPoseBackboneConfig(
        image_size=[VITPOSE_INPUT_H, VITPOSE_INPUT_W], patch_size=[16, 16], hidden_size=32,
        num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, out_indices=[2],
        layer_norm_eps=1e-6, num_experts=experts, part_features=8 if experts > 1 else 0)
    return transformers.VitPoseConfig(backbone_config=backbone, num_labels=num_labels,
                                      use_simple_decoder=simple)


def save_tiny_vitpose(folder: Path, num_labels: int, *, experts: int = 1) -> Path:
    """A random ViTPose (``experts`` > 1: ViTPose+, the wholebody checkpoint's kind)."""
    import torch

    transformers: Any = importlib.import_module("transformers")
    torch.manual_seed(0)
    config = tiny_vitpose_config(num_labels, experts=experts)
    transformers.VitPoseForPoseEstimation(config).save_pretrained(folder)
    size = {"height": VITPOSE_INPUT_H, "width": VITPOSE_INPUT_W}
    transformers.VitPoseImageProcessor(size=size).save_pretrained(folder)
    return folder


def save_tiny_sam2(folder: Path, *, object_score: float) -> Path:
    """A ~1M-parameter SAM2 video model and its processor at a 64 px input. ``object_score``
    pins SAM2's "is the object here" logit, so tests can choose tracked or lost."""
    import torch
    import transformers
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import (
        Sam2VideoVideoProcessor,
    )

    s = SAM2_SIZE
    hiera = {
        "model_type": "sam2_hiera_det_model", "hidden_size": 8, "num_attention_heads": 1,
        "image_size": [s, s], "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [8, 16, 32, 64], "num_attention_heads_per_stage": [1, 1, 1, 1],
        "window_size_per_stage": [4, 4, 4, 2],
        "window_positional_embedding_background_size": [2, 2],
        # A global block may not open a stage: its window (0) would be divided by the stride.
        "global_attention_blocks": [3],
    }
    vision = {
        "backbone_config": hiera, "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        "fpn_hidden_size": 128,
    }
    # The memory encoder's output stays 64 (the memory cross-attention hard-codes it), and the
    # hidden size must be a multiple above it for the object-pointer split.
    config = transformers.Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 128, "image_size": s, "patch_size": 16},
        mask_decoder_config={"hidden_size": 128, "mlp_dim": 32, "num_attention_heads": 2,
                             "iou_head_hidden_dim": 16},
        image_size=s, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[s // 16, s // 16], memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=32, memory_fuser_num_layers=1,
    )
    torch.manual_seed(0)
    model: Any = transformers.Sam2VideoModel(config)
    head = model.mask_decoder.pred_obj_score_head.proj_out
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(object_score)
    processor = transformers.Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={"height": s, "width": s},
                                           mask_size={"height": s // 4, "width": s // 4}),
        video_processor=Sam2VideoVideoProcessor(size={"height": s, "width": s}),
        target_size=s,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
