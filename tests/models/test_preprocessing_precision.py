"""On a GPU the detector's and the pose model's float32 products run on TF32 tensor cores, as
Wan-Animate's own preprocessing (onnxruntime's CUDA provider, TF32 by default) runs them, and
only around their forwards: PyTorch's process-wide switch is put back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from faceswap_cam.models.preprocessing import person as person_module
from faceswap_cam.models.preprocessing import pose as pose_module
from faceswap_cam.models.preprocessing.precision import tf32_matmuls
from tests.tiny_preprocessing import save_tiny_rtdetr, save_tiny_vitpose

torch = pytest.importorskip("torch")


def precision() -> str:
    return str(torch.backends.cuda.matmul.fp32_precision)


def test_tf32_is_on_inside_on_cuda_only_and_put_back_as_it_was() -> None:
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has only the legacy switch (tested below)")
    before = precision()
    with tf32_matmuls("cuda"):
        assert precision() == "tf32"
    assert precision() == before
    with tf32_matmuls(torch.device("cuda", 0)):
        assert precision() == "tf32"
    for elsewhere in ("cpu", "meta", torch.device("cpu")):
        with tf32_matmuls(elsewhere):
            assert precision() == before
    with pytest.raises(RuntimeError, match="boom"), tf32_matmuls("cuda"):
        raise RuntimeError("boom")
    assert precision() == before
    # A setting the user made stays theirs.
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        with tf32_matmuls("cuda"):
            assert precision() == "tf32"
        assert precision() == "ieee"
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def test_a_torch_with_only_the_legacy_switch_gets_that_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch before 2.9 has only ``allow_tf32``; reading the new attribute there must not
    be tried (nor the legacy one, where the new one exists: see the module doc)."""
    legacy = SimpleNamespace(allow_tf32=False)
    monkeypatch.setattr(torch.backends.cuda, "matmul", legacy)
    seen = []
    with tf32_matmuls("cuda"):
        seen.append(legacy.allow_tf32)
    seen.append(legacy.allow_tf32)
    legacy.allow_tf32 = True  # the user's own choice stays
    with tf32_matmuls("cuda"):
        pass
    seen.append(legacy.allow_tf32)
    assert seen == [True, False, True]


class Spy:
    """Stands in for tf32_matmuls and records, for each model call, whether it was inside."""

    def __init__(self) -> None:
        self.inside = False
        self.devices: list[Any] = []
        self.calls_inside: list[bool] = []

    @contextlib.contextmanager
    def __call__(self, device: Any) -> Iterator[None]:
        self.devices.append(device)
        self.inside = True
        try:
            yield
        finally:
            self.inside = False

    def wrap(self, model: Any) -> None:
        forward = model.forward

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls_inside.append(self.inside)
            return forward(*args, **kwargs)

        model.forward = recorded


def test_the_pose_models_forward_runs_inside(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    estimator = pose_module.WholeBodyPoseEstimator(save_tiny_vitpose(tmp_path / "pose", 133))
    spy = Spy()
    monkeypatch.setattr(pose_module, "tf32_matmuls", spy)
    spy.wrap(estimator.model)
    frames = [np.zeros((120, 160, 3), np.uint8)] * 2
    estimator.estimate(frames, [(10.0, 10.0, 90.0, 110.0)] * 2)
    assert spy.calls_inside == [True] and spy.devices == [estimator.device]


def test_the_detectors_forward_runs_inside(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_tiny_rtdetr(tmp_path / "detector", {0: "person", 1: "cat"}, v2=True)
    detector = person_module.PersonDetector(str(folder), device="cpu")
    spy = Spy()
    monkeypatch.setattr(person_module, "tf32_matmuls", spy)
    spy.wrap(detector.model)
    detector.detect([np.zeros((48, 64, 3), np.uint8)] * 2)
    assert spy.calls_inside == [True] and spy.devices == [detector.device]
