"""Video classification dataset and the base datamodule shared by Kinetics-400 (HMDB-51, UCF-101) and SSv2.

Samples are ``(path, label)`` pairs. An item is decoded with :mod:`common.data.video` (the reader is opened inside
``__getitem__``, i.e. inside the DataLoader worker), frames are picked by a sampler from
:mod:`common.data.sampling` and augmented by :class:`common.data.video_transforms.VideoTransform`.

Batches (dicts):

* training: ``video`` float ``(B, T, 3, S, S)``, ``label`` long ``(B,)``, ``index`` long ``(B,)``;
* validation / test / predict: ``video`` float ``(B, V, T, 3, S, S)`` with ``V = num_clips x num_crops`` views
  (crop-major: view ``v`` is crop ``v // num_clips`` of temporal clip ``v % num_clips``; V may be 1), so a
  module averages softmax over dim 1;
* always: ``skipped`` long scalar, the number of samples of this batch dropped as unreadable, and
  ``skipped_videos`` (list of ``(path, reason, detail)``), consumed by the datamodule in the main process.

Bad input: with ``on_error="skip"`` (default) an unreadable video (missing, zero-byte, truncated, undecodable) makes
``__getitem__`` return a :class:`SkippedSample` that :func:`collate_videos` drops; the datamodule, in the main
process (``on_before_batch_transfer``), warns once per file and counts it, and logs the running count as the metric
``data/skipped`` (summed over ranks) at the end of every train/validation/test epoch through a small callback it
attaches to the trainer itself. Annotation lines with unknown labels are counted the same way at setup. With
``on_error="raise"`` the first bad item raises :class:`common.data.video.VideoDecodeError` (or ``ValueError``).
A batch whose samples were all skipped has zero-length tensors of the right trailing shape.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.base import CVDataModule
from common.data.sampling import FrameSampler, build_sampler
from common.data.video import DEFAULT_BACKEND, VideoDecodeError, read_clip, reader_class
from common.data.video_transforms import RECIPES, VideoTransform

__all__ = [
    "VideoSample",
    "SkippedSample",
    "SkippedVideoWarning",
    "DatasetLayoutError",
    "SkipCounter",
    "VideoClipDataset",
    "collate_videos",
    "class_split",
    "few_shot_subset",
    "VideoDataModule",
    "SkippedVideosLogger",
]


class DatasetLayoutError(FileNotFoundError):
    """A dataset root or annotation file is missing or malformed; the message names the expected layout."""


class SkippedVideoWarning(UserWarning):
    """One sample left out (unreadable video or unknown label)."""


@dataclass(frozen=True, order=True)
class VideoSample:
    """One annotated video: absolute path and class index."""

    path: str
    label: int


@dataclass(frozen=True)
class SkippedSample:
    """What a dataset returns for an item it could not read (dropped by :func:`collate_videos`)."""

    index: int
    path: str
    reason: str
    detail: str = ""


class SkipCounter:
    """Counts skipped samples and warns once per (file, reason); lives in the main process."""

    def __init__(self) -> None:
        self.total = 0
        self.by_reason: Counter[str] = Counter()
        self._warned: set[tuple[str, str]] = set()

    def record(self, path: str, reason: str, detail: str = "") -> None:
        self.total += 1
        self.by_reason[reason] += 1
        key = (path, reason)
        if key not in self._warned:
            self._warned.add(key)
            msg = f"skipping {reason} video {path}" + (f" ({detail})" if detail else "")
            warnings.warn(msg, SkippedVideoWarning, stacklevel=2)

    @property
    def unique_files(self) -> int:
        return len(self._warned)


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
        on_error: Literal["skip", "raise"] = "skip",
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
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

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        sample = self.samples[index]
        try:
            if self.train:
                rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
                frames, _ = read_clip(sample.path, lambda n: self.sampler.train_indices(n, rng), self.backend)
                video = self.transform(frames, rng)
            else:
                frames, idx = read_clip(
                    sample.path, lambda n: self.sampler.test_indices(n, self.num_clips), self.backend
                )
                t = idx.shape[-1]
                views = self.transform.eval_views(frames, self.num_crops)  # (crops, clips*T, 3, S, S)
                video = views.reshape(self.num_crops * self.num_clips, t, *views.shape[2:])
        except VideoDecodeError as err:
            if self.on_error == "raise":
                raise
            return SkippedSample(index, sample.path, err.reason, err.detail)
        return {"video": video, "label": sample.label, "index": index}


def collate_videos(batch: list[dict[str, Any] | SkippedSample], item_shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """Stack the readable items, drop :class:`SkippedSample` ones and report them (see the module docstring)."""
    kept = [b for b in batch if not isinstance(b, SkippedSample)]
    skipped = [(b.path, b.reason, b.detail) for b in batch if isinstance(b, SkippedSample)]
    if kept:
        video = torch.stack([b["video"] for b in kept])
    else:
        video = torch.zeros((0, *item_shape), dtype=torch.float32)
    return {
        "video": video,
        "label": torch.tensor([b["label"] for b in kept], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in kept], dtype=torch.long),
        "skipped": torch.tensor(len(skipped), dtype=torch.long),
        "skipped_videos": skipped,
    }


def class_split(num_classes: int, split: Literal["all", "base", "novel"], seed: int = 0,
                base_fraction: float = 0.5) -> list[int]:
    """Original class ids of a seeded base/novel split (ViFi-CLIP's base-to-novel protocol: a random half of the
    classes is base, the rest novel). Returned sorted; ``all`` returns every class."""
    if split == "all":
        return list(range(num_classes))
    if split not in ("base", "novel"):
        raise ValueError(f"class_split must be all, base or novel, got {split!r}")
    perm = np.random.default_rng(seed).permutation(num_classes)
    n_base = int(round(num_classes * base_fraction))
    if not 0 < n_base < num_classes:
        raise ValueError(f"base_fraction {base_fraction} leaves no base or no novel class out of {num_classes}")
    chosen = perm[:n_base] if split == "base" else perm[n_base:]
    return sorted(int(c) for c in chosen)


def few_shot_subset(samples: Sequence[VideoSample], num_shots: int, seed: int = 0) -> list[VideoSample]:
    """K samples per class drawn with ``seed`` (ViFi-CLIP's K-shot protocol); classes with fewer keep all."""
    if num_shots < 1:
        raise ValueError(f"num_shots must be >= 1, got {num_shots}")
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s.label, []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    short = []
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < num_shots:
            short.append(label)
            keep.extend(idx)
        else:
            keep.extend(int(i) for i in rng.choice(idx, size=num_shots, replace=False))
    if short:
        warnings.warn(f"{len(short)} classes have fewer than {num_shots} training videos; all of theirs are kept",
                      stacklevel=2)
    return [samples[i] for i in sorted(keep)]


class SkippedVideosLogger(pl.Callback):
    """Logs the datamodule's running ``data/skipped`` count (summed over ranks) at the end of each epoch."""

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if isinstance(dm, VideoDataModule):
            pl_module.log("data/skipped", float(dm.skip_counter.total), reduce_fx="sum", sync_dist=True,
                          on_step=False, on_epoch=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)


class VideoDataModule(CVDataModule):
    """Base of the video classification datamodules: splits, class subsets, few-shot, views, skip accounting.

    Subclasses implement :meth:`load_class_names` (all classes, index order) and :meth:`load_split`
    (``"train"``/``"val"``/``"test"`` -> samples with original class indices), and may override
    :meth:`layout_help` / ``synth_command`` for the error messages.

    Args:
        root: dataset folder (None: ``outputs/data/<default_dirname>``, where the ShapesWorld writer puts it).
        backend: ``decord`` (default), ``pyav`` or ``torchcodec``.
        num_frames: frames per clip T.
        sampling: ``segment`` (TSN) or ``dense``; ``segment_style`` ``tsn`` (ViFi-CLIP) or ``uniform``
            (ST-Adapter SSv2); ``frame_interval`` for dense.
        recipe: transform recipe (``vificlip``, ``st_adapter_k400``, ``st_adapter_ssv2``); ``input_size`` S;
            ``transform_args`` overrides any :class:`VideoTransform` field (e.g. ``{normalize: clip}``).
        val_clips, val_crops, test_clips, test_crops: evaluation views (crops 1 or 3).
        class_split: ``all``, ``base`` or ``novel`` (seeded by ``split_seed``, ``base_fraction`` of the classes
            base); labels are re-indexed 0..K-1 within the split and ``info["class_names"]`` follows.
        num_shots: K training videos per class (seeded by ``shot_seed``), None for all.
        on_error: ``skip`` or ``raise`` for unreadable videos and unknown labels.
        synth_if_missing: write the ShapesWorld stand-in into ``root`` when it does not exist (default off; safe
            with several ranks: one writes under a file lock, into a temporary folder renamed when complete).
        synth_args: extra writer arguments for that, e.g. ``["--num-per-class", "8", "--size", "48"]``.
    """

    #: folder name under ``outputs/data`` and the ``python -m common.data.synth`` command that writes it
    default_dirname: str = ""
    synth_command: str = ""
    dataset_name: str = "video dataset"

    def __init__(
        self,
        root: str | None = None,
        backend: str = DEFAULT_BACKEND,
        num_frames: int = 8,
        sampling: Literal["segment", "dense"] = "segment",
        segment_style: Literal["tsn", "uniform"] = "tsn",
        frame_interval: int = 16,
        recipe: str = "vificlip",
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
        on_error: Literal["skip", "raise"] = "skip",
        synth_if_missing: bool = False,
        synth_args: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size)
        from common.paths import data_dir

        self.root = Path(root).expanduser() if root else data_dir() / self.default_dirname
        reader_class(backend)
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
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
        self.on_error = on_error
        self.synth_if_missing = synth_if_missing
        self._synth_args = list(synth_args or [])
        self.skip_counter = SkipCounter()
        self.datasets: dict[str, VideoClipDataset] = {}
        self._all_class_names: list[str] | None = None

    # -- subclass hooks ----------------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        """All class names, in class-index order."""
        raise NotImplementedError

    def load_split(self, split: Literal["train", "val", "test"]) -> list[VideoSample]:
        """Samples of a split with original class indices (unknown labels recorded via :meth:`record_bad_label`)."""
        raise NotImplementedError

    def layout_help(self) -> str:
        """The expected on-disk layout, for error messages."""
        return ""

    # -- errors and bad input ----------------------------------------------------------------------------------
    def layout_error(self, what: str) -> DatasetLayoutError:
        msg = f"{self.dataset_name}: {what}\nExpected layout under {self.root}:\n{self.layout_help()}"
        if self.synth_command:
            msg += (f"\nTo write the ShapesWorld stand-in there: python -m common.data.synth {self.synth_command} "
                    f"--out {self.root}")
        return DatasetLayoutError(msg)

    def require_file(self, path: Path, what: str) -> Path:
        if not self.root.is_dir():
            raise self.layout_error(f"dataset root {self.root} does not exist")
        if not path.is_file():
            raise self.layout_error(f"{what} not found: {path}")
        return path

    def record_bad_label(self, path: str, detail: str) -> None:
        """An annotation line whose label is unknown: raise or count it as skipped."""
        if self.on_error == "raise":
            raise ValueError(f"{self.dataset_name}: unknown label for {path}: {detail}")
        self.skip_counter.record(path, "unknown_label", detail)

    # -- class names, splits -----------------------------------------------------------------------------------
    def _ensure_data(self) -> None:
        if self.root.is_dir() or not self.synth_if_missing:
            return
        if not self.synth_command:
            raise self.layout_error(f"dataset root {self.root} does not exist")
        _synthesize_once(self.root, [self.synth_command, *self._synth_args])

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

    def build_dataset(self, split: Literal["train", "val", "test"]) -> VideoClipDataset:
        """The dataset of one split, with the class subset, few-shot subset and views applied."""
        self._ensure_data()
        samples = self._select(self.load_split(split))
        if split == "train" and self.num_shots:
            samples = few_shot_subset(samples, self.num_shots, self.shot_seed)
        if not samples:
            raise self.layout_error(f"the {split} split has no samples (after class_split={self.class_split_name})")
        clips, crops = self.views.get(split, (1, 1))
        return VideoClipDataset(
            samples, self.sampler, self.transform, train=split == "train", num_clips=clips, num_crops=crops,
            backend=self.backend, on_error=self.on_error,
        )

    # -- Lightning ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._ensure_data()

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage or "", ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)  # type: ignore[arg-type]
        trainer = getattr(self, "trainer", None)
        if trainer is not None and not any(isinstance(c, SkippedVideosLogger) for c in trainer.callbacks):
            trainer.callbacks.append(SkippedVideosLogger())

    def _collate(self, ds: VideoClipDataset) -> Callable[[list[Any]], dict[str, Any]]:
        return partial(collate_videos, item_shape=ds.item_shape)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        ds = self.datasets[split]
        if train:
            return self.train_loader(ds, collate_fn=self._collate(ds))
        return self.eval_loader(ds, collate_fn=self._collate(ds))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Main process: warn once per skipped file and count it (see the module docstring)."""
        if isinstance(batch, dict) and "skipped_videos" in batch:
            for path, reason, detail in batch.pop("skipped_videos"):
                self.skip_counter.record(path, reason, detail)
        return batch


def _synthesize_once(root: Path, argv: list[str]) -> None:
    """Run a ShapesWorld writer into ``root`` once, even with several ranks racing (file lock + atomic rename)."""
    import argparse

    from common.data.synth.video_writers import cli_commands

    command, *rest = argv
    _, add_arguments, run = cli_commands()[command]
    parser = argparse.ArgumentParser(prog=f"python -m common.data.synth {command}")
    add_arguments(parser)
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if root.is_dir():
                return
            tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            run(parser.parse_args(["--out", str(tmp), *rest]))
            os.replace(tmp, root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
