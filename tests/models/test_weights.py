"""Weights management against a fake Hub: no test here may reach the network."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from faceswap_cam.daemon.paths import MODELS_DIR_ENV, models_dir
from faceswap_cam.models import weights
from faceswap_cam.models.weights import (
    ModelSpec,
    ProblemKind,
    WeightsError,
    download,
    is_present,
    list_models,
    register_model,
    unavailable_reason,
    verify,
)
from faceswap_cam.models.weights import registry as weights_registry
from faceswap_cam.models.weights.commands import add_models_parser, run_models
from faceswap_cam.models.weights.download import _records_from_info
from faceswap_cam.models.weights.registry import matches_patterns
from faceswap_cam.models.weights.verify import MANIFEST_NAME

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FIX = "faceswap-cam models download --only wan-animate"


def _json(data: object) -> bytes:
    return json.dumps(data, indent=1).encode()


TRANSFORMER_SHARDS = [
    "diffusion_pytorch_model-00001-of-00002.safetensors",
    "diffusion_pytorch_model-00002-of-00002.safetensors",
]

# A tiny repo shaped like Wan-AI/Wan2.2-Animate-14B-Diffusers, plus files we must NOT fetch.
WAN_REPO: dict[str, bytes] = {
    "model_index.json": _json({
        "_class_name": "WanAnimatePipeline",
        "_diffusers_version": "0.36.0",
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanAnimateTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }),
    "transformer/config.json": _json({"_class_name": "WanAnimateTransformer3DModel"}),
    f"transformer/{TRANSFORMER_SHARDS[0]}": b"T1" * 64,
    f"transformer/{TRANSFORMER_SHARDS[1]}": b"T2" * 48,
    "transformer/diffusion_pytorch_model.safetensors.index.json": _json(
        {"weight_map": {"a.weight": TRANSFORMER_SHARDS[0], "b.weight": TRANSFORMER_SHARDS[1]}}),
    "vae/config.json": _json({"_class_name": "AutoencoderKLWan"}),
    "vae/diffusion_pytorch_model.safetensors": b"V" * 80,
    "text_encoder/config.json": _json({"architectures": ["UMT5EncoderModel"]}),
    "text_encoder/model.safetensors": b"E" * 70,
    "image_encoder/config.json": _json({"architectures": ["CLIPVisionModel"]}),
    "image_encoder/model.safetensors": b"I" * 60,
    "tokenizer/tokenizer_config.json": _json({"model_max_length": 512}),
    "tokenizer/special_tokens_map.json": _json({"eos_token": "</s>"}),
    "tokenizer/tokenizer.json": _json({"version": "1.0"}),
    "tokenizer/spiece.model": b"S" * 30,
    "scheduler/scheduler_config.json": _json({"_class_name": "UniPCMultistepScheduler"}),
    "image_processor/preprocessor_config.json": _json({"crop_size": 224}),
    # Not needed by WanAnimatePipeline.from_pretrained: never downloaded.
    ".gitattributes": b"*.safetensors filter=lfs\n",
    "README.md": b"# Wan2.2-Animate\n",
    "assets/figure.png": b"P" * 40,
    "transformer/diffusion_pytorch_model.bin": b"B" * 90,
    "text_encoder/pytorch_model.bin": b"B" * 50,
    "Wan2.2-Animate-14B.pth": b"O" * 90,
}
WANTED = {path for path in WAN_REPO
          if not path.endswith((".bin", ".pth", ".png", ".md", ".gitattributes"))}
LFS_SUFFIXES = (".safetensors", ".model", ".bin", ".pth", ".png")


@dataclass
class FakeLfs:
    size: int
    sha256: str
    pointer_size: int = 134


@dataclass
class FakeSibling:
    rfilename: str
    size: int | None
    blob_id: str | None
    lfs: FakeLfs | None


@dataclass
class FakeInfo:
    sha: str
    siblings: list[FakeSibling]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def siblings_for(files: dict[str, bytes]) -> list[FakeSibling]:
    out = []
    for path, data in files.items():
        if path.endswith(LFS_SUFFIXES):
            lfs = FakeLfs(len(data), hashlib.sha256(data).hexdigest())
            # The blob id of an LFS file hashes its pointer, never its content.
            out.append(FakeSibling(path, len(data), "f" * 40, lfs))
        else:
            out.append(FakeSibling(path, len(data), git_blob_sha1(data), None))
    return out


@dataclass
class FakeHub:
    """model_info + snapshot_download, with the behaviour download relies on: only the selected
    files are written, and files already complete are left alone (resume)."""

    files: dict[str, bytes] = field(default_factory=lambda: dict(WAN_REPO))
    info_error: BaseException | None = None
    download_error: BaseException | None = None
    withhold: frozenset[str] = frozenset()  # files the "connection" never delivers
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def model_info(self, repo_id: str, *, revision: str | None = None,
                   files_metadata: bool = False) -> FakeInfo:
        self.calls.append(("model_info", {"repo_id": repo_id, "revision": revision,
                                          "files_metadata": files_metadata}))
        if self.info_error is not None:
            raise self.info_error
        return FakeInfo(COMMIT, siblings_for(self.files))

    def snapshot_download(self, repo_id: str, *, revision: str | None = None,
                          local_dir: str | Path | None = None,
                          allow_patterns: list[str] | str | None = None) -> str:
        self.calls.append(("snapshot_download", {
            "repo_id": repo_id, "revision": revision, "local_dir": local_dir,
            "allow_patterns": allow_patterns}))
        assert local_dir is not None and isinstance(allow_patterns, list)
        root = Path(local_dir)
        for path, data in self.files.items():
            selected = any(fnmatch.fnmatchcase(path, p) for p in allow_patterns)
            if not selected or path in self.withhold:
                continue
            target = root / path
            if target.is_file() and target.stat().st_size == len(data):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self.written.append(path)
        if self.download_error is not None:
            raise self.download_error
        return str(root)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Models go to tmp_path, never the user's data dir; registrations do not leak; and should
    anything reach for the real Hub it fails at once instead of touching the network."""
    root = tmp_path / "models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Only wan-animate, whose repo the fake hub mimics: these tests are about the mechanism,
    # not about which models the product happens to register.
    monkeypatch.setattr(weights_registry, "_REGISTRY",
                        {"wan-animate": weights_registry.WAN_ANIMATE})
    yield root


@pytest.fixture
def downloaded(isolated: Path) -> Path:
    return download("wan-animate", api=FakeHub())


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="faceswap-cam")
    add_models_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def cli(*argv: str, api: FakeHub | None = None) -> int:
    return run_models(parse("models", *argv), api=api)


def kinds(problems: Sequence[weights.Problem]) -> list[tuple[ProblemKind, str]]:
    return [(p.kind, p.path) for p in problems]


# --------------------------------------------------------------------------- download


def test_download_fetches_only_the_pipeline_files_and_records_a_manifest(isolated: Path) -> None:
    hub = FakeHub()
    path = download("wan-animate", api=hub)

    assert path == isolated / "wan-animate"
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert on_disk == WANTED | {MANIFEST_NAME}
    info_call, snap_call = hub.calls
    assert info_call[1] == {"repo_id": "Wan-AI/Wan2.2-Animate-14B-Diffusers", "revision": None,
                            "files_metadata": True}
    # The transfer is pinned to the commit the manifest describes.
    assert snap_call[1]["revision"] == COMMIT
    assert snap_call[1]["local_dir"] == str(path)

    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["repo_id"] == "Wan-AI/Wan2.2-Animate-14B-Diffusers"
    assert manifest["commit"] == COMMIT
    assert set(manifest["files"]) == WANTED
    shard = manifest["files"][f"transformer/{TRANSFORMER_SHARDS[0]}"]
    assert shard == {"size": 128, "git_sha1": None,
                     "sha256": hashlib.sha256(b"T1" * 64).hexdigest()}
    config = manifest["files"]["vae/config.json"]
    assert config == {"size": len(WAN_REPO["vae/config.json"]), "sha256": None,
                      "git_sha1": git_blob_sha1(WAN_REPO["vae/config.json"])}


def test_progress_false_silences_and_restores_hub_progress_bars() -> None:
    hub_utils = pytest.importorskip("huggingface_hub.utils")
    seen: list[bool] = []

    class Hub(FakeHub):
        def snapshot_download(self, repo_id: str, **kwargs: Any) -> str:
            seen.append(hub_utils.are_progress_bars_disabled())
            return super().snapshot_download(repo_id, **kwargs)

    before = hub_utils.are_progress_bars_disabled()
    download("wan-animate", api=Hub(), progress=False)
    assert seen == [True]
    assert hub_utils.are_progress_bars_disabled() == before


def test_download_resumes_and_refetches_damaged_files(isolated: Path) -> None:
    shard = f"transformer/{TRANSFORMER_SHARDS[1]}"
    with pytest.raises(WeightsError, match="did not complete") as info:
        download("wan-animate", api=FakeHub(withhold=frozenset({shard})))
    assert shard in str(info.value) and FIX in str(info.value)

    folder = isolated / "wan-animate"
    (folder / "vae/diffusion_pytorch_model.safetensors").write_bytes(b"short")
    hub = FakeHub()
    download("wan-animate", api=hub)
    # Only what was missing or damaged moved; complete files were kept.
    assert sorted(hub.written) == sorted([shard, "vae/diffusion_pytorch_model.safetensors"])
    assert verify("wan-animate", deep=True).ok


def test_download_needs_disk_space_and_changes_nothing_without_it(
        isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda _path: SimpleNamespace(total=100, used=90, free=10))
    with pytest.raises(WeightsError, match=r"disk space.*Nothing was changed"):
        download("wan-animate", api=FakeHub())
    assert not isolated.exists()


# --------------------------------------------------------------------------- verify


def test_verify_passes_after_download(downloaded: Path) -> None:
    report = verify("wan-animate", deep=True)
    assert report.ok and report.manifest_found
    assert report.files_checked == len(WANTED)
    assert is_present("wan-animate")
    assert unavailable_reason("wan-animate") is None
    assert cli("verify", "--only", "wan-animate") == 0


def test_missing_file_is_named_with_the_fix(downloaded: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (downloaded / "image_encoder/model.safetensors").unlink()

    report = verify("wan-animate")
    assert kinds(report.problems) == [(ProblemKind.MISSING, "image_encoder/model.safetensors")]
    assert report.problems[0].fix == FIX
    assert not is_present("wan-animate")
    reason = unavailable_reason("wan-animate")
    assert reason is not None and FIX in reason and "image_encoder" in reason

    assert cli("verify") == 1
    out = capsys.readouterr().out
    assert "missing: image_encoder/model.safetensors" in out
    assert f"fix: {FIX}" in out


def test_truncated_file_is_a_size_mismatch(downloaded: Path) -> None:
    shard = downloaded / "transformer" / TRANSFORMER_SHARDS[0]
    shard.write_bytes(shard.read_bytes()[:100])
    report = verify("wan-animate")
    assert kinds(report.problems) == [(ProblemKind.SIZE_MISMATCH,
                                       f"transformer/{TRANSFORMER_SHARDS[0]}")]
    assert "100 bytes on disk, 128 expected" in report.problems[0].detail


def test_deep_verify_catches_same_size_corruption(downloaded: Path) -> None:
    weights_file = downloaded / "text_encoder/model.safetensors"
    weights_file.write_bytes(b"X" * weights_file.stat().st_size)
    config = downloaded / "scheduler/scheduler_config.json"
    config.write_bytes(config.read_bytes().replace(b"UniPC", b"Unipc"))

    assert verify("wan-animate").ok  # sizes alone cannot see it
    report = verify("wan-animate", deep=True)
    assert kinds(report.problems) == [
        (ProblemKind.HASH_MISMATCH, "scheduler/scheduler_config.json"),
        (ProblemKind.HASH_MISMATCH, "text_encoder/model.safetensors"),
    ]
    assert "git blob sha1" in report.problems[0].detail
    assert "sha256" in report.problems[1].detail
    # The hub client would keep a same-size file, so the fix says to delete it first.
    assert str(weights_file) in report.problems[1].fix and FIX in report.problems[1].fix


def test_folder_without_manifest_gets_the_structural_check(downloaded: Path) -> None:
    (downloaded / MANIFEST_NAME).unlink()
    report = verify("wan-animate")
    assert kinds(report.problems) == [(ProblemKind.NO_MANIFEST, MANIFEST_NAME)]
    assert "re-run the download" in report.problems[0].detail
    assert report.problems[0].fix == FIX
    assert is_present("wan-animate")  # a hand-made but complete folder can run

    (downloaded / "transformer" / TRANSFORMER_SHARDS[1]).unlink()
    (downloaded / "vae/diffusion_pytorch_model.safetensors").unlink()
    for path in (downloaded / "image_processor").iterdir():
        path.unlink()
    (downloaded / "image_processor").rmdir()
    problems = kinds(verify("wan-animate").problems)
    assert problems == [
        (ProblemKind.NO_MANIFEST, MANIFEST_NAME),
        (ProblemKind.MISSING, "image_processor/"),
        (ProblemKind.MISSING, f"transformer/{TRANSFORMER_SHARDS[1]}"),
        (ProblemKind.BAD_LAYOUT, "vae"),
    ]
    assert not is_present("wan-animate")

    (downloaded / "model_index.json").unlink()
    assert (ProblemKind.MISSING, "model_index.json") in kinds(verify("wan-animate").problems)


def test_unreadable_or_stale_manifest(downloaded: Path) -> None:
    manifest = downloaded / MANIFEST_NAME
    manifest.write_text("{not json")
    report = verify("wan-animate")
    assert report.problems[0].kind is ProblemKind.BAD_MANIFEST
    assert not report.usable

    download("wan-animate", api=FakeHub())
    spec = weights.get_model("wan-animate")
    register_model(ModelSpec(spec.name, spec.repo_id, (*spec.allow_patterns, "extra/*.json")),
                   replace=True)
    report = verify("wan-animate")
    assert kinds(report.problems) == [(ProblemKind.BAD_MANIFEST, MANIFEST_NAME)]
    assert "selection changed" in report.problems[0].detail


def test_not_downloaded(isolated: Path) -> None:
    report = verify("wan-animate")
    assert kinds(report.problems) == [(ProblemKind.NOT_DOWNLOADED, "")]
    assert not is_present("wan-animate")
    reason = unavailable_reason("wan-animate")
    assert reason is not None
    assert "Wan-AI/Wan2.2-Animate-14B-Diffusers" in reason and FIX in reason


# --------------------------------------------------------------------------- list, location


def test_list_shows_presence_and_size(isolated: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (status,) = list_models()
    assert (status.name, status.present, status.size_bytes) == ("wan-animate", False, 0)
    assert status.path == isolated / "wan-animate"

    path = download("wan-animate", api=FakeHub())
    (status,) = list_models()
    expected = sum(len(WAN_REPO[p]) for p in WANTED)
    expected += (path / MANIFEST_NAME).stat().st_size
    assert status.present and status.size_bytes == expected

    assert cli("list") == 0
    out = capsys.readouterr().out
    assert "wan-animate" in out and "present" in out and str(isolated) in out


def test_models_dir_default_and_override(isolated: Path, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    import platformdirs

    assert models_dir() == isolated
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert weights.model_dir("wan-animate") == tmp_path / "elsewhere" / "wan-animate"
    monkeypatch.delenv(MODELS_DIR_ENV)
    # Only computed, never created: the real user dir is not touched.
    assert models_dir() == Path(platformdirs.user_data_dir("faceswap-cam")) / "models"


# --------------------------------------------------------------------------- CLI


def test_unknown_model_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    hub = FakeHub()
    assert cli("download", "--only", "nope", api=hub) == 2
    assert cli("verify", "--only", "nope") == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "known models: wan-animate" in err
    assert hub.calls == []


def test_models_without_subcommand_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli() == 2
    assert "download, verify, list" in capsys.readouterr().err


def test_parser_options() -> None:
    args = parse("models", "verify", "--only", "wan-animate", "--deep")
    assert (args.command, args.models_command, args.only, args.deep) == (
        "models", "verify", "wan-animate", True)
    args = parse("models", "download", "--no-progress")
    assert (args.only, args.progress) == (None, False)


def test_cli_download_then_verify(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("download", "--only", "wan-animate", api=FakeHub()) == 0
    assert "wan-animate: ready in" in capsys.readouterr().out
    assert cli("verify", "--deep") == 0
    assert "wan-animate: ok" in capsys.readouterr().out


class ConnectError(Exception):
    """Named like httpx's, which is not an OSError: classified by name."""


@pytest.mark.parametrize("error", [
    OSError(101, "Network is unreachable"),
    ConnectionError("connection refused"),
    ConnectError("[Errno -3] Temporary failure in name resolution"),
])
def test_no_network_fails_cleanly_and_changes_nothing(
        isolated: Path, capsys: pytest.CaptureFixture[str], error: Exception) -> None:
    hub = FakeHub(info_error=error)
    assert cli("download", api=hub) == 1
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face Hub (no network?)" in err
    assert "Nothing was changed" in err
    assert not isolated.exists()
    assert [name for name, _ in hub.calls] == ["model_info"]


def test_hub_offline_error_from_huggingface_hub(isolated: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    errors = pytest.importorskip("huggingface_hub.errors")
    error = errors.LocalEntryNotFoundError("cannot find the requested files on the Hub")
    assert cli("download", api=FakeHub(info_error=error)) == 1
    assert "no network?" in capsys.readouterr().err
    assert not isolated.exists()


def test_connection_lost_mid_download_keeps_partial_files(
        isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = FakeHub(withhold=frozenset({"vae/diffusion_pytorch_model.safetensors"}),
                  download_error=ConnectionError("connection reset by peer"))
    assert cli("download", api=hub) == 1
    err = capsys.readouterr().err
    assert "download interrupted" in err and "again to resume" in err and FIX in err
    # The manifest came first, so verify names what is left to fetch.
    assert kinds(verify("wan-animate").problems) == [
        (ProblemKind.MISSING, "vae/diffusion_pytorch_model.safetensors")]


def test_gated_repo_message(isolated: Path) -> None:
    errors = pytest.importorskip("huggingface_hub.errors")

    class Response:
        headers: dict[str, str] = {}
        request = None

    gated = errors.GatedRepoError("403 Client Error", response=Response())
    with pytest.raises(WeightsError, match=r"is gated.*hf auth login.*Nothing was changed"):
        download("wan-animate", api=FakeHub(info_error=gated))


def test_unexpected_errors_are_not_disguised(isolated: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        download("wan-animate", api=FakeHub(info_error=ZeroDivisionError()))


def test_default_api_is_huggingface_hub_hfapi(isolated: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    hub_module = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub_module, "HfApi", FakeHub)
    assert cli("download", "--only", "wan-animate", "--no-progress") == 0
    assert verify("wan-animate").ok


# --------------------------------------------------------------------------- registry


def test_registry_is_extensible(isolated: Path) -> None:
    spec = register_model(ModelSpec(
        name="pose", repo_id="example/vitpose", layout="transformers",
        allow_patterns=("*.json", "*.safetensors"), description="whole-body pose"))
    repo = {"config.json": _json({"model_type": "vitpose"}),
            "model.safetensors": b"W" * 33, "pytorch_model.bin": b"B" * 33}
    hub = FakeHub(files=repo)
    download("pose", api=hub)
    assert hub.calls[0][1]["repo_id"] == "example/vitpose"
    assert verify("pose").ok
    assert [s.name for s in list_models()] == ["pose", "wan-animate"]

    folder = isolated / "pose"
    (folder / MANIFEST_NAME).unlink()
    (folder / "model.safetensors").unlink()
    assert kinds(verify("pose").problems) == [
        (ProblemKind.NO_MANIFEST, MANIFEST_NAME), (ProblemKind.BAD_LAYOUT, ".")]

    with pytest.raises(ValueError, match="already registered"):
        register_model(spec)
    with pytest.raises(ValueError, match="must match"):
        register_model(ModelSpec("Bad Name", "a/b", ("*.json",)))
    with pytest.raises(ValueError, match="must not be empty"):
        register_model(ModelSpec("empty", "a/b", ()))
    with pytest.raises(weights.UnknownModelError, match="known models: pose, wan-animate"):
        verify("nope")


def test_pattern_matching_agrees_with_huggingface_hub() -> None:
    hub_utils = pytest.importorskip("huggingface_hub.utils")
    patterns = list(weights.get_model("wan-animate").allow_patterns)
    paths = [*WAN_REPO, "transformer/sub/x.safetensors", "tokenizer/merges.txt", "x.json"]
    theirs = set(hub_utils.filter_repo_objects(paths, allow_patterns=patterns))
    ours = {p for p in paths if matches_patterns(p, patterns)}
    assert ours == theirs
    assert {p for p in WAN_REPO if p in ours} == WANTED


def test_manifest_from_real_huggingface_hub_metadata_classes(isolated: Path) -> None:
    hf_api = pytest.importorskip("huggingface_hub.hf_api")
    data = WAN_REPO["transformer/config.json"]
    shard = WAN_REPO[f"transformer/{TRANSFORMER_SHARDS[0]}"]
    siblings = [
        hf_api.RepoSibling(rfilename="transformer/config.json", size=len(data),
                           blob_id=git_blob_sha1(data)),
        hf_api.RepoSibling(rfilename=f"transformer/{TRANSFORMER_SHARDS[0]}", size=len(shard),
                           blob_id="f" * 40,
                           lfs=hf_api.BlobLfsInfo(size=len(shard),
                                                  sha256=hashlib.sha256(shard).hexdigest(),
                                                  pointer_size=134)),
    ]
    records = _records_from_info(FakeInfo(COMMIT, siblings), weights.get_model("wan-animate"))
    assert records["transformer/config.json"].git_sha1 == git_blob_sha1(data)
    assert records[f"transformer/{TRANSFORMER_SHARDS[0]}"].sha256 == \
        hashlib.sha256(shard).hexdigest()


def test_plain_download_fetches_only_what_the_default_engine_needs(
        isolated: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A LoRA or another engine's checkpoint is fetched only when named with --only.
    extra = weights_registry.ModelSpec(name="big-alternative", repo_id="someone/else",
                                       allow_patterns=("*.json",), on_request=True)
    monkeypatch.setitem(weights_registry._REGISTRY, "big-alternative", extra)
    hub = FakeHub()
    assert cli("download", api=hub) == 0
    assert {call["repo_id"] for _, call in hub.calls} == {weights_registry.WAN_ANIMATE.repo_id}
    assert "on request only: big-alternative (--only big-alternative)" in capsys.readouterr().out


def test_the_product_marks_its_optional_weights_on_request() -> None:
    # The isolated fixture replaced the registry: look at the real entries.
    assert weights_registry.LIGHTX2V_LORA.on_request
    assert weights_registry.WAN_ANIMATE_2.on_request
    assert weights_registry.WAN_ANIMATE_2_BASE.on_request
    assert not weights_registry.WAN_ANIMATE.on_request


def test_only_wan_animate_2_fetches_a_folder_its_engine_loads(
        isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`models download --only wan-animate-2` from a repo shaped like the tiny checkpoint
    (plus what a repo carries besides): the patterns take exactly the pipeline's files, the
    folder passes the layout check and verify, and wan-animate-2's loader loads it."""
    pytest.importorskip("torch", reason="the model extra (torch) is not installed")
    from faceswap_cam.models.wan.loading import LoadOptions
    from faceswap_cam.models.wan2.loading import load_pipeline
    from faceswap_cam.models.wan2.variants import Wan2Variant
    from tests.wan2_tiny import save_tiny_wan_animate_2

    tiny = save_tiny_wan_animate_2(tmp_path / "tiny", "distilled")
    pipeline_files = {p.relative_to(tiny).as_posix(): p.read_bytes()
                      for p in tiny.rglob("*") if p.is_file()}
    repo = {**pipeline_files, "README.md": b"# Wan-Animate-2\n", ".gitattributes": b"*\n",
            "transformer/diffusion_pytorch_model.bin": b"B" * 40, "assets/demo.png": b"P" * 9}
    spec = weights_registry.WAN_ANIMATE_2
    monkeypatch.setitem(weights_registry._REGISTRY, spec.name, spec)
    hub = FakeHub(files=repo)
    assert cli("download", "--only", "wan-animate-2", api=hub) == 0
    assert {call["repo_id"] for _, call in hub.calls} == {spec.repo_id}
    folder = isolated / "wan-animate-2"
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(pipeline_files) | {MANIFEST_NAME}
    assert weights.check_structure("wan-animate-2", folder) == []
    assert weights.verify("wan-animate-2").ok
    pipe = load_pipeline(str(folder), Wan2Variant.DISTILLED, LoadOptions(device="cpu"))
    assert type(pipe.transformer).__name__ == "WanAnimate2Transformer3DModel"
