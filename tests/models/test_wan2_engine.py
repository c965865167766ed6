"""The wan-animate-2 engine: registration, presets, weights, and camera frames in and out."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap_cam.models import defaults, weights
from faceswap_cam.models.engine import AUTO_PREFERENCE, available_engines, resolve_engine_name
from faceswap_cam.models.presets import presets_for
from faceswap_cam.models.wan2.variants import Wan2Variant, required_weights, variant_of


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading draws tqdm bars; their monitor thread would outlive the test.
    tqdm: Any = importlib.import_module("tqdm")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


def test_registered_with_presets_weights_and_auto_first() -> None:
    assert "wan-animate-2" in available_engines()
    assert AUTO_PREFERENCE.index("wan-animate-2") < AUTO_PREFERENCE.index("wan-animate")
    quality, balanced, live = presets_for("wan-animate-2")
    assert (quality.steps, quality.guidance_scale) == (40, 3.0)
    assert (balanced.steps, balanced.guidance_scale) == (10, 1.0)
    assert live.steps < balanced.steps and live.segment_frames < balanced.segment_frames
    assert weights.get_model("wan-animate-2").repo_id == defaults.WAN_ANIMATE_2_DISTILLED_REPO
    assert weights.get_model("wan-animate-2-base").repo_id == defaults.WAN_ANIMATE_2_REPO
    assert variant_of({}) is Wan2Variant.DISTILLED
    assert variant_of({"preset": "quality"}) is Wan2Variant.BASE
    assert variant_of({"preset": "live", "wan2_variant": "base"}) is Wan2Variant.BASE
    assert required_weights({"preset": "quality"}) == [("wan-animate-2-base", None)]


def test_auto_prefers_it_only_when_its_weights_are_there(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    options: dict[str, Any] = {"reference": "me.png", "wan2_model": str(tmp_path / "absent"),
                               "wan_model": str(tmp_path / "absent")}
    with caplog.at_level(logging.INFO, logger="faceswap_cam.models.engine"):
        assert resolve_engine_name("auto", options) == "passthrough"
        # One line says what runs and why each better engine does not.
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert record.getMessage().startswith("engine auto runs passthrough: wan-animate-2 is "
                                              "not available")
        assert "; wan-animate is not available" in record.getMessage()
        caplog.clear()
        # wan-animate's weights there, wan-animate-2's not: wan-animate, said as such.
        wan_animate = {**options, "wan_model": str(tmp_path), "preprocessor": "stand-in"}
        assert resolve_engine_name("auto", wan_animate) == "wan-animate"
        (record,) = caplog.records
        assert record.levelno == logging.INFO and "passthrough" not in record.getMessage()
        assert record.getMessage().startswith("engine auto runs wan-animate: wan-animate-2 is")
        caplog.clear()
        options["wan2_model"] = str(tmp_path)  # a local folder counts as present
        assert resolve_engine_name("auto", options) == "wan-animate-2"
        assert not caplog.records


def test_engine_swaps_camera_frames(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from faceswap_cam.models.wan.loading import LoadOptions
    from faceswap_cam.models.wan2.engine import WanAnimate2Engine, fit_into
    from faceswap_cam.models.wan2.loading import load_pipeline
    from tests.wan2_tiny import HEIGHT, PROMPT_MAX_LEN, WIDTH, save_tiny_wan_animate_2

    folder = save_tiny_wan_animate_2(tmp_path / "tiny", "distilled")
    pipe = load_pipeline(str(folder), Wan2Variant.DISTILLED, LoadOptions(device="cpu"))
    engine = WanAnimate2Engine(pipeline=pipe, steps=1, segment_frames=5, carry=1,
                               gen_size=(WIDTH, HEIGHT), max_sequence_length=PROMPT_MAX_LEN)
    assert (engine.first_batch, engine.next_batch) == (5, 4)
    rng = np.random.default_rng(0)
    engine.set_reference(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    camera = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    for frame in camera:
        frame.flags.writeable = False  # the engine host lends read-only frames
    result = engine.process(camera)
    assert result.swapped and len(result.frames) == 5
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in result.frames)
    assert engine.generation_window == (0, 0, 64, 48, WIDTH, HEIGHT)  # the whole frame
    # A square reference in a 4:3 camera: bars left and right, never a stretch.
    assert not result.frames[0][:, :4].any() and result.frames[0][:, 16:48].any()
    assert fit_into(np.ones((30, 40, 3), np.uint8), 64, 48).min() == 1
    engine.close()
    engine.interrupt()  # safe after close


def test_the_daemons_defaults_do_not_override_the_preset() -> None:
    from faceswap_cam.models.wan2.engine import stream_settings

    # The daemon passes every engine setting, wan-animate's defaults included (steps 20); only
    # the ones the user gave ("explicit") override Wan-Animate-2's preset.
    balanced = stream_settings({"steps": 20, "segment_frames": 9, "carry": 1, "explicit": []})
    assert balanced["steps"] == 10
    live = stream_settings({"steps": 20, "preset": "live", "explicit": []})
    assert (live["steps"], live["segment_frames"]) == (4, 5)
    assert stream_settings({"steps": 3, "preset": "live", "explicit": ["steps"]})["steps"] == 3
    # A caller that does not say what was explicit gave everything it passed.
    assert stream_settings({"steps": 2})["steps"] == 2


def test_the_daemons_settings_choose_its_folder_and_checkpoint(tmp_path: Path) -> None:
    """`run --wan2-model DIR --wan2-variant base` reaches the engine's options (and through
    them a child host's): the folder counts as its weights and the checkpoint beats the
    preset's."""
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from faceswap_cam.daemon.config import load_settings
    from faceswap_cam.daemon.pipeline.app import engine_options

    settings = load_settings({"wan2_model": str(tmp_path), "wan2_variant": "base",
                              "preset": "live", "reference": str(tmp_path / "me.png")},
                             environ={})
    options = engine_options(settings)
    assert variant_of(options) is Wan2Variant.BASE
    assert required_weights(options) == [("wan-animate-2-base", str(tmp_path))]
    assert resolve_engine_name("auto", options) == "wan-animate-2"
    assert variant_of(engine_options(load_settings({}, environ={}))) is Wan2Variant.DISTILLED


def test_wan_animate_only_settings_the_user_gave_are_named() -> None:
    """`--mode replace` and the like do nothing to wan-animate-2: the log says so at start
    (the daemon passes every setting; only the ones the user gave count)."""
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from faceswap_cam.models.wan2.engine import ignored_settings

    options = {"mode": "replace", "feather_px": 8, "steps": 4,
               "explicit": ["mode", "feather_px", "steps"]}
    assert ignored_settings(options) == ["mode", "feather_px"]
    assert ignored_settings({"mode": "replace", "explicit": []}) == []


def test_a_preset_and_a_generation_size_reach_diffusers_from_the_daemons_settings(
        tmp_path: Path) -> None:
    """`run --engine wan-animate-2 --preset live --gen-size WxH` builds the engine through
    the registry as the daemon does: the live preset's steps reach the denoising loop, its
    segment the batch sizes, and the given size the generation (it once failed at start with
    a KeyError, after the whole model had loaded)."""
    torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from faceswap_cam.daemon.config import load_settings
    from faceswap_cam.daemon.pipeline.app import engine_options
    from faceswap_cam.models.engine import create_engine
    from faceswap_cam.models.wan2.presets import LIVE
    from tests.wan2_tiny import HEIGHT, WIDTH, save_tiny_wan_animate_2

    folder = save_tiny_wan_animate_2(tmp_path / "tiny", "distilled")
    settings = load_settings({"engine": "wan-animate-2", "wan2_model": str(folder),
                              "preset": "live", "gen_size": f"{WIDTH}x{HEIGHT}",
                              "device": "cpu"}, environ={})
    engine: Any = create_engine("wan-animate-2", **engine_options(settings))
    try:
        assert (engine.first_batch, engine.next_batch) == (
            LIVE.segment_frames, LIVE.segment_frames - LIVE.carry)
        forwards: list[int] = []
        engine.pipe.transformer.register_forward_hook(lambda *_: forwards.append(1))
        rng = np.random.default_rng(0)
        engine.set_reference(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        camera = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
                  for _ in range(engine.first_batch)]
        with torch.no_grad():
            result = engine.process(camera)
        assert result.swapped and len(result.frames) == LIVE.segment_frames
        assert engine.generation_window[4:] == (WIDTH, HEIGHT)
        # Every step one forward (the distilled checkpoint has no CFG), and the reference pass.
        assert len(forwards) == LIVE.steps + 1
        assert len(engine.pipe.scheduler.timesteps) == LIVE.steps
    finally:
        engine.close()
