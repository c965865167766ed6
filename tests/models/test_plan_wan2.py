"""The capacity plan's wan-animate-2 rows: the counting stand-in for the generation block mask
is the model's own attention, the counter measures a segment's reference pass and the
attention over the cached reference K/V (the analytic count agrees), the extrapolation over
blocks is exact, and the real-size rows, ``doctor`` and the daemon's cadence use them."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon import cli
from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.ops.doctor import GpuInfo, _plan_checks
from faceswap_cam.daemon.pipeline.app import planned_cadence
from faceswap_cam.models.plan import gpus as plan_gpus
from faceswap_cam.models.plan import predict as plan_predict
from faceswap_cam.models.plan import rows as plan_rows
from faceswap_cam.models.plan.animate2 import (
    ANIMATE_2_14B_PARAMS,
    ANIMATE_2_14B_TRANSFORMER,
    FrameMask,
    analytic_animate_2,
    analytic_animate_2_work,
    animate_2_inputs,
    counted_animate_2_flops,
    frame_mask_attention,
)
from faceswap_cam.models.plan.gpus import GPUS, load_efficiency
from faceswap_cam.models.plan.host import load_host_cost
from faceswap_cam.models.plan.meta_models import Animate2MetaModels, MetaModels, build_meta_models
from faceswap_cam.models.plan.predict import predict_settings, preset_rows
from faceswap_cam.models.plan.report import rows_json
from faceswap_cam.models.plan.rows import build_plan
from faceswap_cam.models.plan.timing import predict_timing
from faceswap_cam.models.plan.work import Params, Shape, Work
from faceswap_cam.models.presets import PresetName
from tests.models.test_plan import analytic_models

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

ENGINE = "wan-animate-2"
TINY_IMAGE_TOKENS = 50  # the tiny CLIP: 224 px in 32 px patches + the class token
REQUIRED = {"engine", "preset", "width", "height", "segment_frames", "steps",
            "tflop_per_forward", "tflop_per_new_frame", "quantize", "fps", "latency_s",
            "memory_gb", "assumed_efficiency"}


@pytest.fixture(scope="module")
def tiny() -> Any:
    from tests.wan2_tiny import build_tiny_components

    return build_tiny_components("distilled")["transformer"].eval()


@pytest.fixture(scope="module")
def meta_models() -> MetaModels:
    return build_meta_models(ENGINE)


def _segment(transformer: Any, shape: Shape, **uncond: Any) -> Any:
    """One segment's reference pass and one denoising forward over its cache."""
    torch.manual_seed(0)
    extract, denoise = animate_2_inputs(
        transformer.config, shape, device="cpu", dtype=torch.float32,
        image_tokens=TINY_IMAGE_TOKENS)
    with torch.no_grad():
        transformer(**extract)
        return transformer(**denoise, **uncond)[0][0]


def test_frame_mask_is_the_models_own_block_mask(
        tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's flex attention with its own block mask and the counting stand-in give the
    same segment."""
    # torch.compile (the mask, flex attention) draws tqdm bars: no monitor thread to outlive us.
    monkeypatch.setattr(importlib.import_module("tqdm").tqdm, "monitor_interval", 0)
    module: Any = importlib.import_module(type(tiny).__module__)
    shape = Shape(48, 64, 8, 9)  # 3 latent frames of 4 x 3 tokens: the mask is not dense
    own = _segment(tiny, shape)
    dispatch = module.dispatch_attention_fn
    with frame_mask_attention(tiny):
        counted = _segment(tiny, shape)
    torch.testing.assert_close(counted, own, rtol=1e-4, atol=1e-5)
    # Put back: the model's own mask cache and attention again.
    assert module.dispatch_attention_fn is dispatch and "create_mask" not in vars(tiny)
    assert all(not isinstance(m, FrameMask) for m in tiny.block_masks.values())


def test_counted_segment_equals_the_analytic_count_on_the_tiny_model(tiny: Any) -> None:
    # 2 latent frames of 24 x 24 tokens: attention outweighs the tiny model's fixed 1280-wide
    # image projection.
    shape = Shape(384, 384, 4, 5)
    counted = counted_animate_2_flops(tiny, shape, image_tokens=TINY_IMAGE_TOKENS,
                                      uncond=True)
    analytic = analytic_animate_2(dict(tiny.config), shape, TINY_IMAGE_TOKENS)
    for name in ("extract", "cond", "uncond"):
        assert counted[name][0] == pytest.approx(analytic[name][0], rel=0.02), name
    # The attention over the cached reference K/V (each of 2 frames' 576 queries to its
    # driving frame's 576 keys, scores and values, in both blocks) is a share of the count
    # far above the tolerance: a counter that missed it would fail.
    d, layers = int(tiny.config.dim), int(tiny.config.num_layers)
    cached = layers * 4 * d * 2 * 576 * 576
    assert cached > 0.1 * counted["cond"][0]
    # And so is the reference pass in a segment of the distilled checkpoint's 10 steps.
    work = Work(*counted["cond"], 0, "FlopCounterMode", *counted["uncond"],
                *counted["extract"])
    expected = Work(analytic["cond"][0], 0, 0, "analytic", analytic["uncond"][0], 0,
                    analytic["extract"][0], 0)
    segment = work.dit_per_batch(10, cfg=False)[0]
    assert segment == pytest.approx(expected.dit_per_batch(10, cfg=False)[0], rel=0.02)
    assert counted["extract"][0] > 0.05 * segment / 10
    assert work.dit_per_batch(10, cfg=True)[0] == segment + 10 * counted["uncond"][0]


def test_extrapolated_counts_equal_a_full_count_on_a_reduced_config() -> None:
    """Animate2MetaModels counts one and two blocks and extrapolates, the unconditional
    forward one block short: the same as counting in full, the skipped block included (a
    narrow config with the real layout and more than ten blocks keeps the test quick)."""
    with torch.device("meta"):
        transformer = diffusers.WanAnimate2Transformer3DModel(
            dim=64, num_heads=2, ffn_dim=96, num_layers=11, text_len=32, freq_dim=32,
            text_dim=48).to(torch.bfloat16)
        vae = diffusers.AutoencoderKLWan(base_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    models = Animate2MetaModels(transformer, vae.to(torch.bfloat16),
                                Params(0, 0, 0, 0))
    shape = Shape(64, 48, 8, 9)
    work = models.work(shape)
    assert len(transformer.blocks) == 11  # put back after counting
    full = counted_animate_2_flops(transformer, shape, uncond=True)
    assert (work.dit_flops, work.dit_linear_flops) == full["cond"]
    assert (work.uncond_flops, work.uncond_linear_flops) == full["uncond"]
    assert (work.batch_flops, work.batch_linear_flops) == full["extract"]
    assert work.uncond_flops is not None and work.uncond_flops < work.dit_flops


def test_real_config_is_the_class_defaults(meta_models: MetaModels) -> None:
    built = dict(meta_models.transformer.config)
    for key, value in ANIMATE_2_14B_TRANSFORMER.items():
        assert built[key] == value, key
    assert meta_models.params == ANIMATE_2_14B_PARAMS


def test_real_size_rows_for_each_preset_size_and_length(
        meta_models: MetaModels, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(plan_rows, "build_meta_models", lambda engine: meta_models)
    rows = build_plan(GPUS["h100"], engines=[ENGINE],
                      efficiency_file=tmp_path / "none.json")
    by_key = {(r.preset, r.width, r.height, r.segment_frames): r for r in rows}
    assert set(by_key) == {(preset, w, h, length) for preset in ("quality", "balanced", "live")
                           for w, h in ((848, 480), (1280, 720)) for length in (5, 9, 17)}
    assert all(set(row) >= REQUIRED for row in json.loads(rows_json(rows)))
    # It generates the whole picture: no rows for a window around the person.
    assert {row.gen_window for row in rows} == {"frame"}
    for row in rows:
        shape = Shape(row.width, row.height, row.segment_frames - 1, row.segment_frames)
        analytic = analytic_animate_2_work(shape)
        cfg = row.preset == "quality"
        assert (row.steps, row.forwards_per_step) == {"quality": (40, 2), "balanced": (10, 1),
                                                      "live": (4, 1)}[row.preset]
        assert row.flops_source == "FlopCounterMode"
        assert row.quantize == ("fp8" if row.preset == "live" else "none")  # an h100 has fp8
        assert row.tflop_per_forward == pytest.approx(analytic.dit_flops / 1e12, rel=0.02)
        dit = analytic.dit_per_batch(row.steps, cfg)[0] / 1e12
        assert row.dit_tflop_per_batch == pytest.approx(dit, rel=0.02)
        assert row.tflop_per_new_frame == pytest.approx(dit / (row.segment_frames - 1), rel=0.02)
        assert 0 < row.fps <= 30 and row.latency_s > row.batch_s > 0
        assert row.weights_gb + row.activations_gb < row.memory_gb
    # CFG: the quality preset's batch is two forwards a step (the second a block short), the
    # distilled presets' one; every batch adds the reference pass.
    quality, balanced = by_key["quality", 848, 480, 9], by_key["balanced", 848, 480, 9]
    work = meta_models.work(Shape(848, 480, 8, 9))
    assert work.uncond_flops is not None
    assert 0.97 * work.dit_flops < work.uncond_flops < work.dit_flops
    assert quality.dit_tflop_per_batch == pytest.approx(
        (40 * (work.dit_flops + work.uncond_flops) + work.batch_flops) / 1e12)
    assert balanced.dit_tflop_per_batch == pytest.approx(
        (10 * work.dit_flops + work.batch_flops) / 1e12)
    # Sane sizes: Animate's width, depth and FFN at 848x480 L=9 are about 200 TFLOP a forward;
    # the 14B's bf16 weights and the reference cache fit an H100 at 848x480.
    assert 190 < balanced.tflop_per_forward < 210
    assert all(r.fits for r in rows if r.height == 480)
    assert 32 < balanced.weights_gb < 36
    assert all(r.assumed_efficiency for r in rows)


def test_rows_use_the_efficiency_measured_for_their_engine(
        meta_models: MetaModels, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(plan_rows, "build_meta_models", lambda engine: meta_models)
    measured = tmp_path / "gpu_efficiency.json"
    measured.write_text(json.dumps({
        "by_gpu": {"h100": {"device": "H100", "dit_efficiency": 0.6}},
        "engines": {ENGINE: {"by_gpu": {"h100": {"device": "H100", "dit_efficiency": 0.3}}}}}))
    slow = build_plan(GPUS["h100"], engines=[ENGINE], sizes=[(848, 480)], segments=[9],
                      efficiency_file=measured)
    assert {(r.efficiency, r.assumed_efficiency) for r in slow} == {(0.3, False)}
    measured.write_text(json.dumps({"by_gpu": {"h100": {"dit_efficiency": 0.6}}}))
    fast = build_plan(GPUS["h100"], engines=[ENGINE], sizes=[(848, 480)], segments=[9],
                      efficiency_file=measured)
    assert {r.efficiency for r in fast} == {0.6}  # wan-animate's, on the same GPU
    assert all(f.fps > s.fps for f, s in zip(fast, slow, strict=True))


def test_plan_json_has_wan_animate_2_rows_quantized_as_asked(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    analytic_models(monkeypatch)
    assert cli.main(["plan", "--gpu", "h100", "--json", "--quantize", "fp8",
                     "--efficiency-file", str(tmp_path / "none.json")]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["engine"] == ENGINE]
    assert all(set(row) >= REQUIRED for row in rows)
    assert {(r["preset"], r["width"], r["segment_frames"]) for r in rows} == {
        (p, w, length) for p in ("quality", "balanced", "live") for w in (848, 1280)
        for length in (5, 9, 17)}
    # The engine quantizes its transformer as asked: the linear layers' weights in one byte.
    assert {r["quantize"] for r in rows} == {"fp8"}
    assert all(16 < r["weights_gb"] < 20 for r in rows)


def test_doctor_and_the_daemon_cadence_use_wan_animate_2s_own_count(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    monkeypatch.setattr(plan_gpus, "EFFICIENCY_FILE", missing)
    monkeypatch.setattr(plan_predict, "local_gpu_name", lambda **_: "NVIDIA H100 80GB HBM3")
    shape = Shape(848, 480, 8, 9)
    expected = predict_settings(ENGINE, steps=10, segment_frames=9, carry=1,
                                size=(848, 480), preset="balanced")
    assert expected is not None
    own = predict_timing(analytic_animate_2_work(shape), steps=10,
                         guidance_scale=1.0, segment=9, carry=1, gpu=GPUS["h100"],
                         efficiency=load_efficiency(GPUS["h100"], missing),
                         host_s=load_host_cost(ENGINE, missing).seconds(8))
    assert own.host_s > 0 and expected == own
    animate = predict_settings("wan-animate", steps=10, segment_frames=9, carry=1,
                               size=(848, 480))
    assert animate is not None and animate.batch_s != expected.batch_s
    settings = Settings(engine=ENGINE, preset=PresetName.BALANCED, steps=10, segment_frames=9,
                        carry=1, size=(1280, 720))
    assert planned_cadence(settings, ENGINE) == expected.cadence > 1

    checks = _plan_checks(settings, lambda: [GpuInfo("cuda:0", "NVIDIA H100 80GB HBM3",
                                                     80 * 2**30)])
    assert [c.name for c in checks] == [f"plan {ENGINE} {p}"
                                        for p in ("quality", "balanced", "live")]
    balanced = next(r for r in preset_rows(GPUS["h100"], ENGINE, frame_size=(1280, 720))
                    if r.preset == "balanced")
    assert balanced.flops_source == "analytic" and balanced.batch_s == pytest.approx(own.batch_s)
    assert "848x480 L=9 10 steps" in checks[1].detail
    assert f"{balanced.fps:.1f} swapped fps" in checks[1].detail
