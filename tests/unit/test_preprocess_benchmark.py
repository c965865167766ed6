"""benchmarks/preprocess.py times the engine's own preprocessing path, window included."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import cast

import pytest

from benchmarks import preprocess
from faceswap_cam.models.plan import preprocessing as plan_preprocessing
from faceswap_cam.models.plan.gpus import GPUS


@pytest.mark.parametrize("gen_window", ["person", "frame"])
def test_the_cpu_section_runs_the_engines_path(capsys: pytest.CaptureFixture[str],
                                               gen_window: str) -> None:
    code = preprocess.main(["--repeats", "1", "--warmup", "0", "--no-gpu",
                            "--gen-window", gen_window])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["gen_window"] == gen_window and result["gen_size"] == "848x480"
    [section] = result["sections"].values()
    window = section["window"]
    if gen_window == "frame":
        assert window is None
    else:
        # The product's square window for a 720p camera, placed inside the frame.
        assert window["gen_size"] == [480, 480]
        x, y, width, height = window["box"]
        assert width == height
        assert 0 <= x <= x + width <= 1280 and 0 <= y <= y + height <= 720
        assert "generation window" in out
    for stage in ("detector", "pose", "mask", "preprocessing", "compositing", "batch",
                  "compositing, 1 thread"):
        assert section["ms_per_batch"][stage] > 0
    person = result["person_compositing"]
    assert person["window"] == 720 and person["threads"] >= 1
    assert person["threads_ms_per_batch"] > 0 and person["one_thread_ms_per_batch"] > 0
    [costs] = result["person_mask_ms_per_batch"].values()
    assert set(costs) == {"sam2 batched", "sam2 frame by frame", "box"}
    assert all(ms > 0 for ms in costs.values())
    # The table's own run: SAM2, frame by frame on a CPU.
    assert section["ms_per_batch"]["mask"] == costs["sam2 frame by frame"]
    [converted] = result["conversions_ms_per_batch"].values()
    assert converted["equal"] is True
    assert all(converted[name] > 0 for name in ("conditioning_from_pil",
                                                "conditioning_from_arrays",
                                                "output_through_numpy", "output_on_device"))


def test_a_gpu_run_of_the_products_precisions_writes_the_plans_efficiency(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What a GPU section measured becomes the efficiency the plan reads, only for the run
    the product makes (its precisions, its batch) on a GPU the plan knows."""
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *_: "NVIDIA H200")
    batches = [preprocess.Batch({"detector": 0.010, "pose": 0.030}, 8, True, 0.5)
               for _ in range(3)]
    result = preprocess.Result(cast(preprocess.Setup, None), batches, 0.0)
    costs = {"sam2 batched": 80.0, "sam2 frame by frame": 90.0, "box": 1.0}
    target = tmp_path / "gpu_efficiency.json"
    args = argparse.Namespace(dtype=preprocess.PRODUCT_DTYPES, frames=8, efficiency_file=target)
    entry = preprocess.save_gpu_efficiency(result, costs, args)
    h200 = GPUS["h200"]
    stages = plan_preprocessing.STAGES
    batched = 8 * (stages["detector"].flops_per_frame + stages["pose"].flops_per_frame) \
        / (h200.tf32_tflops * 1e12 * 0.040)
    # SAM2's stage less the box's: the dilation and background both pay.
    tracker = 8 * stages["sam2"].flops_per_frame / (h200.bf16_tflops * 1e12 * 0.079)
    assert entry["batched_efficiency"] == pytest.approx(batched, abs=1e-4)
    assert entry["tracker_efficiency"] == pytest.approx(tracker, abs=1e-4)
    loaded = plan_preprocessing.load_preprocess_efficiency(h200, target)
    assert not loaded.batched_assumed and not loaded.tracker_assumed
    assert loaded.batched == entry["batched_efficiency"]
    assert "preprocessing efficiency on h200" in capsys.readouterr().out
    for changed, why in (({"dtype": "bf16"}, "--dtype bf16"), ({"frames": 4}, "batches of 4")):
        other = tmp_path / f"{why}.json"
        preprocess.save_gpu_efficiency(
            result, costs, argparse.Namespace(**{**vars(args), "efficiency_file": other,
                                                 **changed}))
        assert not other.exists() and why in capsys.readouterr().out
    # SAM2's stage no slower than the box's (noise): its figure is left out, so assumed.
    noisy = tmp_path / "noisy.json"
    entry = preprocess.save_gpu_efficiency(
        result, {**costs, "sam2 batched": 1.0},
        argparse.Namespace(**{**vars(args), "efficiency_file": noisy}))
    assert "tracker_efficiency" not in entry and "SAM2 not measured" in capsys.readouterr().out
    assert plan_preprocessing.load_preprocess_efficiency(h200, noisy).tracker_assumed
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *_: "Tesla T4")
    unknown = tmp_path / "t4.json"
    preprocess.save_gpu_efficiency(
        result, costs, argparse.Namespace(**{**vars(args), "efficiency_file": unknown}))
    assert not unknown.exists() and "not in the plan's GPU table" in capsys.readouterr().out


def test_the_gpu_sections_default_precisions_are_the_products(tmp_path: Path) -> None:
    """``--dtype product`` loads each model as the product does: the detector and the pose
    model in float32, SAM2 "auto" (bf16 on a GPU, float32 on a CPU)."""
    import torch

    from faceswap_cam.models.wan.loading import pick_dtype

    paths = preprocess.save_tiny_models(tmp_path)
    loaded = preprocess.load_preprocessor(paths, "cpu", preprocess.PRODUCT_DTYPES, "sam2")
    assert loaded.detector.dtype == torch.float32
    assert loaded.pose.torch_dtype == torch.float32
    assert loaded.masker is not None and loaded.masker.dtype == pick_dtype("auto", "cpu")
    half = preprocess.load_preprocessor(paths, "cpu", "bf16", "sam2")
    assert half.detector.dtype == half.pose.torch_dtype == torch.bfloat16
