"""The wan-animate engine with Wan-Animate's preprocessing, on tiny random models, in the
daemon from a raw camera-like source: person -> pose -> face -> SAM2 -> generate -> composite."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from faceswap_cam.daemon.config import load_settings  # noqa: E402
from faceswap_cam.daemon.outputs.base import Tick  # noqa: E402
from faceswap_cam.daemon.outputs.null import NullSink  # noqa: E402
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp  # noqa: E402
from faceswap_cam.models.preprocessing.person import PersonDetector  # noqa: E402
from faceswap_cam.models.preprocessing.pose import WholeBodyPoseEstimator  # noqa: E402
from faceswap_cam.models.preprocessing.segmentation import PersonMasker  # noqa: E402
from faceswap_cam.models.preprocessing.wan import WanPreprocessor  # noqa: E402
from faceswap_cam.models.wan.engine import WanAnimateEngine  # noqa: E402
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline  # noqa: E402
from tests.tiny_preprocessing import (  # noqa: E402
    save_tiny_rtdetr,
    save_tiny_sam2,
    save_tiny_vitpose,
)
from tests.wan_tiny import HEIGHT, WIDTH, save_tiny_wan_animate  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny-models")
    return {
        "wan": save_tiny_wan_animate(base / "wan"),
        "detector": save_tiny_rtdetr(base / "detector", {0: "person", 1: "chair"}, v2=True),
        "pose": save_tiny_vitpose(base / "pose", 133),
        "sam2": save_tiny_sam2(base / "sam2", object_score=5.0),
    }


def make_engine(tiny: dict[str, Path], *, person_threshold: float, person_mask: str = "sam2",
                **options: Any) -> WanAnimateEngine:
    # Random weights give arbitrary scores: thresholds pin "someone is there" (0) or
    # "nobody is there" (above any score), so both paths are deterministic.
    preprocessor = WanPreprocessor(
        PersonDetector(str(tiny["detector"]), device="cpu", threshold=person_threshold),
        WholeBodyPoseEstimator(tiny["pose"], device="cpu"),
        PersonMasker(tiny["sam2"], device="cpu") if person_mask == "sam2" else None,
        keypoint_threshold=0.0, person_mask=person_mask)
    pipe = load_pipeline(str(tiny["wan"]), LoadOptions(device="cpu"))
    options = {"gen_size": (WIDTH, HEIGHT), **options}
    return WanAnimateEngine(wan_model=str(tiny["wan"]), pipeline=pipe, steps=1, segment_frames=5,
                            carry=1, preprocessor=preprocessor, **options)


def run_daemon(clip: Path, tmp_path: Path, engine: WanAnimateEngine, *, wait_swapped: bool
               ) -> dict[str, Any]:
    reference = tmp_path / "ref.png"
    cv2.imwrite(str(reference), np.full((96, 80, 3), 128, np.uint8))
    settings = load_settings({"source": f"file:{clip}", "engine": "wan-animate",
                              "reference": str(reference), "size": "320x240", "fps": 15,
                              "sinks": ["null"]}, environ={})
    shown = threading.Event()

    class WatchingSink(NullSink):
        def send(self, pixels: np.ndarray, tick: Tick) -> None:
            if tick.kind == ("swapped" if wait_swapped else "passthrough"):
                shown.set()

    app = RealtimeFaceSwapApp(settings, engine_factory=lambda: engine, sinks=[WatchingSink()])
    with app:
        assert app.processor.wait_swapped(9, timeout=120, untouched_too=True), \
            app.processor.last_error
        assert shown.wait(timeout=30)
    stats: dict[str, Any] = app.stats()
    stats["untouched"] = app.processor.frames_untouched
    return stats


@pytest.mark.parametrize("person_mask", ["sam2", "box"])
def test_daemon_swaps_through_the_whole_preprocessing(tiny: dict[str, Path], clip: Path,
                                                       tmp_path: Path, person_mask: str) -> None:
    engine = make_engine(tiny, person_threshold=0.0, person_mask=person_mask)
    preprocessor = engine.preprocessor  # closing the engine lets go of it
    stats = run_daemon(clip, tmp_path, engine, wait_swapped=True)
    assert stats["engine_failures"] == 0, stats["engine_error"]
    assert stats["frames_swapped"] > 0
    assert stats["untouched"] == 0
    timings = preprocessor.timings  # type: ignore[attr-defined]
    assert {"detector", "pose", "face", "skeleton", "mask"} <= set(timings)


def test_the_whole_preprocessing_in_a_window_around_the_person(
        tiny: dict[str, Path], clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """The 320x240 clip generates at 48x32 as a whole frame; the person's window (whatever
    box the random detector gives) is a 32x32 square: detector on the frame, pose, face and
    SAM2 on the window, the result pasted back."""
    engine = make_engine(tiny, person_threshold=0.0, gen_size=None, gen_short_side=HEIGHT)
    made: list[tuple[int, int]] = []
    new_stream = engine._new_stream

    def recorded(width: int, height: int) -> Any:
        made.append((width, height))
        return new_stream(width, height)

    monkeypatch.setattr(engine, "_new_stream", recorded)
    stats = run_daemon(clip, tmp_path, engine, wait_swapped=True)
    assert stats["engine_failures"] == 0, stats["engine_error"]
    assert stats["frames_swapped"] > 0 and stats["untouched"] == 0
    assert made and set(made) == {(WIDTH, HEIGHT)}


def test_only_the_sam2_person_mask_loads_sam2(tiny: dict[str, Path], tmp_path: Path) -> None:
    from faceswap_cam.models.engine import EngineError
    from faceswap_cam.models.wan.engine import create_preprocessor

    options = {"detector_model": str(tiny["detector"]), "pose_model": str(tiny["pose"]),
               "sam2_model": str(tmp_path / "no-sam2-here"), "device": "cpu"}
    boxed = create_preprocessor({**options, "person_mask": "box"})
    assert isinstance(boxed, WanPreprocessor) and boxed.masker is None
    with pytest.raises(EngineError, match="no-sam2-here"):
        create_preprocessor(options)  # sam2 by default: its model is needed
    animated = create_preprocessor({**options, "mode": "animate"})
    assert isinstance(animated, WanPreprocessor) and animated.masker is None


def test_nobody_there_passes_frames_through_and_resets(tiny: dict[str, Path], clip: Path,
                                                       tmp_path: Path) -> None:
    engine = make_engine(tiny, person_threshold=1.01)  # no score reaches it: an empty room
    stats = run_daemon(clip, tmp_path, engine, wait_swapped=False)
    assert stats["engine_failures"] == 0, stats["engine_error"]
    assert stats["frames_swapped"] == 0  # no hallucinated person
    assert stats["untouched"] >= 9
    assert stats["engine_resets"] >= 1


def test_new_references_need_exactly_one_person(tiny: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With the detector's weights present, the library refuses images without exactly one
    person (the tiny detector's thresholds pin 'many' and 'none')."""
    import shutil

    from faceswap_cam.daemon.paths import MODELS_DIR_ENV
    from faceswap_cam.daemon.pipeline.app import detector_person_check
    from faceswap_cam.daemon.references import ReferenceLibrary, ReferenceRejected
    from faceswap_cam.models.preprocessing import person

    models = tmp_path / "models"
    shutil.copytree(tiny["detector"], models / "detector")
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    image = cv2.imencode(".png", np.full((160, 120, 3), 120, np.uint8))[1].tobytes()
    class NobodyAbove(person.PersonDetector):  # the real tiny detector, nothing passes
        def __init__(self, model: str, **kwargs: Any) -> None:
            super().__init__(model, **{**kwargs, "threshold": 1.01})

    class Counted(NobodyAbove):  # the model runs; the count is pinned
        people = 3

        def count_people(self, frame_rgb: np.ndarray, *, min_area: float = 0.02) -> int:
            super().count_people(frame_rgb, min_area=min_area)
            return self.people

    for detector, people, reason in ((NobodyAbove, None, "no person found in the image"),
                                     (Counted, 3, "3 people found: use a photo with exactly"),
                                     (Counted, 1, None)):
        if people is not None:
            Counted.people = people
        monkeypatch.setattr(person, "PersonDetector", detector)
        check = detector_person_check()
        assert check is not None
        library = ReferenceLibrary(tmp_path / f"refs-{detector.__name__}-{people}",
                                   person_check=check)
        if reason is None:
            assert library.add(image, name="someone").name == "someone"
            continue
        with pytest.raises(ReferenceRejected, match=reason):
            library.add(image, name="someone")
        assert library.list() == []
