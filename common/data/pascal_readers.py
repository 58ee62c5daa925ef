"""PASCAL-Context multi-task (PASCAL_MT): constants of the benchmark and readers of its single files.

Numpy in, numpy out; no torch, no augmentation (:mod:`common.data.pascal_transforms`), no dataset
(:mod:`common.data.pascal_context`, which also describes the layout and the sample format).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from common.data.base import DatasetLayoutError

__all__ = [
    "TASKS",
    "VOC_CLASS_NAMES",
    "PART_CLASS_NAMES",
    "PERSON_CLASS",
    "PERSON_PART_GROUPS",
    "VOC_TO_CONTEXT_ID",
    "NORMALS_VALID_CONTEXT_IDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IGNORE_INDEX",
    "TASK_DIRS",
    "LAYOUT_HELP",
    "PascalLayoutError",
    "SampleError",
    "read_image",
    "read_semseg",
    "read_human_parts",
    "read_normals",
    "read_saliency",
    "check_tasks",
]

#: the tasks this datamodule serves, in canonical order
TASKS: tuple[str, ...] = ("semseg", "human_parts", "sal", "normals")

#: the 21 semantic classes of the benchmark (PASCAL VOC's 20 + background)
VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: the 7 human-part classes (background + the 6 groups of the benchmark)
PART_CLASS_NAMES: tuple[str, ...] = (
    "background", "head", "torso", "upper arm", "lower arm and hand", "upper leg", "lower leg and foot",
)  # fmt: skip

#: PASCAL-Part / VOC class index of "person"
PERSON_CLASS: int = 15

#: PASCAL-Part person part name -> part group (1 head, 2 torso, 3 upper arm, 4 lower arm + hand, 5 upper leg,
#: 6 lower leg + foot); the 6-group setting of the benchmark
PERSON_PART_GROUPS: dict[str, int] = {
    **{n: 1 for n in ("head", "hair", "lear", "rear", "leye", "reye", "lebrow", "rebrow", "nose", "mouth")},
    **{n: 2 for n in ("torso", "neck")},
    **{n: 3 for n in ("luarm", "ruarm")},
    **{n: 4 for n in ("llarm", "rlarm", "lhand", "rhand")},
    **{n: 5 for n in ("luleg", "ruleg")},
    **{n: 6 for n in ("llleg", "rlleg", "lfoot", "rfoot")},
}

#: VOC class index (0..20) -> PASCAL-Context (459-class) label id; "diningtable" is Context's "table"
VOC_TO_CONTEXT_ID: tuple[int, ...] = (
    0, 2, 23, 25, 31, 34, 45, 59, 65, 72, 98, 397, 113, 207, 258, 284, 308, 347, 368, 416, 427,
)  # fmt: skip

#: PASCAL-Context (459-class) ids on which the distilled normals are valid: the classes whose name is also an
#: NYUv2 class name (other than "unknown"), plus "tvmonitor" -- the rule of the benchmark's loader, evaluated
#: once [derived]. E.g. wall 440, floor 158, ceiling 68, person 284, chair 72, table 397 are valid; sky 360,
#: grass 187, water 445, sand 334 are not.
NORMALS_VALID_CONTEXT_IDS: frozenset[int] = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55,
    56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115,
    122, 124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197,
    199, 202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255,
    260, 261, 263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309,
    310, 314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379,
    380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440,
    441, 442, 443, 444, 446, 454, 457,
))  # fmt: skip

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX: int = 255

#: the folder each task reads (relative to the root)
TASK_DIRS: dict[str, tuple[str, ...]] = {
    "semseg": ("semseg/pascal-context",),
    "human_parts": ("human_parts",),
    "sal": ("sal_distill",),
    "normals": ("normals_distill", "pascal-context/trainval"),
}

LAYOUT_HELP = (
    "expected the PASCAL_MT layout: ROOT/JPEGImages/{id}.jpg, ROOT/ImageSets/Context/{train,val}.txt, "
    "ROOT/semseg/pascal-context/{id}.png, ROOT/human_parts/{id}.mat, ROOT/normals_distill/{id}.png with "
    "ROOT/pascal-context/trainval/{id}.mat, ROOT/sal_distill/{id}.png. Get the real archive (PASCAL_MT.tgz of the "
    "MTI-Net / Multi-Task-Learning-PyTorch release) or write the ShapesWorld stand-in with "
    "`python -m common.data.synth pascal-context --out DIR`"
)


#: the PASCAL_MT layout error is the project's one layout error
PascalLayoutError = DatasetLayoutError


class SampleError(RuntimeError):
    """One sample cannot be read (missing, unreadable, or of the wrong size)."""


# --------------------------------------------------------------------------------------------------------------------
# Readers of single files (numpy in, numpy out)
# --------------------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB image as (H, W, 3) uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_semseg(path: str | os.PathLike) -> np.ndarray:
    """Semantic label map (H, W) uint8 (palette PNGs give their indices)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise SampleError(
            f"{path}: a semantic label PNG must have one channel (indices), got shape {arr.shape}"
        )
    return arr.astype(np.uint8)


def _field(record: np.ndarray, name: str) -> Any:
    """A field of a scipy.io.loadmat struct record (struct_as_record=True), by name."""
    return record[name]


def read_human_parts(
    path: str | os.PathLike,
    shape: tuple[int, int],
    part_groups: dict[str, int] | None = None,
    person_class: int = PERSON_CLASS,
    area_threshold: int = 0,
) -> tuple[np.ndarray, bool]:
    """Human-part map from a PASCAL-Part ``anno`` .mat file.

    Every object with ``class_ind == person_class``, a mask of more than ``area_threshold`` pixels and a non-empty
    ``parts`` list paints each part mask with the group of its ``part_name`` (later parts over earlier ones).

    Returns:
        ((H, W) uint8 map: 0 background, 1..6 part groups, all 255 when no such person exists; whether a person
        with parts was found).
    """
    groups = PERSON_PART_GROUPS if part_groups is None else part_groups
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises several kinds for corrupt files
        raise SampleError(f"{path}: cannot read the .mat file ({err})") from err
    if "anno" not in mat:
        raise SampleError(f"{path}: no `anno` struct (PASCAL-Part format); keys are {sorted(mat)}")
    anno = mat["anno"][0, 0]
    objects = _field(anno, "objects")
    objects = objects.reshape(-1) if objects.size else []
    target: np.ndarray | None = None
    for obj in objects:
        cls = int(np.asarray(_field(obj, "class_ind")).reshape(-1)[0])
        mask = np.asarray(_field(obj, "mask"))
        parts = _field(obj, "parts")
        if cls != person_class or int(mask.sum()) <= area_threshold or parts.size == 0:
            continue
        if mask.shape != tuple(shape):
            raise SampleError(f"{path}: person mask is {mask.shape[:2]} but the image is {tuple(shape)}")
        if target is None:
            target = np.zeros(shape, dtype=np.uint8)
        for part in parts.reshape(-1):
            name = str(np.asarray(_field(part, "part_name")).reshape(-1)[0])
            if name not in groups:
                raise SampleError(f"{path}: unknown person part name {name!r}; known: {sorted(groups)}")
            pmask = np.asarray(_field(part, "mask")).astype(bool)
            if pmask.shape != tuple(shape):
                raise SampleError(
                    f"{path}: part {name!r} mask is {pmask.shape} but the image is {tuple(shape)}"
                )
            target[pmask] = groups[name]
    if target is None:
        return np.full(shape, IGNORE_INDEX, dtype=np.uint8), False
    return target, True


def read_normals(
    path: str | os.PathLike,
    labelmap_path: str | os.PathLike | None,
    valid_ids: frozenset[int] | None = NORMALS_VALID_CONTEXT_IDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Distilled normals ``2 v / 255 - 1`` (H, W, 3) float32 and the validity mask (H, W) bool.

    A pixel is valid where the PASCAL-Context ``LabelMap`` of ``labelmap_path`` holds a class of ``valid_ids``
    (all pixels valid when ``valid_ids`` is None). Invalid pixels are the zero vector.
    """
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    normals = 2.0 * arr / 255.0 - 1.0
    if valid_ids is None:
        valid = np.ones(normals.shape[:2], dtype=bool)
    else:
        if labelmap_path is None:
            raise SampleError(f"{path}: the normals validity mask needs the PASCAL-Context LabelMap .mat")
        try:
            labels = scipy.io.loadmat(str(labelmap_path))["LabelMap"]
        except KeyError as err:
            raise SampleError(
                f"{labelmap_path}: no `LabelMap` array (PASCAL-Context trainval format)"
            ) from err
        except Exception as err:
            raise SampleError(f"{labelmap_path}: cannot read the .mat file ({err})") from err
        if labels.shape != normals.shape[:2]:
            raise SampleError(
                f"{labelmap_path}: LabelMap is {labels.shape} but the normals {path} are {normals.shape[:2]}"
            )
        ids = np.fromiter(valid_ids, dtype=np.int64)
        valid = np.isin(labels.astype(np.int64), ids)
    normals[~valid] = 0.0
    return normals, valid


def read_saliency(path: str | os.PathLike) -> np.ndarray:
    """Distilled saliency binarised as the benchmark does: (H, W) uint8, ``v / 255 > 0.5``."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32)
    return (arr / 255.0 > 0.5).astype(np.uint8)


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """``tasks`` as a tuple if they are a non-empty subset of :data:`TASKS` without repeats, else a ValueError."""
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks has duplicates: {list(tasks)}")
    return tasks
