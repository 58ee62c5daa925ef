"""Image classification for transfer benchmarks (VTAB-1k, FGVC, few-shot, any list or class-per-folder tree).

The annotation formats and their readers are in :mod:`common.data.image_lists` (``format: vtab | fewshot | list |
cub | folder``, or ``auto``: picked from the files present). The dataset folder is ``<root>/<task>`` (``task: null``:
``root`` itself); with ``root: null`` it is ``outputs/data/vtab-like/<task>``, where the ShapesWorld VTAB-like tasks
(``python -m common.data.synth vtab-like``) are written on first use.

Per-split files (``train_file`` / ``val_file`` / ``test_file``, relative to the dataset folder; None: the format's)::

    vtab     train800.txt | val200.txt | test.txt                (the tuning protocol; the final one trains on
                                                                  train800val200.txt and evaluates on test.txt)
    fewshot  annotations/train_meta.list.num_shot_{shots}.seed_{fewshot_seed} | annotations/val_meta.list |
             annotations/test_meta.list                           (images under data/images: ``image_prefix``)
    list     train.txt | val.txt | test.txt
    cub      train_test_split.txt's train | its test | its test  (images under images/)
    folder   train/ | val/ | test/                                (class folders inside)

Transforms (``recipe``; ``auto``: ``vtab`` for the VTAB format, ``fgvc`` otherwise), bicubic, ImageNet mean / std
(timm's ``IMAGENET_DEFAULT_MEAN/STD``, what the official Conv-Adapter code normalises with):

* ``vtab`` (NOAH's VTAB-1k pipeline): resize to ``image_size`` x ``image_size``, no crop, for every split; on train a
  horizontal flip (p 0.5) unless the task's label is an orientation or a left-right position (``hflip: null``
  decides from :data:`NO_FLIP_TASKS`: the official Conv-Adapter code's list, ``clevr_dist clevr_count dsprites_loc
  dsprites_ori dmlab smallnorb_azi``, plus the ShapesWorld ``position`` / ``orientation`` tasks).
* ``fgvc`` (the official code's FGVC / few-shot pipeline, timm ``create_transform``): train random-resized crop
  (scale ``rrc_scale``, default (0.22, 1)) + flip; eval resize to ``image_size / crop_ratio`` square then a centre
  crop of ``image_size``.

Bad data (:mod:`common.data.base`): a malformed annotation line is the layout error naming the file and the line
number; a listed image that does not exist (or a label outside the classes) is left out at setup and counted,
and more than ``max_missing_fraction`` of a split left out fails; an image that cannot be decoded comes back as a
:class:`SkippedSample` (``on_error: skip``, counted in ``batch["skipped"]``) or raises (``on_error: raise``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data.base import (
    CVDataModule,
    DatasetLayoutError,
    OnError,
    SkipCollate,
    SkippedSample,
    check_on_error,
    check_paths_exist,
)
from common.data.image_lists import (
    DEFAULT_FILES,
    DEFAULT_PREFIX,
    FORMATS,
    LAYOUT,
    VTAB_NUM_CLASSES,
    ListFormatError,
    detect_format,
    read_class_names,
    read_cub,
    read_folder,
    read_label_list,
)
from common.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD, NO_FLIP_TASKS, build_transform

__all__ = ["FORMATS", "NO_FLIP_TASKS", "VTAB_NUM_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "detect_format",
           "build_transform", "ImageListDataset", "ImageClassificationDataModule"]

Format = Literal["auto", "vtab", "fewshot", "list", "cub", "folder"]


class ImageListDataset(Dataset):
    """``(absolute image path, label)`` samples -> ``{"image": (3, H, W) float, "label": long}``; an image that cannot
    be decoded is a :class:`SkippedSample` (``on_error: skip``) or raises."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Image.Image], torch.Tensor],
                 on_error: OnError = "skip") -> None:
        self.samples = list(samples)
        self.transform = transform
        self.on_error = check_on_error(on_error)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [lbl for _, lbl in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except Exception as err:
            if self.on_error == "raise":
                raise OSError(f"{path}: cannot decode the image ({type(err).__name__}: {err})") from err
            return SkippedSample(index, path, "undecodable", f"{type(err).__name__}: {err}")
        return {"image": self.transform(image), "label": torch.tensor(label, dtype=torch.long)}


def _empty_batch(size: int) -> dict[str, Any]:
    return {"image": torch.zeros(0, 3, size, size), "label": torch.zeros(0, dtype=torch.long)}


class ImageClassificationDataModule(CVDataModule):
    """Image classification over VTAB-1k / few-shot / FGVC list files, CUB-200-2011 or a class-per-folder tree.

    Args:
        root: the benchmark folder (``vtab-1k``, the few-shot root, the CUB folder, ...); None: the ShapesWorld
            VTAB-like tasks in ``outputs/data/vtab-like`` (written on first use when ``synth_if_missing``). A root
            given here is read, never written.
        task: the task / dataset sub-folder of ``root`` (``caltech101``, ``dsprites_ori``, the ShapesWorld
            ``shape``, ...); None: ``root`` is the dataset folder.
        format: ``auto`` (from the files present) or one of :data:`FORMATS`.
        train_file, val_file, test_file: per-split annotation files (folders for ``folder``; ``train`` / ``test``
            for ``cub``) relative to the dataset folder; None: the format's defaults (module docstring). ``{shots}``
            and ``{fewshot_seed}`` are filled in.
        shots, fewshot_seed: the few-shot list (K and seed).
        image_prefix: folder the list paths are relative to, under the dataset folder (None: the format's).
        class_file: class names, one a line (or ``index name``), relative to the dataset folder; used if present.
        num_classes: override the class count (default: the class file, the known VTAB count, or the largest label
            listed + 1).
        image_size: network input size (224 in the paper, 64 for the ShapesWorld presets).
        recipe: ``auto``, ``vtab`` or ``fgvc`` (module docstring).
        hflip: flip on train; None: on unless the task is in ``no_flip_tasks``.
        no_flip_tasks: tasks whose label a flip changes (default :data:`NO_FLIP_TASKS`).
        crop_ratio, rrc_scale: the ``fgvc`` recipe's eval centre-crop ratio and train crop scale.
        mean, std: normalisation (ImageNet's).
        on_error, max_missing_fraction: bad data (module docstring).
        synth_if_missing, synth_options: the ShapesWorld stand-in in the default root
            (:func:`common.data.synth.vtab.write_vtab_like` arguments).
    """

    dataset_name = "image classification"
    synth_command = "vtab-like"
    default_dirname = "vtab-like"

    def __init__(
        self,
        root: str | None = None,
        task: str | None = None,
        format: Format = "auto",  # noqa: A002 (the config key users write)
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        shots: int = 16,
        fewshot_seed: int = 0,
        image_prefix: str | None = None,
        class_file: str | None = "classes.txt",
        num_classes: int | None = None,
        image_size: int = 224,
        recipe: Literal["auto", "vtab", "fgvc"] = "auto",
        hflip: bool | None = None,
        no_flip_tasks: list[str] | None = None,
        crop_ratio: float = 0.875,
        rrc_scale: tuple[float, float] = (0.22, 1.0),
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        on_error: OnError = "skip",
        max_missing_fraction: float = 0.5,
        synth_if_missing: bool = True,
        synth_options: dict[str, Any] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size,
                         max_missing_fraction=max_missing_fraction)
        self.resolve_root(root)
        if format not in ("auto", *FORMATS):
            raise ValueError(f"format must be auto or one of {list(FORMATS)}, got {format!r}")
        if recipe not in ("auto", "vtab", "fgvc"):
            raise ValueError(f"recipe must be auto, vtab or fgvc, got {recipe!r}")
        self.task = task
        self._format = format
        self._files = {"train": train_file, "val": val_file, "test": test_file}
        self.shots, self.fewshot_seed = int(shots), int(fewshot_seed)
        self._image_prefix = image_prefix
        self.class_file = class_file
        self._num_classes = num_classes
        self.image_size = int(image_size)
        self._recipe = recipe
        self.no_flip_tasks = tuple(NO_FLIP_TASKS if no_flip_tasks is None else no_flip_tasks)
        self.hflip = (task not in self.no_flip_tasks) if hflip is None else bool(hflip)
        self.crop_ratio, self.rrc_scale = float(crop_ratio), tuple(rrc_scale)
        self.mean, self.std = tuple(mean), tuple(std)
        self.on_error = check_on_error(on_error)
        self.synth_if_missing = synth_if_missing
        self.synth_options = dict(synth_options or {})
        self._cub: tuple[dict[str, list[tuple[str, int]]], list[str]] | None = None
        self._class_names: list[str] | None = None
        self._stamp_checked = False

    # --- where and what
    @property
    def folder(self) -> Path:
        """The dataset folder: ``root/task`` (or ``root``)."""
        return self.root / self.task if self.task else self.root

    @property
    def format(self) -> str:
        """The annotation format (detected from the files once the folder exists, for ``format: auto``)."""
        if self._format == "auto":
            self._ready()
            self._format = detect_format(self.folder)  # type: ignore[assignment]
        return self._format

    @property
    def recipe(self) -> str:
        return ("vtab" if self.format == "vtab" else "fgvc") if self._recipe == "auto" else self._recipe

    def split_file(self, split: str) -> Path:
        name = self._files[split] or DEFAULT_FILES[self.format][("train", "val", "test").index(split)]
        return self.folder / name.format(shots=self.shots, fewshot_seed=self.fewshot_seed)

    @property
    def image_prefix(self) -> str:
        return DEFAULT_PREFIX[self.format] if self._image_prefix is None else self._image_prefix

    def layout_help(self) -> str:
        fmt = self._format if self._format != "auto" else None
        return "\n".join(v for k, v in LAYOUT.items() if fmt in (None, k))

    def write_stand_in(self, out: Path, **kwargs: Any) -> Any:
        from common.data.synth.vtab import write_vtab_like

        return write_vtab_like(out, **kwargs)

    def _ready(self) -> None:
        self.ensure_root(self.synth_if_missing, **self.synth_options)
        self._check_stamp()
        if not self.folder.is_dir():
            raise self.layout_error(f"dataset folder {self.folder} does not exist (task {self.task!r} under {self.root})")

    def prepare_data(self) -> None:
        """Write the ShapesWorld stand-in into the default root when it is missing (Lightning: local rank 0 only)."""
        self._ready()

    def _check_stamp(self) -> None:
        """A default-root stand-in written with other ``synth_options`` is refused (it would be read silently)."""
        if self._stamp_checked or self.root_given or not self.synth_if_missing:
            return
        from common.data.synth.vtab import STAMP_NAME, requested_options, written_options

        have, want = written_options(self.root), requested_options(**self.synth_options)
        if have is not None and have != want:
            diff = ", ".join(f"{k}: {have.get(k)} here, {want.get(k)} asked" for k in sorted(set(have) | set(want))
                             if have.get(k) != want.get(k))
            raise self.layout_error(f"{self.root / STAMP_NAME}: this ShapesWorld VTAB-like folder was written with "
                                    f"other options than data.synth_options asks for ({diff}); delete {self.root} "
                                    "to rewrite it, or point data.root at another folder")
        self._stamp_checked = True

    # --- reading the annotations
    def _read(self, split: str) -> list[tuple[str, int]]:
        """The split's ``(path relative to the image base, label)`` samples, as listed."""
        fmt = self.format
        try:
            if fmt == "cub":
                if self._cub is None:
                    self._cub = read_cub(self.folder)
                part = self._files[split] or ("train" if split == "train" else "test")
                if part not in self._cub[0]:
                    raise self.layout_error(f"CUB {split}_file must be 'train' or 'test', got {part!r}")
                return self._cub[0][part]
            path = self.split_file(split)
            if fmt == "folder":
                if not path.is_dir():
                    raise self.layout_error(f"the {split} folder {path} does not exist")
                samples, unknown = read_folder(path, self.class_names)
                for cls in unknown:
                    self.record_setup_skip(split, str(path / cls), "unknown_label",
                                           f"class folder {cls!r} is not among the train split's classes")
                return samples
            if not path.is_file():
                raise self.layout_error(f"the {split} annotation file {path} does not exist")
            return read_label_list(path)
        except DatasetLayoutError:
            raise
        except ListFormatError as err:
            raise self.layout_error(str(err)) from None
        except FileNotFoundError as err:
            raise self.layout_error(f"{err.filename}: missing") from None

    def _base(self, split: str) -> Path:
        if self.format == "folder":
            return self.split_file(split)
        return self.folder / self.image_prefix

    @property
    def class_names(self) -> list[str]:
        """The class names (class file, CUB's classes.txt, the train folders, or ``class <i>``)."""
        if self._class_names is None:
            self._class_names = self._load_class_names()
        return self._class_names

    def _load_class_names(self) -> list[str]:
        self._ready()
        fmt = self.format
        names: list[str] | None = None
        if fmt == "cub":
            if self._cub is None:
                try:
                    self._cub = read_cub(self.folder)
                except ListFormatError as err:
                    raise self.layout_error(str(err)) from None
                except FileNotFoundError as err:
                    raise self.layout_error(f"{err.filename}: missing") from None
            names = self._cub[1]
        elif fmt == "folder":
            train = self.split_file("train")
            if not train.is_dir():
                raise self.layout_error(f"the train folder {train} does not exist")
            names = sorted(p.name for p in train.iterdir() if p.is_dir())
        elif self.class_file and (self.folder / self.class_file).is_file():
            names = read_class_names(self.folder / self.class_file)
        n = self._num_classes
        if n is None and names is None:
            n = VTAB_NUM_CLASSES.get(self.task or self.folder.name)
            if n is None:
                labels = [lbl for s in ("train", "val", "test") if self._files_exist(s) for _, lbl in self._read(s)]
                n = max(labels, default=-1) + 1
        if names is None:
            names = [f"class {i}" for i in range(n or 0)]
        if n is not None and n != len(names):
            if n < len(names):
                names = names[:n]
            else:
                names = names + [f"class {i}" for i in range(len(names), n)]
        if not names:
            raise self.layout_error(f"no class found for {self.folder}")
        return names

    def _files_exist(self, split: str) -> bool:
        return self.split_file(split).exists()

    # --- datasets
    def build_dataset(self, split: str) -> ImageListDataset:
        self._ready()
        listed = self._read(split)
        base = self._base(split)
        k = len(self.class_names)
        paths = [str(base / rel) for rel, _ in listed]
        exists = check_paths_exist(paths)
        samples = []
        self.listed[split] = len(listed) + len(self.setup_skips.get(split, []))
        for (_rel, label), path, ok in zip(listed, paths, exists, strict=True):
            if not ok:
                self.record_setup_skip(split, path, "missing", f"listed in {self._where(split)}")
            elif not 0 <= label < k:
                self.record_setup_skip(split, path, "unknown_label", f"label {label} outside 0..{k - 1}")
            else:
                samples.append((path, label))
        train = split == "train"
        transform = build_transform(self.recipe, train, self.image_size, self.hflip, self.crop_ratio, self.rrc_scale,
                                    self.mean, self.std)
        return ImageListDataset(samples, transform, self.on_error)

    def _where(self, split: str) -> str:
        return str(self.folder / "train_test_split.txt") if self.format == "cub" else str(self.split_file(split))

    def collate_fn(self, split: str, dataset: Dataset) -> Callable[[list[Any]], dict[str, Any]]:
        return SkipCollate(empty=partial(_empty_batch, self.image_size))

    @property
    def info(self) -> dict[str, Any]:
        """``num_classes`` and ``class_names`` (writes the ShapesWorld stand-in first when the default root lacks it)."""
        names = self.class_names
        return {"num_classes": len(names), "class_names": list(names)}
