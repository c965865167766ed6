"""benchmarks/preprocess.py times the engine's own preprocessing path, window included."""

from __future__ import annotations

import json

import pytest

from benchmarks import preprocess


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
