"""COCO panoptic datamodule: images + panoptic JSON + PNG folder, for any panoptic dataset in COCO format.

Expected layout (COCO 2017; the ShapesWorld writer makes the same: ``python -m common.data.synth coco-panoptic
--out ROOT``): ``ROOT/{train,val}2017/*.jpg``, ``ROOT/annotations/panoptic_{train,val}2017.json`` and
``ROOT/annotations/panoptic_{train,val}2017/*.png``, optionally ``ROOT/annotations/panoptic_categories.json`` (the
categories, with ``"novel": 1`` on held-out classes).

Other layouts (e.g. ADE20K converted by Mask2Former's script: ``images/validation``, ``ade20k_panoptic_val.json``,
``ade20k_panoptic_val/``) are given with ``split_paths``.

Classes: the contiguous class index ``k`` is the position of a category in the categories list (sorted by COCO id);
``info`` exposes ``num_classes``, ``class_names``, ``is_thing``, ``category_ids`` and the index lists
``train_classes`` / ``eval_classes`` / ``novel_classes``. A category subset (``train_classes="base"``,
``eval_classes="novel"`` or a list of names) keeps only those classes' segments: the pixels of other classes become
VOID (unlabelled) in the targets, and in the evaluation id map, as in open-vocabulary benchmarks.

A sample is ``{"image": float (3, H, W) in [0, 1] (or normalised), "target": {...}}`` with the target holding
``masks`` (N, H, W) bool (a ``tv_tensors.Mask``), ``labels`` (N,) contiguous class ids, ``iscrowd`` (N,) bool,
``segment_ids`` (N,), ``image_id``, ``file_name``, ``orig_size`` (H0, W0); evaluation samples also carry what PQ
needs at the ORIGINAL resolution: ``panoptic`` (H0, W0) int64 segment ids (0 = VOID) and ``segments_info``
(``[{"id", "category_id" (contiguous), "iscrowd", "isthing"}]``), ready for
:class:`common.metrics.panoptic.COCOPanopticQuality`. Crowd segments are kept with ``iscrowd=True`` (Mask2Former
drops them from its training targets: filter on ``~iscrowd``).

Transforms (:mod:`common.data.panoptic_transforms`): Mask2Former's large-scale jitter for training, a shorter-side
resize for evaluation; masks that lose every pixel in a crop are dropped.

Bad data: an id in a PNG missing from the JSON, an unknown category, an image/PNG size mismatch, a missing file ->
a :class:`PanopticDataError` naming the image and the segment (``on_error="raise"``), or the sample is left out
(``on_error="skip"``, default): bad annotations at setup (warned, the datamodule's setup-time skips), unreadable
samples at load time (a :class:`common.data.base.SkippedSample` that :func:`collate_panoptic` counts in
``batch["skipped"]``). A missing root/JSON/folder, or a split with more than ``max_missing_fraction`` of its images
left out at setup, is a :class:`common.data.base.DatasetLayoutError`. Categories: :mod:`common.data.panoptic_categories`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from common.data.base import (
    CVDataModule,
    DatasetLayoutError,
    OnError,
    SkippedSample,
    SkippedSampleWarning,
    check_on_error,
)
from common.data.panoptic_categories import (
    PanopticCategory,
    PanopticDataError,
    load_categories,
    read_json,
    resolve_class_subset,
)
from common.data.panoptic_transforms import (
    FixedSizeCrop,
    collate_panoptic,
    panoptic_eval_transform,
    panoptic_train_transform,
)
from common.metrics.panoptic import rgb2id

__all__ = [
    "PanopticDataError", "PanopticCategory", "load_categories", "resolve_class_subset", "FixedSizeCrop",
    "panoptic_train_transform", "panoptic_eval_transform", "COCOPanopticDataset", "collate_panoptic",
    "COCOPanopticDataModule",
]

LAYOUT = """\
  ROOT/<images>                e.g. train2017/*.jpg, val2017/*.jpg
  ROOT/annotations/panoptic_<split>.json
  ROOT/annotations/panoptic_<split>/*.png   (RGB, id = R + 256 G + 256^2 B, 0 = VOID)
  ROOT/annotations/panoptic_categories.json (optional; categories with "novel": 1 on held-out classes)
Get COCO panoptic 2017 (cocodataset.org) or ADE20K converted to COCO panoptic format (Mask2Former's script)."""


class COCOPanopticDataset(Dataset):
    """One split of a COCO-format panoptic dataset.

    Args:
        image_dir, json_file, png_dir: the split's images, panoptic JSON and PNG folder.
        categories: the global class list (contiguous index = position); the JSON's categories must be among them.
        keep_classes: contiguous indices whose segments are kept (None = all); others become VOID.
        transform: a v2 transform applied to ``(tv_tensors.Image, tv_tensors.Mask id map)``.
        with_panoptic: add the original-resolution ``panoptic`` id map and ``segments_info`` (evaluation).
        on_error: ``"raise"`` a :class:`PanopticDataError`, or ``"skip"`` (warn, return None; the collate counts it).
        mean, std: optional normalisation of the [0, 1] image.
        max_samples: use only the first N images (smoke runs).
    """

    def __init__(
        self,
        image_dir: str | Path,
        json_file: str | Path,
        png_dir: str | Path,
        categories: Sequence[PanopticCategory],
        *,
        keep_classes: Sequence[int] | None = None,
        transform: Callable[..., Any] | None = None,
        with_panoptic: bool = False,
        on_error: OnError = "skip",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_samples: int | None = None,
    ) -> None:
        check_on_error(on_error)
        self.image_dir, self.json_file, self.png_dir = Path(image_dir), Path(json_file), Path(png_dir)
        self.categories = list(categories)
        self.class_of = {c.id: i for i, c in enumerate(self.categories)}
        self.keep = set(range(len(self.categories)) if keep_classes is None else keep_classes)
        self.transform = transform
        self.with_panoptic = with_panoptic
        self.on_error = check_on_error(on_error)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        #: annotations left out at init (warned): ``(file, reason)`` records
        self.skipped_at_init: list[SkippedSample] = []
        self.records = self._load_records(max_samples)

    # -- index ---------------------------------------------------------------------------------------------------
    @property
    def num_skipped_at_init(self) -> int:
        """How many annotations were left out at init."""
        return len(self.skipped_at_init)

    def _fail(self, path: str, message: str) -> None:
        if self.on_error == "raise":
            raise PanopticDataError(message)
        warnings.warn(f"skipped: {message}", SkippedSampleWarning, stacklevel=3)
        self.skipped_at_init.append(SkippedSample(-1, path, "bad_annotation", message))

    def _load_records(self, max_samples: int | None) -> list[dict[str, Any]]:
        data = read_json(self.json_file)
        if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
            raise PanopticDataError(
                f"{self.json_file}: not a COCO panoptic JSON (needs 'images', 'annotations', 'categories')"
            )
        for c in data.get("categories", []):
            if int(c["id"]) not in self.class_of:
                raise PanopticDataError(
                    f"{self.json_file}: category {c.get('name')!r} (id {c['id']}) is not in the datamodule's categories "
                    f"(ids {[k.id for k in self.categories]}); give a categories file that covers every split"
                )
        images = {img["id"]: img for img in data["images"]}
        records = []
        for ann in data["annotations"]:
            img = images.get(ann["image_id"])
            name = ann.get("file_name", "?")
            if img is None:
                self._fail(str(self.png_dir / name), f"{self.json_file}: annotation {name} refers to image id "
                           f"{ann['image_id']!r} missing from 'images'")
                continue
            bad = [s for s in ann["segments_info"] if int(s["category_id"]) not in self.class_of]
            if bad:
                self._fail(
                    str(self.image_dir / img["file_name"]),
                    f"{self.json_file}: image {img['file_name']} (id {img['id']}) segment {bad[0]['id']} has unknown "
                    f"category_id {bad[0]['category_id']} (known: {sorted(self.class_of)})"
                )
                continue
            records.append({"image": img, "ann": ann})
            if max_samples is not None and len(records) >= max_samples:
                break
        return records

    def __len__(self) -> int:
        return len(self.records)

    # -- loading -------------------------------------------------------------------------------------------------
    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict[str, Any]]:
        rec = self.records[index]
        img_info, ann = rec["image"], rec["ann"]
        img_path = self.image_dir / img_info["file_name"]
        png_path = self.png_dir / ann["file_name"]
        for path, what in ((img_path, "image"), (png_path, "panoptic PNG")):
            if not path.is_file():
                raise PanopticDataError(f"{what} {path} of image id {img_info['id']} does not exist")
        with Image.open(img_path) as im:
            image = np.array(im.convert("RGB"), dtype=np.uint8)
        with Image.open(png_path) as im:
            pan = rgb2id(np.asarray(im.convert("RGB"), dtype=np.uint8))
        name = f"{img_info['file_name']} (id {img_info['id']})"
        if image.shape[:2] != pan.shape:
            raise PanopticDataError(
                f"image {name}: image size {image.shape[:2]} differs from its panoptic PNG {png_path.name} size {pan.shape} (H, W)"
            )
        jh, jw = img_info.get("height"), img_info.get("width")
        if jh is not None and jw is not None and (int(jh), int(jw)) != image.shape[:2]:
            raise PanopticDataError(
                f"image {name}: the JSON says {int(jh)}x{int(jw)} but the file is {image.shape[0]}x{image.shape[1]} (HxW)"
            )
        listed = {int(s["id"]) for s in ann["segments_info"]}
        present = np.unique(pan)
        stray = [int(i) for i in present if i != 0 and int(i) not in listed]
        if stray:
            raise PanopticDataError(
                f"image {name}: segment id {stray[0]} is in the PNG {png_path.name} but not in the JSON's segments_info"
                + (f" (and {len(stray) - 1} more)" if len(stray) > 1 else "")
            )
        return image, pan, img_info, ann

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        try:
            image, pan, img_info, ann = self._load(index)
        except PanopticDataError as err:
            if self.on_error == "raise":
                raise
            return SkippedSample(index, str(self.image_dir / self.records[index]["image"]["file_name"]), "broken",
                                 str(err))
        return self._make_sample(image, pan, img_info, ann)

    def _make_sample(
        self, image: np.ndarray, pan: np.ndarray, img_info: dict[str, Any], ann: dict[str, Any]
    ) -> dict[str, Any]:
        segs = []
        for s in ann["segments_info"]:
            k = self.class_of[int(s["category_id"])]
            if k in self.keep:
                segs.append({"id": int(s["id"]), "category_id": k, "iscrowd": int(s.get("iscrowd", 0)),
                             "isthing": self.categories[k].isthing})
        kept_ids = np.array([s["id"] for s in segs], dtype=np.int64)
        pan = np.where(np.isin(pan, kept_ids), pan, 0)  # classes outside the subset -> VOID
        pan_t = torch.from_numpy(pan)
        img_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(pan_t)
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        x = v2.functional.to_dtype(img_t, torch.float32, scale=True).as_subclass(Tensor)
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        ids_map = mask_t.as_subclass(Tensor)
        present = set(torch.unique(ids_map).tolist())
        kept = [s for s in segs if s["id"] in present]
        seg_ids = torch.tensor([s["id"] for s in kept], dtype=torch.int64)
        masks = ids_map[None] == seg_ids.view(-1, 1, 1) if kept else torch.zeros((0, *ids_map.shape), dtype=torch.bool)
        target: dict[str, Any] = {
            "masks": tv_tensors.Mask(masks),
            "labels": torch.tensor([s["category_id"] for s in kept], dtype=torch.int64),
            "iscrowd": torch.tensor([bool(s["iscrowd"]) for s in kept], dtype=torch.bool),
            "segment_ids": seg_ids,
            "image_id": img_info["id"],
            "file_name": img_info["file_name"],
            "orig_size": (int(pan.shape[0]), int(pan.shape[1])),
        }
        if self.with_panoptic:
            target["panoptic"] = pan_t
            target["segments_info"] = segs
        return {"image": x, "target": target}


# ----------------------------------------------------------------------------------------------------------------
# datamodule
# ----------------------------------------------------------------------------------------------------------------
class COCOPanopticDataModule(CVDataModule):
    """COCO-format panoptic segmentation (COCO, ADE20K-panoptic, the ShapesWorld stand-in).

    Args:
        root: dataset root (default: ``outputs/data/coco_panoptic``, where the ShapesWorld writer puts it). A root
            given here is read, never written: if it does not exist, the error names it and the writer.
        train_split, val_split, test_split: split names filling the path templates (test defaults to val).
        image_dir, json_file, png_dir: path templates under ``root`` with ``{split}``.
        split_paths: per-split overrides ``{split: {"images": ..., "json": ..., "pngs": ...}}`` (relative to root).
        categories_file: categories JSON (a list, or a panoptic JSON) under root; used when it exists, else the
            categories of the val (or train) JSON.
        train_classes, eval_classes: ``"all" | "base" | "novel" | [names]``: classes kept in training / evaluation.
        novel_classes: names of the held-out classes (default: the categories' ``novel`` flags).
        crop_size, scale_range, flip_prob: training large-scale jitter (Mask2Former: 1024, (0.1, 2.0), 0.5).
        eval_short_side, eval_max_size: evaluation resize (COCO: 800 / 1333; ADE20K: 640 / 2560).
        size_divisibility: pad batched images to a multiple of this.
        mean, std: optional image normalisation (default: [0, 1] images, the model normalises).
        on_error: ``"skip"`` (warn and count) or ``"raise"`` on a broken sample.
        max_missing_fraction: a split with more than this fraction of its images left out at setup fails with
            the layout error.
        max_train_samples, max_eval_samples: use only the first N images of a split.
        synth_if_missing: with ``root`` None, write the ShapesWorld stand-in into the default folder when it does
            not exist (default on; off: the layout error); ``synth_options`` go to
            :func:`common.data.synth.coco_panoptic.write_coco_panoptic`. Never applies to a root given explicitly.
    """

    dataset_name = "COCO panoptic"
    synth_command = "coco-panoptic"
    default_dirname = "coco_panoptic"

    def __init__(
        self,
        root: str | None = None,
        *,
        train_split: str = "train2017",
        val_split: str = "val2017",
        test_split: str | None = None,
        image_dir: str = "{split}",
        json_file: str = "annotations/panoptic_{split}.json",
        png_dir: str = "annotations/panoptic_{split}",
        split_paths: dict[str, dict[str, str]] | None = None,
        categories_file: str | None = "annotations/panoptic_categories.json",
        train_classes: str | list[str] = "all",
        eval_classes: str | list[str] = "all",
        novel_classes: list[str] | None = None,
        crop_size: int = 64,
        scale_range: tuple[float, float] = (0.1, 2.0),
        flip_prob: float = 0.5,
        eval_short_side: int = 64,
        eval_max_size: int | None = None,
        size_divisibility: int = 0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        on_error: OnError = "skip",
        max_missing_fraction: float = 0.5,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        synth_if_missing: bool = True,
        synth_options: dict[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size,
                         max_missing_fraction=max_missing_fraction)
        self.resolve_root(root)
        self.synth_if_missing = synth_if_missing
        self.synth_options = dict(synth_options or {})
        self.train_split, self.val_split = train_split, val_split
        self.test_split = test_split or val_split
        self.templates = {"images": image_dir, "json": json_file, "pngs": png_dir}
        self.split_paths = split_paths or {}
        self.categories_file = categories_file
        self.train_classes_spec, self.eval_classes_spec = train_classes, eval_classes
        self.novel_names = novel_classes
        self.crop_size, self.scale_range, self.flip_prob = crop_size, tuple(scale_range), flip_prob
        self.eval_short_side, self.eval_max_size = eval_short_side, eval_max_size
        self.size_divisibility = size_divisibility
        self.mean, self.std = mean, std
        self.on_error = check_on_error(on_error)
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self._categories: list[PanopticCategory] | None = None

    # -- paths and categories ------------------------------------------------------------------------------------
    def layout_help(self) -> str:
        return LAYOUT

    def _missing(self, what: Path) -> DatasetLayoutError:
        return self.layout_error(f"data not found: {what} does not exist")

    def _split_paths(self, split: str) -> dict[str, Path]:
        spec = {**self.templates, **self.split_paths.get(split, {})}
        return {k: self.root / v.format(split=split) for k, v in spec.items()}

    def write_stand_in(self, out: Path, **kwargs: Any) -> Any:
        from common.data.synth.coco_panoptic import write_coco_panoptic

        return write_coco_panoptic(out, **kwargs)

    def prepare_data(self) -> None:
        """Check the root; write the stand-in into the default root when it is missing (local rank 0 only)."""
        self.ensure_root(self.synth_if_missing, **self.synth_options)

    def split_files(self, split: str) -> dict[str, Path]:
        """``{"images", "json", "pngs"}`` paths of a split (checked to exist)."""
        self.ensure_root(self.synth_if_missing, **self.synth_options)
        if not self.root.is_dir():
            raise self._missing(self.root)
        paths = self._split_paths(split)
        for key in ("json", "pngs", "images"):
            ok = paths[key].is_file() if key == "json" else paths[key].is_dir()
            if not ok:
                raise self._missing(paths[key])
        return paths

    @property
    def categories(self) -> list[PanopticCategory]:
        """The global class list (contiguous index = position)."""
        if self._categories is None:
            self.ensure_root(self.synth_if_missing, **self.synth_options)
            cat_path = self.root / self.categories_file if self.categories_file else None
            if cat_path is not None and cat_path.is_file():
                self._categories = load_categories(cat_path)
            else:
                # the first split whose JSON exists gives the categories (val first: it is the small one)
                found = [self._split_paths(s)["json"] for s in (self.val_split, self.train_split)]
                found = [p for p in found if p.is_file()]
                if not found:
                    self.split_files(self.val_split)  # raises the layout error
                self._categories = load_categories(found[0])
        return self._categories

    def _subset(self, spec: str | Sequence[str]) -> list[int]:
        return resolve_class_subset(spec, self.categories, self.novel_names)

    @property
    def info(self) -> dict[str, Any]:
        """num_classes, class_names, is_thing, category_ids, train/eval/novel class index lists, task."""
        cats = self.categories
        names = [c.name for c in cats]
        novel = set(self.novel_names) if self.novel_names is not None else {c.name for c in cats if c.novel}
        return {
            "task": "panoptic",
            "num_classes": len(cats),
            "class_names": names,
            "is_thing": [c.isthing for c in cats],
            "category_ids": [c.id for c in cats],
            "train_classes": self._subset(self.train_classes_spec),
            "eval_classes": self._subset(self.eval_classes_spec),
            "novel_classes": [i for i, n in enumerate(names) if n in novel],
        }

    # -- datasets ------------------------------------------------------------------------------------------------
    def make_dataset(self, split: str, train: bool) -> COCOPanopticDataset:
        """The dataset of a split with the training (LSJ) or evaluation (resize) transform."""
        paths = self.split_files(split)
        if train:
            tf = panoptic_train_transform(self.crop_size, self.scale_range, self.flip_prob)
            keep, limit = self._subset(self.train_classes_spec), self.max_train_samples
        else:
            tf = panoptic_eval_transform(self.eval_short_side, self.eval_max_size)
            keep, limit = self._subset(self.eval_classes_spec), self.max_eval_samples
        return COCOPanopticDataset(
            paths["images"], paths["json"], paths["pngs"], self.categories, keep_classes=keep, transform=tf,
            with_panoptic=not train, on_error=self.on_error, mean=self.mean, std=self.std, max_samples=limit,
        )

    def build_dataset(self, split: str) -> COCOPanopticDataset:
        """``train`` / ``val`` / ``test``: :meth:`make_dataset` of the split named by ``train_split`` / ..."""
        name = {"train": self.train_split, "val": self.val_split, "test": self.test_split}[split]
        ds = self.make_dataset(name, train=split == "train")
        for rec in ds.skipped_at_init:  # the dataset warned already
            self.record_setup_skip(split, rec.path, rec.reason, rec.detail, warn=False)
        return ds

    def collate_fn(self, split: str, dataset: Dataset) -> Callable[[list[Any]], dict[str, Any]]:
        return functools.partial(collate_panoptic, size_divisibility=self.size_divisibility)

    #: the datasets once built (None before)
    train_set = property(lambda self: self.datasets.get("train"))
    val_set = property(lambda self: self.datasets.get("val"))
    test_set = property(lambda self: self.datasets.get("test"))
