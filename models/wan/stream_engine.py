"""What every segment-streaming swap engine does around its stream, written once.

``wan-animate`` and ``wan-animate-2`` differ in what a batch becomes (pose and masks, or the raw
frames) and in their stream class; the rest is the same: the reference is checked, converted
and kept only once encoded; the stream is made at the first batch's size (or the configured
one); ``interrupt()`` holds until ``reset()``, also for a stream that does not exist yet; and
``close()`` lets go of every model so a restarted engine finds the GPU free.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.engine import EngineError, GenerationWindow
from faceswap_cam.models.reference import ReferenceError, check_reference

#: What to change when the GPU runs out of memory.
MEMORY_ADVICE = ("reduce memory with --offload model (or sequential), --vae-tiling, fewer "
                 "--segment-frames, a smaller --gen-size, or --dtype bf16")


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Out of GPU memory and bad segment input become EngineError with the fix."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise EngineError(f"out of GPU memory: {MEMORY_ADVICE}") from exc
    except ValueError as exc:
        raise EngineError(str(exc)) from exc


class StreamingSwapEngine:
    """The shared half of a streaming engine; a subclass makes its stream (:meth:`_new_stream`)
    and turns a batch into frames with the stream :meth:`_stream_for` hands it."""

    def __init__(self, pipe: Any, stream_options: dict[str, Any], *, segment_frames: int,
                 carry: int, gen_size: tuple[int, int] | None, gen_short_side: int) -> None:
        self.pipe: Any = pipe
        self._options = stream_options
        self.gen_size = gen_size
        self.gen_short_side = gen_short_side
        self.first_batch = segment_frames
        self.next_batch = segment_frames - carry
        #: One stream per generation size (a window shape), each with the reference encoded
        #: at its size; ``_stream`` is the one the segment chain runs on.
        self._streams: dict[tuple[int, int], Any] = {}
        self._stream: Any = None
        self._reference: PIL.Image.Image | None = None
        self._interrupted = False
        #: Where the last batch was generated (``status`` shows it).
        self.generation_window: GenerationWindow | None = None
        if gen_size is not None:
            self._stream = self._streams[gen_size] = self._make_stream(gen_size)

    def _new_stream(self, width: int, height: int) -> Any:
        raise NotImplementedError

    def _make_stream(self, size: tuple[int, int]) -> Any:
        width, height = size
        with engine_errors():
            stream = self._new_stream(width, height)
            if self._reference is not None:
                stream.set_reference(self._reference)
        return stream

    def set_reference(self, image: np.ndarray) -> None:
        try:
            check_reference(image)
        except ReferenceError as exc:
            raise EngineError(str(exc)) from exc
        reference = PIL.Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if self._stream is not None:
            with engine_errors():
                self._stream.set_reference(reference)
        # The other sizes' streams would each encode it now; made again when next needed,
        # they encode it then, only if that size comes back.
        self._streams = {size: stream for size, stream in self._streams.items()
                         if stream is self._stream}
        # Kept only once encoded: a refused image must not come back with a later stream.
        self._reference = reference

    def _check_reference(self) -> None:
        if self._reference is None:
            raise EngineError("no reference face is set: start with --reference IMAGE")

    def _full_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The generation size of a whole (W, H) frame: the configured one, else the frame's
        aspect at the configured short side."""
        return self.gen_size or generation_size(frame_size, self.gen_short_side)

    def _stream_for(self, frames: Sequence[np.ndarray]) -> Any:
        """The stream for this batch, made at the frames' size the first time."""
        frame_h, frame_w = frames[0].shape[:2]
        return self._stream_at(self._full_size((frame_w, frame_h)))

    def _stream_at(self, size: tuple[int, int]) -> Any:
        """The stream generating at ``size`` (made the first time), now the chain's."""
        self._check_reference()
        stream = self._streams.get(size)
        if stream is None:
            stream = self._streams[size] = self._make_stream(size)
        self._stream = stream
        if self._interrupted:
            stream.interrupt()  # interrupt() came before this stream existed
        return stream

    def reset(self) -> None:
        self._interrupted = False
        for stream in self._streams.values():
            stream.reset()

    def interrupt(self) -> None:
        # The flag covers a call that is still creating its stream; the stream's own flag
        # stops its denoising loop at the next step.
        self._interrupted = True
        stream = self._stream
        if stream is not None and stream.pipe is not None:  # None: closed, nothing runs
            stream.interrupt()

    def close(self) -> None:
        """Drop every reference to the models, so a restarted engine does not find the GPU
        still holding this one."""
        for stream in self._streams.values():
            stream.pipe = None
        self._streams = {}
        self._stream = None
        self.pipe = None
        gc.collect()  # a failed call's traceback forms a cycle that still holds the models
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
