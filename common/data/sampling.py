"""Frame-index samplers for video clips: TSN/segment sampling and dense sampling, training and multi-view testing.

Pure functions of the frame count (and a ``numpy.random.Generator`` in training): no I/O, no torch.

* :class:`SegmentSampler` (TSN): the video is cut into ``num_segments`` equal segments and one frame is taken from
  each; a random frame per segment in training, the segment centre at test. Two conventions exist in the papers'
  code and both are here (``style``):

  - ``"tsn"`` (ViFi-CLIP / X-CLIP, mmaction2's ``SampleFrames(clip_len=1, num_clips=T)``): segment length
    ``n // T`` with a random offset in ``[0, n // T)`` in training; test offsets ``int(avg * i + avg / 2)`` with
    ``avg = n / T``; videos shorter than ``T`` frames repeat frames evenly.
  - ``"uniform"`` (ST-Adapter's SSv2 sampler, from SlowFast): segment bounds ``round(s*i), round(s*(i+1))`` with
    ``s = (n - 1) / T``, a random frame between the bounds (inclusive) in training, ``(start + end) // 2`` at test.

  Several test clips (``num_clips > 1``) shift the pick inside each segment to ``(k + 0.5) / num_clips`` of it,
  so clip 0 of 1 is exactly the centre. (ViFi-CLIP's released multi-clip test instead draws ``num_clips``
  *training-style* random samples; that is not reproducible and is not offered.)

* :class:`DenseSampler` (ST-Adapter's K400 sampler): ``clip_len`` frames ``frame_interval`` apart, i.e. a window of
  ``(clip_len - 1) * frame_interval + 1`` frames; a random start in ``[0, n - (clip_len-1)*interval)`` in training,
  the centred window for one test clip and ``num_clips`` evenly spaced windows (first at 0, last at the end)
  otherwise. Windows longer than the video repeat the last frame.

Every sampler returns int64 indices, always in ``[0, num_frames - 1]``: ``train_indices`` gives ``(clip_len,)``,
``test_indices`` gives ``(num_clips, clip_len)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

__all__ = ["FrameSampler", "SegmentSampler", "DenseSampler", "build_sampler"]


class FrameSampler(Protocol):
    """What a video dataset needs from a sampler."""

    clip_len: int

    def train_indices(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """``(clip_len,)`` indices of one random training clip."""
        ...

    def test_indices(self, num_frames: int, num_clips: int = 1) -> np.ndarray:
        """``(num_clips, clip_len)`` indices of deterministic test clips."""
        ...


def _check(num_frames: int, num_clips: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample frames from a video with {num_frames} frames")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")


@dataclass(frozen=True)
class SegmentSampler:
    """TSN segment sampling: one frame from each of ``num_segments`` equal segments (see the module docstring)."""

    num_segments: int = 8
    style: Literal["tsn", "uniform"] = "tsn"

    def __post_init__(self) -> None:
        if self.num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {self.num_segments}")
        if self.style not in ("tsn", "uniform"):
            raise ValueError(f"SegmentSampler style must be 'tsn' or 'uniform', got {self.style!r}")

    @property
    def clip_len(self) -> int:
        return self.num_segments

    def train_indices(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        _check(num_frames)
        t = self.num_segments
        if self.style == "uniform":
            start, end = self._uniform_bounds(num_frames)
            idx = rng.integers(start, end + 1)
        else:
            avg = num_frames // t
            if avg > 0:
                idx = np.arange(t) * avg + rng.integers(avg, size=t)
            else:  # fewer frames than segments: spread evenly (mmaction2)
                idx = np.around(np.arange(t) * (num_frames / t))
        return np.clip(np.asarray(idx, dtype=np.int64), 0, num_frames - 1)

    def test_indices(self, num_frames: int, num_clips: int = 1) -> np.ndarray:
        _check(num_frames, num_clips)
        t = self.num_segments
        shift = (np.arange(num_clips) + 0.5) / num_clips  # where in each segment clip k picks (0.5 = centre)
        if self.style == "uniform":
            start, end = self._uniform_bounds(num_frames)
            if num_clips == 1:
                idx = ((start + end) // 2)[None]
            else:
                idx = np.floor(start[None] + (end - start)[None] * shift[:, None])
        else:
            avg = num_frames / t
            idx = np.floor(np.arange(t)[None] * avg + avg * shift[:, None])
        return np.clip(np.asarray(idx, dtype=np.int64), 0, num_frames - 1)

    def _uniform_bounds(self, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        seg = (num_frames - 1) / self.num_segments
        start = np.array([round(seg * i) for i in range(self.num_segments)], dtype=np.int64)
        end = np.array([round(seg * (i + 1)) for i in range(self.num_segments)], dtype=np.int64)
        return start, end


@dataclass(frozen=True)
class DenseSampler:
    """Dense sampling: ``clip_len`` frames every ``frame_interval`` frames (see the module docstring)."""

    clip_len: int = 8
    frame_interval: int = 16

    def __post_init__(self) -> None:
        if self.clip_len < 1 or self.frame_interval < 1:
            raise ValueError(f"DenseSampler needs clip_len >= 1 and frame_interval >= 1, got {self}")

    @property
    def span(self) -> int:
        """Frames covered by one clip: ``(clip_len - 1) * frame_interval + 1``."""
        return (self.clip_len - 1) * self.frame_interval + 1

    def _window(self, start: np.ndarray | int, num_frames: int) -> np.ndarray:
        idx = np.asarray(start)[..., None] + np.arange(self.clip_len) * self.frame_interval
        return np.minimum(idx, num_frames - 1).astype(np.int64)  # too short: repeat the last frame

    def train_indices(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        _check(num_frames)
        if self.span >= num_frames:
            return self._window(0, num_frames)
        start = int(rng.integers(num_frames - (self.clip_len - 1) * self.frame_interval))
        return self._window(start, num_frames)

    def test_indices(self, num_frames: int, num_clips: int = 1) -> np.ndarray:
        _check(num_frames, num_clips)
        slide = max(num_frames - self.span, 0)
        if num_clips == 1:
            starts = np.array([slide // 2])
        else:
            starts = np.array([round(slide / (num_clips - 1) * i) for i in range(num_clips)])
        return self._window(starts, num_frames)


def build_sampler(
    sampling: Literal["segment", "dense"] = "segment",
    num_frames: int = 8,
    frame_interval: int = 16,
    segment_style: Literal["tsn", "uniform"] = "tsn",
) -> FrameSampler:
    """The sampler a datamodule's config names: ``segment`` (TSN, ``segment_style``) or ``dense`` (``frame_interval``)."""
    if sampling == "segment":
        return SegmentSampler(num_segments=num_frames, style=segment_style)
    if sampling == "dense":
        return DenseSampler(clip_len=num_frames, frame_interval=frame_interval)
    raise ValueError(f"sampling must be 'segment' or 'dense', got {sampling!r}")
