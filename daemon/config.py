"""The daemon's configuration: one pydantic model, layered file < environment < command line.

Every value says where it came from, so an invalid one fails at start naming the field, the
value, its origin and what is allowed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from faceswap_cam.daemon import paths
from faceswap_cam.daemon.engine_host.address import parse_engine_url, redact
from faceswap_cam.models import defaults
from faceswap_cam.models.batching import MAX_CADENCE
from faceswap_cam.models.presets import PresetName
from faceswap_cam.models.wan2.variants import Wan2Variant

ENV_PREFIX = "FACESWAP_CAM_"
VIRTUAL_CAMERA_LABEL = "FaceSwap Cam"


#: The only hosts the preview and control servers bind to or answer for.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def loopback_host_headers(port: int) -> set[str]:
    """The ``Host`` headers that name a loopback server on ``port`` (a DNS-rebinding page
    would send its own host name instead)."""
    return {f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in LOOPBACK_HOSTS}


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every bad field."""


class Fallback(StrEnum):
    PASSTHROUGH = "passthrough"  # the camera (behind smooth playout's delay) while none is due
    HOLD = "hold"  # repeat the last swapped frame
    PLACEHOLDER = "placeholder"  # a card: never show the real face while swap is on


class Playout(StrEnum):
    LIVE = "live"  # show swapped frames as soon as they arrive
    SMOOTH = "smooth"  # play them at capture cadence behind an adaptive delay


class Offload(StrEnum):
    NONE = "none"
    MODEL = "model"  # whole models move to the GPU when used
    SEQUENTIAL = "sequential"  # layer by layer: least memory, slowest


class Preprocessing(StrEnum):
    WAN = "wan"  # person detector, whole-body pose, face crops, SAM2 masks
    STAND_IN = "stand-in"  # image operations only: checks the pipeline without those models


class EngineHosting(StrEnum):
    AUTO = "auto"  # model engines in a child process, the stand-in engines inside the daemon
    CHILD = "child"  # any engine in a child process (checks the whole host path with `debug`)
    INLINE = "inline"  # the engine in a thread of the daemon


class VirtualCameraFormat(StrEnum):
    I420 = "i420"  # pyvirtualcam's default device format
    YUYV = "yuyv"  # for apps that reject I420


_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class Settings(BaseModel):
    """Everything ``faceswap-cam run`` can be told. Field names are the TOML keys; the
    environment variable is ``FACESWAP_CAM_<FIELD>`` and the flag ``--<field-with-dashes>``."""

    # No infinities or NaN anywhere: `--duration inf` is not a run length.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False,
                              allow_inf_nan=False)

    source: str = Field("auto", description="auto | webcam:N | webcam:auto | file:PATH | demo")
    sinks: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="auto (virtual camera if present, plus preview) | virtualcam | preview "
        "| file:PATH | null; several allowed",
    )
    engine: str = Field("auto", description="auto | passthrough | debug | registered engines")
    engine_delay_ms: float = Field(0.0, ge=0, le=600_000, description="debug engine delay")
    engine_timeout_s: float = Field(60.0, gt=0, le=3600,
                                    description="an engine call longer than this is hung")
    engine_host: EngineHosting = Field(
        EngineHosting.AUTO, description="where the engine runs: auto | child | inline")
    engine_url: str | None = Field(
        None, description="an engine host elsewhere: the URL its pairing line printed")
    engine_token_file: Path | None = Field(
        None, description="a file holding the engine host's token (with engine_url)")
    engine_gpus: int = Field(1, ge=1, le=64, description="GPUs of this machine the local "
                             "engine host splits wan-animate over (a host elsewhere chooses "
                             "its own with `engine serve --gpus N`)")
    cadence: int | None = Field(
        None, ge=1, le=MAX_CADENCE, description="the engine's starting cadence k: every k-th "
        "camera frame is swapped, adapting from there (default: the preset's, else the "
        "capacity plan's for this GPU, else 1)")
    fps: float = Field(30.0, gt=0, le=120)
    size: tuple[int, int] = Field((1280, 720), description="output WIDTHxHEIGHT, even numbers")
    duration: float | None = Field(None, gt=0, description="stop after SECONDS (default: run)")
    fallback: Fallback = Fallback.PASSTHROUGH
    playout: Playout = Playout.SMOOTH
    swap: bool = True
    stale_after_ms: float = Field(
        500.0, ge=0, le=60_000,
        description="a swapped frame this late past its slot gives way to the fallback")
    overlay_output: bool = Field(False, description="burn the stats overlay into the camera")
    mic: str = Field("off", description="FaceSwap Mic, your microphone delayed to match the "
                     "swapped video: auto (the system's microphone) | NAME | off")
    mic_max_delay_s: float = Field(
        8.0, ge=0.5, le=60, description="the longest voice delay FaceSwap Mic follows; its "
        "buffer holds this much audio (8 s: 1.5 MB)")
    ai_badge: bool = Field(False, description="mark the virtual camera's swapped frames as "
                           "AI-altered with a small corner badge")
    preview_host: str = "127.0.0.1"
    preview_port: int = Field(8765, ge=0, le=65535, description="0 picks a free port")
    preview_fps: float = Field(15.0, gt=0, le=60)
    virtualcam_label: str = VIRTUAL_CAMERA_LABEL
    virtualcam_device: str | None = Field(None, description="/dev/videoN or a camera name")
    virtualcam_backend: str | None = Field(None, description="pyvirtualcam backend name")
    virtualcam_format: VirtualCameraFormat = VirtualCameraFormat.I420
    log_level: str = Field("INFO", description="DEBUG | INFO | WARNING | ERROR")
    control_api: bool = Field(True, description="serve the local control API (tray, CLI)")
    control_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")

    # The reference face and the Wan-Animate engine (shared by `run` and `render`).
    preset: PresetName | None = Field(
        None, description="quality | balanced | live: the engine's bundle of steps, segment, "
        "carry, generation size, LoRA and shift; any of those set as well keeps its value "
        "(default: none, the settings as they are)")
    reference: Path | None = Field(None, description="image of the character to become")
    wan_model: str = Field(defaults.WAN_ANIMATE_REPO,
                           description="diffusers folder or downloaded repo id")
    wan2_model: str | None = Field(None, description="wan-animate-2: a diffusers folder or "
                                   "repo id (default: the downloaded checkpoint of "
                                   "wan2_variant)")
    wan2_variant: Wan2Variant | None = Field(
        None, description="wan-animate-2's checkpoint: base (40 steps with guidance) | "
        "distilled (10 steps); default: the preset's, else distilled")
    mode: defaults.WanMode = defaults.WanMode(defaults.MODE)
    steps: int = Field(defaults.STEPS, ge=1, le=100, description="denoising steps per segment")
    segment_frames: int = Field(defaults.SEGMENT_FRAMES, ge=5, le=161,
                                description="segment length L = 4n+1")
    carry: int = Field(defaults.CARRY, description="frames carried between segments: "
                       + " or ".join(map(str, defaults.CARRY_CHOICES)))
    seed: int = Field(defaults.SEED, ge=0)
    prompt: str = defaults.PROMPT
    device: str = Field("auto", description="auto | cuda | cuda:N | mps | cpu")
    dtype: str = Field("auto", description="auto | bf16 | fp16 | fp32")
    vae_fp32: bool = False
    offload: Offload = Offload.NONE
    vae_tiling: bool = False
    attention_backend: str = Field(
        defaults.ATTENTION_BACKEND, description="auto (FlashAttention-3 or SageAttention where "
        "installed and supported, else native) | a diffusers backend: native, flash, sage, ...")
    quantize: defaults.Quantize = Field(
        defaults.Quantize(defaults.QUANTIZE), description="the transformer's weights: none | "
        "fp8 (compute capability 8.9+) | int8 (any GPU, the CPU too)")
    compile: bool = False
    loras: list[str] = Field(default_factory=list, description="LoRA files, PATH[:SCALE]")
    shift: float | None = Field(None, gt=0, description="scheduler flow shift")
    gen_size: tuple[int, int] | None = Field(
        None, description="generation WIDTHxHEIGHT, multiples of 16 "
        f"(default: {defaults.GEN_SHORT_SIDE}p)")
    # Wan-Animate's preprocessing models (repo ids are downloaded by `models download`).
    detector_model: str = Field(defaults.DETECTOR_REPO, description="person detector")
    pose_model: str = Field(defaults.POSE_REPO, description="whole-body pose model")
    sam2_model: str = Field(defaults.SAM2_REPO, description="SAM2 video model")
    preprocessor: Preprocessing = Preprocessing(defaults.PREPROCESSOR)
    colour_match: bool = Field(False, description="match the swapped person's colours to the "
                               "room")
    feather_px: int = Field(defaults.FEATHER_PX, ge=0, le=64,
                            description="soft edge of the composited person")
    gen_window: defaults.GenWindow = Field(
        defaults.GenWindow(defaults.GEN_WINDOW), description="replace mode generates a window "
        "around the person (person) or the whole frame (frame)")
    person_mask: defaults.PersonMask = Field(
        defaults.PersonMask(defaults.PERSON_MASK), description="replace mode's person mask: "
        "SAM2's tracked person (sam2, Wan's recipe) or the detector's box (box, no SAM2)")

    @field_validator("size", "gen_size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _SIZE.match(value)
            if not match:
                raise ValueError("must be WIDTHxHEIGHT, e.g. 1280x720")
            return int(match[1]), int(match[2])
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        width, height = value
        if not (16 <= width <= 7680 and 16 <= height <= 4320):
            raise ValueError("width must be 16..7680 and height 16..4320")
        if width % 2 or height % 2:
            raise ValueError("width and height must be even (the camera formats need it)")
        return value

    @field_validator("gen_size")
    @classmethod
    def _check_gen_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (value[0] % 16 or value[1] % 16 or min(value) < 16):
            raise ValueError("width and height must be multiples of 16")
        return value

    @field_validator("carry")
    @classmethod
    def _check_carry(cls, value: int) -> int:
        if value not in defaults.CARRY_CHOICES:
            choices = " or ".join(map(str, defaults.CARRY_CHOICES))
            raise ValueError(f"must be {choices} (what Wan-Animate was trained with)")
        return value

    @field_validator("segment_frames")
    @classmethod
    def _check_segment(cls, value: int) -> int:
        if (value - 1) % 4:
            raise ValueError("must be 4n+1 (5, 9, 13, ..., 77)")
        return value

    @field_validator("loras", "sinks", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sinks")
    @classmethod
    def _check_sinks(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one sink is needed")
        return value

    @field_validator("preview_host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value not in LOOPBACK_HOSTS:
            raise ValueError("the preview is served on loopback only: 127.0.0.1, localhost or ::1")
        return value

    @field_validator("engine_url")
    @classmethod
    def _check_engine_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_engine_url(value)  # AddressError (a ValueError) says which form works
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @model_validator(mode="after")
    def _engine_url_needs_a_host(self) -> Settings:
        if self.engine_url and self.engine_host is EngineHosting.INLINE:
            raise ValueError("engine_url runs the engine on a host: it cannot be combined "
                             "with engine_host = inline")
        if self.engine_token_file is not None and not self.engine_url:
            raise ValueError("engine_token_file is the token of an engine host: give "
                             "engine_url too")
        if self.engine_gpus > 1 and (self.engine_url
                                     or self.engine_host is EngineHosting.INLINE):
            raise ValueError("engine_gpus splits the engine of a local child host: a host "
                             "elsewhere takes `engine serve --gpus N` there, and an inline "
                             "engine runs on one device")
        return self

    @model_validator(mode="after")
    def _segment_fits_carry(self) -> Settings:
        if self.segment_frames - self.carry < self.carry:
            raise ValueError(f"segment_frames {self.segment_frames} is too short to carry "
                             f"{self.carry} frames (use 13 or more with carry 5)")
        return self

    @model_validator(mode="after")
    def _preset_fits(self) -> Settings:
        if self.preset is not None:
            from faceswap_cam.models import presets
            from faceswap_cam.models.wan import presets as _wan_presets  # noqa: F401 (registers)

            given = self.model_dump(include=set(presets.PRESET_OPTIONS))
            for engine in {engine for engine, _ in presets.PRESETS}:
                # ValueError names the preset and the setting that does not fit it.
                presets.apply_preset({**given, "preset": self.preset.value,
                                      "explicit": self.explicit()}, engine)
        return self

    def explicit(self) -> list[str]:
        """The settings given in the config file, the environment or on the command line (not
        defaults): a preset never overrides one of these."""
        return sorted(self.model_fields_set)

    @property
    def size_text(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name in Settings.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            values[name] = environ[key]
    return values


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a TOML text file (it is not UTF-8 text; "
                          "is it the right file?)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    # Either top-level keys or a [daemon] table.
    table = data.get("daemon", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [daemon] must be a table")
    return dict(table)


def load_settings(
    cli: Mapping[str, Any] | None = None,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the TOML file, ``FACESWAP_CAM_*`` variables and CLI values (each overriding the
    last) and validate once. ``config_path`` given explicitly must exist."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file not found: {config_path}")
        layers.append((str(config_path), _from_file(config_path)))
    else:
        default = paths.config_file()
        if default.is_file():
            layers.append((str(default), _from_file(default)))
    layers.append(("environment", _from_environment(environ)))
    layers.append(("command line", {k: v for k, v in (cli or {}).items() if v is not None}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, values in layers:
        for key, value in values.items():
            merged[key] = value
            origin[key] = (f"{ENV_PREFIX}{key.upper()}" if where == "environment"
                           else f"--{key.replace('_', '-')}" if where == "command line"
                           else where)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, merged, origin)) from None


def _describe(exc: ValidationError, merged: Mapping[str, Any], origin: Mapping[str, str]) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        if not error["loc"]:
            # A rule across several settings: its message names them.
            lines.append(f"  {error['msg'].removeprefix('Value error, ')}")
            continue
        field = str(error["loc"][0])
        where = origin.get(field, "default")
        if error["type"] == "extra_forbidden":
            known = ", ".join(Settings.model_fields)
            lines.append(f"  {field} (from {where}): unknown setting; known settings: {known}")
            continue
        value = merged.get(field, error.get("input"))
        message = error["msg"].removeprefix("Value error, ")
        allowed = _allowed(field)
        # A token in a value (engine_url's) would reach a service's journal.
        lines.append(f"  {field} = {redact(repr(value))} (from {where}): {message}"
                     + (f" [allowed: {allowed}]" if allowed else ""))
    return "\n".join(lines)


def _allowed(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is None:
        return ""
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return " | ".join(member.value for member in annotation)
    bounds = []
    for meta in info.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{symbol} {bound}")
    return ", ".join(bounds) or (info.description or "")
