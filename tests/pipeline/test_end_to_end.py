"""The daemon end to end through its command line: file source -> pipeline -> file sink."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import faceswap_cam_exe
from tests.media import CYAN_BGR, RED_BGR, near, patch_colour, read_frame, read_video

FPS = 15
DURATION = 3


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([faceswap_cam_exe(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def record(clip: Path, out: Path, env: dict[str, str], *extra: str) -> dict[str, object]:
    result = run_cli(["run", "--source", f"file:{clip}", "--sink", f"file:{out}",
                      "--fps", str(FPS), "--size", "320x240", "--duration", str(DURATION),
                      *extra], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # exactly one JSON line of run statistics
    stats: dict[str, object] = json.loads(lines[0])
    return stats


def test_passthrough_recording_plays_in_order_with_true_colours(
        clip: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out.mp4"
    stats = record(clip, out, cli_env, "--engine", "passthrough")
    frames, fps = read_video(out)
    assert fps == FPS
    assert abs(len(frames) - FPS * DURATION) <= 1
    assert stats["frames_published"] == len(frames)
    indices = [read_frame(f)[0] for f in frames]
    assert indices == sorted(indices), indices  # capture order, no frame from the past
    assert indices[-1] - indices[0] >= FPS * DURATION - 4  # and the clip really advanced
    for frame in frames:
        assert near(patch_colour(frame), RED_BGR), patch_colour(frame)
    for key in ("frames_captured", "frames_published", "frames_swapped", "frames_passthrough",
                "frames_dropped", "latency_p50_ms", "latency_p99_ms", "jitter_p99_ms"):
        assert key in stats


@pytest.mark.parametrize("playout", ["live", "smooth"])
def test_debug_engine_inverts_and_keeps_order(
        clip: Path, tmp_path: Path, cli_env: dict[str, str], playout: str) -> None:
    out = tmp_path / "debug.mp4"
    stats = record(clip, out, cli_env, "--engine", "debug", "--engine-delay-ms", "0",
                   "--playout", playout, "--sink", "null")  # several sinks at once
    frames, _ = read_video(out)
    assert abs(len(frames) - FPS * DURATION) <= 1
    decoded = [read_frame(f) for f in frames]
    swapped = [(i, f) for (i, inverted), f in zip(decoded, frames, strict=True) if inverted]
    # Once the first batch is through, (almost) every frame is swapped.
    assert len(swapped) >= len(frames) - 15
    assert stats["frames_swapped"] == len(swapped)
    for _, frame in swapped:
        assert near(patch_colour(frame), CYAN_BGR), patch_colour(frame)  # red, inverted
    for (_, inverted), frame in zip(decoded, frames, strict=True):
        if not inverted:
            assert near(patch_colour(frame), RED_BGR)
    indices = [i for i, _ in decoded]
    # Either playout keeps one timeline: smooth plays the camera at the swapped frames' delay
    # too, so when they take over the picture holds rather than steps back.
    assert indices == sorted(indices)


def test_slow_engine_passthrough_fills_gaps(
        clip: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "slow.mp4"
    stats = record(clip, out, cli_env, "--engine", "debug", "--engine-delay-ms", "400")
    frames, _ = read_video(out)
    assert abs(len(frames) - FPS * DURATION) <= 1
    decoded = [read_frame(f) for f in frames]
    kinds = {inverted for _, inverted in decoded}
    assert kinds == {True, False}, "expected both swapped and passthrough frames"
    swapped_indices = [i for i, inverted in decoded if inverted]
    assert swapped_indices == sorted(swapped_indices)
    shown = stats["frames_swapped"], stats["frames_passthrough"], stats["frames_published"]
    assert isinstance(shown[0], int) and isinstance(shown[1], int)
    assert shown[0] + shown[1] == shown[2]
    assert isinstance(stats["max_input_depth"], int) and stats["max_input_depth"] <= 60
