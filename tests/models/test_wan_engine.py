"""The wan-animate engine: render --preprocessed, loading options and errors, the daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from faceswap_cam.models.batching import generation_size  # noqa: E402
from faceswap_cam.models.engine import EngineError  # noqa: E402
from faceswap_cam.models.preprocessing.base import (  # noqa: E402
    PreprocessedBatch,
    StandInPreprocessor,
)
from faceswap_cam.models.render import PreprocessedError, load_preprocessed  # noqa: E402
from faceswap_cam.models.wan.engine import WanAnimateEngine  # noqa: E402
from faceswap_cam.models.wan.loading import (  # noqa: E402
    LoadOptions,
    check_folder,
    load_pipeline,
    parse_lora,
)
from faceswap_cam.models.weights import WeightsError  # noqa: E402
from tests.conftest import faceswap_cam_exe  # noqa: E402
from tests.wan_tiny import FACE_SIZE, HEIGHT, WIDTH, save_tiny_wan_animate  # noqa: E402

ENGINE_FLAGS = ["--steps", "2", "--segment-frames", "5", "--carry", "1", "--seed", "4",
                "--prompt", "a person talking", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


def write_video(path: Path, frames: list[np.ndarray], fps: float = 16) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def make_preprocessed(folder: Path, frames: int, *, replace: bool = True) -> Path:
    """Wan-Animate's preprocessing layout with synthetic content."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "src_ref.png"), rng.integers(0, 255, (40, 32, 3), dtype=np.uint8))
    write_video(folder / "src_pose.mp4", [np.roll(base, i, axis=1) for i in range(frames)])
    write_video(folder / "src_face.mp4",
                [np.roll(base[:FACE_SIZE, :FACE_SIZE], i, axis=0) for i in range(frames)])
    if replace:
        masks = []
        for i in range(frames):
            mask = np.zeros((HEIGHT, WIDTH), np.uint8)
            mask[8:24, i % 16:i % 16 + 12] = 255
            masks.append(mask)
        write_video(folder / "src_mask.mp4", masks)
        write_video(folder / "src_bg.mp4", [np.roll(base, -i, axis=0) for i in range(frames)])
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([faceswap_cam_exe(), *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("mode", ["replace", "animate"])
def test_render_preprocessed_equals_the_pipeline(tiny_model: Path, tmp_path: Path,
                                                 mode: str) -> None:
    # 11 frames with L=5, P=1: three segments and two padded frames, as the pipeline pads.
    folder = make_preprocessed(tmp_path / "clip", 11, replace=mode == "replace")
    out = tmp_path / "frames"
    result = run_cli("render", "--preprocessed", str(folder), "--output", str(out),
                     "--wan-model", str(tiny_model), "--mode", mode, *ENGINE_FLAGS)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 11 and summary["size"] == [WIDTH, HEIGHT]
    rendered = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # type: ignore[arg-type]
                for p in sorted(out.glob("*.png"))]
    assert len(rendered) == 11

    clip = load_preprocessed(folder, mode)
    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    to_pil = [PIL.Image.fromarray(f) for f in clip.pose], [PIL.Image.fromarray(f)
                                                           for f in clip.face]
    extra: dict[str, Any] = {}
    if mode == "replace":
        assert clip.background is not None and clip.mask is not None
        extra = {"background_video": [PIL.Image.fromarray(f) for f in clip.background],
                 "mask_video": [PIL.Image.fromarray(f, mode="L") for f in clip.mask]}
    expected = pipe(image=PIL.Image.fromarray(clip.reference), pose_video=to_pil[0],
                    face_video=to_pil[1], prompt="a person talking", height=HEIGHT,
                    width=WIDTH, segment_frame_length=5, num_inference_steps=2, mode=mode,
                    prev_segment_conditioning_frames=1, guidance_scale=1.0,
                    generator=torch.Generator("cpu").manual_seed(4), output_type="np",
                    **extra).frames[0]
    expected_u8 = (np.clip(expected, 0, 1) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.stack(rendered), expected_u8)


def test_preprocessed_folder_errors(tmp_path: Path) -> None:
    folder = make_preprocessed(tmp_path / "clip", 6)
    (folder / "src_mask.mp4").unlink()
    with pytest.raises(PreprocessedError, match=r"lacks src_mask.mp4.*--mode animate"):
        load_preprocessed(folder, "replace")
    assert len(load_preprocessed(folder, "animate")) == 6  # animate mode needs no mask
    write_video(folder / "src_mask.mp4", [np.zeros((HEIGHT, WIDTH), np.uint8)] * 4)
    with pytest.raises(PreprocessedError, match=r"frame counts differ: .*src_mask\.mp4 has 4"):
        load_preprocessed(folder, "replace")
    write_video(folder / "src_mask.mp4", [np.zeros((48, 48), np.uint8)] * 6)
    with pytest.raises(PreprocessedError, match=r"frame sizes differ: .*src_mask\.mp4 is 48x48"):
        load_preprocessed(folder, "replace")
    (folder / "src_ref.png").write_bytes(b"not a png")
    with pytest.raises(PreprocessedError, match=r"src_ref\.png cannot be decoded"):
        load_preprocessed(folder, "animate")


def test_render_cli_reports_bad_folders(tmp_path: Path) -> None:
    result = run_cli("render", "--preprocessed", str(tmp_path / "none"), "--output",
                     str(tmp_path / "out.mp4"), "--device", "cpu")
    assert result.returncode == 2
    assert "is not a folder" in result.stderr


def test_partial_weights_name_the_file_and_the_fix(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.unlink()
    shutil.rmtree(broken / "vae")
    problems = check_folder(broken)
    assert any("transformer/ has no weight files" in p for p in problems)
    assert any("vae/ is missing" in p for p in problems)
    with pytest.raises(WeightsError, match="models download --only wan-animate"):
        load_pipeline(str(broken), LoadOptions(device="cpu"))
    with pytest.raises(WeightsError, match="not found"):
        load_pipeline(str(tmp_path / "nowhere"), LoadOptions(device="cpu"))
    assert check_folder(tiny_model) == []


def test_load_options(tiny_model: Path) -> None:
    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu", dtype="bf16", vae_fp32=True,
                                                      shift=3.0, vae_tiling=True))
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32
    assert pipe.scheduler.config.flow_shift == 3.0
    assert pipe.vae.use_tiling
    assert parse_lora("relight.safetensors:0.7") == ("relight.safetensors", 0.7)
    assert parse_lora("relight.safetensors") == ("relight.safetensors", 1.0)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        if not torch.cuda.is_available():
            load_pipeline(str(tiny_model), LoadOptions(device="cuda"))
        else:
            raise RuntimeError("no CUDA GPU (skipped: this machine has one)")


def test_lora_files_load_with_their_scale(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="peft (model extra) is needed for LoRA files")
    from safetensors.torch import save_file

    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    # A LoRA on one attention projection, in diffusers' key naming.
    target = pipe.transformer.blocks[0].attn1.to_q
    rank = 2
    lora = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(rank, target.in_features),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(target.out_features, rank),
    }
    path = tmp_path / "tiny_lora.safetensors"
    save_file(lora, str(path))
    loaded = load_pipeline(str(tiny_model),
                           LoadOptions(device="cpu", loras=[(str(path), 0.5)]))
    assert "lora0" in loaded.get_active_adapters()


def test_engine_adapts_camera_frames(tiny_model: Path) -> None:
    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    engine = WanAnimateEngine(wan_model=str(tiny_model), pipeline=pipe, steps=1,
                              segment_frames=5, carry=1, gen_size=(WIDTH, HEIGHT))
    frames = [np.full((60, 80, 3), (0, 0, 200), np.uint8) for _ in range(5)]
    with pytest.raises(EngineError, match="no reference face"):
        engine.process(frames)
    engine.set_reference(np.full((80, 64, 3), 90, np.uint8))
    result = engine.process(frames)
    out = result.frames
    assert result.swapped
    assert len(out) == 5 and out[0].shape == (60, 80, 3) and out[0].dtype == np.uint8
    # Replacement pastes the person into the room: each frame says where it changed, and
    # outside that box it is the camera frame exactly (what a remote host leaves unsent).
    assert result.changed is not None and len(result.changed) == 5
    for frame, swapped, (x, y, box_w, box_h) in zip(frames, out, result.changed, strict=True):
        assert 0 < box_w * box_h < 60 * 80
        outside = np.ones((60, 80), bool)
        outside[y:y + box_h, x:x + box_w] = False
        np.testing.assert_array_equal(swapped[outside], frame[outside])
        assert not np.array_equal(swapped[~outside], frame[~outside])
    assert len(engine.process(frames[:4]).frames) == 4  # a continuing batch: L - P frames
    with pytest.raises(EngineError, match="takes 4 new frames"):
        engine.process(frames[:3])

    def out_of_memory(_: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    assert engine._stream is not None
    engine._stream._generate = out_of_memory
    with pytest.raises(EngineError, match=r"out of GPU memory: reduce memory with --offload"):
        engine.process(frames)
    engine.close()
    assert generation_size((1280, 720)) == (848, 480)


def test_daemon_swaps_with_wan_animate(tiny_model: Path, tmp_path: Path, clip: Path) -> None:
    """The daemon end to end on the tiny model with the stand-in preprocessor."""
    from faceswap_cam.daemon.config import load_settings
    from faceswap_cam.daemon.outputs.base import Tick
    from faceswap_cam.daemon.outputs.null import NullSink
    from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp

    reference = tmp_path / "ref.png"
    cv2.imwrite(str(reference), np.full((80, 64, 3), 128, np.uint8))
    settings = load_settings({
        "source": f"file:{clip}", "engine": "wan-animate", "wan_model": str(tiny_model),
        "reference": str(reference), "gen_size": f"{WIDTH}x{HEIGHT}", "size": "320x240",
        "fps": 15, "steps": 1, "segment_frames": 5, "device": "cpu", "sinks": ["null"],
        "preprocessor": "stand-in"},
        environ={})
    shown = threading.Event()

    class WatchingSink(NullSink):
        def send(self, pixels: np.ndarray, tick: Tick) -> None:
            if tick.kind == "swapped":
                shown.set()

    app = RealtimeFaceSwapApp(settings, sinks=[WatchingSink()])
    with app:
        # Event-driven: however long loading takes here, wait for two batches and for a
        # swapped frame on the output.
        assert app.processor.wait_swapped(9, timeout=120), app.processor.last_error
        assert shown.wait(timeout=30)
    stats = app.stats()
    assert stats["frames_swapped"] > 0
    assert stats["engine"] == "wan-animate"
    assert stats["engine_failures"] == 0, stats["engine_error"]
    assert stats["engine_batches"] >= 2
    assert stats["frames_swapped"] + stats["frames_passthrough"] == stats["frames_published"]


def test_engine_auto_without_weights_runs_in_passthrough(cli_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    env = {**cli_env, "FACESWAP_CAM_MODELS_DIR": str(tmp_path / "models")}
    result = subprocess.run(
        [faceswap_cam_exe(), "run", "--source", "demo", "--sink", "null", "--size", "320x240",
         "--duration", "1"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "engine auto runs passthrough: wan-animate-2 is not available" in result.stderr
    assert "; wan-animate is not available" in result.stderr
    assert "faceswap-cam models download --only wan-animate\n" in result.stderr
    assert json.loads(result.stdout)["engine"] == "passthrough"
    explicit = subprocess.run(
        [faceswap_cam_exe(), "run", "--source", "demo", "--sink", "null", "--engine",
         "wan-animate", "--duration", "1"], env=env, capture_output=True, text=True,
        timeout=60, check=False)
    assert explicit.returncode == 2
    assert "models download --only wan-animate" in explicit.stderr


def test_heavy_modules_stay_out_of_the_cli_import() -> None:
    code = ("import sys, faceswap_cam.daemon.cli, faceswap_cam.models.engine;"
            "print(sorted({'torch', 'diffusers', 'huggingface_hub'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_device_options_reach_diffusers(tiny_model: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """Offload and compile need a GPU to run for real; here we check that each option calls
    the diffusers feature it stands for, and that the attention backend is really set."""
    import diffusers

    calls: list[tuple[str, Any]] = []
    pipeline_class = diffusers.WanAnimatePipeline
    monkeypatch.setattr(pipeline_class, "enable_model_cpu_offload",
                        lambda self, device=None: calls.append(("model", device)))
    monkeypatch.setattr(pipeline_class, "enable_sequential_cpu_offload",
                        lambda self, device=None: calls.append(("sequential", device)))
    load_pipeline(str(tiny_model), LoadOptions(device="cpu", offload="model"))
    load_pipeline(str(tiny_model), LoadOptions(device="cpu", offload="sequential"))
    assert calls == [("model", "cpu"), ("sequential", "cpu")]

    transformer_class = diffusers.WanAnimateTransformer3DModel
    monkeypatch.setattr(transformer_class, "compile_repeated_blocks",
                        lambda self, **kw: calls.append(("compile", kw)))
    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu", compile=True,
                                                      attention_backend="_native_math"))
    assert calls[-1] == ("compile", {"fullgraph": True})
    processor = pipe.transformer.blocks[0].attn1.processor
    assert processor._attention_backend.value == "_native_math"
    with pytest.raises(ValueError, match="offload must be"):
        load_pipeline(str(tiny_model), LoadOptions(device="cpu", offload="disk"))


def test_render_input_runs_every_frame_through_the_engine(tiny_model: Path, tmp_path: Path
                                                          ) -> None:
    clip = tmp_path / "raw.mp4"
    write_video(clip, [np.full((48, 64, 3), (i * 20) % 255, np.uint8) for i in range(11)])
    reference = tmp_path / "ref.png"
    cv2.imwrite(str(reference), np.full((96, 80, 3), 100, np.uint8))
    out = tmp_path / "out"
    result = run_cli("render", "--input", str(clip), "--reference", str(reference),
                     "--output", str(out), "--wan-model", str(tiny_model),
                     "--preprocessor", "stand-in", "--gen-size", f"{WIDTH}x{HEIGHT}",
                     *ENGINE_FLAGS)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"frames": 11, "output": str(out), "fps": 16.0, "size": [64, 48]}
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 11
    first = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
    assert first is not None and first.shape == (48, 64, 3)
    missing_reference = run_cli("render", "--input", str(clip), "--output", str(out))
    assert missing_reference.returncode == 2
    assert "needs --reference" in missing_reference.stderr


def test_pad_order_matches_the_pipeline(tiny_model: Path) -> None:
    from faceswap_cam.models.batching import pad_order

    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    for count, target in ((5, 10), (3, 9), (11, 13)):
        assert pad_order(count, target) == pipe.pad_video_frames(list(range(count)), target)


class SwitchablePreprocessor(StandInPreprocessor):
    """The stand-in, with someone in view or not as the test says."""

    present = True

    def process(self, frames: Any, *, size: tuple[int, int], face_size: int,
                with_background: bool, **window: Any) -> PreprocessedBatch:
        batch = super().process(frames, size=size, face_size=face_size,
                                with_background=with_background, **window)
        batch.present = self.present
        return batch


def test_nobody_in_view_is_reported_and_the_caller_restarts_the_chain(tiny_model: Path
                                                                       ) -> None:
    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    preprocessor = SwitchablePreprocessor()
    engine = WanAnimateEngine(wan_model=str(tiny_model), pipeline=pipe, steps=1,
                              segment_frames=5, carry=1, gen_size=(WIDTH, HEIGHT),
                              preprocessor=preprocessor)
    engine.set_reference(np.full((80, 64, 3), 90, np.uint8))
    frames = [np.full((60, 80, 3), (0, 0, 200), np.uint8) for _ in range(5)]
    assert engine.process(frames).swapped
    preprocessor.present = False
    nobody = engine.process(frames[:4])
    assert not nobody.swapped
    assert all(out is source for out, source in zip(nobody.frames, frames[:4], strict=True))
    # The engine keeps its chain: restarting is the caller's decision, never a guess from
    # the batch length.
    preprocessor.present = True
    with pytest.raises(EngineError, match="takes 4 new frames"):
        engine.process(frames)
    engine.reset()
    assert engine.process(frames).swapped  # a new chain: L frames
    engine.close()


def test_interrupt_stops_a_call_until_reset(tiny_model: Path) -> None:
    from faceswap_cam.models.wan.streaming import GenerationInterrupted

    pipe = load_pipeline(str(tiny_model), LoadOptions(device="cpu"))
    engine = WanAnimateEngine(wan_model=str(tiny_model), pipeline=pipe, steps=1,
                              segment_frames=5, carry=1, gen_size=(WIDTH, HEIGHT))
    engine.set_reference(np.full((80, 64, 3), 90, np.uint8))
    frames = [np.full((60, 80, 3), 120, np.uint8) for _ in range(5)]
    engine.interrupt()  # with no call running: it holds for the next one
    with pytest.raises(GenerationInterrupted):
        engine.process(frames)
    engine.reset()
    assert engine.process(frames).swapped
    engine.close()
    engine.interrupt()  # after close: harmless
