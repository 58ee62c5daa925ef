"""One video reader interface over several decoding libraries: decord (default), PyAV, and torchcodec where it imports.

A reader answers three questions about one file: how many frames (:attr:`VideoReader.num_frames`), at what rate
(:attr:`VideoReader.fps`), and what the frames at given indices look like (:meth:`VideoReader.get_frames`, uint8
``(T, H, W, 3)`` RGB). Nothing is opened when a reader is built: the file is opened on first use, in the process
that uses it. DataLoader workers therefore each open their own decoder (decord deadlocks when a reader opened in
the parent is used after ``fork``), and a reader is meant to live for one item (``with open_video(...) as r:``).

Every failure (missing, zero-byte, truncated or undecodable file, an index past the decodable end) is raised as
:class:`VideoDecodeError` with a ``reason`` the datasets count and report.

Import order: decord loads its bundled FFmpeg 4.1 and libvpx with ``RTLD_GLOBAL``; if it is imported before PyAV,
PyAV's libvpx-vp9 *encoder* binds to decord's older libvpx and refuses to open (``avcodec_open2`` EINVAL). This
module therefore imports ``av`` at import time, before anything here imports decord; code that imports decord
itself should import ``av`` (or this module) first.

On the ShapesWorld videos (H.264 yuv420p mp4, VP9 yuv420p webm) decord 0.6 (bundling FFmpeg 4.1) and PyAV 18
(FFmpeg 8) return bit-identical RGB frames: both convert with swscale's default BT.601 limited-range path.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av  # loaded before decord on purpose (see "Import order" above)
import numpy as np

__all__ = [
    "VideoDecodeError",
    "VideoReader",
    "DecordReader",
    "PyAVReader",
    "TorchCodecReader",
    "available_backends",
    "open_video",
    "DEFAULT_BACKEND",
]

DEFAULT_BACKEND = "decord"


class VideoDecodeError(RuntimeError):
    """A video that cannot be read. ``reason`` is one of ``missing``, ``empty``, ``undecodable``, ``truncated``, or
    ``short`` (decodable, but fewer frames than one clip: raised by the video dataset, not by the readers)."""

    REASONS = ("missing", "empty", "undecodable", "truncated", "short")

    def __init__(self, path: str | os.PathLike, reason: str | None = None, detail: str = "") -> None:
        if reason is None:
            # one-argument form: a DataLoader worker re-raising the error in the main process passes the full
            # message (with the worker's traceback); keep the type and recover the reason from the text
            found = re.search(r"VideoDecodeError: (\w+) video (.+?)(?::|$)", str(path), re.MULTILINE)
            self.path, self.reason, self.detail = (found.group(2), found.group(1), "") if found else ("", "undecodable", "")
            super().__init__(str(path))
            return
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{reason} video {self.path}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (VideoDecodeError, (self.path, self.reason, self.detail))


def _check_file(path: Path) -> None:
    """Raise the 'missing'/'empty' errors before any library sees the file (their messages are cryptic)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoDecodeError(path, "missing", "no such file") from None
    if not path.is_file():
        raise VideoDecodeError(path, "missing", "not a regular file")
    if size == 0:
        raise VideoDecodeError(path, "empty", "zero bytes")


def _check_indices(path: Path, indices: Sequence[int] | np.ndarray, num_frames: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"get_frames({path}): no frame indices given")
    if idx.min() < 0:
        raise ValueError(f"get_frames({path}): negative frame index {int(idx.min())}")
    if num_frames <= 0:
        raise VideoDecodeError(path, "undecodable", "the container reports no video frames")
    if idx.max() >= num_frames:
        raise ValueError(
            f"get_frames({path}): frame index {int(idx.max())} is past the last frame ({num_frames} frames); "
            "samplers clip indices to num_frames - 1"
        )
    return idx


class VideoReader(ABC):
    """A lazily opened video file. Subclasses implement :meth:`_open`, :meth:`_read` and the metadata."""

    backend: str = ""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1) -> None:
        self.path = Path(path)
        self.num_threads = num_threads
        self._handle: Any = None  # opened on first use, never here (fork safety)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def _ensure_open(self) -> None:
        if self._handle is None:
            _check_file(self.path)
            try:
                self._handle = self._open()
            except VideoDecodeError:
                raise
            except Exception as err:  # library-specific errors -> one type
                raise VideoDecodeError(self.path, "undecodable", f"{type(err).__name__}: {err}") from err

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        if self._handle is not None:
            try:
                self._close(self._handle)
            finally:
                self._handle = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:  # a reader crossing a process boundary never carries a decoder
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    # -- public API --------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """Number of frames the container reports (counting packets where it reports none)."""
        self._ensure_open()
        return self._num_frames()

    @property
    def fps(self) -> float:
        """Average frame rate."""
        self._ensure_open()
        return self._fps()

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 RGB frames ``(len(indices), H, W, 3)`` at the given 0-based indices (any order, repeats allowed)."""
        self._ensure_open()
        idx = _check_indices(self.path, indices, self._num_frames())
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = self._read(unique)
        except VideoDecodeError:
            raise
        except Exception as err:
            raise VideoDecodeError(self.path, "undecodable", f"{type(err).__name__}: {err}") from err
        return frames[inverse]

    # -- backend hooks -----------------------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> Any: ...

    def _close(self, handle: Any) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def _num_frames(self) -> int: ...

    @abstractmethod
    def _fps(self) -> float: ...

    @abstractmethod
    def _read(self, sorted_unique: np.ndarray) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, open={self.is_open})"


class DecordReader(VideoReader):
    """decord ``VideoReader`` on the CPU (accurate seeking; ``num_threads`` decoder threads, 1 by default)."""

    backend = "decord"

    def _open(self) -> Any:
        import decord

        # decord's constructor can abort the whole process (std::terminate, "terminate called without an active
        # exception") on a file it cannot open: seen intermittently under DDP with three cut-off mp4s. PyAV reads
        # the container header first (milliseconds), so a broken file is a VideoDecodeError, skipped and counted.
        try:
            with av.open(str(self.path), mode="r") as container:
                if not container.streams.video:
                    raise VideoDecodeError(self.path, "undecodable", "no video stream")
        except av.FFmpegError as err:
            raise VideoDecodeError(self.path, "undecodable", f"{type(err).__name__}: {err}") from err
        return decord.VideoReader(str(self.path), num_threads=self.num_threads)

    def _num_frames(self) -> int:
        return len(self._handle)

    def _fps(self) -> float:
        return float(self._handle.get_avg_fps())

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:
        return self._handle.get_batch(sorted_unique.tolist()).asnumpy()


class PyAVReader(VideoReader):
    """PyAV: decodes from the start up to the last requested frame (as the ST-Adapter loader does), one thread.

    The frame count is the stream's ``nb_frames`` where the container records it (mp4) and otherwise the number
    of demuxed video packets (webm/mkv record none), which is also what decord reports on these files.
    """

    backend = "pyav"

    def _open(self) -> Any:
        container = av.open(str(self.path), mode="r")
        if not container.streams.video:
            container.close()
            raise VideoDecodeError(self.path, "undecodable", "no video stream")
        stream = container.streams.video[0]
        stream.thread_count = self.num_threads
        self._count: int | None = None
        return container

    def _close(self, handle: Any) -> None:
        handle.close()

    def _num_frames(self) -> int:
        if self._count is None:
            stream = self._handle.streams.video[0]
            count = int(stream.frames or 0)
            if count <= 0:
                count = sum(1 for p in self._handle.demux(stream) if p.size > 0)
                self._handle.seek(0)
            self._count = count
        return self._count

    def _fps(self) -> float:
        stream = self._handle.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else 0.0

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:
        container = self._handle
        container.seek(0)
        wanted = iter(sorted_unique.tolist())
        target = next(wanted)
        out: list[np.ndarray] = []
        last = int(sorted_unique[-1])
        decoded = 0
        for i, frame in enumerate(container.decode(video=0)):
            decoded = i + 1
            while target == i:
                out.append(frame.to_ndarray(format="rgb24"))
                target = next(wanted, None)
            if i >= last:
                break
        if len(out) != len(sorted_unique):
            raise VideoDecodeError(
                self.path, "truncated",
                f"only {decoded} frames decodable, frame {last} requested ({self._num_frames()} in the header)",
            )
        return np.stack(out)


class TorchCodecReader(VideoReader):
    """torchcodec's ``VideoDecoder`` (registered only where torchcodec and its FFmpeg libraries import)."""

    backend = "torchcodec"

    def _open(self) -> Any:
        from torchcodec.decoders import VideoDecoder

        return VideoDecoder(str(self.path), dimension_order="NHWC", num_ffmpeg_threads=self.num_threads)

    def _num_frames(self) -> int:
        return int(self._handle.metadata.num_frames or 0)

    def _fps(self) -> float:
        return float(self._handle.metadata.average_fps or 0.0)

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:
        return self._handle.get_frames_at(sorted_unique.tolist()).data.numpy()


_BACKENDS: dict[str, type[VideoReader]] = {"decord": DecordReader, "pyav": PyAVReader}
_OPTIONAL: dict[str, tuple[str, type[VideoReader]]] = {"torchcodec": ("torchcodec.decoders", TorchCodecReader)}


def _importable(module: str) -> bool:
    import importlib

    try:
        importlib.import_module(module)
    except Exception:  # ImportError, or OSError/RuntimeError when its FFmpeg libraries are missing
        return False
    return True


def available_backends() -> list[str]:
    """Names accepted by :func:`open_video` on this machine (decord, pyav, and torchcodec if it imports)."""
    names = [n for n, cls in _BACKENDS.items() if _importable("decord" if n == "decord" else "av")]
    names += [n for n, (mod, _) in _OPTIONAL.items() if _importable(mod)]
    return names


def reader_class(backend: str) -> type[VideoReader]:
    """The reader class for a backend name, with a clear error for unknown or unavailable ones."""
    if backend in _BACKENDS:
        return _BACKENDS[backend]
    if backend in _OPTIONAL:
        mod, cls = _OPTIONAL[backend]
        if not _importable(mod):
            raise ImportError(
                f"video backend {backend!r} needs {mod}, which does not import here (torchcodec also needs the "
                "system FFmpeg libraries); use backend: decord or backend: pyav"
            )
        return cls
    raise ValueError(f"unknown video backend {backend!r}; choose one of {sorted([*_BACKENDS, *_OPTIONAL])}")


def open_video(path: str | os.PathLike, backend: str = DEFAULT_BACKEND, num_threads: int = 1) -> VideoReader:
    """A lazily opened reader for ``path`` (nothing touches the file until the first query)."""
    return reader_class(backend)(path, num_threads=num_threads)


def read_clip(
    path: str | os.PathLike,
    choose_indices: Callable[[int], np.ndarray],
    backend: str = DEFAULT_BACKEND,
    num_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Open ``path``, pick indices from its frame count with ``choose_indices(num_frames)``, decode, close.

    Returns ``(frames (N, H, W, 3) uint8, indices (N,) or any shape the chooser returned)``; frames follow the
    flattened index order.
    """
    with open_video(path, backend, num_threads) as reader:
        n = reader.num_frames
        if n <= 0:
            raise VideoDecodeError(path, "undecodable", "the container reports no video frames")
        indices = np.asarray(choose_indices(n), dtype=np.int64)
        frames = reader.get_frames(indices.reshape(-1))
    return frames, indices
