"""benchmarks/live_path.py runs the daemon with the plan's batch time and prints its figures."""

from __future__ import annotations

import json

import pytest

from benchmarks import live_path


def test_live_path_prints_the_plan_beside_what_the_daemon_showed(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Long enough for the take-over: at the plan's every 4th frame the first batch takes 1.2 s
    # to gather, its call 1 s, and the picture then holds for the delay.
    code = live_path.main(["--seconds", "4", "--warmup", "1", "--playout", "smooth",
                           "--first-call-s", "1", "--nobody-every", "3"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["benchmark"] == "live_path" and result["size"] == [480, 480]
    assert result["plan"]["cadence"] >= 1 and result["plan"]["batch_s"] > 0
    [run] = result["runs"]
    assert run["playout"] == "smooth" and run["seconds"] >= 3.9
    assert result["first_call_s"] == 1 and result["start_cadence"] == result["plan"]["cadence"]
    assert "settled_s" in run
    assert result["nobody_every"] == 3
    # Smooth playout keeps one timeline, also as swapped frames hand back to the camera
    # (every third call found nobody) and take over again.
    assert run["steps_back"] == 0 and run["most_back_s"] == 0.0
    # The take-over: the camera holds while the delay (about 1.8 s) grows.
    assert run["longest_hold_s"] >= 0.5
    assert set(run["shown"]) <= {"swapped", "held", "passthrough", "placeholder", "paused"}
    assert "plan" in out and "swapped fps" in out
