"""Predict on a user's own files: images (:class:`ImageFiles`) or videos (:class:`VideoFiles`), no labels.

``inputs`` is a folder (its image / video files, sorted; not recursive), a glob (``photos/*.jpg``,
``clips/**/*.mp4``), one file, or a list of any of these. Each input is read with the *evaluation* transform of
the checkpoint's config, through the training datamodules' own code:

* images: :class:`common.data.pascal_transforms.MultiTaskTransform` with ``train=False`` (the fixed resize to
  ``image_size`` and ImageNet normalisation of the PASCAL-Context datamodule), read by
  :func:`common.data.pascal_readers.read_image`;
* videos: :class:`common.data.video_dataset.VideoClipDataset` in evaluation mode, with the sampler of
  :func:`common.data.sampling.build_sampler` and the transform of
  :meth:`common.data.video_transforms.VideoTransform.preset` (``test_clips x test_crops`` views).

The parameters are named as in :class:`common.data.pascal_context.PascalContextMTDataModule` and
:class:`common.data.video_dataset.VideoDataModule`, so with the run's (or a preset's) config and
``--data common.data.predict.VideoFiles`` the evaluation settings of the config's ``data`` section carry over
(jsonargparse keeps the init_args the new class accepts and drops the others)::

    python -m st_adapter predict --config CONFIG --ckpt_path RUN/last.ckpt \\
        --data common.data.predict.VideoFiles --data.inputs 'clips/*.mp4'

A file that cannot be read (corrupt, empty, not an image / video) is left out with a per-file warning and counted,
the project's one way (:class:`common.data.base.SkippedSample`, ``batch["skipped"]``); an input that names nothing
(a missing file, a glob without match) is recorded as a setup-time skip. Only when no input file is found at all
is it an error. Batches carry ``path`` (the file) and ``name`` (its stem, made unique) for the prediction writer
(:class:`common.callbacks.predict.PredictionWriter`).

:attr:`info` holds only what the files tell (``image_size`` for images, nothing for videos), never class names: the
model keeps those of its checkpoint (``CVModule.setup`` merges the datamodule's info into ``data_info``). Give
``class_names`` only for a checkpoint that does not carry them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, default_collate

from common.data.base import (
    CVDataModule,
    DatasetLayoutError,
    OnError,
    SkipCollate,
    SkippedSample,
    check_on_error,
)
from common.data.pascal_readers import IMAGENET_MEAN, IMAGENET_STD, read_image
from common.data.pascal_transforms import MultiTaskTransform, size_hw
from common.data.sampling import build_sampler
from common.data.video import DEFAULT_BACKEND, reader_class
from common.data.video_dataset import ShortVideos, VideoClipDataset, collate_videos
from common.data.video_splits import VideoSample
from common.data.video_transforms import RECIPES, VideoTransform

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "expand_inputs", "unique_names", "ImageFiles", "VideoFiles",
           "ImageFileDataset", "NamedVideoDataset", "PredictFilesDataModule"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp")


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike], suffixes: Sequence[str]
                  ) -> tuple[list[Path], list[tuple[str, str]]]:
    """``inputs`` -> (files in order, [(entry, why)] for entries that name no file).

    A folder gives its files with one of ``suffixes`` (case-insensitive, sorted, not recursive); a pattern with
    ``*``, ``?`` or ``[`` is a glob (``**`` recursive), its matches sorted and every matched file taken whatever its
    suffix; anything else is one file. A file named twice is taken once.
    """
    entries = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    lowered = tuple(s.lower() for s in suffixes)
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for entry in entries:
        text = os.path.expanduser(os.fspath(entry))
        if any(c in text for c in "*?["):
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if os.path.isfile(p)]
            why = "the pattern matches no file"
        elif os.path.isdir(text):
            found = sorted(p for p in Path(text).iterdir() if p.is_file() and p.suffix.lower() in lowered)
            why = f"the folder holds no file ending in {', '.join(suffixes)}"
        else:
            found = [Path(text)] if os.path.exists(text) else []
            why = "no such file"
        if not found:
            missing.append((text, why))
        files.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


def unique_names(paths: Sequence[Path]) -> list[str]:
    """A file-name-safe name per path: its stem, with ``-<n>`` appended where two inputs share a stem."""
    stems = ["".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem) or "input" for p in paths]
    count: dict[str, int] = {}
    for s in stems:
        count[s] = count.get(s, 0) + 1
    return [s if count[s] == 1 else f"{s}-{i}" for i, s in enumerate(stems)]


class ImageFileDataset(Dataset):
    """Image files -> ``{"image": (3, h, w) float, "index", "size": (H, W) of the file, "path", "name"}`` through the
    evaluation :class:`MultiTaskTransform`; an unreadable file gives a :class:`SkippedSample` (or raises)."""

    def __init__(self, paths: Sequence[Path], transform: MultiTaskTransform, on_error: OnError = "skip") -> None:
        self.paths = [Path(p) for p in paths]
        self.names = unique_names(self.paths)
        self.transform = transform
        self.on_error = check_on_error(on_error)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        path = self.paths[index]
        try:
            if path.stat().st_size == 0:
                raise ValueError("zero bytes")
            image = read_image(path)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError ... for a bad file
            if self.on_error == "raise":
                raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
            reason = "empty" if isinstance(err, ValueError) and str(err) == "zero bytes" else "undecodable"
            return SkippedSample(index, str(path), reason, f"{type(err).__name__}: {err}")
        out = self.transform({"image": image})
        return {"image": out["image"], "index": index, "size": torch.tensor(image.shape[:2], dtype=torch.long),
                "path": str(path), "name": self.names[index]}


def _empty_images(size: tuple[int, int]) -> dict[str, Any]:
    return {"image": torch.zeros(0, 3, *size), "index": torch.zeros(0, dtype=torch.long),
            "size": torch.zeros(0, 2, dtype=torch.long), "path": [], "name": []}


class NamedVideoDataset(Dataset):
    """A :class:`VideoClipDataset` (evaluation mode) whose items also carry ``path`` and ``name``."""

    def __init__(self, clips: VideoClipDataset, names: Sequence[str]) -> None:
        self.clips = clips
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        item = self.clips[index]
        if isinstance(item, dict):
            item = {**item, "path": self.clips.samples[index].path, "name": self.names[index]}
        return item


def _collate_named_videos(items: Sequence[Any], item_shape: tuple[int, ...]) -> dict[str, Any]:
    batch = collate_videos(items, item_shape)
    kept = [it for it in items if isinstance(it, dict)]
    batch["path"] = [it["path"] for it in kept]
    batch["name"] = [it["name"] for it in kept]
    return batch


class PredictFilesDataModule(CVDataModule):
    """The base of :class:`ImageFiles` and :class:`VideoFiles`: the inputs, the predict-only setup, skips.

    Subclasses set :attr:`suffixes` and :attr:`kind` and implement :meth:`files_dataset`.
    """

    suffixes: tuple[str, ...] = ()
    kind: str = "files"
    dataset_name = "your files"

    def __init__(self, inputs: str | list[str], on_error: OnError = "skip", class_names: list[str] | None = None,
                 batch_size: int = 8, num_workers: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size,
                         max_missing_fraction=1.0)
        if not inputs:
            raise ValueError(f"{type(self).__name__}: give inputs (a folder, a glob such as 'photos/*.jpg', a file "
                             "or a list of them)")
        self.inputs = inputs
        self.on_error = check_on_error(on_error)
        self.class_names = list(class_names) if class_names else None
        self.files: list[Path] = []

    @property
    def info(self) -> dict[str, Any]:
        """Only what the files tell; class names only when given (the model keeps its checkpoint's)."""
        if self.class_names:
            return {"num_classes": len(self.class_names), "class_names": list(self.class_names)}
        return {}

    def files_dataset(self, files: list[Path]) -> Dataset:
        raise NotImplementedError

    def build_dataset(self, split: str) -> Dataset:
        files, missing = expand_inputs(self.inputs, self.suffixes)
        self.listed[split] = len(files) + len(missing)
        for entry, why in missing:
            self.record_setup_skip(split, entry, "missing", why)
        if not files:
            raise DatasetLayoutError(
                f"{type(self).__name__}: no {self.kind} found for inputs={self.inputs!r} "
                f"({'; '.join(f'{e}: {w}' for e, w in missing)}). Give a folder, a glob such as 'photos/*.jpg' "
                f"(quoted, so that the shell does not expand it), a file or a list of them; folders are read for "
                f"{', '.join(self.suffixes)}")
        self.files = files
        return self.files_dataset(files)

    def setup(self, stage: str | None = None) -> None:
        if stage not in (None, "predict"):
            raise ValueError(f"{type(self).__name__} holds unlabelled files: use it with `predict`, not `{stage}`")
        self.dataset(self.stage_split["predict"])

    def train_dataloader(self) -> Any:
        raise ValueError(f"{type(self).__name__} holds unlabelled files: use it with `predict`")

    val_dataloader = test_dataloader = train_dataloader


class ImageFiles(PredictFilesDataModule):
    """The user's images, read like the PASCAL-Context datamodule's evaluation images.

    Args:
        inputs: a folder, a glob (quote it), a file, or a list of them (see :func:`expand_inputs`).
        image_size: the fixed resize (int or [H, W]) of the checkpoint's config (``data.init_args.image_size``);
            carried over from the config's PASCAL-Context ``data`` section.
        mean / std: normalisation (ImageNet, as the PASCAL-Context datamodule).
        on_error: ``skip`` (warn, leave the file out, count it) or ``raise``.
        class_names: only for a checkpoint without class names.
        batch_size / eval_batch_size / num_workers: the loader (``eval_batch_size`` wins when given).
    """

    suffixes = IMAGE_SUFFIXES
    kind = "image files"

    def __init__(self, inputs: str | list[str], image_size: int | list[int] = 64,
                 mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                 on_error: OnError = "skip", class_names: list[str] | None = None, batch_size: int = 8,
                 num_workers: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__(inputs, on_error, class_names, batch_size, num_workers, eval_batch_size)
        self.image_size = size_hw(image_size)
        self.transform = MultiTaskTransform(self.image_size, train=False, mean=mean, std=std)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "image_size": list(self.image_size)}

    def files_dataset(self, files: list[Path]) -> Dataset:
        return ImageFileDataset(files, self.transform, self.on_error)

    def collate_fn(self, split: str, dataset: Dataset) -> Callable[[list[Any]], Any]:
        return SkipCollate(default_collate, partial(_empty_images, self.image_size))


class VideoFiles(PredictFilesDataModule):
    """The user's videos, read like the video datamodules' test videos (``test_clips x test_crops`` views).

    Args:
        inputs: a folder, a glob (quote it), a file, or a list of them (see :func:`expand_inputs`).
        backend / num_frames / sampling / segment_style / frame_interval / recipe / input_size / transform_args /
            test_clips / test_crops / short_videos: as in :class:`common.data.video_dataset.VideoDataModule`;
            carried over from the config's ``data`` section.
        on_error: ``skip`` (warn, leave the file out, count it) or ``raise``.
        class_names: only for a checkpoint without class names.
        batch_size / eval_batch_size / num_workers: the loader (``eval_batch_size`` wins when given).
    """

    suffixes = VIDEO_SUFFIXES
    kind = "video files"

    def __init__(
        self,
        inputs: str | list[str],
        backend: str = DEFAULT_BACKEND,
        num_frames: int = 8,
        sampling: Literal["segment", "dense"] = "segment",
        segment_style: Literal["tsn", "uniform"] = "tsn",
        frame_interval: int = 16,
        recipe: str = "multiscale_crop",
        input_size: int = 224,
        transform_args: dict[str, Any] | None = None,
        test_clips: int = 1,
        test_crops: int = 1,
        short_videos: ShortVideos = "skip",
        on_error: OnError = "skip",
        class_names: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(inputs, on_error, class_names, batch_size, num_workers, eval_batch_size)
        reader_class(backend)
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        self.backend = backend
        self.num_frames = num_frames
        self.sampler = build_sampler(sampling, num_frames, frame_interval, segment_style)
        self.transform = VideoTransform.preset(recipe, input_size, **dict(transform_args or {}))
        self.views = (test_clips, test_crops)
        self.short_videos = short_videos
        self.pads_samples = short_videos == "repeat"

    def files_dataset(self, files: list[Path]) -> Dataset:
        clips = VideoClipDataset([VideoSample(str(f), -1) for f in files], self.sampler, self.transform, train=False,
                                 num_clips=self.views[0], num_crops=self.views[1], backend=self.backend,
                                 on_error=self.on_error, short_videos=self.short_videos)
        return NamedVideoDataset(clips, unique_names(files))

    def collate_fn(self, split: str, dataset: Dataset) -> Callable[[list[Any]], Any]:
        assert isinstance(dataset, NamedVideoDataset)
        return partial(_collate_named_videos, item_shape=dataset.clips.item_shape)
