"""The recorder: every container plays back frame for frame; a full disk (faked at frame N, and
a real 200 KB tmpfs when the tests run as root) stops only the recording, with the error and
its fix in the status, the stats line and the tray, and leaves what was written playable;
``kill -9`` leaves a playable file; an unwritable folder is named at start."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import av
import pytest

from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.control.status import DaemonStatus, OutputError
from faceswap_cam.daemon.outputs.base import SinkError, SinkWorker, Tick
from faceswap_cam.daemon.outputs.file import FileSink
from faceswap_cam.daemon.outputs.null import NullSink
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from tests.conftest import faceswap_cam_exe
from tests.fake_daemon import InMemoryDaemon
from tests.media import RED_BGR, make_frame, near, patch_colour, read_frame

FPS = 15
SIZE = (320, 240)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def decode(path: Path) -> tuple[list[Any], list[bool]]:
    """Every frame of a recording (BGR) and which were keyframes; fails on any decode error,
    so a file with a torn end does not pass."""
    frames, keys = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            keys.append(frame.key_frame)
    return frames, keys


def tick(number: int, repeat: int = 1) -> Tick:
    return Tick(number, "passthrough", 0, None, repeat=repeat)


def record(sink: FileSink, frames: int, start: int = 0) -> None:
    for index in range(start, start + frames):
        sink.send(make_frame(index), tick(index))


class FillingFile(io.RawIOBase):
    """A file on a disk that fills up when the test says so: every write then fails with
    ENOSPC, as a full disk's would."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self.full = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._file.truncate(size)

    def close(self) -> None:
        self._file.close()
        super().close()


# --- what it writes ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".avi"])
def test_every_container_plays_back_frame_for_frame(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    sink = FileSink(str(path))
    sink.open(SIZE, FPS)
    record(sink, 3 * FPS)
    sink.send(make_frame(3 * FPS), tick(3 * FPS, repeat=3))  # a missed tick: written again
    sink.close()
    sink.close()  # idempotent
    frames, keys = decode(path)
    assert [read_frame(f)[0] for f in frames] == [*range(3 * FPS), 3 * FPS, 3 * FPS, 3 * FPS]
    assert all(near(patch_colour(f), RED_BGR) for f in frames)  # BGR stays BGR
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == FPS
    # A keyframe at least every second: each second can be played on its own.
    key_at = [i for i, key in enumerate(keys) if key]
    assert key_at[0] == 0
    assert max(b - a for a, b in zip(key_at, [*key_at[1:], len(keys)], strict=True)) <= FPS


def test_mp4_is_fragmented_with_its_index_first(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = FileSink(str(path))
    sink.open(SIZE, FPS)
    record(sink, 3 * FPS)
    sink.close()
    data = path.read_bytes()
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    # The (empty) index comes before any picture, and every second is its own fragment.
    assert data.index(b"moov") < data.index(b"moof") < data.index(b"mdat")
    assert data.count(b"moof") >= 3


def test_an_unknown_extension_is_refused() -> None:
    with pytest.raises(SinkError, match=r"use one of .*\.mkv.*\.mp4"):
        FileSink("out.webm")


# --- a full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_disk_full_at_frame_n_keeps_what_was_written_playable(tmp_path: Path,
                                                                 suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    files: list[FillingFile] = []

    def opener(target: Path) -> BinaryIO:
        files.append(FillingFile(target))
        return files[-1]  # type: ignore[return-value]

    sink = FileSink(str(path), opener=opener)
    sink.open(SIZE, FPS)
    n = 2 * FPS + 4
    record(sink, n)
    files[0].full = True
    with pytest.raises(SinkError) as caught:
        # The next fragment's write fails within a second of frames.
        record(sink, FPS + 1, start=n)
    sink.close()
    mount = _mount_point(tmp_path)
    assert "is full" in str(caught.value) and str(path) in str(caught.value)
    assert caught.value.fix == (f"free space on {mount}, or record to another folder with "
                                f"--sink file:OTHER{suffix}")
    frames, _ = decode(path)  # no torn fragment at the end: it decodes without an error
    assert [read_frame(f)[0] for f in frames] == list(range(len(frames)))
    assert n - FPS <= len(frames) <= n


def test_a_disk_that_fills_at_the_last_write_is_reported_by_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    files: list[FillingFile] = []

    def opener(target: Path) -> BinaryIO:
        files.append(FillingFile(target))
        return files[-1]  # type: ignore[return-value]

    sink = FileSink(str(path), opener=opener)
    sink.open(SIZE, FPS)
    worker = SinkWorker(sink, lambda pixels, _: pixels)
    worker.start()
    for index in range(2 * FPS + 3):
        worker.offer(make_frame(index), tick(index))
    deadline = time.monotonic() + 10
    while worker.sent < 2 * FPS + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    files[0].full = True  # the closing fragment and index do not fit
    worker.close()
    assert worker.error.startswith(f"RecordingError: recording to {path} stopped after ")
    assert worker.fix.startswith("free space on ")
    frames, _ = decode(path)
    assert 2 * FPS <= len(frames) < 2 * FPS + 3


def _mount_point(path: Path) -> Path:
    here = path.resolve()
    while not os.path.ismount(here):
        here = here.parent
    return here


def test_a_full_disk_reaches_status_and_stats_while_the_other_outputs_go_on(
        tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    filling: list[FillingFile] = []

    def opener(target: Path) -> BinaryIO:
        filling.append(FillingFile(target))
        return filling[-1]  # type: ignore[return-value]

    settings = Settings(source="demo", sinks=["null"], engine="passthrough", fps=30,
                        size=SIZE, control_api=False)
    null = NullSink()
    app = RealtimeFaceSwapApp(settings, sinks=[FileSink(str(path), opener=opener), null])
    with app:
        deadline = time.monotonic() + 10
        while app.ticks < 45 and time.monotonic() < deadline:
            time.sleep(0.05)
        filling[0].full = True
        while not app.status().output_errors and time.monotonic() < deadline:
            time.sleep(0.05)
        status = app.status()
        failed_at = null.frames
        time.sleep(0.5)
        assert null.frames >= failed_at + 10  # the other output goes on
        assert status.state.value == "running"
    [failed] = status.output_errors
    assert failed.output == f"file:{path}"
    assert failed.error.startswith(f"RecordingError: recording to {path} stopped after ")
    assert "is full" in failed.error and failed.fix.startswith("free space on ")
    sinks = app.stats()["sinks"]
    assert sinks[f"file:{path}"]["error"] == failed.error
    assert sinks[f"file:{path}"]["fix"] == failed.fix
    assert sinks["null"]["error"] == ""
    assert len(decode(path)[0]) >= 30


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 200 KB disk (a tmpfs) in a temp folder; root only (CI runs the tests as root)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root; the faked full disk above runs everywhere")
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([faceswap_cam_exe(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_a_real_full_disk_is_reported_and_the_recording_plays(
        small_tmpfs: Path, cli_env: dict[str, str]) -> None:
    out = small_tmpfs / "out.mp4"
    result = run_cli(["run", "--source", "demo", "--sink", f"file:{out}", "--sink", "null",
                      "--engine", "passthrough", "--fps", "30", "--size", "640x480",
                      "--duration", "8"], cli_env)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    recording = stats["sinks"][f"file:{out}"]
    assert "is full" in recording["error"], (recording, result.stderr)
    assert recording["fix"] == (f"free space on {small_tmpfs}, or record to another folder "
                                "with --sink file:OTHER.mp4")
    assert stats["sinks"]["null"] == {"sent": stats["frames_published"], "dropped": 0,
                                      "error": "", "fix": ""}
    assert "is full" in result.stderr  # and the log says so, not "recorded N frames"
    frames, _ = decode(out)
    assert len(frames) >= 30


# --- kill -9 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_killed_daemon_leaves_a_playable_recording(
        tmp_path: Path, cli_env: dict[str, str], suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    seconds = 3.0
    daemon = subprocess.Popen(
        [faceswap_cam_exe(), "run", "--source", "demo", "--sink", f"file:{out}",
         "--sink", "null", "--engine", "passthrough", "--fps", str(FPS), "--size", "320x240"],
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The file gets its first bytes with the first frame.
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size) and daemon.poll() is None:
            assert time.monotonic() < deadline, "the recording never started"
            time.sleep(0.01)
        assert daemon.poll() is None, daemon.communicate()[1]
        time.sleep(seconds)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.communicate()
    frames, _ = decode(out)
    assert len(frames) >= (seconds - 1) * FPS
    indices = [read_frame(f)[0] for f in frames]
    assert indices == sorted(indices)


# --- a folder it cannot write to --------------------------------------------------------------


def _assert_refused_naming(result: subprocess.CompletedProcess[str], words: str,
                           folder: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert f"{folder}" in result.stderr and words in result.stderr, result.stderr
    assert "--sink file:OTHER.mp4" in result.stderr  # the fix
    assert "codec" not in result.stderr


def test_a_read_only_file_system_is_named_at_start(tmp_path: Path,
                                                   cli_env: dict[str, str]) -> None:
    if not IS_ROOT:
        pytest.skip("mounting a read-only file system needs root; the permission test runs")
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        result = run_cli(["run", "--source", "demo", "--size", "320x240", "--duration", "1",
                          "--sink", f"file:{folder / 'out.mp4'}"], cli_env)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    _assert_refused_naming(result, "read-only file system", folder)


def test_a_folder_without_write_permission_is_named_at_start(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    if IS_ROOT:
        pytest.skip("root writes anywhere; the read-only file system test runs instead")
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    try:
        result = run_cli(["run", "--source", "demo", "--size", "320x240", "--duration", "1",
                          "--sink", f"file:{folder / 'out.mp4'}"], cli_env)
    finally:
        folder.chmod(0o755)
    _assert_refused_naming(result, "not writable", folder)


def test_a_refused_open_says_why_and_what_to_do(tmp_path: Path) -> None:
    def refused(path: Path) -> BinaryIO:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    sink = FileSink(str(tmp_path / "out.mkv"), opener=refused)
    with pytest.raises(SinkError, match=f"{tmp_path} is not writable") as caught:
        sink.open(SIZE, FPS)
    assert "--sink file:OTHER.mkv" in caught.value.fix
    sink.close()


# --- the tray ---------------------------------------------------------------------------------


def test_the_tray_shows_a_stopped_recording_with_its_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # pystray picks its backend when first imported; the dummy one imports anywhere.
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    pytest.importorskip("pystray", reason="the tray extra is not installed")
    from faceswap_cam.tray.app import TrayController, TrayState

    failed = OutputError(output="file:/media/usb/call.mp4",
                         error="recording to /media/usb/call.mp4 stopped after 12.0 s: the "
                               "disk at /media/usb is full; what was recorded before plays",
                         fix="free space on /media/usb, or record to another folder with "
                             "--sink file:OTHER.mp4")
    status: DaemonStatus = InMemoryDaemon().status()

    class Client:
        errors: list[OutputError] = []

        def status(self) -> dict[str, Any]:
            return status.model_copy(update={"output_errors": self.errors}).model_dump(
                mode="json")

        def references(self) -> list[dict[str, Any]]:
            return []

    client = Client()
    notes: list[tuple[str, str]] = []
    controller = TrayController(lambda: client,  # type: ignore[arg-type, return-value]
                                notify=lambda title, text: notes.append((title, text)),
                                dispatch=lambda action: action())
    assert controller.refresh() == TrayState.SWAPPING
    client.errors = [failed]
    for _ in range(2):
        assert controller.refresh() == TrayState.ERROR
    lines = controller.status_lines()
    assert any(line.startswith("Error: recording to /media/usb/call.mp4 stopped")
               for line in lines)
    assert any(line.startswith("Fix: free space on /media/usb") for line in lines)
    assert notes == [("Output stopped", f"{failed.error}. Fix: {failed.fix}")]  # once
