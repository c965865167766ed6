"""The capacity plan counts Wan-Animate's preprocessing models (detector, pose, SAM2 where the
person mask is SAM2's) in a batch's time, from FLOPs a frame that a recount on the real-size
models agrees with; a GPU measurement replaces the assumed efficiency; and the plan's cadence
is the daemon's own choice, where it starts and where it comes down to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon import cli
from faceswap_cam.daemon.pipeline.cadence import CadenceController
from faceswap_cam.models import batching, defaults
from faceswap_cam.models.plan import preprocessing as pre
from faceswap_cam.models.plan.gpus import GPUS, Efficiency, Gpu
from faceswap_cam.models.plan.predict import predict_settings, preset_rows
from faceswap_cam.models.plan.timing import Timing, predict_timing
from faceswap_cam.models.plan.work import Work
from tests.models.test_plan import analytic_models

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
    efficiency = pre.PreprocessEfficiency(0.5, 0.1, True, True, "test")
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


def timed(batch_s: float, fps: float = 30.0) -> Timing:
    """The plan's timing of a batch that takes ``batch_s`` (all VAE, at 100 %)."""
    gpu = Gpu("test", "test", 100.0, 200.0, 80, ())
    work = Work(dit_flops=0, dit_linear_flops=0, vae_flops=round(batch_s * 100e12), source="t")
    return predict_timing(work, steps=1, guidance_scale=1.0, segment=9, carry=1, gpu=gpu,
                          efficiency=Efficiency(1.0, 1.0, True, "t"), camera_fps=fps)


def settled(start: int, batch_s: float, batches: int = 100) -> int:
    controller = CadenceController(30.0, start=start)
    for _ in range(batches):
        controller.observe(batch_s / 8)
    return controller.cadence


def test_the_plans_cadence_is_where_the_daemon_starts_and_settles() -> None:
    """The H200 live window's batch, its preprocessing included, fits k = 3 with 12 % to
    spare: the plan says 3, a daemon that starts there keeps it, and one that started higher
    comes down to it. (With the 15 % a choice used to leave, the plan said 4, and a daemon
    at 4 never came down.) A batch past what 3 keeps: the plan says 4, where the daemon
    goes."""
    window = timed(0.705)
    assert window.batch_s == pytest.approx(0.705)
    assert window.cadence == 3 and window.fps == pytest.approx(10.0)
    assert window.spare == pytest.approx(1 - 0.705 / 0.8)
    assert settled(3, 0.705) == 3 and settled(4, 0.705) == 3 and settled(8, 0.705) == 3
    slower = timed(0.78)
    assert slower.cadence == 4 and settled(3, 0.78) == 4
    # Kept at 3 (under 95 % of the time between batches) but not chosen: the plan predicts
    # the choice, where the daemon starts, not what it would keep.
    assert timed(0.744).cadence == 4 and settled(3, 0.744) == 3
    assert timed(9.0).cadence == batching.MAX_CADENCE and timed(9.0).spare < 0


def check_rows(rows: list[dict[str, Any]], efficiency: pre.PreprocessEfficiency) -> None:
    """Each JSON row's preprocessing is its preset's models at ``efficiency``, in its batch."""
    assert rows
    for row in rows:
        new = row["segment_frames"] - row["carry"]
        assert row["spare"] == pytest.approx(
            1 - row["batch_s"] / (new * row["cadence"] / 30), abs=1e-3)
        if row["engine"] == "wan-animate-2":
            assert row["preprocess_models"] == "" and row["preprocess_s"] == 0
            assert row["assumed_preprocess_efficiency"] is False
            continue
        stages = pre.stages_for("wan-animate", "box" if row["preset"] == "live" else "sam2")
        assert row["preprocess_models"] == "+".join(s.name for s in stages)
        assert row["preprocess_s"] == pytest.approx(
            pre.preprocess_seconds(stages, new, H200, efficiency), abs=1e-4)
        assert row["preprocess_tflop_per_batch"] == pytest.approx(
            pre.preprocess_flops(stages, new) / 1e12, abs=1e-4)
        assert row["assumed_preprocess_efficiency"] is efficiency.batched_assumed


def test_plan_rows_count_the_preprocessing(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    analytic_models(monkeypatch)
    none = str(tmp_path / "none.json")
    assert cli.main(["plan", "--gpu", "h200", "--json", "--sizes", "848x480",
                     "--efficiency-file", none]) == 0
    check_rows(json.loads(capsys.readouterr().out), pre.ASSUMED_PREPROCESS)
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
    assert (own.batched, own.tracker, own.batched_assumed, own.tracker_assumed) \
        == (0.2, 0.3, False, False)
    assert "measured on NVIDIA H200" in own.source
    other = pre.load_preprocess_efficiency(GPUS["a100"], measured)
    assert not other.batched_assumed and "not a100" in other.source
    assert pre.load_preprocess_efficiency(H200, tmp_path / "none.json").batched_assumed
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


def test_flops_and_seconds_scale_with_the_frames() -> None:
    stages = (pre.DETECTOR, pre.POSE)
    assert pre.preprocess_flops(stages, 8) == pytest.approx(
        8 * (pre.DETECTOR.flops_per_frame + pre.POSE.flops_per_frame))
    efficiency = pre.ASSUMED_PREPROCESS
    assert pre.preprocess_seconds(stages, 12, H200, efficiency) \
        == pytest.approx(1.5 * pre.preprocess_seconds(stages, 8, H200, efficiency))


def test_the_mode_and_the_preprocessor_decide_too(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"steps": 4, "segment_frames": 9, "carry": 1,
                              "size": (480, 480), "gpu_name": "h200",
                              "efficiency_file": tmp_path / "none.json"}
    sam2 = predict_settings("wan-animate", person_mask="sam2", **kwargs)
    animate = predict_settings("wan-animate", person_mask="sam2", mode="animate", **kwargs)
    box = predict_settings("wan-animate", person_mask="box", **kwargs)
    stand_in = predict_settings("wan-animate", preprocessor="stand-in", **kwargs)
    assert sam2 and animate and box and stand_in
    assert animate.preprocess_s == box.preprocess_s < sam2.preprocess_s
    assert stand_in.preprocess_s == 0.0


def test_the_daemon_plans_with_its_own_mask_mode_and_preprocessor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.daemon.config import Settings
    from faceswap_cam.daemon.pipeline import app

    seen: dict[str, Any] = {}

    def recorded(engine: str, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(app, "predict_settings", recorded)
    settings = Settings(engine="wan-animate", person_mask="box", mode="animate",
                        preprocessor="stand-in")
    assert app.planned_cadence(settings, "wan-animate") == 1  # no prediction: cadence 1
    assert (seen["person_mask"], seen["mode"], seen["preprocessor"]) \
        == ("box", "animate", "stand-in")
    # The live preset's own mask where the user gave none.
    app.planned_cadence(Settings(engine="wan-animate", preset="live"), "wan-animate")
    assert seen["person_mask"] == "box" and seen["mode"] == "replace"


def test_the_plan_reads_the_preprocessing_efficiency_from_its_file(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    analytic_models(monkeypatch)
    measured = tmp_path / "gpu_efficiency.json"
    pre.save_preprocess_efficiency(measured, H200, {
        "device": "NVIDIA H200", "batched_efficiency": 0.2, "tracker_efficiency": 0.3})
    # Another GPU's entry, written later, does not stand in for the GPU's own.
    pre.save_preprocess_efficiency(measured, GPUS["a100"], {
        "device": "NVIDIA A100", "batched_efficiency": 0.9, "tracker_efficiency": 0.9})
    efficiency = pre.load_preprocess_efficiency(H200, measured)
    assert (efficiency.batched, efficiency.tracker) == (0.2, 0.3)
    assert cli.main(["plan", "--gpu", "h200", "--json", "--sizes", "848x480", "--segments",
                     "9", "--efficiency-file", str(measured)]) == 0
    check_rows(json.loads(capsys.readouterr().out), efficiency)
    doctor_rows = preset_rows(H200, "wan-animate", efficiency_file=measured)
    assert doctor_rows and not any(r.assumed_preprocess_efficiency for r in doctor_rows)
    live = next(r for r in doctor_rows if r.preset == "live")
    assert live.preprocess_s == pytest.approx(
        pre.preprocess_seconds((pre.DETECTOR, pre.POSE), 8, H200, efficiency))
    # The user's own person mask holds for every preset, as the engine applies it.
    sam2_live = next(r for r in preset_rows(H200, "wan-animate", efficiency_file=measured,
                                            person_mask="sam2") if r.preset == "live")
    assert sam2_live.preprocess_models == "detector+pose+sam2"
    # Animation has no person mask; the stand-in preprocessor runs no model.
    animate = preset_rows(H200, "wan-animate", efficiency_file=measured, mode="animate")
    assert {r.preprocess_models for r in animate} == {"detector+pose"}
    stand_in = preset_rows(H200, "wan-animate", efficiency_file=measured,
                           preprocessor="stand-in")
    assert {(r.preprocess_models, r.preprocess_s) for r in stand_in} == {("", 0.0)}
    # Without SAM2's figure, rows with SAM2 say their efficiency is assumed; the others not.
    pre.save_preprocess_efficiency(measured, H200, {"device": "x", "batched_efficiency": 0.2})
    partly = {r.preset: r.assumed_preprocess_efficiency
              for r in preset_rows(H200, "wan-animate", efficiency_file=measured)}
    assert partly == {"quality": True, "balanced": True, "live": False}
    assert "SAM2 ASSUMED" in pre.load_preprocess_efficiency(H200, measured).source
