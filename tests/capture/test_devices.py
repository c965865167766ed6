"""The V4L2 device listing in a fake sysfs tree: real cameras for input, loopback for output."""

from __future__ import annotations

from pathlib import Path

from faceswap_cam.daemon.capture.devices import (
    find_loopback_devices,
    find_real_cameras,
    list_v4l2_devices,
)


def fake_sysfs(tmp_path: Path) -> Path:
    """/sys/class/video4linux with a USB camera (+ its metadata node) and a loopback device."""
    devices = tmp_path / "devices"
    cls = tmp_path / "class"
    cls.mkdir()
    for node, name, parent in (("video0", "Integrated Camera", "pci0000:00/usb1/1-1"),
                               ("video1", "Integrated Camera", "pci0000:00/usb1/1-1"),
                               ("video2", "FaceSwap Cam", "virtual/video4linux")):
        real = devices / parent / node
        real.mkdir(parents=True)
        (real / "name").write_text(name + "\n")
        (cls / node).symlink_to(real)
    return cls


CAPS = {"/dev/video0": ("uvcvideo", True), "/dev/video1": ("uvcvideo", False),
        "/dev/video2": ("v4l2 loopback", True)}


def test_auto_never_picks_a_loopback_device(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path)
    devices = list_v4l2_devices(sysfs, CAPS.get)
    assert [(d.node, d.is_loopback) for d in devices] == [
        ("video0", False), ("video1", False), ("video2", True)]
    cameras = find_real_cameras(sysfs, CAPS.get)
    assert [c.path for c in cameras] == ["/dev/video0"]  # not the metadata node, not loopback
    # When the driver cannot be queried, a node under /sys/devices/virtual is still loopback.
    unknown = find_real_cameras(sysfs, lambda path: None)
    assert [c.path for c in unknown] == ["/dev/video0", "/dev/video1"]


def test_loopback_outputs_come_from_the_same_listing(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path)
    assert [(d.path, d.name) for d in find_loopback_devices(sysfs, CAPS.get)] == [
        ("/dev/video2", "FaceSwap Cam")]
    # A node that says it is v4l2loopback counts wherever sysfs puts it.
    assert [d.path for d in find_loopback_devices(
        sysfs, {**CAPS, "/dev/video0": ("v4l2 loopback", False)}.get)] == [
        "/dev/video0", "/dev/video2"]
    assert find_loopback_devices(tmp_path / "absent", CAPS.get) == []
