"""``faceswap-cam doctor``: check everything the daemon depends on and say how to fix it.

Every place a check touches the system (sysfs, /proc, OpenCV, torch, the config file, the
control file, the login service) is a parameter of :func:`run_checks`, so tests run each
check against fake trees and fake devices. The project modules that need OpenCV,
pyvirtualcam or uvicorn are imported inside the checks: a missing package then shows up as a
FAIL line, never as a traceback before the report.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from faceswap_cam.daemon.audio.backend import AudioBackend
from faceswap_cam.daemon.capture.devices import CapsQuery
from faceswap_cam.daemon.capture.source import split_spec
from faceswap_cam.daemon.config import (
    ENV_PREFIX,
    ConfigError,
    Offload,
    Settings,
    load_settings,
)
from faceswap_cam.daemon.paths import config_file
from faceswap_cam.daemon.states import DaemonState
from faceswap_cam.models import defaults

logger = logging.getLogger(__name__)

__all__ = [
    "Check",
    "GpuInfo",
    "ServiceState",
    "add_doctor_parser",
    "exit_code",
    "main",
    "open_camera",
    "opened_by",
    "probe_gpus",
    "probe_service",
    "render_json",
    "render_text",
    "run_checks",
    "run_doctor",
    "weights_engine",
    "weights_needed",
]

Status = Literal["PASS", "WARN", "FAIL"]
PASS: Status = "PASS"
WARN: Status = "WARN"
FAIL: Status = "FAIL"

MIN_PYTHON = (3, 11)
#: Wan2.2-Animate-14B in bf16 with nothing offloaded: the 14B transformer, the UMT5 text
#: encoder, the CLIP image encoder and the VAE all sit on the GPU at once.
WAN_BF16_BYTES = 40 * 1024**3
CAMERA_TIMEOUT_S = 5.0
CONTROL_TIMEOUT_S = 2.0

PROC_ROOT = Path("/proc")
V4L2LOOPBACK_PARAMETERS = Path("/sys/module/v4l2loopback/parameters")

NO_CAMERA = "no camera found: the daemon will show the demo scene"
NO_GPU = "runs in passthrough / CPU only"
MODELS_EXTRA_FIX = defaults.MODELS_EXTRA_INSTALL
DKMS_HINT = ("if modprobe cannot find the module, install it first "
             "(sudo apt install v4l2loopback-dkms) and run the command again")
DAEMON_FIX = "faceswap-cam run"
SERVICE_FIX = "faceswap-cam service install"
OFFLOAD_FIX = ('faceswap-cam run --offload model --vae-tiling  (or offload = "model" and '
               "vae_tiling = true in the config file)")
SERVICE_UNAVAILABLE = "service commands not available"

# (what the report calls it, the distributions that provide it: any one will do)
_CORE_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("numpy", ("numpy",)),
    ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                "opencv-contrib-python")),
    ("pydantic", ("pydantic",)),
    ("platformdirs", ("platformdirs",)),
    ("pyvirtualcam", ("pyvirtualcam",)),
    ("fastapi", ("fastapi",)),
    ("uvicorn", ("uvicorn",)),
)
_MODEL_PACKAGES = ("torch", "diffusers", "transformers")
# The engines that load the registered weights; the others (passthrough, debug, ...) need none.
#: Engines that run on a GPU (auto may pick one of them).
_GPU_ENGINES = ("auto", "wan-animate", "wan-animate-2")
_HEALTHY_STATES = (DaemonState.RUNNING, DaemonState.PAUSED, DaemonState.STARTING)


@dataclass(frozen=True)
class Check:
    """One line of the report. ``fix`` is a command or instruction, None when there is
    nothing to do; both ``detail`` and ``fix`` may span several lines."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class GpuInfo:
    device: str  # "cuda:0", "mps": what --device takes
    name: str
    memory_bytes: int  # 0 when torch cannot tell (MPS shares the system memory)


@dataclass(frozen=True)
class ServiceState:
    installed: bool
    running: bool | None  # None: the service manager cannot tell (no user systemd bus, ...)
    detail: str = ""  # what the service manager says
    outdated: bool = False  # the installed files point at another Python or an old template


class StatusClient(Protocol):
    """The part of :class:`~faceswap_cam.daemon.control.client.ControlClient` the doctor uses."""

    @property
    def url(self) -> str: ...

    def status(self) -> dict[str, Any]: ...


#: (camera index or device path, the size and fps asked for)
#: -> (delivered a frame, width, height, fps).
CameraOpener = Callable[[int | str, tuple[int, int], float], tuple[bool, int, int, float]]
GpuProbe = Callable[[], list[GpuInfo]]
SettingsLoader = Callable[[Path | None], Settings]
ClientFactory = Callable[[], StatusClient]
ServiceProbe = Callable[[], ServiceState]
VersionLookup = Callable[[str], str | None]
#: The sound system FaceSwap Mic would use (daemon.audio.mic.default_backend).
MicBackendFactory = Callable[[], AudioBackend]


# --- the real probes ---------------------------------------------------------------------------


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


#: A checkout's own pyproject.toml (absent from an installed wheel): its requirements are the
#: ones the code beside it needs, where an editable install's metadata keeps those of the day
#: it was installed.
CHECKOUT_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def model_requirements(pyproject: Path = CHECKOUT_PYPROJECT) -> dict[str, str]:
    """The ``models`` extra's requirements (canonical name -> requirement): the checkout's
    ``pyproject`` where the code runs from one, else this install's metadata; empty without
    either or without ``packaging`` to read them (it comes with the model stack)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name
    except ImportError:
        return {}
    lines = _checkout_models_extra(pyproject)
    from_metadata = lines is None
    if lines is None:
        try:
            lines = importlib.metadata.requires("faceswap-cam") or []
        except importlib.metadata.PackageNotFoundError:
            return {}
    wanted: dict[str, str] = {}
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        # The metadata lists every requirement, the extra's marked as such.
        marker = requirement.marker
        if from_metadata and not (marker is not None and marker.evaluate({"extra": "models"})
                                  and not marker.evaluate({"extra": ""})):
            continue
        wanted[canonicalize_name(requirement.name)] = \
            f"{requirement.name}{requirement.specifier}"
    return wanted


def _checkout_models_extra(pyproject: Path) -> list[str] | None:
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, ValueError, KeyError):
        return None
    if project.get("name") != "faceswap-cam":
        return None
    extra = project.get("optional-dependencies", {}).get("models")
    return [line for line in extra if isinstance(line, str)] if isinstance(extra, list) else None


@dataclass(frozen=True)
class UnmetRequirement:
    """An installed package outside the project's requirement for it."""

    name: str  # canonical, as model_requirements keys it
    installed: str
    wanted: str

    def __str__(self) -> str:
        return f"{self.name} {self.installed} (needs {self.wanted})"


def unmet_requirements(installed: Sequence[tuple[str, str]],
                       requirements: dict[str, str]) -> list[UnmetRequirement]:
    """Which installed ``(name, version)`` fall outside the project's requirement for them."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name
        from packaging.version import InvalidVersion
    except ImportError:
        return []
    unmet = []
    for name, version in installed:
        canonical = canonicalize_name(name)
        wanted = requirements.get(canonical)
        if wanted is None:
            continue
        try:
            met = Requirement(wanted).specifier.contains(version, prereleases=True)
        except (InvalidRequirement, InvalidVersion):
            continue
        if not met:
            unmet.append(UnmetRequirement(canonical, version, wanted))
    return unmet


def upgrade_command(unmet: Sequence[UnmetRequirement], requirements: dict[str, str]) -> str:
    """The pip command that brings ``unmet`` within the requirements; torchvision goes with
    torch, since each of its wheels pins one torch."""
    wanted = [entry.wanted for entry in unmet]
    names = {entry.name for entry in unmet}
    if "torch" in names and "torchvision" not in names and "torchvision" in requirements:
        wanted.append(requirements["torchvision"])
    return "pip install " + " ".join(f"'{requirement}'" for requirement in wanted)


def open_camera(index: int | str, size: tuple[int, int], fps: float, *,
                timeout_s: float = CAMERA_TIMEOUT_S) -> tuple[bool, int, int, float]:
    """Open camera ``index`` (or a device path) with the webcam source the daemon uses, asking
    for ``size`` at ``fps`` (the user's settings), and read one frame: (delivered a frame,
    width, height, fps). A width of 0 means it did not even open."""
    result: list[tuple[bool, int, int, float]] = []

    def probe() -> None:
        result.append(_open_camera_now(index, size, fps))

    # A wedged driver can block VideoCapture forever and OpenCV has no open timeout for V4L2:
    # the probe runs in a daemon thread that is abandoned when it does not answer in time.
    thread = threading.Thread(target=probe, name=f"doctor-camera-{index}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        logger.warning("camera %s did not answer within %g s", index, timeout_s)
        return False, 0, 0, 0.0
    return result[0]


def _open_camera_now(index: int | str, size: tuple[int, int], fps: float
                     ) -> tuple[bool, int, int, float]:
    from faceswap_cam.daemon.capture.source import SourceError
    from faceswap_cam.daemon.capture.webcam import WebcamSource

    camera = WebcamSource(index, size=size, fps=fps)
    try:
        camera.open()
    except SourceError:
        return False, 0, 0, 0.0
    try:
        width, height = camera.granted_size or (0, 0)
        granted_fps = camera.granted_fps or 0.0
        try:
            frame = camera.read()
        except SourceError:
            return False, width, height, granted_fps
        # The frame is the truth; some drivers report one size and deliver another.
        return True, int(frame.shape[1]), int(frame.shape[0]), granted_fps
    finally:
        camera.close()


def probe_gpus() -> list[GpuInfo]:
    """The GPUs torch can use; raises ImportError when torch is not installed."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props: Any = torch.cuda.get_device_properties(index)
            gpus.append(GpuInfo(f"cuda:{index}", str(props.name), int(props.total_memory)))
    elif torch.backends.mps.is_available():
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        memory = int(recommended()) if callable(recommended) else 0
        gpus.append(GpuInfo("mps", "Apple GPU (MPS)", memory))
    return gpus


def probe_service() -> ServiceState:
    """Ask daemon/service.py whether the login service is installed and running.

    Raises ImportError or AttributeError when that module (or a function it should have) is
    missing, which the service check reports as "not available"."""
    service = importlib.import_module("faceswap_cam.daemon.ops.service")
    if not service.is_installed():
        # is_installed is one stat; status() asks the service manager, so only when needed.
        return ServiceState(False, None)
    report = service.status()
    manager = [str(line) for line in getattr(report, "manager", ())]
    outdated = any(state == "outdated" for _, state in getattr(report, "files", ()))
    return ServiceState(True, _running_from_manager(manager), "; ".join(manager), outdated)


def _running_from_manager(lines: Sequence[str]) -> bool | None:
    """Whether the daemon runs, from the service manager's lines as service.status() words
    them: systemd "active: active", launchd "<label>.daemon: loaded (state = running, ...)",
    Task Scheduler "task ... Daemon: registered (Status: Running; ...)". None: cannot tell."""
    for line in lines:
        text = line.strip().lower()
        if text.startswith("active:"):
            word = text.removeprefix("active:").strip().split(" ", 1)[0]
            return {"active": True, "reloading": True, "activating": True,
                    "inactive": False, "failed": False, "deactivating": False}.get(word)
        if "daemon" not in text.split(":", 1)[0]:
            continue  # the tray's line
        if "state = running" in text or "status: running" in text:
            return True
        if "not loaded" in text or "not registered" in text or "state =" in text \
                or "status:" in text:
            return False
        return None
    return None


def opened_by(device: str, proc_root: Path = PROC_ROOT) -> tuple[list[tuple[int, str]], int]:
    """(pid, command name) of every process with ``device`` open, and how many processes could
    not be looked into (other users' processes are closed to us unless we are root)."""
    holders: list[tuple[int, str]] = []
    hidden = 0
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return holders, hidden
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except PermissionError:
            hidden += 1
            continue
        except OSError:
            continue  # the process exited while we looked
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target == device:
                holders.append((int(entry.name), _command_name(entry)))
                break
    return sorted(holders), hidden


def _command_name(process: Path) -> str:
    try:
        return (process / "comm").read_text(encoding="utf-8", errors="replace").strip() or "?"
    except OSError:
        return "?"


def _load(path: Path | None) -> Settings:
    return load_settings(config_path=path)


def _control_client() -> StatusClient:
    from faceswap_cam.daemon.control.client import ControlClient

    return ControlClient.from_token_file(timeout=CONTROL_TIMEOUT_S)


# --- the checks --------------------------------------------------------------------------------


def run_checks(
    *,
    video4linux_root: Path | None = None,
    loopback_parameters: Path = V4L2LOOPBACK_PARAMETERS,
    proc_root: Path = PROC_ROOT,
    query: CapsQuery | None = None,
    open_camera: CameraOpener = open_camera,
    gpu_probe: GpuProbe = probe_gpus,
    settings_loader: SettingsLoader = _load,
    config_path: Path | None = None,
    control_client_factory: ClientFactory = _control_client,
    service_probe: ServiceProbe = probe_service,
    version_lookup: VersionLookup = package_version,
    requirements_lookup: Callable[[], dict[str, str]] = model_requirements,
    python_version: tuple[int, int, int] | None = None,
    platform: str | None = None,
    mic_backend: MicBackendFactory | None = None,
) -> list[Check]:
    """Run every check, in report order.

    ``video4linux_root`` is where the kernel lists video devices, cameras and v4l2loopback
    alike (devices.SYSFS_VIDEO4LINUX), ``query`` the VIDIOC_QUERYCAP call; None means the real
    ones. ``config_path`` None reads the default config file, as ``faceswap-cam run`` does.
    """
    platform = sys.platform if platform is None else platform
    version = tuple(sys.version_info[:3]) if python_version is None else python_version
    checks: list[Check] = [_python_check(version)]
    checks += _guarded("packages",
                       lambda: _package_checks(version_lookup, requirements_lookup))

    # Later checks follow the settings (label, device, engine); defaults if they do not load.
    config_check, settings = _config_check(settings_loader, config_path)
    checks.append(config_check)
    checks += _guarded("cameras", lambda: [_camera_check(
        settings, platform, video4linux_root=video4linux_root, query=query,
        opener=open_camera, proc_root=proc_root)])
    checks += _guarded("virtual camera", lambda: _virtual_camera_checks(
        settings, platform, video4linux_root=video4linux_root, query=query,
        parameters=loopback_parameters, proc_root=proc_root))
    checks += _guarded("gpu", lambda: [_gpu_check(settings, gpu_probe)])
    checks += _guarded("plan", lambda: _plan_checks(settings, gpu_probe))
    checks += _guarded("attention", lambda: [_attention_check(settings, gpu_probe)])
    checks += _guarded("weights", lambda: _weights_checks(settings))
    checks += _guarded("mic", lambda: [_mic_check(settings, platform, mic_backend)])
    checks += _guarded("control API", lambda: [_control_check(control_client_factory)])
    checks += _guarded("service", lambda: [_service_check(service_probe)])
    return checks


def _mic_check(settings: Settings, platform: str,
               backend_factory: MicBackendFactory | None) -> Check:
    """FaceSwap Mic: can the sound system carry it, which microphones there are, and (macOS,
    Windows) which loopback driver to install and which microphone to pick in the call app.
    Looks only: nothing is loaded into the sound server."""
    from faceswap_cam.daemon.audio.backend import VIRTUAL_MIC_NAME, AudioDeviceError
    from faceswap_cam.daemon.audio.portable import loopback_driver_advice

    state = "off" if settings.mic == "off" else f"--mic {settings.mic}"
    driver, pick = loopback_driver_advice(platform)
    linux = platform.startswith("linux")
    if backend_factory is None:
        from faceswap_cam.daemon.audio.mic import default_backend

        backend_factory = default_backend
    # Off, a broken sound system is a note; asked for, it is what stands between the user
    # and a voice in sync.
    trouble = WARN if settings.mic == "off" else FAIL
    try:
        backend = backend_factory()
        try:
            inputs = backend.input_names()
            device = VIRTUAL_MIC_NAME if linux else backend.ensure_virtual_mic()
            chosen = None
            if settings.mic not in ("off", "auto"):
                # The backend's own matching, so doctor accepts every name the daemon does.
                try:
                    chosen = backend.resolve_input(settings.mic)
                except AudioDeviceError as exc:
                    return Check("mic", FAIL, f"--mic {settings.mic}: {exc} (microphones: "
                                 f"{', '.join(inputs) or 'none'})",
                                 "pick one of them: faceswap-cam run --mic NAME, or --mic auto")
        finally:
            backend.close()
    except AudioDeviceError as exc:
        fix = exc.fix if linux else f"install {driver}; then pick \"{pick}\" as the " \
            "microphone in the call app"
        return Check("mic", trouble, f"FaceSwap Mic ({state}) cannot run here: {exc}", fix)
    listed = ", ".join(inputs) or "none"
    if chosen is not None and chosen != settings.mic:
        state += f" ({chosen})"
    detail = (f"FaceSwap Mic {state}; in the call app pick the microphone \"{device}\"; "
              f"microphones: {listed}")
    advice = None if settings.mic != "off" else \
        "to keep your voice in sync with the swapped video: faceswap-cam run --mic auto " \
        "(or the tray's FaceSwap Mic item)"
    return Check("mic", PASS, detail, advice)


def _guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """A check that breaks is reported as a FAIL of its own; the other checks still run."""
    try:
        return run()
    except Exception as exc:
        logger.debug("doctor: the %s check raised", name, exc_info=True)
        return [Check(name, FAIL, f"the check could not run: {type(exc).__name__}: {exc}")]


def _python_check(version: Sequence[int]) -> Check:
    text = ".".join(str(part) for part in version)
    if tuple(version[:2]) < MIN_PYTHON:
        return Check("python", FAIL,
                     f"Python {text}; FaceSwap Cam needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
                     "install Python 3.11 or newer and reinstall FaceSwap Cam with it")
    return Check("python", PASS, f"Python {text} ({sys.executable})")


def _package_checks(lookup: VersionLookup,
                    requirements: Callable[[], dict[str, str]]) -> list[Check]:
    found: list[str] = []
    missing: list[str] = []
    for label, distributions in _CORE_PACKAGES:
        versions = [(d, lookup(d)) for d in distributions]
        installed = next(((d, v) for d, v in versions if v is not None), None)
        if installed is None:
            missing.append(distributions[0])
        else:
            found.append(f"{label} {installed[1]}")
    if missing:
        core = Check("packages", FAIL,
                     f"missing: {', '.join(missing)}" + (f" (found {', '.join(found)})"
                                                          if found else ""),
                     f"pip install {' '.join(missing)}")
    else:
        core = Check("packages", PASS, ", ".join(found))

    model_found = [(name, lookup(name)) for name in _MODEL_PACKAGES]
    absent = [name for name, version in model_found if version is None]
    present = ", ".join(f"{name} {version}" for name, version in model_found if version)
    if absent:
        model = Check("model packages", WARN,
                      f"not installed: {', '.join(absent)}: the Wan-Animate engine is "
                      "unavailable, the daemon runs in passthrough", MODELS_EXTRA_FIX)
    else:
        wanted = requirements()
        unmet = unmet_requirements([(name, version) for name, version in model_found
                                    if version], wanted)
        if unmet:
            # An old transformers, say, builds SAM2's mask decoder from the wrong config: the
            # engine would fail to load with an error about an attribute, not a version.
            model = Check("model packages", WARN,
                          f"{', '.join(map(str, unmet))}: the Wan-Animate engine may fail to "
                          "load",
                          upgrade_command(unmet, wanted))
        else:
            model = Check("model packages", PASS, present)
    return [core, model]


def _config_check(loader: SettingsLoader, config_path: Path | None) -> tuple[Check, Settings]:
    path = config_path if config_path is not None else config_file()
    try:
        settings = loader(config_path)
    except ConfigError as exc:
        return (Check("config", FAIL, str(exc),
                      f"edit {path} (or the FACESWAP_CAM_* variable the message names)"),
                Settings())
    variables = sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields
                       if ENV_PREFIX + name.upper() in os.environ)
    detail = str(path) if path.is_file() else f"no config file at {path}: defaults"
    if variables:
        detail += f"; from the environment: {', '.join(variables)}"
    return Check("config", PASS, detail), settings


# cameras


def _camera_check(settings: Settings, platform: str, *, video4linux_root: Path | None,
                  query: CapsQuery | None, opener: CameraOpener, proc_root: Path) -> Check:
    # (index, how the report names it, device node or None off Linux)
    cameras: list[tuple[int | str, str, str | None]] = []
    if platform.startswith("linux"):
        from faceswap_cam.daemon.capture import devices

        found = devices.find_real_cameras(
            devices.SYSFS_VIDEO4LINUX if video4linux_root is None else video4linux_root,
            devices.query_v4l2_caps if query is None else query)
        cameras = [(d.index, f"{d.path} ({d.name or 'unnamed'})", d.path) for d in found]
    else:
        # OpenCV cannot list devices here; index 0 is the camera `--source auto` opens.
        cameras = [(0, "camera 0", None)]
    source = settings.source
    scheme, argument = split_spec(source)
    if scheme not in ("auto", "webcam"):
        listed = ", ".join(label for _, label, _ in cameras) or "none found"
        return Check("cameras", PASS, f"source {source} uses no camera (cameras: {listed})")
    chosen: int | str | None = None  # None: the first camera, as auto picks
    if scheme == "webcam":
        from faceswap_cam.daemon.capture.webcam import webcam_device

        chosen = _known_camera(webcam_device(argument), cameras)
    if not cameras:
        if source == "auto":
            return Check("cameras", WARN, NO_CAMERA,
                         "connect a webcam (v4l2loopback devices are never used as input), "
                         "or run with --source file:PATH")
        return Check("cameras", FAIL, f"no camera found: source {source} cannot start",
                     "connect a webcam, or run with --source auto (the demo scene when there "
                     "is no camera)")
    if chosen is None:
        chosen = cameras[0][0]
    elif chosen not in [index for index, _, _ in cameras]:
        node = chosen if isinstance(chosen, str) and chosen.startswith("/dev/") else None
        cameras.append((chosen, f"camera {chosen} (configured: {settings.source})", node))

    # What the daemon will ask the camera for: the user's size and frame rate.
    size, fps = settings.size, settings.fps
    results: dict[int | str, tuple[bool, int, int, float]] = {}
    lines = []
    for index, label, node in cameras:
        results[index] = opener(index, size, fps)
        lines.append(f"{label}: {_describe_mode(results[index], size, fps, node, proc_root)}")
    good = [index for index, result in results.items() if _is_wanted_mode(result, size, fps)]
    opened = [index for index, result in results.items() if result[0]]
    detail = "\n".join(lines)
    if chosen in good:
        return Check("cameras", PASS, detail)
    others = [index for index in good if index != chosen]
    switch = f"faceswap-cam run --source webcam:{others[0]}" if others else None
    if chosen not in opened:
        return Check("cameras", FAIL, f"camera {chosen}, the one the daemon uses, gives no "
                     f"picture:\n{detail}",
                     switch or "close the app that uses the camera (named above if we can "
                     "see it) and try again, or run with --source demo")
    _, width, height, given_fps = results[chosen]
    slow = (width, height) == size
    match = f"--fps {given_fps:g}" if slow else f"--size {width}x{height}"
    wanted = f"{size[0]}x{size[1]} at {fps:g} fps"
    return Check("cameras", WARN,
                 f"camera {chosen} does not give {wanted}, so frames are "
                 f"{'repeated' if slow else 'scaled'}:\n{detail}",
                 switch or f"use a camera that does {wanted}, or run with {match} to match "
                 "this one")


def _known_camera(device: int | str | None,
                  cameras: Sequence[tuple[int | str, str, str | None]]) -> int | str | None:
    """The listed camera a webcam source's device names (a path to a listed node, also through
    a /dev/v4l/by-id link, is that camera), else the device itself; None for the first."""
    if isinstance(device, str):
        node = os.path.realpath(device)
        return next((index for index, _, path in cameras if path == node), device)
    return device


def _is_wanted_mode(result: tuple[bool, int, int, float], size: tuple[int, int],
                    fps: float) -> bool:
    ok, width, height, given_fps = result
    # fps 0 means the driver does not say; then the size decides.
    return ok and (width, height) == size and (given_fps == 0 or given_fps >= fps - 0.5)


def _describe_mode(result: tuple[bool, int, int, float], size: tuple[int, int], fps: float,
                   node: str | None, proc_root: Path) -> str:
    ok, width, height, given_fps = result
    if ok:
        mode = f"{width}x{height}" + (f" at {given_fps:g} fps" if given_fps
                                      else " (fps unknown)")
        if _is_wanted_mode(result, size, fps):
            return f"{mode}: ok"
        return f"gives {mode} only"
    what = "opens but delivers no frames" if width else "cannot be opened"
    if node is not None:
        holders, _ = opened_by(node, proc_root)
        if holders:
            what += f" (in use by {_list_processes(holders)})"
    return what


def _list_processes(holders: Sequence[tuple[int, str]]) -> str:
    return ", ".join(f"pid {pid} ({command})" for pid, command in holders)


# virtual camera


def _virtual_camera_checks(settings: Settings, platform: str, *,
                           video4linux_root: Path | None, query: CapsQuery | None,
                           parameters: Path, proc_root: Path) -> list[Check]:
    import pyvirtualcam.camera

    from faceswap_cam.daemon.outputs.virtualcam import (
        OBS_CAMERA_NAME,
        VirtualCameraError,
        choose_targets,
    )

    label = settings.virtualcam_label
    if platform.startswith("linux"):
        return _linux_virtual_camera(settings, video4linux_root, query, parameters, proc_root)
    try:
        # The daemon's own choice of backends (and devices) for this platform and settings.
        targets = choose_targets(platform, label=label, device=settings.virtualcam_device,
                                 backend=settings.virtualcam_backend)
    except VirtualCameraError:
        return [Check("virtual camera", WARN, f"no virtual camera is known for {platform}",
                      "set virtualcam_backend to a pyvirtualcam backend")]
    if platform == "darwin":
        detail = (f'macOS uses the OBS Virtual Camera: apps list it as "{OBS_CAMERA_NAME}" '
                  f'(OBS fixes that name; it cannot be "{label}")')
        fix = "install OBS Studio and start its virtual camera once"
    elif platform == "win32":
        detail = (f'Unity Capture registered as "{label}" is used, else the OBS Virtual Camera '
                  f'("{OBS_CAMERA_NAME}")')
        fix = (f'install Unity Capture and register it as "{label}", or install OBS Studio and '
               "start its virtual camera once")
    else:
        detail = f"the {targets[0].backend} backend (virtualcam_backend)"
        fix = "set virtualcam_backend to a pyvirtualcam backend"
    if settings.virtualcam_backend and platform in ("darwin", "win32"):
        detail = f"virtualcam_backend = {settings.virtualcam_backend}; otherwise {detail}"
    backends = set(pyvirtualcam.camera.BACKENDS)
    if any(target.backend in backends for target in targets):
        return [Check("virtual camera", PASS, detail)]
    return [Check("virtual camera", FAIL, f"{detail}; pyvirtualcam has no such backend here",
                  fix)]


def _linux_virtual_camera(settings: Settings, video4linux_root: Path | None,
                          query: CapsQuery | None, parameters: Path,
                          proc_root: Path) -> list[Check]:
    from faceswap_cam.daemon.capture import devices as v4l2
    from faceswap_cam.daemon.outputs.virtualcam import (
        VirtualCameraError,
        choose_targets,
        modprobe_command,
    )

    root = v4l2.SYSFS_VIDEO4LINUX if video4linux_root is None else video4linux_root
    caps = v4l2.query_v4l2_caps if query is None else query
    label, configured = settings.virtualcam_label, settings.virtualcam_device
    devices = {device.path: device.name for device in v4l2.find_loopback_devices(root, caps)}
    reload = f"sudo modprobe -r v4l2loopback && {modprobe_command(label)}"
    try:
        # The device the daemon would open: virtualcam_device, else the first with our label.
        targets = choose_targets("linux", label=label, device=configured,
                                 backend=settings.virtualcam_backend, sysfs_root=root,
                                 query=caps)
    except VirtualCameraError:
        detail = f'no v4l2loopback device labelled "{label}"'
        if devices:
            others = ", ".join(f'{path} ("{name}")' for path, name in devices.items())
            detail += f"; loopback devices with other labels: {others}"
            # Loaded with other labels: modprobe alone would change nothing until it unloads.
            fix = f"{reload}\n{DKMS_HINT}"
        else:
            loaded = parameters.parent.is_dir()
            detail += (" (the v4l2loopback module is loaded but has no devices)" if loaded
                       else " (the v4l2loopback module is not loaded)")
            fix = (f"{reload}\n{DKMS_HINT}" if loaded
                   else f"{modprobe_command(label)}\n{DKMS_HINT}")
        return [Check("virtual camera", FAIL, detail, fix)]
    device = targets[0].device or ""
    if device not in devices:
        # Only a configured device gets here: the daemon takes it whatever it is.
        return [Check("virtual camera", FAIL,
                      f"virtualcam_device = {configured} is not a v4l2loopback device",
                      f"unset virtualcam_device, or create the device:\n"
                      f"{modprobe_command(label)}\n{DKMS_HINT}")]
    how = " (virtualcam_device)" if configured else ""
    checks = [Check("virtual camera", PASS, f'{device} labelled "{devices[device]}"{how}')]
    checks.append(_exclusive_caps_check(device, list(devices).index(device), parameters,
                                        reload))
    holders, hidden = opened_by(device, proc_root)
    detail = (f"{device} is open in {_list_processes(holders)}" if holders
              else f"{device} is not open in any process")
    if hidden:
        detail += f" (the files of {hidden} processes of other users are not visible)"
    checks.append(Check("virtual camera users", PASS, detail))
    return checks


def _exclusive_caps_check(device: str, position: int, parameters: Path, reload: str) -> Check:
    path = parameters / "exclusive_caps"
    try:
        values = [v.strip() for v in path.read_text(encoding="utf-8").split(",") if v.strip()]
    except OSError as exc:
        return Check("exclusive_caps", WARN,
                     f"cannot read {path} ({exc.strerror or exc}): if Chrome, Zoom or Meet "
                     "do not list the camera, exclusive_caps is off", reload)
    # The module parameter is one value per device it created, in creation order, which is
    # the order of the device numbers unless video_nr= was given out of order.
    if position >= len(values):
        return Check("exclusive_caps", WARN,
                     f"{path} has no value for {device} (the device was not created by the "
                     "module's parameters): if Chrome, Zoom or Meet do not list it, recreate it",
                     reload)
    if values[position].upper() in ("Y", "1"):
        return Check("exclusive_caps", PASS, f"on for {device}")
    return Check("exclusive_caps", WARN,
                 f"off for {device}: Chrome, Zoom and Meet may not list the camera "
                 "(close the apps using it before reloading the module)", reload)


# GPU


def _gpu_check(settings: Settings, probe: GpuProbe) -> Check:
    try:
        gpus = probe()
    except ImportError:
        return Check("gpu", WARN, f"torch is not installed: {NO_GPU}", MODELS_EXTRA_FIX)
    if not gpus:
        return Check("gpu", WARN, f"no CUDA GPU: {NO_GPU}",
                     "the swap engine needs a CUDA GPU; if this machine has one, check "
                     "nvidia-smi and that torch is a CUDA build")
    listed = "; ".join(_describe_gpu(gpu) for gpu in gpus)
    wanted = settings.device
    if wanted == "cpu":
        return Check("gpu", WARN, f"{listed}; but device = cpu is configured: {NO_GPU}",
                     "faceswap-cam run --device auto")
    if wanted in ("auto", "cuda"):
        gpu = gpus[0]
    else:
        match = next((g for g in gpus if g.device == wanted
                      or (wanted == "cuda:0" and g.device == "cuda")), None)
        if match is None:
            return Check("gpu", FAIL, f"device {wanted} is configured, but torch sees: {listed}",
                         "faceswap-cam run --device auto")
        gpu = match
    described = _describe_gpu(gpu)
    if settings.engine not in _GPU_ENGINES:
        return Check("gpu", PASS, f"{described}; engine {settings.engine} does not use it")
    if not gpu.memory_bytes:
        return Check("gpu", PASS, f"{described}; cannot tell whether Wan2.2-Animate-14B fits")
    if settings.offload is not Offload.NONE:
        return Check("gpu", PASS, f"{described}; offload {settings.offload.value}: parts of "
                     "the model wait in CPU memory (slower, fits in less GPU memory)")
    dtype = "fp32" if settings.dtype == "fp32" else "bf16" if settings.dtype == "auto" \
        else settings.dtype
    needed = WAN_BF16_BYTES * (2 if dtype == "fp32" else 1)
    if gpu.memory_bytes < needed:
        return Check("gpu", WARN,
                     f"{described}: Wan2.2-Animate-14B in {dtype} needs about "
                     f"{_gib(needed):.0f} GiB without offload", OFFLOAD_FIX)
    return Check("gpu", PASS, f"{described}: enough for Wan2.2-Animate-14B in {dtype} "
                 "without offload")


def _plan_checks(settings: Settings, probe: GpuProbe) -> list[Check]:
    """The capacity plan of each preset on the local GPU (analytic FLOPs: no model built)."""
    from faceswap_cam.models.plan.engines import ENGINE_MODELS, fp8_refused
    from faceswap_cam.models.plan.gpus import gpu_for_name, gpu_names
    from faceswap_cam.models.plan.predict import preset_rows

    try:
        gpus = [g for g in probe() if g.device.startswith("cuda")]
    except ImportError:
        gpus = []
    if not gpus:
        return [Check("plan", WARN, "no CUDA GPU here, so no capacity plan for it",
                      f"faceswap-cam plan --gpu NAME predicts one ({gpu_names()})")]
    gpu = gpu_for_name(gpus[0].name)
    if gpu is None:
        return [Check("plan", WARN, f"{gpus[0].name} is not in the plan's GPU table",
                      f"faceswap-cam plan --gpu NAME for a similar one ({gpu_names()})")]
    engines = [settings.engine] if settings.engine in ENGINE_MODELS else list(ENGINE_MODELS)
    checks = []
    # Each preset's own quantization, unless the user chose one for all.
    quantize = (settings.quantize.value if "quantize" in settings.explicit() else "auto")
    refused = fp8_refused(quantize, gpu)
    if refused and (settings.engine == "auto" or settings.engine in ENGINE_MODELS):
        # A model engine would not load with it: say so, and plan what it can run.
        checks.append(Check("plan quantize", FAIL, refused,
                            "set quantize to int8 (config file, FACESWAP_CAM_QUANTIZE or "
                            "--quantize), or leave it out"))
    if refused:
        quantize = "auto"
    # The user's own person mask wins over each preset's, as the engine applies it.
    person_mask = settings.person_mask.value if "person_mask" in settings.explicit() else None
    for engine in engines:
        for row in preset_rows(gpu, engine, frame_size=settings.size, quantize=quantize,
                               camera_fps=settings.fps, person_mask=person_mask,
                               mode=settings.mode.value,
                               preprocessor=settings.preprocessor.value):
            guesses = [what for what, guessed in (
                ("efficiency", row.assumed_efficiency),
                ("preprocessing efficiency", row.assumed_preprocess_efficiency),
                ("CPU time", row.assumed_host)) if guessed]
            assumed = f", ASSUMED {', '.join(guesses)}" if guesses else ""
            detail = (f"{row.width}x{row.height} L={row.segment_frames} {row.steps} steps "
                      f"{row.quantize}: {row.fps:.1f} swapped fps (cadence {row.cadence}), "
                      f"{row.latency_s:.1f} s capture to screen, {row.memory_gb:.0f} GB on "
                      f"{gpu.key}{assumed}")
            # The card's own memory where torch reports it, else the table's.
            fits = (row.memory_gb * 1e9 <= gpus[0].memory_bytes if gpus[0].memory_bytes
                    else row.fits)
            checks.append(Check(f"plan {engine} {row.preset}", PASS if fits else WARN, detail,
                                None if fits else OFFLOAD_FIX))
    return checks


def _attention_check(settings: Settings, probe: GpuProbe) -> Check:
    """The attention backend the engine runs: the engine's own choice for the device."""
    from faceswap_cam.models.attention import choose_attention_backend

    device = settings.device
    if device == "auto":
        try:
            gpus = probe()
        except ImportError:
            gpus = []
        device = next((g.device for g in gpus if g.device.startswith("cuda")), "cpu")
    choice = choose_attention_backend(device)
    if settings.attention_backend != "auto":
        return Check("attention", PASS, f"{settings.attention_backend}, as configured "
                     f"(auto would choose {choice.name}: {choice.reason})")
    return Check("attention", PASS, f"{choice.name}: {choice.reason}")


def _describe_gpu(gpu: GpuInfo) -> str:
    memory = f", {_gib(gpu.memory_bytes):.1f} GiB" if gpu.memory_bytes else ""
    return f"{gpu.device} {gpu.name}{memory}"


def _gib(size: int) -> float:
    return size / 1024**3


# weights


def weights_needed(settings: Settings, engine: str | None = None
                   ) -> list[tuple[str, str | None]]:
    """(model, what its setting says) for every registered model the engine loads (``engine``,
    else :func:`weights_engine`'s): the engine's own list, so the doctor asks for exactly what
    the engine checks for."""
    from faceswap_cam.models.engine import required_weights

    # The explicit settings: a preset's LoRA is needed only where no LoRA is configured.
    return required_weights(engine or weights_engine(settings),
                            {**settings.model_dump(mode="json"),
                             "explicit": settings.explicit()})


def weights_engine(settings: Settings) -> str:
    """The engine whose weights the doctor asks for: the configured one; for ``auto``, the one
    ``auto`` runs with these settings (:func:`auto_swaps`), else wan-animate (what a plain
    ``models download`` fetches)."""
    return _weights_engine(settings, auto_swaps(settings) if settings.engine == "auto" else None)


def _weights_engine(settings: Settings, swaps: str | None) -> str:
    """:func:`weights_engine` once ``auto`` is judged (``swaps``)."""
    return swaps or (settings.engine if settings.engine != "auto" else "wan-animate")


def auto_swaps(settings: Settings) -> str | None:
    """The engine ``auto`` swaps with, judged by its weights as an engine host judges it (the
    reference comes later); None: it runs in passthrough."""
    from faceswap_cam.daemon.pipeline.app import engine_options
    from faceswap_cam.models.engine import REFERENCE_FROM_CLIENT, EngineError, auto_choice

    try:
        chosen, _ = auto_choice({**engine_options(settings), REFERENCE_FROM_CLIENT: True})
    except EngineError:
        return None
    return None if chosen == "passthrough" else chosen


def _weights_checks(settings: Settings) -> list[Check]:
    from faceswap_cam.models.wan.requirements import WEIGHT_SETTINGS
    from faceswap_cam.models.weights import model_names

    options = settings.model_dump(mode="json")
    swaps = auto_swaps(settings) if settings.engine == "auto" else None
    # What the engine's own list says a setting names (wan2_model for either checkpoint).
    needed = dict(weights_needed(settings, _weights_engine(settings, swaps)))
    shown = f"auto ({swaps} here)" if swaps else settings.engine
    checks = []
    for name in model_names():
        key = WEIGHT_SETTINGS.get(name)
        value = needed.get(name) or (options.get(key) if key else None)
        local = Path(str(value)).expanduser() if value else None
        if local is not None and local.exists():
            checks.append(_local_weights_check(name, local))
        else:
            checks.append(_weights_check(name, set(needed), strict=settings.engine != "auto",
                                         engine=shown))
    return checks


def _local_weights_check(name: str, folder: Path) -> Check:
    """A model setting that names a folder: the engine loads it instead of the download."""
    from faceswap_cam.models.wan import loading as wan_loading
    from faceswap_cam.models.weights import fix_command, get_model

    if get_model(name).layout != "diffusers":
        return Check(f"weights {name}", PASS, f"configured folder {folder}")
    problems = wan_loading.check_folder(folder, name)
    if problems:
        return Check(f"weights {name}", FAIL,
                     f"configured folder {folder} is incomplete:\n" + "\n".join(problems[:5]),
                     fix_command(name))
    return Check(f"weights {name}", PASS, f"configured folder {folder}")


def _weights_check(name: str, needed: set[str], *, strict: bool, engine: str) -> Check:
    from faceswap_cam.models.weights import ProblemKind, fix_command, verify

    check = f"weights {name}"
    report = verify(name)  # quick: sizes and shape, no hashing
    if report.ok:
        return Check(check, PASS, f"{report.path} ({report.files_checked} files, sizes match)")
    if report.usable:
        return Check(check, WARN, f"{report.path} looks complete, but nothing records what was "
                     "downloaded, so only its shape was checked", fix_command(name))
    if any(p.kind is ProblemKind.NOT_DOWNLOADED for p in report.problems):
        detail = f"not downloaded (nothing in {report.path})"
        if name not in needed:
            return Check(check, PASS, f"{detail}; engine {engine} with these settings does "
                         "not use it")
        if strict:
            return Check(check, FAIL, f"{detail}; engine {engine} cannot start without it",
                         fix_command(name))
        return Check(check, WARN, f"{detail}; the daemon runs in passthrough until it is",
                     fix_command(name))
    shown = [str(p) for p in report.problems[:5]]
    if len(report.problems) > len(shown):
        shown.append(f"... and {len(report.problems) - len(shown)} more")
    return Check(check, FAIL, f"{len(report.problems)} problem(s) in {report.path}:\n"
                 + "\n".join(shown), "\n".join(report.fixes) or fix_command(name))


# the running daemon


def _control_check(factory: ClientFactory) -> Check:
    from faceswap_cam.daemon.control.client import ControlError, DaemonNotRunning
    from faceswap_cam.daemon.control.status import StatusError, parse_status

    try:
        client = factory()
        status = parse_status(client.status())
    except DaemonNotRunning as exc:
        reason = f" ({exc.reason})" if exc.reason else ""
        return Check("control API", WARN, f"daemon not running{reason}", DAEMON_FIX)
    except ControlError as exc:
        return Check("control API", FAIL, f"a control file names a daemon, but it does not "
                     f"answer properly: {exc}",
                     "stop the faceswap-cam process if one hangs, then: faceswap-cam run")
    except StatusError as exc:
        return Check("control API", FAIL, f"{client.url}: {exc}",
                     "run the daemon and the doctor from the same FaceSwap Cam installation")
    detail = f"{client.url}: {status.state}, engine {status.engine}"
    if status.state in _HEALTHY_STATES:
        return Check("control API", PASS, detail)
    problems = [text for text in (status.engine_error, status.camera_error,
                                  status.reference_error) if text]
    return Check("control API", WARN, "\n".join([detail, *problems]),
                 "see the daemon's log; restart it with: faceswap-cam run")


def _service_check(probe: ServiceProbe) -> Check:
    try:
        state = probe()
    except (ImportError, AttributeError):
        return Check("service", WARN, SERVICE_UNAVAILABLE)
    except Exception as exc:
        return Check("service", WARN, f"cannot ask the login service: {exc}")
    suffix = f" ({state.detail})" if state.detail else ""
    if not state.installed:
        return Check("service", WARN, "not installed: FaceSwap Cam does not start at login",
                     SERVICE_FIX)
    if state.running is False:
        return Check("service", WARN, f"installed but not running{suffix}", SERVICE_FIX)
    if state.outdated:
        return Check("service", WARN, "installed, but its files differ from what this Python "
                     f"would install (moved venv? newer version?){suffix}", SERVICE_FIX)
    if state.running is None:
        return Check("service", PASS, f"installed (cannot tell whether it runs){suffix}")
    return Check("service", PASS, f"installed and running{suffix}")


# --- the report --------------------------------------------------------------------------------


def exit_code(checks: Sequence[Check]) -> int:
    """1 when any check failed, else 0: warnings do not stop the daemon from running."""
    return 1 if any(check.status == FAIL for check in checks) else 0


def render_text(checks: Sequence[Check]) -> str:
    """One aligned line per check, continuation and ``fix:`` lines under the detail column,
    and a count at the end."""
    width = max((len(check.name) for check in checks), default=0)
    indent = " " * (len(PASS) + 2 + width + 2)
    lines = []
    for check in checks:
        detail = check.detail.splitlines() or [""]
        lines.append(f"{check.status}  {check.name:<{width}}  {detail[0]}".rstrip())
        lines += [f"{indent}{line}" for line in detail[1:]]
        if check.fix:
            first, *rest = check.fix.splitlines()
            lines.append(f"{indent}fix: {first}")
            lines += [f"{indent}     {line}" for line in rest]
    counts = {status: sum(c.status == status for c in checks) for status in (PASS, WARN, FAIL)}
    lines.append(f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed")
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """``{"checks": [{"name", "status", "detail", "fix"}, ...]}``; fix is null when none."""
    return json.dumps({"checks": [
        {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks
    ]}, indent=2)


# --- command line ------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='print {"checks": [{"name", "status", "detail", "fix"}, ...]}')
    parser.add_argument("--config", type=Path,
                        help="check this TOML config file instead of the default one")


def add_doctor_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``doctor [--json] [--config PATH]`` to a CLI's subparsers; dispatch to run_doctor."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor", help="check the camera, virtual camera, GPU, weights, config and daemon",
        description="Check everything FaceSwap Cam depends on and say how to fix what is "
        "wrong. Exit status 1 when any check FAILs.")
    _add_arguments(parser)
    return parser


def run_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(config_path=getattr(args, "config", None))
    if getattr(args, "json", False):
        print(render_json(checks))  # noqa: T201
    else:
        print(render_text(checks))  # noqa: T201
    return exit_code(checks)


def main(argv: Sequence[str] | None = None) -> int:
    """``faceswap-cam doctor`` on its own (``python -m faceswap_cam.daemon.ops.doctor``)."""
    parser = argparse.ArgumentParser(prog="faceswap-cam doctor",
                                     description="Check everything FaceSwap Cam depends on.")
    _add_arguments(parser)
    return run_doctor(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
