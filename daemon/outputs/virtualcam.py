"""The virtual camera output: frames published through pyvirtualcam as "FaceSwap Cam".

Which device and backend to use depends on the platform:

* Linux: the v4l2loopback device whose card label is the configured label, found by
  the capture layer's V4L2 device listing (capture/devices.py).
  Without one we say exactly which ``modprobe`` line creates it.
* Windows: Unity Capture registered under the label, else OBS Virtual Camera.
* macOS: only OBS Virtual Camera exists, and OBS fixes its name.

Everything inside the daemon is BGR; pyvirtualcam is told so (``PixelFormat.BGR``) or, in
YUYV mode, we convert with OpenCV ourselves because some apps reject the I420 that the
backend produces by default.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyvirtualcam
import pyvirtualcam.camera

from faceswap_cam.daemon.capture.devices import (
    SYSFS_VIDEO4LINUX,
    CapsQuery,
    find_loopback_devices,
    query_v4l2_caps,
)
from faceswap_cam.daemon.config import VIRTUAL_CAMERA_LABEL, VirtualCameraFormat
from faceswap_cam.daemon.frames import check_bgr_frame
from faceswap_cam.daemon.outputs.base import Sink, SinkContext, SinkError, Tick
from faceswap_cam.daemon.pipeline.overlay import draw_ai_badge

logger = logging.getLogger(__name__)

#: OBS registers its camera under this name and offers no way to change it.
OBS_CAMERA_NAME = "OBS Virtual Camera"

_V4L2_BACKEND = "v4l2loopback"
_UNITY_BACKEND = "unitycapture"
_OBS_BACKEND = "obs"

#: What the badge marks: frames made by the engine (a held frame is the last swapped one).
#: The camera passed through, cards and the paused card are not altered.
AI_ALTERED_KINDS = frozenset({"swapped", "held"})


class VirtualCameraError(SinkError):
    """The virtual camera cannot be found, opened or written; the message says what to do."""


@dataclass(frozen=True, slots=True)
class CameraTarget:
    """One pyvirtualcam backend to try, with the device it should open (None: its default)."""

    backend: str
    device: str | None


def modprobe_command(label: str = VIRTUAL_CAMERA_LABEL) -> str:
    """The command that creates a v4l2loopback device with card label ``label``."""
    # exclusive_caps=1 makes the device advertise capture only once a writer is attached,
    # which Chrome and other WebRTC apps need to list it as a camera at all.
    return f'sudo modprobe v4l2loopback devices=1 card_label="{label}" exclusive_caps=1'


def find_loopback_device(label: str = VIRTUAL_CAMERA_LABEL,
                         sysfs_root: Path = SYSFS_VIDEO4LINUX,
                         query: CapsQuery = query_v4l2_caps) -> str:
    """The ``/dev/videoN`` whose card label is ``label``; raises with the fix if none is."""
    devices = find_loopback_devices(sysfs_root, query)
    matches = [device.path for device in devices if device.name == label]
    if matches:
        if len(matches) > 1:
            logger.info("several devices are labelled %r (%s); using %s", label,
                        ", ".join(matches), matches[0])
        return matches[0]
    lines = [
        f'no virtual camera device labelled "{label}" was found in {sysfs_root}.',
        "Create it with:",
        f"    {modprobe_command(label)}",
        "If modprobe cannot find the module, install the v4l2loopback-dkms package first "
        "(e.g. sudo apt install v4l2loopback-dkms) and run the command again.",
    ]
    if devices:
        others = ", ".join(f'{device.path} ("{device.name}")' for device in devices)
        lines.append(f"Loopback devices with other labels exist: {others}. If v4l2loopback is "
                     "already loaded, unload it first (sudo modprobe -r v4l2loopback), or pick "
                     "one of these with virtualcam_device=/dev/videoN.")
    raise VirtualCameraError("\n".join(lines))


def choose_targets(platform: str, *, label: str = VIRTUAL_CAMERA_LABEL,
                   device: str | None = None, backend: str | None = None,
                   sysfs_root: Path = SYSFS_VIDEO4LINUX,
                   query: CapsQuery = query_v4l2_caps) -> list[CameraTarget]:
    """The backends to try, in order, on ``platform`` (a ``sys.platform`` value).

    An explicit ``device`` or ``backend`` narrows the choice but never skips the platform's
    rules for the other one, so a fake backend exercises the same path as the real one.
    """
    if platform.startswith("linux"):
        path = device or find_loopback_device(label, sysfs_root, query)
        return [CameraTarget(backend or _V4L2_BACKEND, path)]
    if platform == "win32":
        if backend is not None:
            return [CameraTarget(backend, device or _default_device(backend, label))]
        # Unity Capture can carry our own name; OBS is the fallback many people already have.
        return [CameraTarget(_UNITY_BACKEND, device or label),
                CameraTarget(_OBS_BACKEND, device or OBS_CAMERA_NAME)]
    if platform == "darwin":
        chosen = backend or _OBS_BACKEND
        if chosen == _OBS_BACKEND:
            logger.info('on macOS the virtual camera is named "%s" by OBS and cannot be "%s"',
                        OBS_CAMERA_NAME, label)
        return [CameraTarget(chosen, device or _default_device(chosen, label))]
    if backend is not None:
        return [CameraTarget(backend, device)]
    raise VirtualCameraError(f"no virtual camera backend is known for platform {platform!r}; "
                             "set virtualcam_backend to a pyvirtualcam backend")


def _default_device(backend: str, label: str) -> str | None:
    if backend == _OBS_BACKEND:
        return OBS_CAMERA_NAME
    if backend == _UNITY_BACKEND:
        return label
    return None


def _describe_failure(platform: str, label: str, errors: list[str]) -> str:
    reasons = "\n".join(f"  {error}" for error in errors)
    if platform == "win32":
        hint = (f'Install Unity Capture and register its camera as "{label}" '
                f"(its installer asks for the name), or install OBS Studio and start its "
                f'virtual camera once so that "{OBS_CAMERA_NAME}" exists.')
    elif platform == "darwin":
        hint = (f'Install OBS Studio and start its virtual camera once so that '
                f'"{OBS_CAMERA_NAME}" exists.')
    elif platform.startswith("linux"):
        hint = (f"Check that the device exists and no other program writes to it; to create "
                f"one: {modprobe_command(label)}")
    else:
        hint = "Check the virtualcam_backend and virtualcam_device settings."
    return f"cannot open the virtual camera:\n{reasons}\n{hint}"


class VirtualCameraSink(Sink):
    """Publishes the output as a system camera that video-call apps can pick."""

    def __init__(
        self,
        *,
        label: str = VIRTUAL_CAMERA_LABEL,
        device: str | None = None,
        backend: str | None = None,
        pixel_format: str = VirtualCameraFormat.I420,
        overlay: bool = False,
        ai_badge: bool = False,
        sysfs_root: Path = SYSFS_VIDEO4LINUX,
        query: CapsQuery = query_v4l2_caps,
        platform: str | None = None,
    ) -> None:
        try:
            self.pixel_format = VirtualCameraFormat(str(pixel_format).lower())
        except ValueError:
            allowed = " | ".join(member.value for member in VirtualCameraFormat)
            raise VirtualCameraError(f"virtualcam_format {pixel_format!r} is not one of "
                                     f"{allowed}") from None
        self.label = label
        self.overlay = overlay
        #: Mark swapped frames "AI altered" (switched at run time; read once per frame).
        self.ai_badge = ai_badge
        self.sysfs_root = sysfs_root
        self.query = query
        self.platform = sys.platform if platform is None else platform
        self._requested_device = device or None
        self._requested_backend = backend or None
        self._camera: Any = None  # pyvirtualcam.Camera; untyped upstream
        self._device: str | None = None
        self._backend: str | None = None
        self._size: tuple[int, int] | None = None
        # send() runs in the sink's worker thread and close() in the stopping one: the lock
        # keeps close() from freeing the backend in the middle of a frame.
        self._lock = threading.Lock()
        self.frames = 0

    @classmethod
    def from_context(cls, arg: str, context: SinkContext) -> VirtualCameraSink:
        """Build from ``virtualcam[:DEVICE]`` and the settings; ``DEVICE`` beats the setting."""
        options = context.options
        fmt = options.get("virtualcam_format") or VirtualCameraFormat.I420
        return cls(
            label=options.get("virtualcam_label") or VIRTUAL_CAMERA_LABEL,
            device=arg.strip() or options.get("virtualcam_device") or None,
            backend=options.get("virtualcam_backend") or None,
            pixel_format=str(fmt),
            overlay=bool(options.get("overlay_output", False)),
            ai_badge=bool(options.get("ai_badge", False)),
        )

    @property
    def device(self) -> str | None:
        """The device in use once open; before that the one asked for, if any."""
        return self._device if self._device is not None else self._requested_device

    @property
    def backend(self) -> str | None:
        """The pyvirtualcam backend in use once open; before that the one asked for, if any."""
        return self._backend if self._backend is not None else self._requested_backend

    @property
    def is_open(self) -> bool:
        return self._camera is not None

    @property
    def description(self) -> str:
        device = self.device
        return f"virtualcam:{device}" if device else "virtualcam"

    def open(self, size: tuple[int, int], fps: float) -> None:
        width, height = size
        if self.pixel_format is VirtualCameraFormat.YUYV and (width % 2 or height % 2):
            # YUYV shares one chroma pair between two pixels of a row.
            raise VirtualCameraError(f"YUYV needs an even frame size, got {width}x{height}")
        targets = choose_targets(self.platform, label=self.label,
                                 device=self._requested_device,
                                 backend=self._requested_backend, sysfs_root=self.sysfs_root,
                                 query=self.query)
        fmt = (pyvirtualcam.PixelFormat.YUYV if self.pixel_format is VirtualCameraFormat.YUYV
               else pyvirtualcam.PixelFormat.BGR)
        self.close()
        errors: list[str] = []
        for target in targets:
            registered = pyvirtualcam.camera.BACKENDS
            if target.backend not in registered:
                # Checked here because pyvirtualcam would fail with a bare KeyError.
                known = ", ".join(sorted(registered)) or "none"
                errors.append(f"'{target.backend}' backend: not available on this system "
                              f"(available: {known})")
                continue
            try:
                camera = pyvirtualcam.Camera(width, height, fps, fmt=fmt, device=target.device,
                                             backend=target.backend)
            except Exception as exc:
                # pyvirtualcam already prefixes each reason with the backend's name.
                errors.append(str(exc).strip() or f"'{target.backend}' backend: "
                              f"{type(exc).__name__}")
                continue
            with self._lock:
                self._camera = camera
                self._backend = str(camera.backend)
                self._device = str(camera.device)
                self._size = (width, height)
            logger.info("virtual camera open: %s (backend %s, %dx%d at %g fps, sending %s)",
                        self._device, self._backend, width, height, fps, fmt.name)
            return
        raise VirtualCameraError(_describe_failure(self.platform, self.label, errors))

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        try:
            check_bgr_frame(pixels, self._size)
        except (TypeError, ValueError) as exc:
            raise VirtualCameraError(f"virtual camera {self.device}: {exc}") from exc
        if self.ai_badge and tick.kind in AI_ALTERED_KINDS:
            # Here, not in the publisher: the preview and its overlay never carry the badge.
            pixels = draw_ai_badge(pixels)
        if self.pixel_format is VirtualCameraFormat.YUYV:
            data = cv2.cvtColor(pixels, cv2.COLOR_BGR2YUV_YUY2)
        else:
            data = pixels
        with self._lock:
            camera = self._camera
            if camera is None:
                raise VirtualCameraError("virtual camera is not open")
            try:
                # A live camera shows the newest frame; repeats for missed ticks would only
                # add delay, so tick.repeat is deliberately ignored.
                camera.send(data)
            except Exception as exc:
                raise VirtualCameraError(
                    f"virtual camera {self._device} ({self._backend}) failed: {exc}") from exc
            self.frames += 1

    def close(self) -> None:
        with self._lock:
            camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.close()
        except Exception as exc:
            raise VirtualCameraError(
                f"closing virtual camera {self._device} ({self._backend}) failed: {exc}"
            ) from exc
        logger.info("virtual camera closed: %s after %d frames", self._device, self.frames)
