from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media import write_clip

try:
    tqdm = importlib.import_module("tqdm")
except ImportError:  # the model stack is not installed: nothing shows progress bars
    pass
else:
    # tqdm watches its bars from a thread it starts with the first bar and that lingers 10 s
    # after the last: whichever test drew the first bar would seem to leak it.
    tqdm.tqdm.monitor_interval = 0


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 320x240, 15 fps, 20 s clip of numbered frames (longer than any test run: no loop)."""
    return write_clip(tmp_path_factory.mktemp("media") / "numbered.mp4", frames=300, fps=15)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for running the CLI: no user config, no FACESWAP_CAM_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESWAP_CAM_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["HOME"] = str(tmp_path / "home")
    return env


def faceswap_cam_exe() -> str:
    return str(Path(sys.executable).with_name("faceswap-cam"))


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Every test must stop the threads it started (daemon's orderly stop)."""
    before = set(threading.enumerate())
    yield
    # Exempt: abandoned engine calls (the processor's design), and the unnamed worker pools
    # libraries keep for the whole process (torch.compile's, started by the first flex
    # attention compile). Our own pools always carry a name (e.g. "jpeg"), so they are checked.
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
              and not t.name.startswith(("engine-", "engine-close", "ThreadPoolExecutor-"))]
    for thread in leaked:
        thread.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's references, models or control file."""
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("FACESWAP_CAM_REFERENCES_DIR", str(base / "references"))
    monkeypatch.setenv("FACESWAP_CAM_MODELS_DIR", str(base / "models"))
    monkeypatch.setenv("FACESWAP_CAM_CONTROL_FILE", str(base / "control.json"))
    monkeypatch.setenv("FACESWAP_CAM_ENGINE_HOST_DIR", str(base / "engine-host"))
    monkeypatch.setenv("FACESWAP_CAM_PAIRINGS_FILE", str(base / "engine-pairings.json"))
