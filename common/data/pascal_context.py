"""PASCAL-Context multi-task (the PASCAL_MT archive of the ASTMT / MTI-Net / ATRC / MTLoRA lineage).

On-disk layout read here (the real archive, and the ShapesWorld stand-in written by
``python -m common.data.synth pascal-context --out DIR``)::

    ROOT/
      JPEGImages/{id}.jpg
      ImageSets/Context/{train,val}.txt        one image id per line
      semseg/pascal-context/{id}.png           21 classes (0 background, 1..20 the VOC classes), 255 ignore
                                               (semseg/VOC12/{id}.png is preferred where it exists, as upstream)
      human_parts/{id}.mat                     PASCAL-Part ``anno`` struct (imname, objects(class, class_ind,
                                               mask, parts(part_name, mask)))
      normals_distill/{id}.png                 RGB, n = 2 v / 255 - 1
      pascal-context/trainval/{id}.mat         ``LabelMap`` (459 PASCAL-Context classes): normals are valid only
                                               on NYU-compatible classes
      sal_distill/{id}.png                     saliency, v / 255 > 0.5
      class_names.txt                          optional: 21 semseg class names (the ShapesWorld writer adds it)

Per task, what a sample holds:

* ``semseg``: (H, W) long, 0..20, 255 ignore.
* ``human_parts``: (H, W) long, 0 background, 1 head, 2 torso, 3 upper arm, 4 lower arm + hand, 5 upper leg,
  6 lower leg + foot; every person object (``class_ind == 15``) with part annotations paints its parts, grouped
  from the PASCAL-Part names. An image with no annotated person (or whose people leave the frame under
  augmentation) is all 255, so the parts loss and mIoU only see images with people.
* ``sal``: (H, W) long {0, 1}, 255 where augmentation padded.
* ``normals``: (3, H, W) float unit vectors (x right, y down, z towards the viewer; the x component flips sign under a
  horizontal flip and the vectors rotate with the image), the zero vector where invalid, plus ``normals_mask``
  (H, W) bool.

Training augmentation (the lineage's, :class:`common.data.pascal_transforms.MultiTaskTransform`): random
horizontal flip, random scale and rotation, fixed resize, ImageNet normalisation; evaluation does the fixed resize
only. Deviation from upstream, on purpose: upstream pads the rotated label maps with 0 (background); here padding is
ignore (255), which the brief asks for.

A broken sample (missing, unreadable, a label of the wrong size) is an error naming the file with
``on_error="raise"``; with ``on_error="skip"`` (default) it is left out and counted (:mod:`common.data.base`): files
missing at setup as the datamodule's setup-time skips, files that fail to load as a ``SkippedSample`` the collate
counts in ``batch["skipped"]``. More than ``max_missing_fraction`` of a split missing fails with the layout error.
Constants and file readers: :mod:`common.data.pascal_readers`; augmentation: :mod:`common.data.pascal_transforms`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from common.data.base import (
    CVDataModule,
    OnError,
    SkippedSample,
    SkippedSampleWarning,
    check_on_error,
)
from common.data.pascal_readers import (
    IGNORE_INDEX,
    LAYOUT_HELP,
    NORMALS_VALID_CONTEXT_IDS,
    PART_CLASS_NAMES,
    PERSON_CLASS,
    PERSON_PART_GROUPS,
    TASK_DIRS,
    TASKS,
    VOC_CLASS_NAMES,
    VOC_TO_CONTEXT_ID,
    PascalLayoutError,
    SampleError,
    check_tasks,
    read_human_parts,
    read_image,
    read_normals,
    read_saliency,
    read_semseg,
)
from common.data.pascal_transforms import MultiTaskTransform, pascal_collate, size_hw

__all__ = [
    "TASKS", "VOC_CLASS_NAMES", "PART_CLASS_NAMES", "PERSON_CLASS", "PERSON_PART_GROUPS", "VOC_TO_CONTEXT_ID",
    "NORMALS_VALID_CONTEXT_IDS", "LAYOUT_HELP", "IGNORE_INDEX", "PascalLayoutError", "SampleError",
    "read_human_parts", "read_normals", "read_saliency", "read_semseg", "read_image", "MultiTaskTransform",
    "PascalContextMT", "pascal_collate", "PascalContextMTDataModule",
]


# --------------------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------------------


class PascalContextMT(Dataset):
    """One split of PASCAL-Context multi-task (see the module docstring for the layout and the sample format).

    Args:
        root: the PASCAL_MT folder.
        split: ``train`` or ``val`` (any ``ImageSets/Context/<split>.txt``).
        tasks: subset of :data:`TASKS`.
        transform: a :class:`MultiTaskTransform` (None: the fixed-size-free identity at the native size).
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring).
        normals_valid_ids: PASCAL-Context ids on which normals are valid (None: every pixel).
        area_threshold: person objects of at most this many pixels are ignored (upstream default 0).
        cache_in_memory: keep every decoded sample (before augmentation) in memory after its first read, so later
            epochs read no file. For small datasets (the ShapesWorld presets: 200 images of 64 px are ~10 MB);
            each DataLoader worker process holds its own copy.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        tasks: Sequence[str] = TASKS,
        transform: MultiTaskTransform | None = None,
        on_error: OnError = "skip",
        normals_valid_ids: frozenset[int] | None = NORMALS_VALID_CONTEXT_IDS,
        area_threshold: int = 0,
        cache_in_memory: bool = False,
    ) -> None:
        self.on_error = check_on_error(on_error)
        self.root = Path(root)
        self.split = split
        self.tasks = check_tasks(tasks)
        self.transform = transform
        self.normals_valid_ids = normals_valid_ids
        self.area_threshold = int(area_threshold)
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache_in_memory else None
        #: (id, reason) of every sample left out at setup (missing files)
        self.skipped: list[tuple[str, str]] = []
        self.ids: list[str] = []
        self._semseg_paths: dict[str, Path] = {}
        self._index()

    # --- setup-time checks
    def _index(self) -> None:
        root = self.root
        if not root.is_dir():
            raise PascalLayoutError(f"PASCAL-Context root {root} does not exist; {LAYOUT_HELP}")
        for folder in ("JPEGImages",) + tuple(d for t in self.tasks for d in TASK_DIRS[t]):
            if not (root / folder).is_dir():
                raise PascalLayoutError(
                    f"{root / folder} is missing (needed for tasks {list(self.tasks)}); {LAYOUT_HELP}"
                )
        split_file = root / "ImageSets" / "Context" / f"{self.split}.txt"
        if not split_file.is_file():
            raise PascalLayoutError(f"split file {split_file} is missing; {LAYOUT_HELP}")
        ids = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        if not ids:
            raise PascalLayoutError(f"split file {split_file} lists no image ids; {LAYOUT_HELP}")

        listing: dict[str, set[str]] = {}

        def present(folder: str, name: str) -> bool:
            if folder not in listing:
                d = root / folder
                listing[folder] = set(os.listdir(d)) if d.is_dir() else set()
            return name in listing[folder]

        for im_id in ids:
            need = [("JPEGImages", f"{im_id}.jpg")]
            for t in self.tasks:
                if t == "semseg":
                    if present("semseg/VOC12", f"{im_id}.png"):
                        self._semseg_paths[im_id] = root / "semseg" / "VOC12" / f"{im_id}.png"
                    else:
                        need.append(("semseg/pascal-context", f"{im_id}.png"))
                        self._semseg_paths[im_id] = root / "semseg" / "pascal-context" / f"{im_id}.png"
                elif t == "human_parts":
                    need.append(("human_parts", f"{im_id}.mat"))
                elif t == "sal":
                    need.append(("sal_distill", f"{im_id}.png"))
                elif t == "normals":
                    need.append(("normals_distill", f"{im_id}.png"))
                    if self.normals_valid_ids is not None:
                        need.append(("pascal-context/trainval", f"{im_id}.mat"))
            missing = [root / f / n for f, n in need if not present(f, n)]
            if missing:
                msg = f"{split_file}: image {im_id!r} lacks {', '.join(str(m) for m in missing)}"
                if self.on_error == "raise":
                    raise PascalLayoutError(f"{msg}; {LAYOUT_HELP} (or set on_error: skip)")
                warnings.warn(f"skipping: {msg}", SkippedSampleWarning, stacklevel=2)
                self.skipped.append((im_id, msg))
                continue
            self.ids.append(im_id)
        if not self.ids:
            raise PascalLayoutError(f"no usable sample in split {self.split!r} of {root}; {LAYOUT_HELP}")

    def __len__(self) -> int:
        return len(self.ids)

    # --- loading
    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        """The sample as numpy arrays at native resolution (before any transform); raises :class:`SampleError`."""
        im_id = self.ids[index]
        root = self.root
        img_path = root / "JPEGImages" / f"{im_id}.jpg"
        try:
            image = read_image(img_path)
        except Exception as err:
            raise SampleError(f"{img_path}: cannot read the image ({err})") from err
        hw = image.shape[:2]
        sample: dict[str, np.ndarray] = {"image": image}

        def check(path: Path, arr: np.ndarray) -> None:
            if arr.shape[:2] != hw:
                raise SampleError(
                    f"{path}: label is {arr.shape[0]}x{arr.shape[1]} but image {img_path} is {hw[0]}x{hw[1]}"
                )

        for t in self.tasks:
            if t == "semseg":
                p = self._semseg_paths[im_id]
                arr = self._wrap(read_semseg, p)
                check(p, arr)
                sample["semseg"] = arr
            elif t == "human_parts":
                p = root / "human_parts" / f"{im_id}.mat"
                arr, _ = self._wrap(read_human_parts, p, hw, area_threshold=self.area_threshold)
                sample["human_parts"] = arr
            elif t == "sal":
                p = root / "sal_distill" / f"{im_id}.png"
                arr = self._wrap(read_saliency, p)
                check(p, arr)
                sample["sal"] = arr
            elif t == "normals":
                p = root / "normals_distill" / f"{im_id}.png"
                lm = (
                    None
                    if self.normals_valid_ids is None
                    else root / "pascal-context" / "trainval" / f"{im_id}.mat"
                )
                arr, valid = self._wrap(read_normals, p, lm, self.normals_valid_ids)
                check(p, arr)
                sample["normals"], sample["normals_mask"] = arr, valid
        return sample

    @staticmethod
    def _wrap(fn, path: Path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except SampleError:
            raise
        except Exception as err:
            raise SampleError(f"{path}: cannot read ({type(err).__name__}: {err})") from err

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        im_id = self.ids[index]
        try:
            if self._cache is not None and index in self._cache:
                raw = dict(self._cache[index])
            else:
                raw = self.load_raw(index)
                if self._cache is not None:
                    self._cache[index] = dict(raw)
        except SampleError as err:
            if self.on_error == "raise":
                raise
            return SkippedSample(index, str(self.root / "JPEGImages" / f"{im_id}.jpg"), "broken", str(err))
        if self.transform is None:
            out = MultiTaskTransform(raw["image"].shape[:2], train=False).apply(raw, False, 1.0, 0.0)
        else:
            out = self.transform(raw)
        out["id"] = im_id
        return out


# --------------------------------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------------------------------


class PascalContextMTDataModule(CVDataModule):
    """PASCAL-Context multi-task (semseg, human parts, saliency, normals) in the PASCAL_MT layout.

    Args:
        root: the PASCAL_MT folder (default: ``outputs/data/pascal-context``, where the ShapesWorld writer puts it). A
            root given here is read, never written: if it does not exist, the error names it and the writer.
        tasks: subset of ``[semseg, human_parts, sal, normals]``.
        image_size: the fixed resize (int or [H, W]; upstream 512, MTLoRA 448, ShapesWorld presets 64).
        augment: use the training augmentation on the train split.
        hflip_prob / scale_range / max_rotation: the augmentation (upstream 0.5, [0.75, 1.25], 20 degrees).
        train_split / val_split / test_split: ``ImageSets/Context/<name>.txt`` lists (test defaults to val, as
            the benchmark reports on val).
        on_error: ``skip`` (warn, leave the sample out, count it) or ``raise``.
        normals_valid_classes: PASCAL-Context ids where normals are valid (None: the NYU-compatible set).
        synth_if_missing: with ``root`` None, write the ShapesWorld stand-in into the default folder (on local rank
            0, in ``prepare_data``) when it does not exist (default on; off: a missing default folder is the layout
            error); ``synth_options`` go to :func:`common.data.synth.pascal_mt.write_pascal_mt`. Never applies to a
            root given explicitly. ``generate_if_missing`` is its old name (deprecated, one release).
        cache_in_memory: keep decoded samples in memory after the first epoch (small datasets only; see
            :class:`PascalContextMT`).
        batch_size / num_workers / eval_batch_size: loaders.
    """

    dataset_name = "PASCAL-Context multi-task"
    synth_command = "pascal-context"
    default_dirname = "pascal-context"

    def __init__(
        self,
        root: str | None = None,
        tasks: list[str] | None = None,
        image_size: int | list[int] = 64,
        augment: bool = True,
        hflip_prob: float = 0.5,
        scale_range: tuple[float, float] = (0.75, 1.25),
        max_rotation: float = 20.0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        on_error: OnError = "skip",
        max_missing_fraction: float = 0.5,
        normals_valid_classes: list[int] | None = None,
        synth_if_missing: bool = True,
        synth_options: dict[str, Any] | None = None,
        cache_in_memory: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        generate_if_missing: bool | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size,
                         max_missing_fraction=max_missing_fraction)
        self.resolve_root(root)
        self.tasks = check_tasks(tasks if tasks is not None else TASKS)
        self.image_size = size_hw(image_size)
        self.on_error = check_on_error(on_error)
        self.augment = augment
        self.aug = dict(hflip_prob=hflip_prob, scale_range=tuple(scale_range), max_rotation=max_rotation)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.normals_valid_ids = (
            NORMALS_VALID_CONTEXT_IDS
            if normals_valid_classes is None
            else frozenset(int(c) for c in normals_valid_classes)
        )
        if generate_if_missing is not None:
            warnings.warn("PascalContextMTDataModule: generate_if_missing is deprecated, say synth_if_missing (the "
                          "name every datamodule uses); the old name goes in the next release", FutureWarning,
                          stacklevel=2)
            synth_if_missing = generate_if_missing
        self.synth_if_missing = synth_if_missing
        self.synth_options = dict(synth_options or {})
        if not self.root_given:  # stand-ins of other worlds live side by side, never in each other's folder
            from common.data.synth.pascal_mt import stand_in_root

            self.root = stand_in_root(self.synth_options)
        self.cache_in_memory = cache_in_memory
        self.collate = pascal_collate(self.tasks, self.image_size)

    # --- data preparation
    def write_stand_in(self, out: Path, **kwargs: Any) -> Any:
        from common.data.synth.pascal_mt import write_pascal_mt

        return write_pascal_mt(out, **kwargs)

    def prepare_data(self) -> None:
        """Check the root; write the ShapesWorld stand-in into the default root when it is missing (Lightning: local
        rank 0 only). A stand-in folder written with other ``synth_options`` is an error naming its stamp."""
        wrote = self.ensure_root(self.synth_if_missing, **self.synth_options)
        if wrote or self.root_given or not self.synth_if_missing:  # only our own stand-in carries the options stamp
            return
        from common.data.synth.pascal_mt import STAMP_NAME, requested_options, written_options

        have, want = written_options(self.root), requested_options(**self.synth_options)
        if have is not None and have != want:
            diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
            raise PascalLayoutError(
                f"{self.root / STAMP_NAME}: this ShapesWorld PASCAL_MT was written with other options than "
                f"data.synth_options asks for ({', '.join(f'{k}: {a} here, {b} asked' for k, (a, b) in diff.items())}); "
                f"delete {self.root} to regenerate it, or point data.root at another folder")

    def build_dataset(self, split: str) -> PascalContextMT:
        """The dataset of ``train`` / ``val`` / ``test`` (checks the layout; missing files are skipped or raised)."""
        self.ensure_root(self.synth_if_missing, **self.synth_options)  # no-op when prepare_data ran
        train = split == "train" and self.augment
        ds = PascalContextMT(
            self.root, self.splits[split], self.tasks, MultiTaskTransform(self.image_size, train=train, **self.aug),
            on_error=self.on_error, normals_valid_ids=self.normals_valid_ids, cache_in_memory=self.cache_in_memory,
        )
        for im_id, msg in ds.skipped:  # the dataset warned already
            self.record_setup_skip(split, im_id, "missing", msg, warn=False)
        return ds

    def layout_help(self) -> str:
        return "  " + LAYOUT_HELP.split(". Get the real")[0].removeprefix("expected the PASCAL_MT layout: ")

    def collate_fn(self, split: str, dataset: Dataset) -> Callable[[list[Any]], dict[str, Any]]:
        return self.collate

    # --- facts for the model
    @property
    def num_skipped(self) -> int:
        """Samples left out at setup (missing files) over the splits built so far; samples that fail to load are
        counted per batch (``batch["skipped"]``, logged by :class:`common.callbacks.data.SkippedSamples`)."""
        return sum(len(v) for v in self.setup_skips.values())

    def semseg_class_names(self) -> list[str]:
        """The 21 semseg class names: ``ROOT/class_names.txt`` if present, else the VOC names (or the ShapesWorld
        names when the stand-in is still to be generated)."""
        path = self.root / "class_names.txt"
        if path.is_file():
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            if len(names) != len(VOC_CLASS_NAMES):
                raise PascalLayoutError(
                    f"{path}: expected {len(VOC_CLASS_NAMES)} class names, found {len(names)}"
                )
            return names
        if not self.root.exists():
            if self.root_given or not self.synth_if_missing:
                self.ensure_root(self.synth_if_missing)  # the error naming the root and the writer
            from common.data.synth.pascal_mt import semseg_class_names

            return list(semseg_class_names())
        return list(VOC_CLASS_NAMES)

    @property
    def info(self) -> dict[str, Any]:
        """``tasks``; ``num_classes`` = output channels per task (semseg 21, human_parts 7, sal 1 logit,
        normals 3); ``class_names`` per task; ``ignore_index`` 255; ``image_size`` (H, W)."""
        channels = {
            "semseg": len(VOC_CLASS_NAMES),
            "human_parts": len(PART_CLASS_NAMES),
            "sal": 1,
            "normals": 3,
        }
        names = {
            "semseg": self.semseg_class_names(),
            "human_parts": list(PART_CLASS_NAMES),
            "sal": ["salient"],
            "normals": ["x", "y", "z"],
        }
        return {
            "tasks": list(self.tasks),
            "num_classes": {t: channels[t] for t in self.tasks},
            "class_names": {t: names[t] for t in self.tasks},
            "ignore_index": IGNORE_INDEX,
            "image_size": list(self.image_size),
        }
