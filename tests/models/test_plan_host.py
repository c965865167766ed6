"""The capacity plan counts the CPU's work in a batch (scaling, drawing, masks, compositing;
wan-animate-2's conversions and letterboxing): assumed until a GPU machine's host measured it,
then measured; and the benchmarks that measure it write what the plan reads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon import cli
from faceswap_cam.models.plan import host as plan_host
from faceswap_cam.models.plan.gpus import GPUS, Efficiency
from faceswap_cam.models.plan.predict import predict_settings
from faceswap_cam.models.plan.timing import predict_timing
from faceswap_cam.models.plan.work import Work
from tests.models.test_plan import analytic_models

H200 = GPUS["h200"]


def test_the_cpu_work_is_part_of_the_batch_and_its_latency() -> None:
    work = Work(dit_flops=10**15, dit_linear_flops=9 * 10**14, vae_flops=10**14, source="t")
    kwargs: dict[str, Any] = {"steps": 4, "guidance_scale": 1.0, "segment": 9, "carry": 1,
                              "gpu": H200, "efficiency": Efficiency(0.5, 0.25, True, "t")}
    without = predict_timing(work, **kwargs)
    with_host = predict_timing(work, host_s=0.2, **kwargs)
    assert with_host.host_s == 0.2 and without.host_s == 0.0
    assert with_host.batch_s == pytest.approx(without.batch_s + 0.2)
    assert with_host.latency_s >= without.latency_s + 0.2
    assert with_host.dit_s == without.dit_s


def test_the_mask_and_compositing_count_in_replace_mode_only() -> None:
    cost = plan_host.HostCost(5.0, 10.0, True, "t")
    assert cost.seconds(8, "replace") == pytest.approx(0.12)
    assert cost.seconds(8, "animate") == pytest.approx(0.04)


def test_assumed_until_measured_then_measured(tmp_path: Path) -> None:
    none = tmp_path / "none.json"
    assumed = plan_host.load_host_cost("wan-animate", none)
    assert assumed.assumed and assumed == plan_host.load_host_cost("wan-animate", none)
    assert (assumed.preprocess_ms, assumed.replace_ms) == (
        plan_host.ASSUMED_HOST["wan-animate"].preprocess_ms,
        plan_host.ASSUMED_HOST["wan-animate"].replace_ms)
    assert assumed.source.startswith("ASSUMED") and "not measured" in assumed.source
    assert plan_host.load_host_cost("wan-animate-2", none).assumed
    # An engine with no CPU work of this kind costs nothing and assumes nothing.
    assert plan_host.load_host_cost("debug", none) == plan_host.NO_HOST_WORK

    measured = tmp_path / "gpu_efficiency.json"
    measured.write_text(json.dumps({"by_gpu": {"h200": {"dit_efficiency": 0.5}}}))
    plan_host.save_host_cost(measured, "wan-animate", {
        "preprocess_ms": 2.5, "replace_ms": 1.5, "cpus": 32, "device": "NVIDIA H200"})
    document = json.loads(measured.read_text())
    assert document["by_gpu"]["h200"]["dit_efficiency"] == 0.5  # the rest is kept
    own = plan_host.load_host_cost("wan-animate", measured)
    assert (own.preprocess_ms, own.replace_ms, own.assumed) == (2.5, 1.5, False)
    assert "32 CPUs beside NVIDIA H200" in own.source
    # One engine's measurement is not another's.
    assert plan_host.load_host_cost("wan-animate-2", measured).assumed
    # A broken entry reads as no measurement.
    plan_host.save_host_cost(measured, "wan-animate", {"preprocess_ms": "fast"})
    assert plan_host.load_host_cost("wan-animate", measured).assumed


def test_the_plan_and_the_daemons_prediction_count_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    analytic_models(monkeypatch)
    none = tmp_path / "none.json"
    assert cli.main(["plan", "--gpu", "h200", "--json", "--sizes", "848x480",
                     "--efficiency-file", str(none)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["engine"] for row in rows} == {"wan-animate", "wan-animate-2"}
    for row in rows:
        new = row["segment_frames"] - row["carry"]
        assert row["host_s"] == pytest.approx(
            plan_host.ASSUMED_HOST[row["engine"]].seconds(new), abs=1e-4)
        assert row["assumed_host"] is True
        assert row["batch_s"] > row["host_s"] + row["preprocess_s"]
    assert cli.main(["plan", "--gpu", "h200", "--sizes", "848x480", "--efficiency-file",
                     str(none)]) == 0
    text = capsys.readouterr().out
    assert "cpu s" in text
    assert "CPU work (wan-animate): ASSUMED" in text
    assert "CPU work (wan-animate-2): ASSUMED" in text

    # A measured host cost moves the daemon's prediction by exactly its difference.
    measured = tmp_path / "gpu_efficiency.json"
    plan_host.save_host_cost(measured, "wan-animate", {"preprocess_ms": 0.0,
                                                       "replace_ms": 0.0})
    kwargs: dict[str, Any] = {"steps": 4, "segment_frames": 9, "carry": 1, "size": (480, 480),
                              "gpu_name": "h200", "quantize": "fp8", "person_mask": "box"}
    slow = predict_settings("wan-animate", efficiency_file=none, **kwargs)
    fast = predict_settings("wan-animate", efficiency_file=measured, **kwargs)
    assert slow is not None and fast is not None and fast.host_s == 0.0
    assert slow.batch_s - fast.batch_s == pytest.approx(
        plan_host.ASSUMED_HOST["wan-animate"].seconds(8))


def test_preprocess_benchmark_measures_and_writes_the_host_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    preprocess = pytest.importorskip("benchmarks.preprocess")
    batch = argparse.Namespace(frames=8, seconds={"resize": 0.016, "face": 0.008,
                                                  "skeleton": 0.008, "rest of process()": 0.0})
    result: Any = argparse.Namespace(batches=[batch],
                                     median_s=lambda row: batch.seconds.get(row, 0.0))
    measured = preprocess.host_work(result, {"box": 8.0}, {"threads_ms_per_batch": 40.0})
    assert measured == {"preprocess_ms": 4.0, "replace_ms": 6.0}  # 32 / 8, (8 + 40) / 8

    efficiency = tmp_path / "gpu_efficiency.json"
    args = argparse.Namespace(dtype=preprocess.PRODUCT_DTYPES, frames=preprocess.PLAN_NEW_FRAMES,
                              efficiency_file=efficiency, camera=(1280, 720),
                              gen_window="person")
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H200")
    preprocess.save_host_work(measured, args)
    # Not the product's batches: nothing written (the efficiency's rule).
    for other in ({"frames": 3}, {"gen_window": "frame"}, {"camera": (1920, 1080)}):
        preprocess.save_host_work({"preprocess_ms": 99.0, "replace_ms": 0.0},
                                  argparse.Namespace(**{**vars(args), **other}))
    own = plan_host.load_host_cost("wan-animate", efficiency)
    assert (own.preprocess_ms, own.replace_ms, own.assumed) == (4.0, 6.0, False)
    assert "beside NVIDIA H200" in own.source


def test_wan2_benchmark_measures_the_engines_own_conversions(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    presets = pytest.importorskip("benchmarks.gpu_presets")
    from diffusers.video_processor import VideoProcessor

    ms = presets.wan2_host_ms(VideoProcessor(vae_scale_factor=8), (320, 180), (160, 96), 2,
                              repeats=1)
    assert ms > 0
    row = argparse.Namespace(host_ms=3.0)
    efficiency = tmp_path / "gpu_efficiency.json"
    args = argparse.Namespace(tiny=False, efficiency_file=efficiency)
    presets.save_wan2_host(args, H200, "NVIDIA H200", [row, argparse.Namespace(host_ms=5.0)])
    own = plan_host.load_host_cost("wan-animate-2", efficiency)
    assert (own.preprocess_ms, own.assumed) == (4.0, False)
    # A tiny run checks the code; it writes nothing.
    presets.save_wan2_host(argparse.Namespace(tiny=True, efficiency_file=tmp_path / "t.json"),
                           H200, "cpu", [row])
    assert not (tmp_path / "t.json").exists()
    assert "3.00 ms a new frame" in presets.host_line([row], "planned")
