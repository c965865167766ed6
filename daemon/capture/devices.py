"""The V4L2 device listing: which ``/dev/videoN`` nodes are cameras and which are loopback.

The one place that reads ``/sys/class/video4linux``: the webcam source uses it to find a real
camera (never our own output, which would loop), the virtual camera output to find its
v4l2loopback device, and the doctor to report both.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SYSFS_VIDEO4LINUX = Path("/sys/class/video4linux")
LOOPBACK_DRIVER = "v4l2 loopback"

_VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
_V4L2_CAP_VIDEO_CAPTURE = 0x00000001
_V4L2_CAP_DEVICE_CAPS = 0x80000000

#: (driver name, can capture video) for a device path, None when the node will not say.
CapsQuery = Callable[[str], tuple[str, bool] | None]


def current_platform() -> str:
    # A plain str, so type checkers keep every platform's branch.
    return sys.platform


@dataclass(frozen=True)
class V4L2Device:
    node: str  # "video0"
    name: str  # card label from sysfs
    driver: str  # from VIDIOC_QUERYCAP, "" when unknown
    is_virtual: bool  # lives under /sys/devices/virtual (v4l2loopback does)
    can_capture: bool

    @property
    def path(self) -> str:
        return f"/dev/{self.node}"

    @property
    def index(self) -> int:
        return int(self.node.removeprefix("video"))

    @property
    def is_loopback(self) -> bool:
        return self.driver == LOOPBACK_DRIVER or (self.is_virtual and not self.driver)


def query_v4l2_caps(device_path: str) -> tuple[str, bool] | None:
    """(driver name, can capture video) from VIDIOC_QUERYCAP, or None if the node won't say."""
    import fcntl  # POSIX only; this module must import on Windows too

    try:
        fd = os.open(device_path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(104)
        fcntl.ioctl(fd, _VIDIOC_QUERYCAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    driver = bytes(buf[:16]).split(b"\0", 1)[0].decode(errors="replace")
    capabilities, device_caps = struct.unpack_from("=II", buf, 84)
    caps = device_caps if capabilities & _V4L2_CAP_DEVICE_CAPS else capabilities
    return driver, bool(caps & _V4L2_CAP_VIDEO_CAPTURE)


def list_v4l2_devices(sysfs: Path = SYSFS_VIDEO4LINUX,
                      query: CapsQuery = query_v4l2_caps) -> list[V4L2Device]:
    """Every ``/dev/videoN`` node the kernel lists, in index order."""
    if not sysfs.is_dir():
        return []
    devices = []
    for entry in sysfs.glob("video*"):
        if not entry.name.removeprefix("video").isdigit():
            continue
        try:
            name = (entry / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            name = ""  # the device can vanish between listing and reading
        resolved = str(entry.resolve())
        is_virtual = "/devices/virtual/" in resolved
        caps = query(f"/dev/{entry.name}")
        driver, can_capture = caps if caps is not None else ("", True)
        devices.append(V4L2Device(entry.name, name, driver, is_virtual, can_capture))
    return sorted(devices, key=lambda d: d.index)


def find_real_cameras(sysfs: Path = SYSFS_VIDEO4LINUX,
                      query: CapsQuery = query_v4l2_caps) -> list[V4L2Device]:
    """Capture devices that are not v4l2loopback: capturing our own output would loop."""
    cameras = []
    for device in list_v4l2_devices(sysfs, query):
        if device.is_loopback:
            logger.debug("skipping %s (%s): a v4l2loopback device", device.path, device.name)
        elif device.can_capture:
            cameras.append(device)
    return cameras


def find_loopback_devices(sysfs: Path = SYSFS_VIDEO4LINUX,
                          query: CapsQuery = query_v4l2_caps) -> list[V4L2Device]:
    """The v4l2loopback devices (where a virtual camera can be published), in index order."""
    return [device for device in list_v4l2_devices(sysfs, query) if device.is_loopback]


def auto_webcam_index(sysfs: Path = SYSFS_VIDEO4LINUX,
                      query: CapsQuery = query_v4l2_caps) -> int | None:
    """The first real camera's index, or None when there is none."""
    if current_platform().startswith("linux"):
        cameras = find_real_cameras(sysfs, query)
        return cameras[0].index if cameras else None
    # Elsewhere OpenCV cannot name devices; the first index that opens is the usual camera.
    # Imported here: the webcam module imports this one to find its camera.
    from faceswap_cam.daemon.capture.webcam import camera_opens

    return 0 if camera_opens(0) else None
