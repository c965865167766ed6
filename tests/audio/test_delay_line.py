"""The FaceSwap Mic's delay line: exact delay, no clicks, nothing heard twice."""

from __future__ import annotations

import numpy as np
import pytest

from faceswap_cam.daemon.audio.delay_line import DelayLine

RATE = 48_000
BLOCK = 480  # 10 ms, as the mic thread uses
FADE = 0.03
FADE_FRAMES = round(FADE * RATE)


def run(line: DelayLine, signal: np.ndarray, block: int = BLOCK) -> np.ndarray:
    return np.concatenate(
        [line.process(signal[i : i + block]) for i in range(0, len(signal), block)]
    )


def counter(frames: int, start: int = 1) -> np.ndarray:
    """Channel 0 numbers the input frames (from 1; 0 is silence), channel 1 is constant 1, so
    an output frame's channel 0 / channel 1 says which input frame it plays at any gain."""
    out = np.ones((frames, 2), dtype=np.float32)
    out[:, 0] = np.arange(start, start + frames, dtype=np.float32)
    return out


def sine(frames: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(frames) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None]


def played_indices(out: np.ndarray) -> np.ndarray:
    """Which input frames the output plays, in order (frames played at some gain > 0)."""
    audible = out[:, 1] > 0
    indices: np.ndarray = np.rint(out[audible, 0] / out[audible, 1]).astype(np.int64)
    return indices


def test_steady_delay_is_exact_and_silent_before_history() -> None:
    line = DelayLine(RATE, channels=1, max_delay_s=8.0)
    assert line.set_target_delay(0.25) == 0.25
    signal = np.random.default_rng(1).uniform(-1, 1, (RATE, 1)).astype(np.float32)
    out = run(line, signal)
    delay = round(0.25 * RATE)
    assert np.array_equal(out[:delay], np.zeros((delay, 1), dtype=np.float32))
    assert np.array_equal(out[delay:], signal[:-delay])  # bit-exact
    assert line.delay_s == 0.25 and line.target_delay_s == 0.25 and not line.changing


def test_zero_delay_passes_input_through() -> None:
    line = DelayLine(RATE)
    signal = sine(4800)
    assert np.array_equal(run(line, signal), signal)


@pytest.mark.parametrize("block", [1, 7, 333, 480, 1000, 12_345])
def test_block_sizes_that_do_not_divide_the_fade(block: int) -> None:
    """Any block size gives the same output as 10 ms blocks (the fade spans blocks)."""
    signal = counter(RATE // 2)

    def changed(block_size: int) -> np.ndarray:
        line = DelayLine(RATE, channels=2, max_delay_s=1.0)
        line.set_target_delay(0.05)
        first = run(line, signal[:9000], block_size)
        line.set_target_delay(0.12)  # an increase: fade out, pause, fade in
        second = run(line, signal[9000:17_000], block_size)
        line.set_target_delay(0.02)  # a decrease: cross-fade
        third = run(line, signal[17_000:], block_size)
        return np.concatenate([first, second, third])

    assert np.array_equal(changed(block), changed(BLOCK))


def test_increase_plays_nothing_twice_and_skips_nothing() -> None:
    line = DelayLine(RATE, channels=2, max_delay_s=2.0)
    line.set_target_delay(0.1)
    signal = counter(3 * RATE)
    before = run(line, signal[:RATE])
    line.set_target_delay(0.6)  # +0.5 s
    after = run(line, signal[RATE:])
    out = np.concatenate([before, after])

    played = played_indices(out)
    assert np.all(np.diff(played) == 1)  # each input frame once, in order, none skipped
    assert played[0] == 1
    # The pause is the increase: 0.5 s of true silence between the fade-out and the fade-in.
    silent = np.flatnonzero(out[RATE:, 1] == 0)
    assert len(silent) == round(0.5 * RATE)
    assert np.all(np.diff(silent) == 1)
    # Afterwards the new delay is exact.
    delay = round(0.6 * RATE)
    tail = slice(2 * RATE, 3 * RATE)
    assert np.array_equal(out[tail], signal[tail.start - delay : tail.stop - delay])
    assert line.delay_s == pytest.approx(0.6)


def test_decrease_skips_and_then_plays_the_new_delay_exactly() -> None:
    line = DelayLine(RATE, channels=2, max_delay_s=2.0)
    line.set_target_delay(0.8)
    signal = counter(2 * RATE)
    run(line, signal[:RATE])
    line.set_target_delay(0.3)
    after = run(line, signal[RATE:])
    delay = round(0.3 * RATE)
    settled = after[FADE_FRAMES:]
    start = RATE + FADE_FRAMES
    assert np.array_equal(settled, signal[start - delay : 2 * RATE - delay])
    # Inside the cross-fade both positions play; the gains are equal power.
    gains = after[:FADE_FRAMES, 1]
    assert gains.min() >= 1.0 - 1e-6 and gains.max() <= np.sqrt(2) + 1e-6
    assert line.delay_s == pytest.approx(0.3) and not line.changing


def max_step(line: DelayLine, changes: list[float], hold_s: float = 0.25) -> float:
    """Plays a 440 Hz sine through ``line`` in 10 ms blocks, changing the delay every
    ``hold_s``; returns the largest sample-to-sample step of the output."""
    per = round(hold_s * RATE)
    signal = sine(per * (len(changes) + 1) + 4 * RATE)
    pieces = []
    line.set_target_delay(0.5)
    pieces.append(run(line, signal[: 2 * RATE]))  # fill the history first
    pos = 2 * RATE
    for target in changes:
        line.set_target_delay(target)
        pieces.append(run(line, signal[pos : pos + per]))
        pos += per
    pieces.append(run(line, signal[pos:]))
    out = np.concatenate(pieces)[round(0.6 * RATE) :, 0]  # from when the audio started
    return float(np.abs(np.diff(out)).max())


# Delays whose differences are not whole periods of 440 Hz, so a hard jump would show.
CHANGES = [0.7371, 0.3123, 0.9057, 0.9313, 0.4471, 0.4409, 1.2203, 0.5517]


def test_changing_the_delay_makes_no_click() -> None:
    sine_step = float(np.abs(np.diff(sine(RATE)[:, 0])).max())
    step = max_step(DelayLine(RATE, max_delay_s=2.0, fade_s=FADE), CHANGES)
    # Equal power adds up to sqrt(2) when both positions happen to be in phase.
    assert step <= 1.6 * sine_step


def test_the_click_check_catches_a_hard_jump() -> None:
    """The same check fails for a line that jumps (a one-frame fade): the test above can fail."""
    sine_step = float(np.abs(np.diff(sine(RATE)[:, 0])).max())
    step = max_step(DelayLine(RATE, max_delay_s=2.0, fade_s=1 / RATE), CHANGES)
    assert step > 5 * sine_step


def test_retarget_during_a_pause_ends_it_early_without_repeats() -> None:
    line = DelayLine(RATE, channels=2, max_delay_s=4.0)
    line.set_target_delay(0.2)
    signal = counter(4 * RATE)
    a = run(line, signal[:RATE])
    line.set_target_delay(2.0)  # a 1.8 s pause starts ...
    b = run(line, signal[RATE : RATE + RATE // 2])
    line.set_target_delay(0.9)  # ... and is cut short at 0.9 s
    c = run(line, signal[RATE + RATE // 2 :])
    out = np.concatenate([a, b, c])
    played = played_indices(out)
    assert np.all(np.diff(played) >= 1)  # never back, never twice
    delay = round(0.9 * RATE)
    assert np.array_equal(out[-RATE:], signal[-RATE - delay : -delay])


def test_retarget_during_a_fade_turns_it_around() -> None:
    line = DelayLine(RATE, channels=2, max_delay_s=2.0)
    line.set_target_delay(0.3)
    signal = counter(2 * RATE)
    a = run(line, signal[:RATE])
    line.set_target_delay(0.8)
    b = run(line, signal[RATE : RATE + 480])  # 10 ms into a 30 ms fade-out
    line.set_target_delay(0.3)  # back where it was: fade back in, no pause
    c = run(line, signal[RATE + 480 :])
    out = np.concatenate([a, b, c])
    assert np.all(np.diff(played_indices(out)) == 1)
    assert out[RATE:, 1].min() > 0.5  # it never went near silence
    delay = round(0.3 * RATE)
    assert np.array_equal(out[-RATE // 2 :], signal[-RATE // 2 - delay : -delay])


def test_retarget_during_a_crossfade_finishes_it_then_follows() -> None:
    line = DelayLine(RATE, channels=2, max_delay_s=2.0)
    line.set_target_delay(1.0)
    signal = counter(3 * RATE)
    run(line, signal[: 2 * RATE])
    line.set_target_delay(0.5)
    run(line, signal[2 * RATE : 2 * RATE + 480])
    line.set_target_delay(0.2)
    out = run(line, signal[2 * RATE + 480 :])
    delay = round(0.2 * RATE)
    assert np.array_equal(out[-RATE // 2 :], signal[-RATE // 2 - delay : -delay])


def test_delay_above_max_is_clamped_and_reported() -> None:
    line = DelayLine(RATE, max_delay_s=1.0)
    clamped = []
    for wanted in (5.0, -0.1, 0.4):
        line.set_target_delay(wanted)
        clamped.append((line.target_delay_s, line.clamped))
    assert clamped == [(1.0, True), (0.0, True), (0.4, False)]
    with pytest.raises(ValueError):
        line.set_target_delay(float("nan"))
    line.set_target_delay(9.0)
    signal = counter(2 * RATE)[:, :1]
    out = run(line, signal)
    assert np.array_equal(out[RATE:], signal[:RATE])  # exactly the maximum


def test_reset_is_silence_then_the_target_delay() -> None:
    line = DelayLine(RATE, max_delay_s=1.0)
    line.set_target_delay(0.1)
    run(line, sine(RATE))
    line.set_target_delay(0.2)
    line.process(sine(480))  # mid-change
    line.reset()
    signal = counter(RATE)[:, :1]
    out = run(line, signal)
    delay = round(0.2 * RATE)
    assert np.array_equal(out[:delay], np.zeros((delay, 1), dtype=np.float32))
    assert np.array_equal(out[delay:], signal[:-delay])


def test_memory_is_one_fixed_ring() -> None:
    line = DelayLine(RATE, max_delay_s=8.0)
    assert 1_400_000 < line.buffer_bytes < 1_700_000  # ~1.5 MB, as documented
    ring = line._ring
    rng = np.random.default_rng(2)
    block = sine(BLOCK)
    for _ in range(3000):
        line.set_target_delay(float(rng.uniform(0, 10)))
        line.process(block)
    assert line._ring is ring and line.buffer_bytes == ring.nbytes
    big = line.process(sine(5 * RATE))  # a block larger than the margin goes in pieces
    assert big.shape == (5 * RATE, 1) and line._ring is ring


def test_rejects_a_block_of_the_wrong_shape() -> None:
    line = DelayLine(RATE, channels=1)
    with pytest.raises(ValueError):
        line.process(np.zeros(480, dtype=np.float32))
    with pytest.raises(ValueError):
        line.process(np.zeros((480, 2), dtype=np.float32))
    assert line.process(np.zeros((0, 1), dtype=np.float32)).shape == (0, 1)
