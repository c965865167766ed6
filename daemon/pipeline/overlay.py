"""Text drawn on frames: the stats overlay (preview), the status cards (placeholder, lost) and
the "AI altered" badge (virtual camera)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _scale(height: int) -> float:
    return max(0.35, height / 1080)


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def stats_lines(stats: Mapping[str, Any]) -> list[str]:
    return [
        f"capture {_fmt(stats.get('capture_fps'))} fps  process {_fmt(stats.get('process_fps'))}"
        f" fps  publish {_fmt(stats.get('publish_fps'))} fps",
        f"latency {_fmt(stats.get('latency_ms'), ' ms', 0)}  showing {_fmt(stats.get('showing'))}"
        f"  playout {stats.get('playout', '-')}"
        + (f" +{_fmt(stats.get('playout_delay_ms'), ' ms', 0)}"
           if stats.get("playout") == "smooth" else ""),
        f"engine {stats.get('engine', '-')}: {stats.get('engine_state', '-')}"
        f"  k={stats.get('cadence', '-')}  camera {stats.get('capture_state', '-')}",
    ]


def draw_stats(pixels: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """A copy of ``pixels`` with the stats in a translucent band at the top."""
    out = pixels.copy()
    scale = _scale(out.shape[0]) * 1.4
    line_h = int(28 * scale) + 4
    lines = stats_lines(stats)
    band = out[: line_h * len(lines) + 8]
    band[:] = (band * 0.45).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(out, text, (8, line_h * (i + 1)), _FONT, 0.8 * scale, (255, 255, 255),
                    max(1, int(2 * scale)), cv2.LINE_AA)
    return out


@functools.lru_cache(maxsize=16)
def card(size: tuple[int, int], title: str, subtitle: str = "") -> np.ndarray:
    """A dark card with centred text; cached, so callers must not draw on it."""
    width, height = size
    frame = np.full((height, width, 3), (48, 36, 30), np.uint8)
    scale = _scale(height) * 2.0
    lines = ((title, height // 2, scale), (subtitle, height // 2 + int(60 * scale), scale * 0.55))
    for text, y, s in lines:
        if not text:
            continue
        (tw, _), _ = cv2.getTextSize(text, _FONT, s, max(1, int(2 * s)))
        cv2.putText(frame, text, ((width - tw) // 2, y), _FONT, s, (235, 235, 235),
                    max(1, int(2 * s)), cv2.LINE_AA)
    frame.flags.writeable = False
    return frame


def with_banner(pixels: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``pixels``, darkened, with a centred banner (e.g. "camera lost")."""
    out = cv2.convertScaleAbs(pixels, alpha=0.5)
    height, width = out.shape[:2]
    scale = _scale(height) * 2.0
    thickness = max(1, int(2 * scale))
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = (width - tw) // 2, (height + th) // 2
    cv2.rectangle(out, (x - 20, y - th - 20), (x + tw + 20, y + 20), (20, 20, 160), -1)
    cv2.putText(out, text, (x, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


AI_BADGE_TEXT = "AI altered"
_BADGE_BACKGROUND = (96, 32, 128)  # BGR: a purple that rarely blends into a room


@functools.lru_cache(maxsize=8)
def _ai_badge(size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """The badge's pixels for frames of ``size`` and where its top-left corner goes."""
    width, height = size
    scale = max(0.3, height / 720 * 0.8)
    thickness = max(1, round(scale * 1.6))
    (text_w, text_h), baseline = cv2.getTextSize(AI_BADGE_TEXT, _FONT, scale, thickness)
    pad = max(2, round(text_h * 0.45))
    margin = max(1, height // 40)
    # Small next to the picture; on a tiny frame it is cut rather than covering everything.
    badge_w = min(text_w + 2 * pad, max(1, width - 2 * margin))
    badge_h = min(text_h + baseline + 2 * pad, max(1, height - 2 * margin))
    patch = np.full((badge_h, badge_w, 3), _BADGE_BACKGROUND, np.uint8)
    cv2.putText(patch, AI_BADGE_TEXT, (pad, pad + text_h), _FONT, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    patch.flags.writeable = False
    return patch, width - margin - badge_w, margin


def draw_ai_badge(pixels: np.ndarray) -> np.ndarray:
    """A copy of ``pixels`` with the "AI altered" badge in the top-right corner (the frame
    given is shared with the other outputs, so it is never drawn on)."""
    height, width = pixels.shape[:2]
    patch, x, y = _ai_badge((width, height))
    out = pixels.copy()
    out[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    return out
