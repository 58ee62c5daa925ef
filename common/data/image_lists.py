"""Readers of the image-classification annotation formats the transfer benchmarks ship (no torch, no Lightning).

Each reader returns ``[(image path relative to its base folder, label)]`` and raises :class:`ListFormatError` naming
the file and the line number of a malformed line. The formats (``format:`` of
:class:`common.data.image_classification.ImageClassificationDataModule`):

``vtab``    VTAB-1k as NOAH distributes it: ``<root>/<task>/{train800,val200,train800val200,test}.txt``, ``path label``
            lines, paths relative to the task folder.
``fewshot`` the few-shot benchmark (CoOp / NOAH splits): ``<root>/<task>/annotations/train_meta.list.num_shot_{k}.seed_{s}``,
            ``val_meta.list``, ``test_meta.list``, ``path label`` lines relative to ``data/images`` (the official
            Conv-Adapter reader; Stanford Cars' paths are relative to the dataset folder: ``image_prefix: ""``).
``list``    any ``path label`` list (Stanford Cars / Dogs, NABirds, Oxford Flowers list files, mmpretrain style):
            ``train.txt`` / ``val.txt`` / ``test.txt`` by default, paths relative to ``image_prefix``.
``cub``     CUB-200-2011: ``images.txt`` (``id path``), ``image_class_labels.txt`` (``id class``, 1-based),
            ``train_test_split.txt`` (``id is_train``), ``classes.txt`` (``class name``), images under ``images/``.
``folder``  a class-per-folder tree: ``<split>/<class name>/<image>``; classes are the sorted folder names of the
            train split.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ListFormatError", "IMAGE_SUFFIXES", "FORMATS", "VTAB_NUM_CLASSES", "DEFAULT_FILES", "DEFAULT_PREFIX",
           "LAYOUT", "detect_format", "read_label_list", "read_class_names", "read_cub", "read_folder"]

FORMATS = ("vtab", "fewshot", "list", "cub", "folder")

#: classes of the 19 VTAB-1k tasks (NOAH's folder names, and the official code's spellings), used when a task
#: folder carries no class file: a train800 list need not hold every class
VTAB_NUM_CLASSES: dict[str, int] = {
    "caltech101": 102, "cifar": 100, "cifar100": 100, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37,
    "oxford_pet": 37, "svhn": 10, "sun397": 397, "patch_camelyon": 2, "eurosat": 10, "resisc45": 45,
    "diabetic_retinopathy": 5, "clevr_count": 8, "clevr_dist": 6, "dmlab": 6, "kitti": 4, "dsprites_loc": 16,
    "dsprites_ori": 16, "smallnorb_azi": 18, "smallnorb_ele": 9,
}  # fmt: skip

#: per format: the (train, val, test) annotation files (folders for ``folder``; CUB parts for ``cub``), relative to
#: the dataset folder, and the folder the listed paths are relative to
DEFAULT_FILES: dict[str, tuple[str, str, str]] = {
    "vtab": ("train800.txt", "val200.txt", "test.txt"),
    "fewshot": ("annotations/train_meta.list.num_shot_{shots}.seed_{fewshot_seed}", "annotations/val_meta.list",
                "annotations/test_meta.list"),
    "list": ("train.txt", "val.txt", "test.txt"),
    "cub": ("train", "test", "test"),
    "folder": ("train", "val", "test"),
}
DEFAULT_PREFIX = {"vtab": "", "fewshot": "data/images", "list": "", "cub": "images", "folder": ""}

LAYOUT = {
    "vtab": "  <task>/{train800,val200,train800val200,test}.txt: 'path label' lines, paths relative to <task>/",
    "fewshot": "  <task>/annotations/train_meta.list.num_shot_{K}.seed_{S}, val_meta.list, test_meta.list: 'path "
               "label' lines, paths relative to <task>/data/images/",
    "list": "  train.txt, val.txt, test.txt: 'path label' lines, paths relative to <image_prefix>/",
    "cub": "  images.txt (id path), image_class_labels.txt (id class, 1-based), train_test_split.txt (id 0|1), "
           "classes.txt, images/<path>",
    "folder": "  train/<class>/<image>, val/<class>/<image>, test/<class>/<image>",
}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class ListFormatError(ValueError):
    """A malformed annotation line: the message starts with ``<file>:<line>:``."""


def read_label_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """A ``path label`` list (white space between; the path may hold spaces, the label is the last field) ->
    ``[(path, label)]``; blank lines are ignored, a line without an integer label >= 0 is a :class:`ListFormatError`."""
    out: list[tuple[str, int]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise ListFormatError(f"{path}:{lineno}: expected 'relative/path label', got {text!r}")
            try:
                label = int(parts[1])
            except ValueError:
                raise ListFormatError(f"{path}:{lineno}: the label must be an integer, got {parts[1]!r} "
                                      f"(line {text!r})") from None
            if label < 0:
                raise ListFormatError(f"{path}:{lineno}: negative label {label}")
            out.append((parts[0], label))
    return out


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names, one a line: a bare name, or ``<index> <name>`` (CUB's ``classes.txt``, 1- or 0-based: the
    names are taken in file order)."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if not text:
                continue
            first, _, rest = text.partition(" ")
            names.append(rest.strip() if first.isdigit() and rest.strip() else text)
    return names


def _id_table(path: Path, what: str) -> dict[str, str]:
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(None, 1)
            if len(parts) != 2:
                raise ListFormatError(f"{path}:{lineno}: expected '<image id> <{what}>', got {text!r}")
            table[parts[0]] = parts[1].strip()
    return table


def read_cub(root: str | os.PathLike) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """CUB-200-2011 -> (``{"train": [...], "test": [...]}`` with paths relative to ``images/`` and 0-based labels,
    class names from ``classes.txt`` with the ``NNN.`` prefix dropped and ``_`` as spaces)."""
    root = Path(root)
    paths = _id_table(root / "images.txt", "relative path")
    labels = _id_table(root / "image_class_labels.txt", "class id")
    split = _id_table(root / "train_test_split.txt", "is_training_image")
    out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for im_id, rel in paths.items():
        for table, name in ((labels, "image_class_labels.txt"), (split, "train_test_split.txt")):
            if im_id not in table:
                raise ListFormatError(f"{root / name}: image id {im_id} of images.txt is not listed")
        try:
            label = int(labels[im_id]) - 1
        except ValueError:
            raise ListFormatError(f"{root / 'image_class_labels.txt'}: image id {im_id}: the class id must be an "
                                  f"integer, got {labels[im_id]!r}") from None
        if split[im_id] not in ("0", "1"):
            raise ListFormatError(f"{root / 'train_test_split.txt'}: image id {im_id}: is_training_image must be 0 "
                                  f"or 1, got {split[im_id]!r}")
        out["train" if split[im_id] == "1" else "test"].append((rel, label))
    names = []
    for n in read_class_names(root / "classes.txt"):
        head, dot, tail = n.partition(".")
        names.append((tail if dot and head.isdigit() else n).replace("_", " "))
    return out, names


def read_folder(split_dir: str | os.PathLike, classes: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """A class-per-folder split -> (``[(class/image, label)]`` over ``classes``, folders not among ``classes``)."""
    split_dir = Path(split_dir)
    index = {c: i for i, c in enumerate(classes)}
    out, unknown = [], []
    for cls in sorted(p.name for p in split_dir.iterdir() if p.is_dir()):
        if cls not in index:
            unknown.append(cls)
            continue
        for name in sorted(os.listdir(split_dir / cls)):
            if name.lower().endswith(IMAGE_SUFFIXES):
                out.append((f"{cls}/{name}", index[cls]))
    return out, unknown


def detect_format(folder: Path) -> str:
    """The annotation format of a dataset folder, from the files present (``list`` when nothing else fits)."""
    if (folder / "images.txt").is_file() and (folder / "train_test_split.txt").is_file():
        return "cub"
    if any((folder / n).is_file() for n in ("train800.txt", "train800val200.txt")):
        return "vtab"
    ann = folder / "annotations"
    if ann.is_dir() and any(n.startswith("train_meta.list") for n in os.listdir(ann)):
        return "fewshot"
    if (folder / "train").is_dir() and not (folder / "train.txt").is_file():
        return "folder"
    return "list"
