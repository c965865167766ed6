"""Model weights: what the product needs from the Hugging Face Hub, where it lives, and whether
what is on disk is complete.

:mod:`.registry` names the models and their folders, :mod:`.verify` checks a folder offline,
:mod:`.download` fetches one (the only network access, and only on ``models download``),
:mod:`.commands` is the ``faceswap-cam models`` CLI. The everyday calls are here.

Cheap to import (the CLI imports it on every start): no torch, and huggingface_hub only
inside the functions that talk to the Hub.
"""

from faceswap_cam.models.weights.download import download
from faceswap_cam.models.weights.registry import (
    ModelSpec,
    UnknownModelError,
    WeightsError,
    fix_command,
    get_model,
    model_dir,
    model_names,
    register_model,
)
from faceswap_cam.models.weights.verify import (
    ModelStatus,
    Problem,
    ProblemKind,
    VerifyReport,
    check_structure,
    is_present,
    list_models,
    unavailable_reason,
    verify,
)

__all__ = [
    "ModelSpec",
    "ModelStatus",
    "Problem",
    "ProblemKind",
    "UnknownModelError",
    "VerifyReport",
    "WeightsError",
    "check_structure",
    "download",
    "fix_command",
    "get_model",
    "is_present",
    "list_models",
    "model_dir",
    "model_names",
    "register_model",
    "unavailable_reason",
    "verify",
]
