"""--preset: the bundle reaches diffusers (steps, shift, the step-distillation LoRA) on the tiny
model, and every setting given explicitly (file, environment, flag) wins over the preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap_cam.daemon.config import ConfigError, load_settings
from faceswap_cam.daemon.pipeline.app import engine_options
from faceswap_cam.models import defaults, weights
from faceswap_cam.models.engine import EngineError, resolve_engine_name
from faceswap_cam.models.presets import PresetName, get_preset, presets_for
from faceswap_cam.models.wan.requirements import required_weights

LORA_FIX = "faceswap-cam models download --only lightx2v-lora"


def resolved(settings_cli: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    from faceswap_cam.models.presets import apply_preset

    return apply_preset(engine_options(load_settings(settings_cli, **kwargs)), "wan-animate")


def test_wan_animate_presets() -> None:
    assert [p.name for p in presets_for("wan-animate")] == list(PresetName)
    live = get_preset("wan-animate", "live")
    assert (live.steps, live.segment_frames, live.carry, live.gen_short_side) == (4, 9, 1, 480)
    assert (live.lora, live.shift, live.guidance_scale) == ("lightx2v-lora", 5.0, 1.0)
    assert live.quantize == "fp8" and get_preset("wan-animate-2", "live").quantize == "fp8"
    quality = get_preset("wan-animate", "quality")
    assert (quality.steps, quality.segment_frames, quality.carry, quality.lora) == (20, 17, 5,
                                                                                  None)
    with pytest.raises(ValueError, match="has no preset 'fast'"):
        get_preset("wan-animate", "fast")
    spec = weights.get_model("lightx2v-lora")
    assert spec.repo_id == defaults.LIGHTX2V_LORA_REPO
    assert spec.allow_patterns == (defaults.LIGHTX2V_LORA_FILE,)


def test_explicit_settings_win_over_the_preset(tmp_path: Path) -> None:
    options = resolved({"preset": "live"}, environ={})
    assert (options["steps"], options["segment_frames"], options["carry"]) == (4, 9, 1)
    assert options["loras"] == ["lightx2v-lora:1"] and options["shift"] == 5.0
    assert options["gen_short_side"] == 480 and options["quantize"] == "fp8"
    assert {"steps", "quantize", "loras"} <= set(options["from_preset"])
    assert resolved({"preset": "live", "quantize": "int8"}, environ={})["quantize"] == "int8"
    # A flag, the environment and the config file are all explicit.
    config = tmp_path / "config.toml"
    config.write_text("segment_frames = 13\n")
    options = resolved({"preset": "live", "steps": 6, "gen_size": "32x32"}, config_path=config,
                       environ={"FACESWAP_CAM_SHIFT": "3.0", "FACESWAP_CAM_LORAS": "mine.st"})
    assert (options["steps"], options["segment_frames"], options["shift"]) == (6, 13, 3.0)
    assert options["loras"] == ["mine.st"]  # the user's LoRAs replace the preset's
    assert options["gen_size"] == [32, 32] and "gen_short_side" not in options
    # Defaults are not explicit: without a preset nothing changes.
    plain = resolved({}, environ={})
    assert (plain["steps"], plain["segment_frames"], plain["loras"]) == (20, 9, [])
    # The environment can pick the preset too; a preset that cannot fit explicit values is a
    # configuration error naming the preset.
    assert load_settings({}, environ={"FACESWAP_CAM_PRESET": "balanced"}).preset == "balanced"
    with pytest.raises(ConfigError, match="preset quality: segment_frames 9 is too short to "
                       r"carry 5 frames \(use 13 or more"):
        load_settings({"preset": "quality", "segment_frames": 9}, environ={})
    with pytest.raises(ConfigError, match="preset"):
        load_settings({"preset": "fastest"}, environ={})


def test_live_preset_names_the_lora_download_when_it_is_missing(tmp_path: Path) -> None:
    options = engine_options(load_settings({"preset": "live", "wan_model": str(tmp_path),
                                            "preprocessor": "stand-in",
                                            "reference": str(tmp_path / "me.png")}, environ={}))
    assert ("lightx2v-lora", None) in required_weights(options)
    with pytest.raises(EngineError, match=LORA_FIX):
        resolve_engine_name("wan-animate", options)
    # A LoRA given explicitly replaces the preset's, so the download is not needed.
    assert ("lightx2v-lora", None) not in required_weights({**options, "loras": ["x.st"],
                                                            "explicit": ["loras", "preset"]})


def test_the_live_preset_masks_with_the_detectors_box_and_needs_no_sam2() -> None:
    def needs_sam2(cli: dict[str, Any]) -> bool:
        options = engine_options(load_settings(cli, environ={}))
        return "sam2" in [name for name, _ in required_weights(options)]

    live = resolved({"preset": "live"}, environ={})
    assert live["person_mask"] == "box" and "person_mask" in live["from_preset"]
    assert resolved({}, environ={})["person_mask"] == "sam2"  # Wan's recipe by default
    assert resolved({"preset": "balanced"}, environ={})["person_mask"] == "sam2"
    assert resolved({"preset": "live", "person_mask": "sam2"}, environ={})["person_mask"] == \
        "sam2"
    assert not needs_sam2({"preset": "live"})
    assert needs_sam2({"preset": "live", "person_mask": "sam2"})
    assert needs_sam2({}) and not needs_sam2({"person_mask": "box"})
    assert not needs_sam2({"person_mask": "sam2", "mode": "animate"})  # nothing composited
    # A caller that lists no explicit settings gave every one it passed, as for the engine.
    assert "sam2" in [name for name, _ in required_weights({"preset": "live",
                                                            "person_mask": "sam2"})]
    assert "sam2" not in [name for name, _ in required_weights({"preset": "live"})]


def test_cli_takes_the_new_flags() -> None:
    from faceswap_cam.daemon.cli import build_parser

    parser = build_parser()
    for command in (["run"], ["render", "--input", "x.mp4", "--output", "o"],
                    ["engine", "serve"]):
        args = parser.parse_args([*command, "--preset", "live", "--quantize", "int8",
                                  "--attention-backend", "auto", "--person-mask", "box"])
        assert (args.preset, args.quantize, args.attention_backend) == ("live", "int8", "auto")
        assert args.person_mask == "box"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--quantize", "int4"])
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--person-mask", "outline"])


# --- on the tiny model -----------------------------------------------------------------------

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.wan_tiny import save_tiny_wan_animate

    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


def install_tiny_lora(tiny_model: Path) -> Path:
    """A random LoRA for the tiny transformer's attention, made with peft and saved where
    ``models download --only lightx2v-lora`` puts the real one."""
    pytest.importorskip("peft", reason="peft (model extra) is needed for LoRA files")
    import importlib

    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    diffusers: Any = importlib.import_module("diffusers")  # untyped
    transformer = diffusers.WanAnimateTransformer3DModel.from_pretrained(
        str(tiny_model / "transformer"))
    torch.manual_seed(11)
    # init_lora_weights=False: both matrices random, so the adapter changes the output.
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = get_peft_model_state_dict(transformer)
    path = weights.model_dir("lightx2v-lora") / defaults.LIGHTX2V_LORA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"transformer.{key}": value for key, value in state.items()}, str(path))
    return path


def run_engine(engine: Any, calls: int = 2) -> list[np.ndarray]:
    frames = [np.full((32, 32, 3), 25 * i, np.uint8) for i in range(engine.first_batch)]
    out: list[np.ndarray] = list(engine.process(frames).frames)
    for _ in range(calls - 1):
        out += engine.process(frames[:engine.next_batch]).frames
    return out


def count_forwards(pipe: Any) -> list[int]:
    calls = [0]
    pipe.transformer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_live_preset_reaches_diffusers(tiny_model: Path) -> None:
    from faceswap_cam.models.wan.engine import create

    assert weights.verify("lightx2v-lora").ok is False  # nothing downloaded yet
    install_tiny_lora(tiny_model)
    settings = load_settings({"preset": "live", "wan_model": str(tiny_model), "device": "cpu",
                              "gen_size": "32x32", "preprocessor": "stand-in",
                              "mode": "animate"}, environ={})
    engine = create(**engine_options(settings))
    pipe = engine.pipe
    assert pipe.get_active_adapters() == ["lora0"]  # the preset's LoRA, loaded
    assert pipe.scheduler.config.flow_shift == 5.0
    assert (engine.first_batch, engine.next_batch) == (9, 8)
    engine.set_reference(np.full((80, 64, 3), 90, np.uint8))
    forwards = count_forwards(pipe)
    with_lora = run_engine(engine)
    assert len(pipe.scheduler.timesteps) == 4
    assert forwards[0] == 2 * 4  # 4 steps a segment, no classifier-free guidance
    # The same run without the adapter differs; with it again, it is the same.
    pipe.disable_lora()
    engine.reset()
    without = run_engine(engine)
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(with_lora, without,
                                                                    strict=True)) > 0
    pipe.enable_lora()
    engine.reset()
    again = run_engine(engine)
    assert all(np.array_equal(a, b) for a, b in zip(with_lora, again, strict=True))
    engine.close()


def test_the_live_presets_fp8_gives_way_where_the_device_has_none(
        tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On the CPU (or a GPU older than compute capability 8.9) the live preset loads
    unquantized and says why; fp8 the user asked for is refused with the fix."""
    from faceswap_cam.models.engine import EngineError
    from faceswap_cam.models.wan.engine import create, load_options

    install_tiny_lora(tiny_model)
    given = {"preset": "live", "wan_model": str(tiny_model), "device": "cpu",
             "gen_size": "32x32", "preprocessor": "stand-in", "mode": "animate"}
    options = engine_options(load_settings(given, environ={}))
    with caplog.at_level("INFO", logger="faceswap_cam.models.quantize"):
        from faceswap_cam.models.wan.engine import resolved_options

        assert load_options(resolved_options(options)).quantize == "none"
    assert "the preset's fp8 cannot run here" in caplog.text
    engine = create(**options)  # loads, unquantized
    assert not any("Float8" in type(m.weight).__name__ for m in engine.pipe.transformer.modules()
                   if hasattr(m, "weight"))
    engine.close()
    asked = engine_options(load_settings({**given, "quantize": "fp8"}, environ={}))
    with pytest.raises(EngineError, match="--quantize fp8 needs an NVIDIA GPU"):
        create(**asked)


def test_explicit_flags_override_the_preset_in_diffusers(tiny_model: Path) -> None:
    from faceswap_cam.models.wan.engine import create

    install_tiny_lora(tiny_model)
    settings = load_settings({"preset": "live", "wan_model": str(tiny_model), "device": "cpu",
                              "gen_size": "32x32", "preprocessor": "stand-in", "mode": "animate",
                              "steps": 2, "shift": 3.0, "segment_frames": 5}, environ={})
    engine = create(**engine_options(settings))
    assert engine.pipe.scheduler.config.flow_shift == 3.0
    assert engine.pipe.get_active_adapters() == ["lora0"]  # not overridden: still the preset's
    assert (engine.first_batch, engine.next_batch) == (5, 4)
    engine.set_reference(np.full((80, 64, 3), 90, np.uint8))
    forwards = count_forwards(engine.pipe)
    run_engine(engine, calls=1)
    assert len(engine.pipe.scheduler.timesteps) == 2 and forwards[0] == 2
    engine.close()


@pytest.mark.parametrize(("engine", "asked", "shown"), [
    ("wan-animate-2", None, "balanced"),  # the checkpoint's own preset, which the engine runs
    ("wan-animate-2", "live", "live"),
    ("wan-animate", None, None),  # the plain settings
    ("debug", None, None),
])
def test_status_names_the_preset_the_engine_runs(engine: str, asked: str | None,
                                                 shown: str | None) -> None:
    from faceswap_cam.daemon.config import Settings
    from faceswap_cam.daemon.outputs.null import NullSink
    from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
    from faceswap_cam.models.simple_engines import PassthroughEngine

    app = RealtimeFaceSwapApp(
        Settings(engine=engine, preset=asked, source="demo", sinks=["null"], fps=30,
                 size=(320, 240), control_api=False),
        engine_factory=PassthroughEngine, sinks=[NullSink()])
    try:
        assert app.status().preset == shown
    finally:
        app.close()
