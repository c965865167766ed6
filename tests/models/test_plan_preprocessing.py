"""The capacity plan counts Wan-Animate's preprocessing models (detector, pose, SAM2 where the
person mask is SAM2's) in a batch's time, from FLOPs a frame that a recount on the real-size
models agrees with; a GPU measurement replaces the assumed efficiency; and the plan's cadence
is the one the daemon keeps when it starts there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon import cli
from faceswap_cam.daemon.pipeline.cadence import CadenceController
from faceswap_cam.models import batching, defaults
from faceswap_cam.models.plan import preprocessing as pre
from faceswap_cam.models.plan import rows as plan_rows
from faceswap_cam.models.plan.engines import ENGINE_MODELS
from faceswap_cam.models.plan.gpus import GPUS, Efficiency, Gpu
from faceswap_cam.models.plan.predict import predict_settings
from faceswap_cam.models.plan.timing import predict_timing
from faceswap_cam.models.plan.work import Shape, Work

H200 = GPUS["h200"]


def test_stages_follow_the_engine_the_person_mask_and_the_mode() -> None:
    sam2 = pre.stages_for("wan-animate")
    assert [s.name for s in sam2] == ["detector", "pose", "sam2"]  # the default: SAM2's mask
    assert [s.name for s in pre.stages_for("wan-animate", "box")] == ["detector", "pose"]
    # Animation repaints the whole frame: no person mask, so no SAM2.
    assert [s.name for s in pre.stages_for("wan-animate", "sam2", "animate")] \
        == ["detector", "pose"]
    assert pre.stages_for("wan-animate-2") == ()  # it takes the camera frames as they are
    assert pre.stages_for("debug") == ()


def test_preprocessing_seconds_are_flops_at_the_precisions_peak() -> None:
    efficiency = pre.PreprocessEfficiency(0.5, 0.1, True, "test")
    seconds = pre.preprocess_seconds((pre.DETECTOR, pre.POSE, pre.SAM2), 8, H200, efficiency)
    # The detector and the pose model run float32 on TF32 tensor cores, half the BF16 peak.
    tf32 = H200.bf16_tflops / 2 * 1e12
    expected = (8 * (pre.DETECTOR.flops_per_frame + pre.POSE.flops_per_frame) / (tf32 * 0.5)
                + 8 * pre.SAM2.flops_per_frame / (H200.bf16_tflops * 1e12 * 0.1))
    assert seconds == pytest.approx(expected)
    assert pre.preprocess_seconds((), 8, H200, efficiency) == 0.0


def test_preprocessing_is_part_of_a_batch_and_its_latency() -> None:
    gpu = Gpu("test", "test", 100.0, 200.0, 80, ())
    work = Work(dit_flops=10 * 10**12, dit_linear_flops=8 * 10**12, vae_flops=5 * 10**12,
                source="test")
    efficiency = Efficiency(0.5, 0.5, True, "test")
    without = predict_timing(work, steps=4, guidance_scale=1.0, segment=9, carry=1, gpu=gpu,
                             efficiency=efficiency)
    with_pre = predict_timing(work, steps=4, guidance_scale=1.0, segment=9, carry=1, gpu=gpu,
                              efficiency=efficiency, preprocess_s=0.25)
    assert with_pre.preprocess_s == 0.25 and without.preprocess_s == 0.0
    assert with_pre.batch_s == pytest.approx(without.batch_s + 0.25)
    assert with_pre.dit_s == without.dit_s and with_pre.vae_s == without.vae_s
    assert with_pre.latency_s >= without.latency_s + 0.25


def test_the_plans_cadence_is_the_lowest_the_daemon_keeps() -> None:
    """A batch that fits k = 3 with 12 % to spare: a fresh choice (15 % margin) says 4, and a
    daemon that starts at 4 never comes down; one that starts at 3 keeps it. The plan says 3,
    where the daemon starts, and what it then shows."""
    fps, new = 30.0, 8
    batch_s = 0.7
    assert batching.cadence_for(batch_s / new, fps) == 4
    for start, kept in ((3, 3), (4, 4)):
        controller = CadenceController(fps, start=start)
        for _ in range(100):
            controller.observe(batch_s / new)
        assert controller.cadence == kept
    gpu = Gpu("test", "test", 100.0, 200.0, 80, ())
    # A work that takes batch_s at 100 % (no DiT, all VAE).
    work = Work(dit_flops=0, dit_linear_flops=0, vae_flops=int(batch_s * 100e12), source="t")
    timing = predict_timing(work, steps=1, guidance_scale=1.0, segment=9, carry=1, gpu=gpu,
                            efficiency=Efficiency(1.0, 1.0, True, "t"), camera_fps=fps)
    assert timing.batch_s == pytest.approx(batch_s)
    assert timing.cadence == 3 and timing.fps == pytest.approx(10.0)
    assert timing.spare == pytest.approx(1 - batch_s / 0.8)
    # Past what k = 3 keeps (5 % to spare), the plan says 4, as the daemon would go to.
    slower = predict_timing(
        Work(dit_flops=0, dit_linear_flops=0, vae_flops=int(0.78 * 100e12), source="t"),
        steps=1, guidance_scale=1.0, segment=9, carry=1, gpu=gpu,
        efficiency=Efficiency(1.0, 1.0, True, "t"), camera_fps=fps)
    assert slower.cadence == 4
    controller = CadenceController(fps, start=3)
    for _ in range(20):
        controller.observe(0.78 / new)
    assert controller.cadence == 4


def analytic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan with analytic DiT and VAE FLOPs instead of the meta models' count."""
    class Stub:
        def __init__(self, engine: str) -> None:
            self.model = ENGINE_MODELS[engine]
            self.params = self.model.params

        def work(self, shape: Shape) -> Work:
            return self.model.analytic_work(shape)

        def share_vae(self, other: object) -> None:
            pass

    monkeypatch.setattr(plan_rows, "build_meta_models", Stub)


def test_plan_rows_count_the_preprocessing(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    analytic(monkeypatch)
    none = str(tmp_path / "none.json")
    assert cli.main(["plan", "--gpu", "h200", "--json", "--sizes", "848x480",
                     "--efficiency-file", none]) == 0
    rows = json.loads(capsys.readouterr().out)
    assumed = pre.ASSUMED_PREPROCESS
    for row in rows:
        new = row["segment_frames"] - row["carry"]
        if row["engine"] == "wan-animate-2":
            assert row["preprocess_models"] == "" and row["preprocess_s"] == 0
            assert row["assumed_preprocess_efficiency"] is False
            continue
        stages = pre.stages_for("wan-animate", "box" if row["preset"] == "live" else "sam2")
        assert row["preprocess_models"] == "+".join(s.name for s in stages)
        assert row["preprocess_s"] == pytest.approx(
            pre.preprocess_seconds(stages, new, H200, assumed), abs=1e-4)
        assert row["preprocess_tflop_per_batch"] == pytest.approx(
            pre.preprocess_flops(stages, new) / 1e12, abs=1e-4)
        assert row["assumed_preprocess_efficiency"] is True
    # The text says where the preprocessing's efficiency comes from.
    assert cli.main(["plan", "--gpu", "h200", "--sizes", "848x480", "--efficiency-file",
                     none]) == 0
    text = capsys.readouterr().out
    assert "efficiency (preprocessing): ASSUMED 40% of the TF32 peak" in text
    assert "pre s" in text


def test_a_measured_preprocessing_efficiency_replaces_the_assumed_one(tmp_path: Path) -> None:
    measured = tmp_path / "gpu_efficiency.json"
    measured.write_text(json.dumps({"by_gpu": {"h200": {"dit_efficiency": 0.5}}}))
    pre.save_preprocess_efficiency(measured, H200, {
        "device": "NVIDIA H200", "batched_efficiency": 0.2, "tracker_efficiency": 0.3})
    # The DiT's entry is kept beside it.
    assert json.loads(measured.read_text())["by_gpu"]["h200"]["dit_efficiency"] == 0.5
    own = pre.load_preprocess_efficiency(H200, measured)
    assert (own.batched, own.tracker, own.assumed) == (0.2, 0.3, False)
    assert "measured on NVIDIA H200" in own.source
    other = pre.load_preprocess_efficiency(GPUS["a100"], measured)
    assert not other.assumed and "not a100" in other.source
    assert pre.load_preprocess_efficiency(H200, tmp_path / "none.json").assumed
    # No SAM2 figure: that one stays assumed.
    pre.save_preprocess_efficiency(measured, H200, {"device": "x", "batched_efficiency": 0.2})
    assert pre.load_preprocess_efficiency(H200, measured).tracker \
        == pre.ASSUMED_TRACKER_EFFICIENCY
    kwargs: dict[str, Any] = {"steps": 4, "segment_frames": 9, "carry": 1,
                              "size": (480, 480), "gpu_name": "h200", "quantize": "fp8"}
    slow = predict_settings("wan-animate", efficiency_file=measured, person_mask="box",
                            **kwargs)
    fast = predict_settings("wan-animate", efficiency_file=tmp_path / "none.json",
                            person_mask="box", **kwargs)
    assert slow is not None and fast is not None
    assert slow.preprocess_s == pytest.approx(2 * fast.preprocess_s)  # 20 % against 40 %


def test_the_daemons_prediction_runs_the_presets_person_mask(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"steps": 4, "segment_frames": 9, "carry": 1,
                              "size": (480, 480), "gpu_name": "h200", "quantize": "fp8",
                              "efficiency_file": tmp_path / "none.json"}
    live = predict_settings("wan-animate", preset="live", **kwargs)
    sam2 = predict_settings("wan-animate", preset="live", person_mask="sam2", **kwargs)
    plain = predict_settings("wan-animate", **kwargs)
    assert live is not None and sam2 is not None and plain is not None
    boxed = pre.preprocess_seconds(pre.stages_for("wan-animate", "box"), 8, H200,
                                   pre.ASSUMED_PREPROCESS)
    assert live.preprocess_s == pytest.approx(boxed)
    assert sam2.preprocess_s > live.preprocess_s
    assert plain.preprocess_s == sam2.preprocess_s  # no preset: the default mask, SAM2's
    assert defaults.PERSON_MASK == "sam2"
    wan2 = predict_settings("wan-animate-2", **kwargs)
    assert wan2 is not None and wan2.preprocess_s == 0.0


def test_the_constants_are_a_recount_of_the_real_size_models() -> None:
    """The detector and the pose model counted again at real size (SAM2's count takes minutes
    on a CPU: ``benchmarks/preprocess.py --count-flops``)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from benchmarks.preprocess import count_stage_flops

    counted = count_stage_flops(("detector", "pose"))
    for name in ("detector", "pose"):
        assert counted[name] == pytest.approx(pre.STAGES[name].flops_per_frame, rel=1e-3), name
