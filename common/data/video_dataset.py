"""Video classification dataset and the base datamodule shared by Kinetics-400 (HMDB-51, UCF-101) and SSv2.

Samples are ``(path, label)`` pairs (:class:`common.data.video_splits.VideoSample`). An item is decoded with
:mod:`common.data.video` (the reader is opened inside ``__getitem__``, i.e. inside the DataLoader worker), frames are
picked by a sampler from :mod:`common.data.sampling` and augmented by
:class:`common.data.video_transforms.VideoTransform`.

Batches (dicts):

* training: ``video`` float ``(B, T, 3, S, S)``, ``label`` long ``(B,)``, ``index`` long ``(B,)``;
* validation / test / predict: ``video`` float ``(B, V, T, 3, S, S)`` with ``V = num_clips x num_crops`` views
  (crop-major: view ``v`` is crop ``v // num_clips`` of temporal clip ``v % num_clips``; V may be 1), so a
  module averages softmax over dim 1;
* always (:class:`common.data.base.SkipCollate`): ``skipped`` long scalar, the number of samples of this batch
  dropped as unreadable, and ``skipped_samples`` (their :class:`common.data.base.SkippedSample` records).

Bad input: with ``on_error="skip"`` (default) an unreadable video (zero-byte, truncated, undecodable) makes
``__getitem__`` return a :class:`SkippedSample` that the collate drops; the callback
:class:`common.callbacks.data.SkippedSamples` (added by the CLI) warns once per file and logs ``data/skipped``.
At setup every listed video is checked to exist: missing ones, annotation lines with unknown labels and repeated
lines are left out, warned and counted the same way (once per epoch of their split), and a split where more than
``max_missing_fraction`` of the listed samples is left out fails with :class:`DatasetLayoutError`. With
``on_error="raise"`` the first bad item raises (:class:`common.data.video.VideoDecodeError`, ``ValueError`` for a
label, :class:`DatasetLayoutError` for a missing file). A batch whose samples were all skipped has zero-length
tensors of the right trailing shape.

Short videos: a video that decodes fewer frames than one clip has (``num_frames``; e.g. a truncated .webm that
decodes 2 of 16) is a bad sample (reason ``short``, skipped and counted as above, or raised) unless
``short_videos="repeat"``, where the clip is completed by repeating frames as the sampler does for short videos
(ST-Adapter's released loader pads this way) and the item carries a :class:`common.data.base.PaddedSample`: warned
once per file and counted apart as ``data/padded``. Either way, never silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.base import (
    PADDED_KEY,
    CVDataModule,
    DatasetLayoutError,
    OnError,
    PaddedSample,
    SkipCollate,
    SkippedSample,
    SkippedSampleWarning,
    check_on_error,
    check_paths_exist,
)
from common.data.sampling import FrameSampler, build_sampler
from common.data.video import DEFAULT_BACKEND, VideoDecodeError, read_clip, reader_class
from common.data.video_splits import VideoSample, class_split, few_shot_subset, find_duplicates
from common.data.video_transforms import RECIPES, VideoTransform

__all__ = [
    "VideoSample",
    "SkippedSample",
    "SkippedVideoWarning",
    "ShortVideos",
    "DatasetLayoutError",
    "VideoClipDataset",
    "collate_videos",
    "class_split",
    "few_shot_subset",
    "VideoDataModule",
]

#: the warning of a left-out video (the project's one skipped-sample warning)
SkippedVideoWarning = SkippedSampleWarning

#: what a video dataset does with a video shorter than one clip (see the module docstring)
ShortVideos = Literal["skip", "repeat"]


class VideoClipDataset(Dataset):
    """``(path, label)`` samples -> clips; training (one random clip) or evaluation (``num_clips x num_crops``).

    Args:
        samples: the annotated videos.
        sampler: frame-index sampler.
        transform: clip transform (its random draws come from a generator seeded by torch's RNG, so the
            DataLoader's worker seeding and ``seed_everything`` govern them).
        train: random clip + training augmentation, else deterministic multi-view.
        num_clips, num_crops: evaluation views (temporal x spatial; crops 1 or 3).
        backend: decoding library (:func:`common.data.video.available_backends`).
        on_error: ``skip`` (return a :class:`SkippedSample`) or ``raise``.
        short_videos: a video with fewer frames than one clip: ``skip`` (a bad sample, reason ``short``: skipped or
            raised as ``on_error`` says) or ``repeat`` (frames repeated to fill the clip; the item carries a
            :class:`~common.data.base.PaddedSample` under ``padded``).
    """

    def __init__(
        self,
        samples: Sequence[VideoSample],
        sampler: FrameSampler,
        transform: VideoTransform,
        *,
        train: bool,
        num_clips: int = 1,
        num_crops: int = 1,
        backend: str = DEFAULT_BACKEND,
        on_error: OnError = "skip",
        short_videos: ShortVideos = "skip",
    ) -> None:
        check_on_error(on_error)
        if short_videos not in get_args(ShortVideos):
            raise ValueError(f"short_videos must be one of {list(get_args(ShortVideos))}, got {short_videos!r}")
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        reader_class(backend)  # fail early on an unknown backend (opens nothing)
        self.samples = list(samples)
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.num_clips = 1 if train else num_clips
        self.num_crops = 1 if train else num_crops
        self.backend = backend
        self.on_error = on_error
        self.short_videos = short_videos

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one item's ``video`` tensor."""
        t, s = self.sampler.clip_len, self.transform.size
        return (t, 3, s, s) if self.train else (self.num_views, t, 3, s, s)

    def _check_length(self, path: str, num_frames: int) -> None:
        """A video shorter than one clip: the ``short`` error, unless ``short_videos`` is ``repeat``."""
        if num_frames < self.sampler.clip_len and self.short_videos == "skip":
            raise VideoDecodeError(path, "short", f"{num_frames} frames decodable, a clip needs "
                                                  f"{self.sampler.clip_len} (short_videos: repeat would repeat frames)")

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        sample = self.samples[index]
        length: list[int] = []

        def frames_of(n: int) -> int:  # the chooser sees the decodable length first: check it, remember it
            self._check_length(sample.path, n)
            length.append(n)
            return n

        try:
            if self.train:
                rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
                frames, _ = read_clip(sample.path, lambda n: self.sampler.train_indices(frames_of(n), rng),
                                      self.backend)
                video = self.transform(frames, rng)
            else:
                frames, idx = read_clip(
                    sample.path, lambda n: self.sampler.test_indices(frames_of(n), self.num_clips), self.backend
                )
                t = idx.shape[-1]
                views = self.transform.eval_views(frames, self.num_crops)  # (crops, clips*T, 3, S, S)
                video = views.reshape(self.num_crops * self.num_clips, t, *views.shape[2:])
        except VideoDecodeError as err:
            if self.on_error == "raise":
                raise
            return SkippedSample(index, sample.path, err.reason, err.detail)
        item: dict[str, Any] = {"video": video, "label": sample.label, "index": index}
        if length and length[0] < self.sampler.clip_len:
            item[PADDED_KEY] = PaddedSample(index, sample.path, "short", f"{length[0]} frames decodable, a clip needs "
                                            f"{self.sampler.clip_len}: frames repeated (short_videos: repeat)")
        return item


def _stack_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "video": torch.stack([b["video"] for b in items]),
        "label": torch.tensor([b["label"] for b in items], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in items], dtype=torch.long),
    }


def _empty_videos(item_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"video": torch.zeros((0, *item_shape), dtype=torch.float32),
            "label": torch.zeros(0, dtype=torch.long), "index": torch.zeros(0, dtype=torch.long)}


def collate_videos(batch: Sequence[dict[str, Any] | SkippedSample], item_shape: tuple[int, ...] = ()
                   ) -> dict[str, Any]:
    """Stack the readable items, drop :class:`SkippedSample` ones and report them (see the module docstring)."""
    return SkipCollate(_stack_videos, partial(_empty_videos, tuple(item_shape)))(batch)


class VideoDataModule(CVDataModule):
    """Base of the video classification datamodules: splits, class subsets, few-shot, views, setup-time checks.

    Subclasses implement :meth:`load_class_names` (all classes, index order), :meth:`load_split`
    (``"train"``/``"val"``/``"test"`` -> samples with original class indices) and
    :meth:`~common.data.base.CVDataModule.write_stand_in`, set ``default_dirname``, and may
    override :meth:`layout_help` / ``synth_command`` for the error messages.

    Args:
        root: dataset folder (None: ``outputs/data/<default_dirname>``, where the ShapesWorld writer puts it). A
            root given here is read, never written: if it does not exist, setup fails naming it and the writer.
        backend: ``decord`` (default), ``pyav`` or ``torchcodec``.
        num_frames: frames per clip T.
        sampling: ``segment`` (TSN) or ``dense``; ``segment_style`` ``tsn`` (ViFi-CLIP) or ``uniform``
            (ST-Adapter SSv2); ``frame_interval`` for dense.
        recipe: transform recipe (``multiscale_crop``, ``short_side_jitter``, ``randaugment_noflip``: see
            :mod:`common.data.video_transforms`); ``input_size`` S;
            ``transform_args`` overrides any :class:`VideoTransform` field (e.g. ``{normalize: clip}``).
        val_clips, val_crops, test_clips, test_crops: evaluation views (crops 1 or 3).
        class_split: ``all``, ``base`` or ``novel`` (seeded by ``split_seed``, ``base_fraction`` of the classes
            base); labels are re-indexed 0..K-1 within the split and ``info["class_names"]`` follows.
        num_shots: K training videos per class (seeded by ``shot_seed``), None for all.
        on_error: ``skip`` or ``raise`` for unreadable or missing videos and unknown labels.
        short_videos: a video with fewer frames than one clip (``num_frames``): ``skip`` (default: a bad sample,
            reason ``short``) or ``repeat`` (frames repeated, as ST-Adapter's released loader does; counted as
            ``data/padded`` and warned once per file).
        max_missing_fraction: a split with more than this fraction of its listed videos left out at setup (missing,
            unknown label) fails with the layout error.
        synth_if_missing: with ``root`` None, write the ShapesWorld stand-in into the default folder when it does
            not exist (default on; safe with several ranks: :func:`common.data.synth.write_once`); off, a missing
            default folder is the layout error. Never applies to a root given explicitly.
        synth_options: keyword arguments of the writer function for that, e.g. ``{num_per_class: 8, size: 48}``
            (:func:`common.data.synth.video_writers.write_kinetics400` / ``write_ssv2``); ``synth_args`` is its old
            name (deprecated, one release).
    """

    dataset_name: str = "video dataset"
    #: a video listed twice: warned and counted once (same label) or an error naming both labels (SSv2's JSON
    #: keys videos by id); off where repeated lines are meant (K400-style lists built by repetition)
    check_duplicates: bool = False

    def __init__(
        self,
        root: str | None = None,
        backend: str = DEFAULT_BACKEND,
        num_frames: int = 8,
        sampling: Literal["segment", "dense"] = "segment",
        segment_style: Literal["tsn", "uniform"] = "tsn",
        frame_interval: int = 16,
        recipe: str = "multiscale_crop",
        input_size: int = 224,
        transform_args: dict[str, Any] | None = None,
        val_clips: int = 1,
        val_crops: int = 1,
        test_clips: int = 1,
        test_crops: int = 1,
        class_split: Literal["all", "base", "novel"] = "all",
        split_seed: int = 0,
        base_fraction: float = 0.5,
        num_shots: int | None = None,
        shot_seed: int = 0,
        on_error: OnError = "skip",
        short_videos: ShortVideos = "skip",
        max_missing_fraction: float = 0.5,
        synth_if_missing: bool = True,
        synth_options: dict[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        synth_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size,
                         max_missing_fraction=max_missing_fraction)
        self.resolve_root(root)
        reader_class(backend)
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        self.on_error = check_on_error(on_error)
        if short_videos not in get_args(ShortVideos):
            raise ValueError(f"short_videos must be one of {list(get_args(ShortVideos))}, got {short_videos!r}")
        self.short_videos = short_videos
        self.pads_samples = short_videos == "repeat"
        if synth_args is not None:
            warnings.warn(f"{type(self).__name__}: synth_args is deprecated, say synth_options (the name every "
                          "datamodule uses); the old name goes in the next release", FutureWarning, stacklevel=2)
            synth_options = synth_args if synth_options is None else synth_options
        if synth_options is not None and not isinstance(synth_options, dict):
            raise TypeError(f"synth_options are the writer's keyword arguments (a dict such as {{num_per_class: 8}}), "
                            f"got {type(synth_options).__name__} {synth_options!r}")
        self.backend = backend
        self.num_frames = num_frames
        self.sampler = build_sampler(sampling, num_frames, frame_interval, segment_style)
        self.transform = VideoTransform.preset(recipe, input_size, **dict(transform_args or {}))
        self.views = {"val": (val_clips, val_crops), "test": (test_clips, test_crops)}
        for clips, crops in self.views.values():
            if crops not in (1, 3) or clips < 1:
                raise ValueError(f"views need clips >= 1 and crops in (1, 3), got {clips} x {crops}")
        self.class_split_name = class_split
        self.split_seed = split_seed
        self.base_fraction = base_fraction
        self.num_shots = num_shots
        self.shot_seed = shot_seed
        self.synth_if_missing = synth_if_missing
        self.synth_options = dict(synth_options or {})
        self._all_class_names: list[str] | None = None
        self._loading_split = ""

    # -- subclass hooks ----------------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        """All class names, in class-index order."""
        raise NotImplementedError

    def load_split(self, split: Literal["train", "val", "test"]) -> list[VideoSample]:
        """Samples of a split with original class indices (unknown labels recorded via :meth:`record_bad_label`)."""
        raise NotImplementedError

    # -- errors and bad input ----------------------------------------------------------------------------------
    def require_file(self, path: Path, what: str) -> Path:
        if not self.root.is_dir():
            raise self.layout_error(f"dataset root {self.root} does not exist")
        if not path.is_file():
            raise self.layout_error(f"{what} not found: {path}")
        return path

    def record_bad_label(self, path: str, detail: str) -> None:
        """An annotation line whose label is unknown: raise or leave it out (warned, counted)."""
        if self.on_error == "raise":
            raise ValueError(f"{self.dataset_name}: unknown label for {path}: {detail}")
        self.record_setup_skip(self._loading_split, path, "unknown_label", detail)

    def missing_video_hint(self, missing: Sequence[VideoSample]) -> str:
        """A sentence appended to the missing-video messages (e.g. a layout option that would fit)."""
        return ""

    def _drop_unusable(self, split: str, samples: list[VideoSample], where: str) -> list[VideoSample]:
        """Leave out videos that do not exist (checked for every listed path) and, with :attr:`check_duplicates`,
        repeated lines."""
        if self.check_duplicates:
            samples, repeated = find_duplicates(samples, self.all_class_names, where)
            for s in repeated:
                self.record_setup_skip(split, s.path, "duplicate", f"listed twice in {where}")
        exists = check_paths_exist([s.path for s in samples])
        missing = [s for s, ok in zip(samples, exists) if not ok]
        if missing and self.on_error == "raise":
            raise self.layout_error(f"{len(missing)} videos listed in {where} do not exist, the first: "
                                    f"{missing[0].path}. {self.missing_video_hint(missing)}".rstrip())
        hint = self.missing_video_hint(missing) if missing else ""
        for s in missing:
            self.record_setup_skip(split, s.path, "missing", f"listed in {where} but not found. {hint}".strip())
        return [s for s, ok in zip(samples, exists) if ok]

    # -- class names, splits -----------------------------------------------------------------------------------
    def _ensure_data(self) -> None:
        self.ensure_root(self.synth_if_missing, **self.synth_options)

    @property
    def all_class_names(self) -> list[str]:
        if self._all_class_names is None:
            self._ensure_data()
            self._all_class_names = list(self.load_class_names())
        return self._all_class_names

    @property
    def selected_classes(self) -> list[int]:
        """Original indices of the classes in use (``class_split``), in the order of the new indices."""
        return class_split(len(self.all_class_names), self.class_split_name, self.split_seed, self.base_fraction)

    @property
    def class_names(self) -> list[str]:
        names = self.all_class_names
        return [names[i] for i in self.selected_classes]

    @property
    def info(self) -> dict[str, Any]:
        names = self.class_names
        return {"num_classes": len(names), "class_names": names, "num_frames": self.num_frames,
                "class_split": self.class_split_name}

    def _select(self, samples: list[VideoSample]) -> list[VideoSample]:
        remap = {orig: new for new, orig in enumerate(self.selected_classes)}
        return [VideoSample(s.path, remap[s.label]) for s in samples if s.label in remap]

    def annotation_file(self, split: str) -> str:
        """The annotation file of a split, for messages (override in subclasses)."""
        return f"the {split} annotation"

    def build_dataset(self, split: str) -> VideoClipDataset:
        """The dataset of one split: every listed video checked, class subset, few-shot subset and views applied."""
        self._ensure_data()
        self._loading_split = split
        loaded = self.load_split(split)  # type: ignore[arg-type]
        self.listed[split] = len(loaded) + len(self.setup_skips.get(split, []))
        samples = self._drop_unusable(split, loaded, self.annotation_file(split))
        self.check_missing(split)
        samples = self._select(samples)
        if split == "train" and self.num_shots:
            samples = few_shot_subset(samples, self.num_shots, self.shot_seed)
        if not samples:
            skips = self.setup_skips.get(split, [])
            why = f"; {len(skips)} listed videos left out, the first: {skips[0].path} ({skips[0].reason})" if skips else ""
            raise self.layout_error(
                f"the {split} split has no samples (after class_split={self.class_split_name}){why}")
        clips, crops = self.views.get(split, (1, 1))
        return VideoClipDataset(
            samples, self.sampler, self.transform, train=split == "train", num_clips=clips, num_crops=crops,
            backend=self.backend, on_error=self.on_error, short_videos=self.short_videos,
        )

    def collate_fn(self, split: str, dataset: Dataset) -> Callable[[list[Any]], dict[str, Any]]:
        assert isinstance(dataset, VideoClipDataset)
        return partial(collate_videos, item_shape=dataset.item_shape)

    def _collate(self, ds: VideoClipDataset) -> Callable[[list[Any]], dict[str, Any]]:
        return self.collate_fn("", ds)

    # -- Lightning ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._ensure_data()
