"""A tiny, random-weight Wan2.2-Animate pipeline built offline, for tests.

:func:`save_tiny_wan_animate` writes a folder in diffusers layout (``model_index.json`` plus one
subfolder per component) that ``diffusers.WanAnimatePipeline.from_pretrained`` loads, so the
real loading and inference code paths run on CPU in seconds without any model download.

Every component is the real class, only shrunk: a word-level tokenizer, a 1-layer UMT5 text
encoder, a 2-layer CLIP vision tower, a narrow Wan VAE (same 4x temporal / 8x spatial
compression and 16 latent channels as the real one) and a 2-block Wan-Animate transformer with
a 16x16-pixel motion encoder. The outputs are noise, but their shapes follow the real model.

Geometry the tests must use: ``HEIGHT`` x ``WIDTH`` frames (divisible by 16), ``FACE_SIZE``
square face crops, and segments of ``4 * n + 1`` frames (the VAE's temporal compression).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Frame size of the generated video (the pipeline wants multiples of 16).
HEIGHT = 32
WIDTH = 32
# The face video is resized to this square by the pipeline (transformer.motion_encoder_size).
FACE_SIZE = 16
# A short text length keeps the tiny text encoder cheap; pass it as max_sequence_length.
PROMPT_MAX_LEN = 16
# The CLIP tower's input size and width (= transformer.image_dim).
CLIP_IMAGE_SIZE = 32
CLIP_HIDDEN = 16
# UMT5 width (= transformer.text_dim) and vocabulary.
TEXT_DIM = 32
LATENT_CHANNELS = 16  # Wan VAE z_dim; the pipeline's latents_mean/std are 16 long
VAE_SCALE_TEMPORAL = 4
VAE_SCALE_SPATIAL = 8

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
_WORDS = [
    "a", "person", "face", "video", "portrait", "man", "woman", "smiling", "talking",
    "looking", "at", "the", "camera", "with", "in", "on", "and", "of", "high", "quality",
    "realistic", "detail", "light", "background", "motion", "head", "turns", "eyes", "mouth",
    "open", "closed", "hair", "bright", "dark", "soft", "natural",
]


def _untyped(module: str) -> Any:
    """Import ``module`` typed as Any: diffusers/transformers constructors are not annotated."""
    return importlib.import_module(module)


def _vocab() -> dict[str, int]:
    # T5 convention: pad=0, eos=1, unk=2.
    tokens = [PAD, EOS, UNK, *dict.fromkeys(_WORDS)]
    return {token: index for index, token in enumerate(tokens)}


VOCAB_SIZE = len(_vocab())


def build_tokenizer() -> Any:
    """A word-level fast tokenizer with T5's special tokens; it appends ``</s>`` like T5."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    transformers = _untyped("transformers")

    vocab = _vocab()
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=512,
        padding_side="right",
    )


def build_tiny_components(seed: int = 0, *, attention_head_dim: int = 12) -> dict[str, Any]:
    """The seven components of ``WanAnimatePipeline``, tiny and randomly initialised.

    Every model is built right after ``torch.manual_seed(seed)``, so the same seed gives the
    same weights. ``attention_head_dim=16`` makes the transformer's attention 32 wide, a
    multiple of 16 as torchao's fp8 needs of a layer it converts (rope then splits 8/4/4).
    """
    import torch

    diffusers, transformers = _untyped("diffusers"), _untyped("transformers")

    tokenizer = build_tokenizer()

    torch.manual_seed(seed)
    text_encoder = transformers.UMT5EncoderModel(
        transformers.UMT5Config(
            vocab_size=VOCAB_SIZE,
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )

    torch.manual_seed(seed)
    image_encoder = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=CLIP_HIDDEN,
            intermediate_size=32,
            projection_dim=CLIP_HIDDEN,
            num_hidden_layers=2,  # the pipeline reads hidden_states[-2]
            num_attention_heads=2,
            image_size=CLIP_IMAGE_SIZE,
            patch_size=8,
            num_channels=3,
        )
    )
    image_processor = transformers.CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": CLIP_IMAGE_SIZE},
        do_center_crop=True,
        crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE},
    )

    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLWan(
        base_dim=4,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        scale_factor_temporal=VAE_SCALE_TEMPORAL,
        scale_factor_spatial=VAE_SCALE_SPATIAL,
    )

    torch.manual_seed(seed)
    transformer = diffusers.WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=attention_head_dim,  # 12: rope splits it 4/4/4 over (t, h, w)
        in_channels=2 * LATENT_CHANNELS + 4,
        latent_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=CLIP_HIDDEN,
        rope_max_seq_len=64,
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8},
        motion_encoder_size=FACE_SIZE,
        motion_style_dim=8,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=16,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=2,  # one face adapter, after block 0
        motion_encoder_batch_size=8,
    )

    # Wan's flow-matching UniPC setup (the real checkpoints ship this scheduler).
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=5.0,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
        timestep_spacing="linspace",
    )

    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "image_processor": image_processor,
        "vae": vae,
        "transformer": transformer,
        "scheduler": scheduler,
    }


def save_tiny_wan_animate(folder: Path, seed: int = 0, *, attention_head_dim: int = 12) -> Path:
    """Write a tiny ``WanAnimatePipeline`` to ``folder`` (diffusers layout) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = _untyped("diffusers").WanAnimatePipeline(
        **build_tiny_components(seed, attention_head_dim=attention_head_dim))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


@contextmanager
def cpu_context_parallel() -> Iterator[None]:
    """Let diffusers' context-parallel set-up run on the CPU (tests and ``--tiny`` checks only).

    ``ModelMixin._resolve_parallel_config`` picks each rank's device as
    ``rank % torch.accelerator.device_count()``, which is a division by zero without an
    accelerator; on the CPU every rank's device is simply ``cpu``.
    """
    from unittest import mock

    import torch

    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        yield


_SITECUSTOMIZE = '''\
"""Written by tests.wan_tiny.cpu_context_parallel_environment: in the ranks of a test's
``engine serve --gpus N --device cpu`` group, enable_context_parallel runs under
cpu_context_parallel(), as the in-process tests call it."""
import os

if os.environ.get("RANK") is not None:
    from faceswap_cam.models.wan import parallel
    from tests.wan_tiny import cpu_context_parallel

    _enable = parallel.enable_context_parallel

    def _enable_on_cpu(*args, **kwargs):
        with cpu_context_parallel():
            return _enable(*args, **kwargs)

    parallel.enable_context_parallel = _enable_on_cpu
'''


def cpu_context_parallel_environment(folder: Path) -> dict[str, str]:
    """Variables for a subprocess whose rank processes (``engine serve --gpus N --device cpu``,
    started by the launcher) must run :func:`cpu_context_parallel` around
    ``enable_context_parallel``: a ``sitecustomize.py`` in ``folder``, which Python imports at
    start-up in every process that has ``folder`` on ``PYTHONPATH``. The product has no such
    hook; only a test puts this on the path.
    """
    import os

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    repo = Path(__file__).resolve().parent.parent  # for `import tests.wan_tiny`
    path = [str(folder), str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}
