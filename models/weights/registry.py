"""The models the product needs from the Hugging Face Hub, and where each one lives on disk.

Each model is a plain folder ``models_dir()/<name>/`` in the layout its library loads with
``from_pretrained`` (diffusers for Wan2.2-Animate). What is on disk is checked by
:mod:`.verify`; only :mod:`.download` touches the network.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faceswap_cam.daemon import paths
from faceswap_cam.models import defaults

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """A model the product needs: which Hub repo, and which of its files.

    ``allow_patterns`` use huggingface_hub's matching (``fnmatch``, ``*`` also crosses ``/``,
    a trailing ``/`` means the whole folder). ``layout`` tells ``verify`` what a usable folder
    looks like when no manifest exists: ``diffusers`` (model_index.json and its component
    folders), ``transformers`` (config.json and weights at the top) or ``files`` (just the
    files the patterns name, e.g. an original checkpoint converted at first load).
    """

    name: str
    repo_id: str
    allow_patterns: tuple[str, ...]
    revision: str | None = None
    description: str = ""
    layout: str = "diffusers"
    #: Fetched only by ``models download --only NAME``: a plain ``models download`` gets what
    #: the default engine needs, not every alternative (each Wan checkpoint is tens of GB).
    on_request: bool = False


_LAYOUTS = ("diffusers", "transformers", "files")
_REGISTRY: dict[str, ModelSpec] = {}


class WeightsError(RuntimeError):
    """A weights operation failed; the message says what happened and what to do."""


class UnknownModelError(WeightsError, LookupError):
    """A model name that is not registered; the message lists the known ones."""


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model to the registry; ``replace`` swaps out one of the same name."""
    if not _NAME_RE.match(spec.name):
        raise ValueError(f"model name {spec.name!r} must match {_NAME_RE.pattern} "
                         "(it names a folder and a CLI argument)")
    if spec.layout not in _LAYOUTS:
        raise ValueError(f"model {spec.name!r}: layout {spec.layout!r} is not one of {_LAYOUTS}")
    if not spec.allow_patterns:
        # An empty selection would make snapshot_download fetch the whole repo.
        raise ValueError(f"model {spec.name!r}: allow_patterns must not be empty")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def default_download_names() -> list[str]:
    """What a plain ``models download`` fetches: every model not marked ``on_request``."""
    return [name for name in model_names() if not get_model(name).on_request]


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_model(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(model_names()) or '(none)'}"
        ) from None


def _diffusers_component_patterns(
    weighted: Sequence[str], tokenizers: Sequence[str], configs_only: Sequence[str]
) -> tuple[str, ...]:
    """Patterns for a diffusers pipeline folder: safetensors only, so neither the .bin/.pth
    duplicates some repos carry nor the original (non-diffusers) checkpoints come along."""
    patterns = ["model_index.json"]
    for component in weighted:
        # *.json takes config.json and the shard index (*.safetensors.index.json).
        patterns += [f"{component}/*.json", f"{component}/*.safetensors"]
    for component in tokenizers:
        patterns += [f"{component}/*.json", f"{component}/*.model", f"{component}/*.txt"]
    for component in configs_only:
        patterns.append(f"{component}/*.json")
    return tuple(patterns)


WAN_ANIMATE = register_model(ModelSpec(
    name="wan-animate",
    repo_id=defaults.WAN_ANIMATE_REPO,
    # The components of diffusers' WanAnimatePipeline.
    allow_patterns=_diffusers_component_patterns(
        weighted=("transformer", "vae", "text_encoder", "image_encoder"),
        tokenizers=("tokenizer",),
        configs_only=("scheduler", "image_processor"),
    ),
    description="Wan2.2-Animate-14B (diffusers layout): the generative swap model",
))

# Wan-Animate-2: the components of diffusers' modular WanAnimate2(Distilled)Blocks. The
# modular index comes along for reference; loading reads the component folders directly.
_WAN_ANIMATE_2_PATTERNS = (*_diffusers_component_patterns(
    weighted=("transformer", "vae", "text_encoder", "image_encoder"),
    tokenizers=("tokenizer",),
    configs_only=("scheduler", "guider"),
), "modular_model_index.json")
#: ``wan-animate-2`` is the distilled checkpoint: what the engine runs unless asked for the
#: base one (the ``quality`` preset), so ``--only wan-animate-2`` gets the default.
WAN_ANIMATE_2 = register_model(ModelSpec(
    name="wan-animate-2",
    repo_id=defaults.WAN_ANIMATE_2_DISTILLED_REPO,
    allow_patterns=_WAN_ANIMATE_2_PATTERNS,
    description="Wan-Animate-2-14B distilled (10 steps, no CFG; diffusers modular layout)",
    on_request=True,
))
WAN_ANIMATE_2_BASE = register_model(ModelSpec(
    name="wan-animate-2-base",
    repo_id=defaults.WAN_ANIMATE_2_REPO,
    allow_patterns=_WAN_ANIMATE_2_PATTERNS,
    description="Wan-Animate-2-14B base (40 steps with CFG; diffusers modular layout)",
    on_request=True,
))

# The preprocessing models (person, whole-body pose, person masks), as Wan-Animate's own
# preprocessing uses them.
DETECTOR = register_model(ModelSpec(
    name="detector",
    repo_id=defaults.DETECTOR_REPO,
    allow_patterns=("*.json", "*.safetensors"),
    description="RT-DETRv2 person detector (transformers)",
    layout="transformers",
))
POSE = register_model(ModelSpec(
    name="pose",
    repo_id=defaults.POSE_REPO,
    # No transformers-format checkpoint has the 133 whole-body keypoints: the original
    # ViTPose-H whole-body file is converted once, locally, the first time it is loaded.
    allow_patterns=(defaults.POSE_FILE,),
    description="ViTPose-H whole-body 133-keypoint pose (converted to transformers at first use)",
    layout="files",
))
SAM2 = register_model(ModelSpec(
    name="sam2",
    repo_id=defaults.SAM2_REPO,
    allow_patterns=("*.json", "*.safetensors"),
    description="SAM2.1 tiny video segmenter (transformers), for replace mode's person mask",
    layout="transformers",
))

LIGHTX2V_LORA = register_model(ModelSpec(
    name="lightx2v-lora",
    repo_id=defaults.LIGHTX2V_LORA_REPO,
    allow_patterns=(defaults.LIGHTX2V_LORA_FILE,),
    description="LightX2V step/CFG-distillation LoRA (Wan2.1-I2V-480P), for the live preset",
    layout="files",
    on_request=True,
))


# --------------------------------------------------------------------------- locations


def model_dir(name: str) -> Path:
    return paths.models_dir() / get_model(name).name


def fix_command(name: str) -> str:
    return f"faceswap-cam models download --only {name}"


def matches_patterns(path: str, patterns: Iterable[str]) -> bool:
    """Whether a repo path is selected, exactly as huggingface_hub selects it for download."""
    path = path.replace("\\", "/")
    for raw in patterns:
        pattern = raw.replace("\\", "/")
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatch.fnmatchcase(path, pattern):
            return True
    return False
