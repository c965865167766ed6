"""``faceswap-cam models {download,verify,list}``: the weights commands of the CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from faceswap_cam.daemon.paths import MODELS_DIR_ENV, models_dir
from faceswap_cam.models.weights.download import HubApi, download, human_size
from faceswap_cam.models.weights.registry import (
    UnknownModelError,
    WeightsError,
    default_download_names,
    get_model,
    model_dir,
    model_names,
)
from faceswap_cam.models.weights.verify import disk_size, list_models, verify

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``models {download,verify,list}`` to a CLI's subparsers; dispatch to run_models."""
    known = ", ".join(model_names())
    models: argparse.ArgumentParser = subparsers.add_parser(
        "models", help="download, verify and list model weights",
        description=f"Model weights live in {models_dir()} (set {MODELS_DIR_ENV} to move them). "
        "Nothing is downloaded unless you run `models download`.")
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    dl = commands.add_parser("download", help="download (or resume) model weights")
    dl.add_argument("--only", metavar="NAME", help=f"just this model ({known})")
    dl.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars")
    check = commands.add_parser("verify", help="check the weights on disk (offline)")
    check.add_argument("--only", metavar="NAME", help=f"just this model ({known})")
    check.add_argument("--deep", action="store_true",
                       help="also hash every file against the Hub's checksums (slow)")
    commands.add_parser("list", help="list the models, whether present, size on disk")
    return models


def run_models(args: argparse.Namespace, *, api: HubApi | None = None) -> int:
    """Run a ``models`` subcommand; returns 0 ok, 1 problems or failure, 2 bad usage."""
    command = getattr(args, "models_command", None)
    if command not in ("download", "verify", "list"):
        print("faceswap-cam models: choose one of: download, verify, list",  # noqa: T201
              file=sys.stderr)
        return EXIT_USAGE
    only = getattr(args, "only", None)
    if only is not None:
        try:
            get_model(only)
        except UnknownModelError as exc:
            print(f"faceswap-cam models {command}: {exc}", file=sys.stderr)  # noqa: T201
            return EXIT_USAGE
    if command == "download":
        names = [only] if only is not None else default_download_names()
        if only is None:
            others = [name for name in model_names() if name not in names]
            print("fetching what the default engine needs; on request only: "  # noqa: T201
                  + ", ".join(f"{name} (--only {name})" for name in others))
        return _cli_download(names, progress=getattr(args, "progress", True), api=api)
    if command == "verify":
        # The default set, and any model fetched on request that is on disk.
        names = [only] if only is not None else [
            name for name in model_names()
            if name in default_download_names() or model_dir(name).exists()]
        return _cli_verify(names, deep=getattr(args, "deep", False))
    return _cli_list()


def _cli_download(names: Sequence[str], *, progress: bool, api: HubApi | None) -> int:
    failed = 0
    for name in names:
        try:
            path = download(name, progress=progress, api=api)
        except WeightsError as exc:
            failed += 1
            print(f"faceswap-cam models download: {exc}", file=sys.stderr)  # noqa: T201
            continue
        print(f"{name}: ready in {path} ({human_size(disk_size(path))})")  # noqa: T201
    return EXIT_PROBLEM if failed else EXIT_OK


def _cli_verify(names: Sequence[str], *, deep: bool) -> int:
    bad = 0
    for name in names:
        report = verify(name, deep=deep)
        if report.ok:
            how = "sizes and checksums" if deep else "sizes"
            print(f"{name}: ok ({report.files_checked} files, {how} match) "  # noqa: T201
                  f"in {report.path}")
            continue
        bad += 1
        print(f"{name}: {len(report.problems)} problem(s) in {report.path}")  # noqa: T201
        for problem in report.problems:
            print(f"  {problem}")  # noqa: T201
        for fix in report.fixes:
            print(f"  fix: {fix}")  # noqa: T201
    return EXIT_PROBLEM if bad else EXIT_OK


def _cli_list() -> int:
    print(f"models folder: {models_dir()}")  # noqa: T201
    for status in list_models():
        state = "present" if status.present else "absent "
        print(f"{status.name:<16} {state} {human_size(status.size_bytes):>9}  "  # noqa: T201
              f"{status.repo_id}  {status.path}")
    return EXIT_OK
