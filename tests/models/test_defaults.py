"""Every layer agrees on the engine's defaults and on which models to fetch: the settings, the
weights registry, the engine factory and the streaming generator all read models.defaults."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from faceswap_cam.daemon.config import Settings
from faceswap_cam.models import defaults, weights

ENGINE_KEYS = ("mode", "steps", "segment_frames", "carry", "seed")


def test_models_download_fetches_what_the_settings_load() -> None:
    settings = Settings()
    assert {name: weights.get_model(name).repo_id
            for name in ("wan-animate", "detector", "pose", "sam2")} == {
        "wan-animate": settings.wan_model, "detector": settings.detector_model,
        "pose": settings.pose_model, "sam2": settings.sam2_model}
    assert weights.get_model("pose").allow_patterns == (defaults.POSE_FILE,)


def test_the_engine_defaults_are_the_settings_defaults() -> None:
    pytest.importorskip("diffusers")
    from faceswap_cam.models.wan.engine import WanAnimateEngine, _stream_options
    from faceswap_cam.models.wan.streaming import StreamingWanAnimate

    settings = Settings().model_dump(mode="json")
    expected = {key: settings[key] for key in ENGINE_KEYS}
    for function in (WanAnimateEngine.__init__, StreamingWanAnimate.__init__):
        parameters = inspect.signature(function).parameters
        assert {key: parameters[key].default for key in ENGINE_KEYS} == expected, function
    # What the factory fills in for options the daemon did not pass.
    assert {key: _stream_options({})[key] for key in ENGINE_KEYS} == expected
    assert Settings().carry in defaults.CARRY_CHOICES


def test_carry_choices_are_checked_from_one_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "CARRY_CHOICES", (1, 5, 9))
    assert Settings(carry=9, segment_frames=21).carry == 9


def test_defaults_import_no_model_stack() -> None:
    code = ("import json, sys; import faceswap_cam.models.defaults; "
            "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    modules = {m.partition(".")[0] for m in json.loads(result.stdout)}
    assert not modules & {"torch", "diffusers", "transformers", "huggingface_hub"}
