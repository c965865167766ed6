"""benchmarks/gpu_engine.py --preset --engine wan-animate-2: the tiny models run every preset
through the engine's own streaming code on the CPU and the JSON line has a row per preset with
the measured and predicted figures; without CUDA the real run exits at once with code 2; the
measured efficiency lands where ``faceswap-cam plan`` keeps reading wan-animate's."""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")
pytest.importorskip("diffusers")

from benchmarks import gpu_engine  # noqa: E402
from benchmarks.call_time import BUDGET_S, planned_runs  # noqa: E402
from benchmarks.gpu_presets import (  # noqa: E402
    PresetRow,
    run_cost,
    save_measured,
    write_efficiency,
)
from faceswap_cam.models.plan.gpus import GPUS, load_efficiency  # noqa: E402
from faceswap_cam.models.wan2.presets import BALANCED, LIVE, QUALITY  # noqa: E402

ROW_FIELDS = {
    "preset", "engine", "variant", "size", "segment", "carry", "steps", "step_s", "peak_share",
    "vae_share", "fps", "batch_s", "peak_mem_gib", "predicted_step_s", "predicted_vae_share",
    "predicted_fps", "predicted_batch_s", "predicted_memory_gb", "assumed_efficiency"}


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    # A progress bar drawn while compiling the block mask would leave tqdm's monitor thread.
    tqdm: Any = importlib.import_module("tqdm")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


def last_json(text: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


def test_tiny_wan2_presets_run_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    code = gpu_engine.main(["--tiny", "--preset", "all", "--engine", "wan-animate-2",
                            "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 0
    result = last_json(out)
    assert (result["benchmark"], result["engine"], result["tiny"]) == (
        "gpu_engine_presets", "wan-animate-2", True)
    assert result["efficiency_file"] is None  # a tiny run writes no efficiency
    assert result["complete"] is True
    rows = {row["preset"]: row for row in result["rows"]}
    assert set(rows) == {"quality", "balanced", "live"}
    for preset, variant in ((QUALITY, "base"), (BALANCED, "distilled"), (LIVE, "distilled")):
        row = rows[preset.name.value]
        assert set(row) >= ROW_FIELDS, preset.name
        assert row["engine"] == "wan-animate-2"
        assert row["variant"] == variant
        assert (row["segment"], row["carry"]) == (preset.segment_frames, preset.carry)
        assert row["guidance_scale"] == preset.guidance_scale  # the checkpoint's guider
        assert 1 <= row["steps"] <= preset.steps
        for key in ("step_s", "batch_s", "fps", "predicted_step_s", "predicted_batch_s",
                    "predicted_fps", "predicted_memory_gb"):
            assert row[key] > 0, (preset.name, key)
        # The batch holds its steps, transformer forwards and VAE work, measured apart.
        assert row["steps"] * row["step_s"] < row["batch_s"]
        assert row["dit_s"] + row["vae_s"] < row["batch_s"]
        assert row["fps"] == pytest.approx(
            (preset.segment_frames - preset.carry) / row["batch_s"])
    # Guidance doubles the quality preset's forwards: the plan's step takes longer too.
    assert rows["quality"]["predicted_step_s"] > rows["balanced"]["predicted_step_s"]
    table = out[:out.rindex("{")]
    assert "Wan-Animate-2 presets" in table and "pred." in table
    assert all(f"  {name} " in table for name in rows)


def test_real_run_without_cuda_exits_at_once_with_code_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    start = time.monotonic()
    code = gpu_engine.main(["--engine", "wan-animate-2", "--preset", "all"])
    assert code == 2
    assert time.monotonic() - start < 5
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_engine_wan2_needs_preset_mode() -> None:
    with pytest.raises(SystemExit):
        gpu_engine.parse_args(["--engine", "wan-animate-2"])
    assert gpu_engine.parse_args(["--preset", "live"]).engine == "wan-animate"
    # Its flex attention only fits compiled: on by default there, off for wan-animate.
    assert gpu_engine.parse_args(["--preset", "live", "--engine", "wan-animate-2"]).compile
    assert not gpu_engine.parse_args(["--preset", "live"]).compile
    assert not gpu_engine.parse_args(["--preset", "live", "--engine", "wan-animate-2",
                                      "--no-compile"]).compile


def row(engine: str, efficiency: float) -> PresetRow:
    return PresetRow(
        preset="live", engine=engine, variant=None, guidance_scale=1.0, size="848x480",
        segment=5, carry=1, steps=4, step_s=0.3, peak_share=efficiency, dit_s=1.2, vae_s=0.2,
        vae_share=0.1, fps=2.0, batch_s=2.0, peak_mem_gib=40.0, dit_efficiency=efficiency,
        vae_efficiency=0.2, predicted_step_s=0.3, predicted_vae_share=0.1, predicted_fps=2.0,
        predicted_batch_s=2.0, predicted_memory_gb=40.0, assumed_efficiency=True)


def test_each_engine_plans_with_its_own_measured_efficiency(tmp_path: Path) -> None:
    path = tmp_path / "gpu_efficiency.json"
    gpu = GPUS["h100"]
    write_efficiency(path, gpu, "NVIDIA H100 80GB HBM3", [row("wan-animate", 0.5)])
    write_efficiency(path, gpu, "NVIDIA H100 80GB HBM3", [row("wan-animate-2", 0.3)],
                     "wan-animate-2")
    document = json.loads(path.read_text())
    assert document["engines"]["wan-animate-2"]["by_gpu"]["h100"]["dit_efficiency"] == 0.3
    efficiency = load_efficiency(gpu, path)
    assert (efficiency.dit, efficiency.assumed) == (0.5, False)
    assert load_efficiency(gpu, path, "wan-animate-2").dit == 0.3
    # A later wan-animate run keeps wan-animate-2's section.
    write_efficiency(path, gpu, "NVIDIA H100 80GB HBM3", [row("wan-animate", 0.6)])
    document = json.loads(path.read_text())
    assert document["engines"]["wan-animate-2"]["by_gpu"]["h100"]["dit_efficiency"] == 0.3
    assert load_efficiency(gpu, path).dit == 0.6
    assert load_efficiency(gpu, path, "wan-animate-2").dit == 0.3
    # wan-animate-2 measured alone: wan-animate plans with it, and says whose it is; on the
    # same GPU before an engine's own measurement on another one.
    alone = tmp_path / "alone.json"
    write_efficiency(alone, gpu, "NVIDIA H100 80GB HBM3", [row("wan-animate-2", 0.3)],
                     "wan-animate-2")
    borrowed = load_efficiency(gpu, alone)
    assert (borrowed.dit, borrowed.assumed) == (0.3, False)
    assert borrowed.source.startswith("wan-animate-2's, measured on NVIDIA H100")
    write_efficiency(alone, GPUS["a100"], "NVIDIA A100-SXM4-80GB", [row("wan-animate", 0.7)])
    assert load_efficiency(gpu, alone).dit == 0.3  # this GPU's, the other engine's
    elsewhere = load_efficiency(GPUS["a100"], alone, "wan-animate-2")
    assert elsewhere.dit == 0.7 and "wan-animate's" in elsewhere.source


def test_a_run_keeps_each_presets_efficiency_as_it_goes(tmp_path: Path) -> None:
    """After each preset, not only at the end: a run the device call's time limit stops
    part-way still leaves what it measured for the plan."""
    from argparse import Namespace

    path = tmp_path / "gpu_efficiency.json"
    args = Namespace(tiny=False, efficiency_file=path)
    gpu = GPUS["h200"]
    rows = [row("wan-animate", 0.5)]
    assert save_measured(args, gpu, "NVIDIA H200", rows, "wan-animate") == path
    assert load_efficiency(gpu, path).dit == 0.5  # the run could stop here
    assert json.loads(path.read_text())["by_gpu"]["h200"]["complete"] is False
    rows.append(row("wan-animate", 0.7))
    save_measured(args, gpu, "NVIDIA H200", rows, "wan-animate", complete=True)  # the end
    assert load_efficiency(gpu, path).dit == 0.6  # the median of every preset
    assert json.loads(path.read_text())["by_gpu"]["h200"]["complete"] is True
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # replaced whole, no leftovers
    # Nothing for a tiny run, a GPU the plan does not know, or no row yet.
    for tiny, table_gpu, so_far in ((True, gpu, rows), (False, None, rows), (False, gpu, [])):
        other = tmp_path / f"{tiny}-{table_gpu is None}-{len(so_far)}.json"
        assert save_measured(Namespace(tiny=tiny, efficiency_file=other), table_gpu,
                             "NVIDIA H200", so_far, "wan-animate") is None
        assert not other.exists()


def test_a_multi_gpu_run_records_its_median_scaling_for_the_plan(tmp_path: Path) -> None:
    """What ``gpu_engine.py --gpus N`` keeps (on a GPU of the plan's table, not --tiny)."""
    from argparse import Namespace

    from faceswap_cam.models.plan.gpus import load_scaling

    def scaling_row(efficiency: float) -> gpu_engine.ScalingRow:
        return gpu_engine.ScalingRow(size="848x480", segment=9, steps=4, one_gpu_step_s=1.0,
                                     rank_step_s=[0.6, 0.6], speedup=2 * efficiency,
                                     efficiency=efficiency, one_gpu_fps=1.0, fps=1.7)

    path = tmp_path / "gpu_efficiency.json"
    args = Namespace(tiny=False, gpus=2, efficiency_file=path)
    rows = [scaling_row(0.7), scaling_row(0.9), scaling_row(0.8)]
    assert gpu_engine.record_scaling(args, "NVIDIA H100 80GB HBM3", rows) == path
    scaling = load_scaling(GPUS["h100"], 2, path)
    assert (scaling.efficiency, scaling.assumed) == (0.8, False)
    tiny = Namespace(tiny=True, gpus=2, efficiency_file=tmp_path / "tiny.json")
    assert gpu_engine.record_scaling(tiny, "cpu", rows) is None
    assert gpu_engine.record_scaling(args, "Tesla T4", rows) is None  # not in the table
    assert not (tmp_path / "tiny.json").exists()


def test_tiny_wan_animate_live_is_measured_in_the_person_window_too(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = gpu_engine.main(["--tiny", "--preset", "live", "--sizes", "64x32", "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {row["preset"]: row for row in last_json(out)["rows"]}
    assert set(rows) == {"live", gpu_engine.WINDOW_LABEL}
    assert (rows["live"]["size"], rows[gpu_engine.WINDOW_LABEL]["size"]) == ("64x32", "32x32")
    assert rows["live"]["segment"] == rows[gpu_engine.WINDOW_LABEL]["segment"]
    assert f"{gpu_engine.WINDOW_LABEL}: live in the square window" in out
    assert {row["quantize"] for row in rows.values()} == {"none"}  # the CPU has no fp8
    # What the GPU run does for fp8, with int8 (which the CPU runs): quantized in place, once.
    code = gpu_engine.main(["--tiny", "--preset", "live", "--sizes", "64x32", "--iters", "1",
                            "--quantize", "int8"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("transformer quantized to int8") == 1
    assert {row["quantize"] for row in last_json(out)["rows"]} == {"int8"}


def test_the_benchmark_quantizes_the_transformer_as_the_daemon_loads_it() -> None:
    """int8 (weight-only) runs on the CPU, so the CPU checks the path the GPU run takes for the
    live preset's fp8; fp8 itself needs the GPU, and the run says so and goes on unquantized."""
    pipe = gpu_engine.build_tiny(torch.device("cpu"))
    notes: list[str] = []
    assert gpu_engine.quantize_transformer(pipe.transformer, "fp8", torch.device("cpu"),
                                           notes) == "none"
    assert notes and "fp8 not measured" in notes[0] and "NVIDIA GPU" in notes[0]
    before = sum(1 for m in pipe.transformer.modules()
                 if type(getattr(m, "weight", None)).__name__ != "Parameter")
    assert gpu_engine.quantize_transformer(pipe.transformer, "int8", torch.device("cpu"),
                                           notes) == "int8"
    after = sum(1 for m in pipe.transformer.modules()
                if type(getattr(m, "weight", None)).__name__ != "Parameter")
    assert after > before  # the linear layers now hold quantized weights


@pytest.mark.usefixtures("fp8_on_the_cpu")
def test_the_benchmark_leaves_the_fp32_parts_unquantized_as_diffusers_does() -> None:
    """The random-weight transformer keeps ``_keep_in_fp32_modules`` in fp32 as a loaded
    checkpoint does, and torchao's fp8 takes only bf16 weights: quantizing those too failed
    on the first of them (the time embedder), and the GPU run then measured no fp8 row."""
    torchao: Any = importlib.import_module("torchao.quantization")
    from benchmarks.gpu_presets import default_dtype, keep_fp32_parts
    from faceswap_cam.models.plan.animate import ANIMATE_14B_TRANSFORMER

    # The real architecture, narrowed: torchao leaves alone a layer whose sizes are not
    # multiples of 16, as the tiny test model's time embedder's are.
    config = {**ANIMATE_14B_TRANSFORMER, "num_layers": 1, "num_attention_heads": 2,
              "attention_head_dim": 64, "ffn_dim": 256, "added_kv_proj_dim": 128,
              "text_dim": 64, "image_dim": 64}

    diffusers: Any = importlib.import_module("diffusers")

    def transformer() -> Any:
        with default_dtype(torch.bfloat16):
            model = diffusers.WanAnimateTransformer3DModel(**config)
        keep_fp32_parts(model)
        return model

    fp8 = torchao.Float8DynamicActivationFloat8WeightConfig(granularity=torchao.PerRow())
    with pytest.raises(AssertionError, match="bfloat16"):
        torchao.quantize_(transformer(), fp8)  # every linear layer, as the benchmark did
    model = transformer()
    torchao.quantize_(model, fp8, filter_fn=gpu_engine.quantized_as_loaded(model))
    keep = set(model._keep_in_fp32_modules)
    linears = {name: module for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)}
    kept = {name for name in linears if keep.intersection(name.split("."))}
    assert kept and len(kept) < len(linears)
    for name, module in linears.items():
        plain = type(module.weight).__name__ == "Parameter"
        assert plain == (name in kept), name
        if name in kept:
            assert module.weight.dtype == torch.float32


def test_the_live_rows_run_before_what_costs_more() -> None:
    """Quantizing cannot be undone, so the fp8 rows once came after every unquantized one,
    quality's included: a call's time limit in quality lost the rows the plan hangs on."""
    from faceswap_cam.models.plan.engines import load_presets, preset_shape

    presets = {p.name.value: p for p in load_presets("wan-animate")}
    runs = [(p, preset_shape(p), name) for name, p in presets.items()]
    window = preset_shape(presets["live"])
    runs.append((presets["live"], type(window)(480, 480, window.new_frames, window.segment),
                 gpu_engine.WINDOW_LABEL))
    asked = {"live": "fp8", gpu_engine.WINDOW_LABEL: "fp8", "balanced": "none",
             "quality": "none"}
    order = [label for _, _, label in gpu_engine.run_order(runs, asked)]
    # Both unquantized presets cost more than the live rows: after them, on a fresh model.
    assert order == [gpu_engine.WINDOW_LABEL, "live", "balanced", "quality"]
    # Nothing quantized: cheapest first.
    plain = gpu_engine.run_order(runs, dict.fromkeys(asked, "none"))
    costs = [run_cost(p, s) for p, s, _ in plain]
    assert costs == sorted(costs)


def test_a_quantized_run_then_an_unquantized_one_gets_a_fresh_model(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The CPU's int8 stands in for the GPU's fp8: the live preset quantized, the rest not.
    import gc
    import weakref

    monkeypatch.setattr(gpu_engine, "runnable_quantize",
                        lambda kind, device, explicit: "int8" if kind == "fp8" else kind)
    built: list[weakref.ref[Any]] = []
    alive_at_rebuild: list[bool] = []
    real_load, real_rebuilt = gpu_engine.load, gpu_engine.rebuilt

    def load(*args: Any) -> Any:
        pipe = real_load(*args)
        built.append(weakref.ref(pipe))
        return pipe

    def rebuilt(*args: Any) -> Any:
        gc.collect()
        alive_at_rebuild.append(built[0]() is not None)
        return real_rebuilt(*args)

    monkeypatch.setattr(gpu_engine, "load", load)
    monkeypatch.setattr(gpu_engine, "rebuilt", rebuilt)
    code = gpu_engine.main(["--tiny", "--preset", "all", "--sizes", "32x32", "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {row["preset"]: row["quantize"] for row in last_json(out)["rows"]}
    assert rows == {"live": "int8", "balanced": "none", "quality": "none"}
    assert out.count("a fresh unquantized model") == 1
    # The quantized model is gone before the fresh one is built: a GPU holds one 14B at a time.
    assert alive_at_rebuild == [False]


def test_a_failed_preset_costs_its_row_and_sigterm_still_prints_the_table(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import signal

    real = gpu_engine.measure_preset
    seen: list[str] = []

    def measured(pipe: Any, preset: Any, shape: Any, label: str, **kwargs: Any) -> Any:
        seen.append(label)
        if len(seen) == 3:  # the call's time limit, as the third preset starts
            os.kill(os.getpid(), signal.SIGTERM)
        if label == "live":
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(pipe, preset, shape, label, **kwargs)

    monkeypatch.setattr(gpu_engine, "measure_preset", measured)
    before = signal.getsignal(signal.SIGTERM)
    code = gpu_engine.main(["--tiny", "--preset", "all", "--sizes", "32x32", "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 124  # timeout's own code: the device call reports a time-out
    result = last_json(out)
    assert [row["preset"] for row in result["rows"]] == [seen[1]]
    assert result["complete"] is False  # what the efficiency file says of such a run
    notes = " ".join(result.get("notes", [])) or out
    assert "live failed: RuntimeError: CUDA error" in notes
    assert "STOPPED by SIGTERM" in notes
    assert signal.getsignal(signal.SIGTERM) is before  # put back


@pytest.mark.parametrize("engine", gpu_engine.ENGINES)
def test_every_preset_is_predicted_to_run_under_eight_minutes_on_one_h100_or_h200(
        engine: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The device call is sized before it is made: from the plan (at the efficiency file's
    figures: assumed until a GPU run measured them), without CUDA or a model."""
    for gpu in ("h100", "h200"):
        assert gpu_engine.main(["--preset", "all", "--engine", engine, "--predict", gpu]) == 0
        out = capsys.readouterr().out
        result = last_json(out)
        assert (result["benchmark"], result["gpu"], result["budget_s"]) == (
            "gpu_engine_predict", gpu, BUDGET_S)
        labels = [run["label"] for run in result["runs"]]
        assert labels[0] == "build (ASSUMED)" and {"quality", "balanced", "live"} <= set(labels)
        assert result["fits"] and result["total_s"] <= BUDGET_S < 8 * 60
        assert "over the budget" not in out
    # A budget too small for them says so before the run starts.
    assert gpu_engine.main(["--preset", "all", "--engine", engine, "--predict", "h200",
                            "--budget-s", "60"]) == 0
    out = capsys.readouterr().out
    assert "over the budget" in out and last_json(out)["fits"] is False


def test_a_run_the_budget_cannot_hold_is_skipped_with_the_reason(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = planned_runs

    def quality_takes_a_day(*args: Any, **kwargs: Any) -> list[Any]:
        return [dataclasses.replace(run, seconds=86400.0) if run.label == "quality" else run
                for run in real(*args, **kwargs)]

    monkeypatch.setattr(gpu_engine, "planned_runs", quality_takes_a_day)
    code = gpu_engine.main(["--tiny", "--preset", "all", "--sizes", "32x32", "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 0
    result = last_json(out)
    assert [row["preset"] for row in result["rows"]] == ["live", "balanced"]
    assert result["complete"] is False
    assert "skipped quality: expected" in out and "budget left" in out
    assert "over the budget" in out  # said before the first run, too


def test_at_its_budget_a_run_stops_with_its_table_and_json_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    pipe = gpu_engine.build_tiny(torch.device("cpu"))  # built before the budget starts
    monkeypatch.setattr(gpu_engine, "load", lambda *_: pipe)

    def outlasts_the_budget(*args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + 30  # a first batch that takes minutes
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise AssertionError("the budget did not stop the run")

    monkeypatch.setattr(gpu_engine, "measure_preset", outlasts_the_budget)
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    code = gpu_engine.main(["--tiny", "--preset", "live", "--sizes", "32x32", "--iters", "1",
                            "--budget-s", "1"])
    out = capsys.readouterr().out
    assert code == 124  # as a time-out: the rows it has are real, the rest are missing
    assert time.monotonic() - started < 20
    result = last_json(out)
    assert result["complete"] is False
    assert result["rows"] == []
    assert "STOPPED by its 1 s budget after 0 of 1 runs" in out
    assert signal.getsignal(signal.SIGTERM) is before
