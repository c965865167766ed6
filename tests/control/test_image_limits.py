"""Images are measured before they are decoded: a small PNG that claims 30000x30000 (a
decompression bomb, 875 KB) is refused from its header, one at a time or eight at once, through
the control API, ``--reference`` and the reference library, without the daemon's memory moving.

Peak memory is the kernel's high-water mark (``VmHWM`` / ``ru_maxrss``): a decode that is
allocated and freed between two samples still shows there.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.control.client import ControlClient, ControlError
from faceswap_cam.daemon.control.control_file import ControlFileError, read_control_file
from faceswap_cam.models.reference import measure_image

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="reads peak memory from /proc (Linux)")

BOMB_SIDE = 30000
GROWTH_LIMIT = 100 * 2**20
PARALLEL = 8

# Runs the CLI and reports the process's peak memory as it ends.
RUNNER = """
import resource, sys
from faceswap_cam.daemon.cli import main
code = main(sys.argv[1:])
print(f"PEAK {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", file=sys.stderr)
sys.exit(code)
"""
RUN_ARGS = ["run", "--source", "demo", "--sink", "null", "--engine", "passthrough",
            "--size", "160x120", "--fps", "15"]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 8-bit grey PNG of 30000x30000 zeros: 875 KB on disk, 900 MB decoded."""
    compressor = zlib.compressobj(9)
    row = bytes(BOMB_SIDE + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(BOMB_SIDE)) + compressor.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(data)
    assert len(data) < 1_000_000
    assert measure_image(data) == (BOMB_SIDE, BOMB_SIDE)
    return path


def high_water_mark(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def peak_of(stderr: str) -> int:
    return int(next(line.split()[1] for line in stderr.splitlines()
                    if line.startswith("PEAK ")))


def run_briefly(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, *RUN_ARGS, "--duration", "0.3",
                           *extra], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_uploads_are_measured_before_they_are_decoded(bomb: Path, cli_env: dict[str, str]
                                                      ) -> None:
    control = Path(cli_env["XDG_CONFIG_HOME"]) / "faceswap-cam" / "control.json"
    daemon = subprocess.Popen([sys.executable, "-c", RUNNER, *RUN_ARGS, "--duration", "120"],
                              env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if read_control_file(control).pid == daemon.pid:
                    break
            except ControlFileError:
                pass
            assert daemon.poll() is None and time.monotonic() < deadline, "no daemon"
            time.sleep(0.05)
        client = ControlClient.from_token_file(control, timeout=60)
        client.status()
        before = high_water_mark(daemon.pid)

        with pytest.raises(ControlError) as refused:
            client.add_reference(bomb)
        assert refused.value.status == 422
        assert f"too large ({BOMB_SIDE}x{BOMB_SIDE})" in refused.value.message
        one = high_water_mark(daemon.pid)

        def upload(number: int) -> ControlError:
            try:
                client.add_reference(bomb, name=f"bomb-{number}")
            except ControlError as exc:
                return exc
            raise AssertionError("a bomb was accepted")

        with ThreadPoolExecutor(PARALLEL) as pool:
            errors = list(pool.map(upload, range(PARALLEL)))
        assert {e.status for e in errors} == {422}
        assert all("too large" in e.message for e in errors)
        after = high_water_mark(daemon.pid)
        assert client.references() == []
        client.shutdown()
        _, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate(timeout=10)
    mib = 2**20
    print(f"daemon peak RSS: {before / mib:.0f} MiB at start, {one / mib:.0f} after one bomb, "
          f"{after / mib:.0f} after {PARALLEL} in parallel")
    assert daemon.returncode == 0, err
    assert one - before < GROWTH_LIMIT
    assert after - before < GROWTH_LIMIT


def test_reference_flag_and_library_are_measured_before_decoding(
        bomb: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.png"
    ok, data = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))
    assert ok
    tiny.write_bytes(data.tobytes())
    # The same start, refused for a reference that costs nothing to decode: the baseline.
    baseline = run_briefly(cli_env, "--reference", str(tiny))
    assert baseline.returncode == 2 and "too small (10x10)" in baseline.stderr

    flag = run_briefly(cli_env, "--reference", str(bomb))
    assert flag.returncode == 2, flag.stderr
    assert f"too large ({BOMB_SIDE}x{BOMB_SIDE})" in flag.stderr
    assert peak_of(flag.stderr) - peak_of(baseline.stderr) < GROWTH_LIMIT

    # The library's selected reference, swapped for the bomb behind the daemon's back.
    library = Path(cli_env["XDG_DATA_HOME"]) / "faceswap-cam" / "references"
    library.mkdir(parents=True, exist_ok=True)
    (library / "big.png").write_bytes(bomb.read_bytes())
    (library / "index.json").write_text(json.dumps({"version": 1, "references": {
        "big": {"width": 1000, "height": 1000, "added": "2025-01-01T00:00:00+00:00"}}}))
    (library / "selected.json").write_text(json.dumps({"name": "big"}))
    started = run_briefly(cli_env)
    assert started.returncode == 0, started.stderr  # runs, without that reference
    assert f"too large ({BOMB_SIDE}x{BOMB_SIDE})" in started.stderr
    print(f"peak RSS: {peak_of(baseline.stderr) / 2**20:.0f} MiB refusing a 10x10 reference, "
          f"{peak_of(flag.stderr) / 2**20:.0f} refusing the bomb, "
          f"{peak_of(started.stderr) / 2**20:.0f} running with it in the library")
    assert peak_of(started.stderr) - peak_of(baseline.stderr) < GROWTH_LIMIT
