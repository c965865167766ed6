"""Wan-Animate on several GPUs of one machine: diffusers' context parallelism (Ulysses).

Every rank holds the whole model and runs the same engine code on the same batch; inside each
transformer forward the patch tokens are split along the sequence across the ranks, each rank
runs the blocks on its share (Ulysses: an all-to-all before and after every self-attention
trades the sequence split for a head split, so attention still sees every token), and the
output projection gathers the whole sequence on every rank again. Everything outside the
transformer (VAE, scheduler, preprocessing) runs whole and identically on every rank; rank 0
alone answers the caller.

diffusers ships no context-parallel plan for ``WanAnimateTransformer3DModel``;
:func:`context_parallel_plan` is ours. What the animate model adds to plain Wan:

* the pose latents are added to the patch embedding before the sequence is flattened, and the
  motion encoder and face encoder turn the face crops into one motion vector per latent frame:
  both happen before ``blocks.0`` and are global, so every rank computes them whole;
* the face adapter (after every ``inject_face_latents_blocks``-th block) is cross-attention of
  each latent frame's tokens to that frame's motion tokens only. Its processor passes the
  context-parallel config to the attention dispatcher, whose Ulysses all-to-all would join the
  frames of different ranks into one sequence; a plan can only split a module's inputs or
  gather its outputs, so instead :class:`ShardedFaceAttention` replaces that processor: it runs
  the stock one locally on the frames this rank's tokens fall in (partial frames at the shard
  edges are padded to whole frames, and the padding is cut off again), no communication.

Three launch helpers serve ``faceswap-cam engine serve --gpus N`` (started torchrun-style,
one process per GPU): :func:`init_distributed` reads the torchrun environment, and
:func:`run_on_all_ranks` (rank 0) / :func:`serve_other_ranks` (ranks 1..N-1) keep the ranks
in lockstep: rank 0 broadcasts each engine call (method name and arguments, numpy frames as
tensors) and every rank then makes it.

This module imports torch at the top: import it only where the model stack is wanted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: The variables torchrun sets and :func:`init_distributed` reads.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: The method name :func:`stop_other_ranks` sends to end :func:`serve_other_ranks`.
STOP = "__stop__"
#: How long the ranks 1..N-1 may wait for rank 0's next call: a host with no daemon connected
#: sends none for hours, and that wait must not count as a hung collective.
IDLE_TIMEOUT = timedelta(days=365)


# --- the process group -----------------------------------------------------------------------

@dataclass(frozen=True)
class RankContext:
    """This process's place in the group and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    #: A gloo group over every rank for the call headers (:func:`broadcast_call`), with
    #: :data:`IDLE_TIMEOUT`: waiting for the next call sleeps on a socket (no GPU kernel
    #: spinning, no timeout), while the work's collectives keep their own timeout. None: the
    #: default group carries the headers too.
    control: Any = None

    @property
    def is_host(self) -> bool:
        """Rank 0 serves the RPC; the other ranks only follow it."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"{name} is not set: start the ranks with torchrun (or set "
                           f"{', '.join(LAUNCH_ENV)} for each process)")
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{name} must be an integer, got {value!r}") from None


def init_distributed(device_type: str | None = None, *,
                     timeout: timedelta = timedelta(minutes=10),
                     own_store: bool = False,
                     store_listen_fd: int | None = None) -> RankContext:
    """Join the process group described by the torchrun environment.

    ``device_type`` ``cuda`` (the default when CUDA is there) uses NCCL and GPU ``LOCAL_RANK``;
    ``cpu`` uses gloo (tests). ``timeout`` bounds each collective of the work: a rank that died
    leaves the others raising instead of waiting forever. Waiting for rank 0's next call is not
    bounded (see :attr:`RankContext.control`).

    ``own_store``: every rank makes the group's store at ``MASTER_ADDR:MASTER_PORT`` itself,
    rank 0 serving it on ``store_listen_fd``, a listening socket its caller bound where only
    the ranks reach it; torch, making its own, binds every interface for the group's whole
    life, where anyone on the network could write into it. All ranks or none: torch prefixes
    the keys of a store it made and not of one it was given.
    """
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise RuntimeError(f"{name} is not set: start the ranks with torchrun (or set "
                               f"{', '.join(LAUNCH_ENV)} for each process)")
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK")
    meeting: dict[str, Any] = {}
    if own_store:
        meeting["store"] = dist.TCPStore(  # type: ignore[attr-defined]
            os.environ["MASTER_ADDR"], _env_int("MASTER_PORT"), world_size,
            is_master=rank == 0, timeout=timeout,
            master_listen_fd=store_listen_fd if rank == 0 else None)
    kind = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(f"local rank {local_rank} has no GPU: this machine has {count}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, timeout=timeout,
                                device_id=device, **meeting)
    elif kind == "cpu":
        device = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout,
                                **meeting)
    else:
        raise ValueError(f"device_type must be cuda or cpu, got {kind!r}")
    control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
    logger.info("rank %d/%d joined on %s", rank, world_size, device)
    return RankContext(rank, world_size, local_rank, device, control)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- the plan ----------------------------------------------------------------------------------

def context_parallel_plan() -> dict[str, Any]:
    """Where the Wan-Animate transformer's sequence is split and gathered (Ulysses).

    * ``rope``: its two outputs (cos, sin; ``(1, S, 1, D)``) are per token: split like the
      tokens, after they were computed for the whole sequence.
    * ``blocks.0`` ``hidden_states`` (``(B, S, C)``): the patch tokens, with the pose embedding
      already added, split on entering the first block; they stay split through every block
      and face adapter.
    * ``proj_out``: gather the sequence after the output projection, so the unpatchify sees
      it whole on every rank.

    Not split: the text + CLIP context (cross-attention keys; every query needs all of them,
    and 257 CLIP tokens do not divide), the timestep (one per sample in Wan 2.1-style
    Animate, so Wan 2.2's per-token ``timestep`` entry does not apply) and the face motion
    vector (global; :class:`ShardedFaceAttention` picks each shard's frames from it).
    """
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


@dataclass
class _Layout:
    """The token layout of the forward in progress, set by the transformer's pre-hook."""

    tokens: int = 0


def _shard_range(tokens: int, degree: int, index: int) -> tuple[int, int]:
    """The tokens shard ``index`` holds, as diffusers' ``EquipartitionSharder`` cuts them."""
    size = tokens // degree
    return index * size, (index + 1) * size


class ShardedFaceAttention:
    """The face adapter's attention on one sequence shard (see the module doc).

    Queries are the shard's tokens, padded at both ends to whole latent frames; keys and
    values are those frames' motion tokens. Each query attends only to its own frame's motion
    tokens, so the padding changes no real row and is cut off afterwards.
    """

    def __init__(self, inner: Any, layout: _Layout, degree: int, group: Any) -> None:
        self.inner = inner  # diffusers' WanAnimateFaceBlockAttnProcessor, kept local
        self.inner._parallel_config = None
        self._layout = layout
        self._degree = degree
        self._group = group

    # The model's set_attention_backend() writes the backend here: hand it to the inner one.
    @property
    def _attention_backend(self) -> Any:
        return self.inner._attention_backend

    @_attention_backend.setter
    def _attention_backend(self, backend: Any) -> None:
        self.inner._attention_backend = backend

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is not None:
            raise NotImplementedError("a face-adapter mask is not supported with context "
                                      "parallelism (Wan-Animate passes none)")
        # As the stock processor cuts them: the tokens in equal runs, one per motion frame.
        per_frame = self._layout.tokens // encoder_hidden_states.shape[1]
        start, stop = _shard_range(self._layout.tokens, self._degree,
                                   dist.get_rank(self._group))
        if hidden_states.shape[1] != stop - start:
            raise RuntimeError(f"face adapter got {hidden_states.shape[1]} tokens, the shard "
                               f"holds {stop - start}")
        first, last = start // per_frame, (stop - 1) // per_frame + 1
        before, after = start - first * per_frame, last * per_frame - stop
        padded = torch.nn.functional.pad(hidden_states, (0, 0, before, after))
        out: torch.Tensor = self.inner(attn, padded, encoder_hidden_states[:, first:last])
        return out[:, before: out.shape[1] - after]


@dataclass
class ContextParallel:
    """The handle :func:`enable_context_parallel` returns.

    ``request_stop()`` (rank 0, any thread) makes the next transformer forward raise
    ``GenerationInterrupted`` on every rank at once. Setting ``pipe._interrupt`` on rank 0
    alone would stop rank 0 while the others wait in the next collective: with context
    parallelism an engine's ``interrupt()`` must call this instead. ``clear_stop()`` before
    the next call.
    """

    context: RankContext
    degree: int
    sync_inputs: bool
    _stop: threading.Event = field(default_factory=threading.Event)
    _hooks: list[Any] = field(default_factory=list)

    def request_stop(self) -> None:
        self._stop.set()

    def clear_stop(self) -> None:
        self._stop.clear()


def enable_context_parallel(transformer: Any, context: RankContext, *,
                            sync_inputs: bool = True) -> ContextParallel:
    """Split ``transformer`` (a ``WanAnimateTransformer3DModel`` on ``context.device``) over
    all ranks of the process group with Ulysses attention. Call it on every rank, after the
    model is on its device and its attention backend is set (one that supports context
    parallelism: ``native``, ``flash``, ``_flash_3``, ``sage``...).

    Needs: heads divisible by the rank count, and per forward a token count (latent frames x
    patches per frame) divisible by it (848x480, L=9: 4 x 1590 tokens: 2, 4 or 8 GPUs).

    ``sync_inputs``: each forward first broadcasts rank 0's tensor inputs (a few MB), so that a
    non-deterministic kernel in the per-rank preprocessing can never feed the ranks different
    latents; the ranks' own outputs are then only used on rank 0.
    """
    from diffusers.models._modeling_parallel import ContextParallelConfig

    degree = context.world_size
    if degree < 2:
        raise ValueError("context parallelism needs at least 2 ranks")
    heads = int(transformer.config.num_attention_heads)
    if heads % degree:
        raise ValueError(f"{heads} attention heads do not split over {degree} ranks")
    if torch.accelerator.device_count() == 0:
        # diffusers' ModelMixin._resolve_parallel_config picks the rank's device as
        # rank % torch.accelerator.device_count(): it cannot run without an accelerator.
        raise RuntimeError("diffusers' context parallelism needs an accelerator (CUDA); "
                           "torch sees none")
    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree),
                                   cp_plan=context_parallel_plan())
    group = transformer._parallel_config.context_parallel_config._flattened_mesh.get_group()
    layout = _Layout()
    for adapter in transformer.face_adapter:
        adapter.set_processor(ShardedFaceAttention(adapter.processor, layout, degree, group))
    handle = ContextParallel(context, degree, sync_inputs)
    hook = transformer.register_forward_pre_hook(
        _pre_forward(handle, layout, transformer.config.patch_size), with_kwargs=True)
    handle._hooks.append(hook)
    logger.info("context parallelism (Ulysses) over %d ranks on %s", degree, context.device)
    return handle


def _pre_forward(handle: ContextParallel, layout: _Layout, patch: tuple[int, int, int]
                 ) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]:
    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        device = handle.context.device
        # One small broadcast per forward: every rank stops at the same step, or none does.
        stop = torch.tensor([int(handle._stop.is_set())], device=device)
        dist.broadcast(stop, src=0)
        if stop.item():
            from faceswap_cam.models.wan.streaming import GenerationInterrupted

            raise GenerationInterrupted("segment interrupted (all ranks)")
        if handle.sync_inputs:
            args = tuple(_broadcast_tensor(a) if torch.is_tensor(a) else a for a in args)
            kwargs = {k: _broadcast_tensor(v) if torch.is_tensor(v) else v
                      for k, v in kwargs.items()}
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        frames, height, width = hidden.shape[2:]
        per_frame = (height // patch[1]) * (width // patch[2])
        layout.tokens = frames // patch[0] * per_frame
        if layout.tokens % handle.degree:
            raise ValueError(f"{layout.tokens} tokens ({frames // patch[0]} latent frames x "
                             f"{per_frame}) do not split over {handle.degree} ranks: "
                             "pick a generation size or segment length that divides")
        return args, kwargs

    return hook


def _broadcast_tensor(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.contiguous()
    dist.broadcast(tensor, src=0)
    return tensor


# --- keeping the ranks in lockstep -------------------------------------------------------------

@dataclass
class _Hole:
    """Where an array was taken out of a broadcast call's arguments."""

    index: int
    shape: tuple[int, ...]
    dtype: str


def _take_arrays(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return _Hole(len(arrays) - 1, tuple(value.shape), value.dtype.str)
    if isinstance(value, (list, tuple)):
        items = [_take_arrays(v, arrays) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: _take_arrays(v, arrays) for k, v in value.items()}
    return value


def _put_arrays(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, _Hole):
        return arrays[value.index]
    if isinstance(value, (list, tuple)):
        items = [_put_arrays(v, arrays) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: _put_arrays(v, arrays) for k, v in value.items()}
    return value


def _holes(value: Any) -> Iterator[_Hole]:
    if isinstance(value, _Hole):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _holes(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _holes(v)


def broadcast_call(context: RankContext, method: str = "", args: tuple[Any, ...] = (),
                   kwargs: dict[str, Any] | None = None
                   ) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Rank 0's ``(method, args, kwargs)`` on every rank (the others pass nothing).

    Numpy arrays anywhere in the arguments (a batch's frames) travel as tensors through the
    collective backend (NVLink with NCCL) instead of being pickled; everything else is pickled
    once by ``broadcast_object_list``.
    """
    arrays: list[np.ndarray] = []
    header: list[Any] = [None]
    if context.is_host:
        header[0] = (method, _take_arrays((args, kwargs or {}), arrays))
    if context.control is None:
        dist.broadcast_object_list(header, src=0, device=context.device)
    else:
        dist.broadcast_object_list(header, src=0, group=context.control,
                                   device=torch.device("cpu"))
    method, skeleton = header[0]
    if not context.is_host:
        arrays = [np.empty(h.shape, np.dtype(h.dtype)) for h in _holes(skeleton)]
    for i, array in enumerate(arrays):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(context.device)
        dist.broadcast(tensor, src=0)
        if not context.is_host:
            arrays[i] = tensor.cpu().numpy()
    call_args, call_kwargs = _put_arrays(skeleton, arrays)
    return method, tuple(call_args), dict(call_kwargs)


def run_on_all_ranks(context: RankContext, target: Any, method: str, *args: Any,
                     **kwargs: Any) -> Any:
    """Rank 0: make ``target.method(*args, **kwargs)`` on every rank; return rank 0's result.

    Calls must come one at a time (the engine host's RPC already serialises them), and every
    method that reaches the transformer must be called this way, or the ranks fall out of step.
    """
    if not context.is_host:
        raise RuntimeError("only rank 0 sends calls; the other ranks run serve_other_ranks()")
    broadcast_call(context, method, args, kwargs)
    return getattr(target, method)(*args, **kwargs)


def serve_other_ranks(context: RankContext, target: Any) -> None:
    """Ranks 1..N-1: make each call rank 0 sends on ``target`` until :func:`stop_other_ranks`.

    A call that fails here failed on rank 0 too (same code, same inputs), where the host reports
    it; this rank logs it and waits for the next call.
    """
    if context.is_host:
        raise RuntimeError("rank 0 sends calls with run_on_all_ranks()")
    while True:
        method, args, kwargs = broadcast_call(context)
        if method == STOP:
            return
        try:
            getattr(target, method)(*args, **kwargs)
        except Exception as exc:
            from faceswap_cam.models.wan.streaming import GenerationInterrupted

            if isinstance(exc, GenerationInterrupted):
                logger.info("rank %d: %s interrupted", context.rank, method)
            else:
                logger.exception("rank %d: %s failed", context.rank, method)


def stop_other_ranks(context: RankContext) -> None:
    """Rank 0: end :func:`serve_other_ranks` on the other ranks (before closing)."""
    broadcast_call(context, STOP)
