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

Training augmentation (the lineage's): random horizontal flip, random scale in [0.75, 1.25] with a random rotation in
[-20, 20] degrees about the centre, then a fixed resize (to ``image_size``), ImageNet normalisation; evaluation
does the fixed resize only. All of it is one sampling grid applied to the image (bicubic), the label maps (nearest,
padding 255) and the normals (bilinear, re-normalised, padding invalid). Deviation from upstream, on purpose:
upstream pads the rotated label maps with 0 (background); here padding is ignore (255), which the brief asks for.

A broken sample (a missing file, an unreadable file, a label of the wrong size) is an error naming the file with
``on_error="raise"``; with ``on_error="skip"`` (default) it is left out with a warning and counted: files missing at
setup are counted in :attr:`PascalContextMTDataModule.num_skipped`, files that fail to load are dropped by the
collate function and counted in ``batch["skipped"]`` (log it as ``data/skipped``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, default_collate

from common.data.base import CVDataModule
from common.paths import data_dir

__all__ = [
    "TASKS",
    "VOC_CLASS_NAMES",
    "PART_CLASS_NAMES",
    "PERSON_CLASS",
    "PERSON_PART_GROUPS",
    "VOC_TO_CONTEXT_ID",
    "NORMALS_VALID_CONTEXT_IDS",
    "LAYOUT_HELP",
    "IGNORE_INDEX",
    "PascalLayoutError",
    "SampleError",
    "read_human_parts",
    "read_normals",
    "read_saliency",
    "read_semseg",
    "read_image",
    "MultiTaskTransform",
    "PascalContextMT",
    "SkipCollate",
    "PascalContextMTDataModule",
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


class PascalLayoutError(FileNotFoundError):
    """The dataset root does not follow the PASCAL_MT layout."""


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


# --------------------------------------------------------------------------------------------------------------------
# Joint augmentation
# --------------------------------------------------------------------------------------------------------------------


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (H, W), got {size}")
    return size  # type: ignore[return-value]


class MultiTaskTransform:
    """The benchmark's augmentation applied consistently to an image and its dense labels.

    One sampling grid maps the output (``size``) to the input: a horizontal flip (probability ``hflip_prob``),
    then a scale ``s ~ U(scale_range)`` and an anticlockwise rotation ``a ~ U(-max_rotation, max_rotation)``
    degrees about the image centre (``s > 1`` zooms in), then the fixed resize to ``size``. With ``train=False``
    only the resize happens.

    Input: a dict of numpy arrays (``image`` (H, W, 3) uint8; ``semseg`` / ``human_parts`` / ``sal`` (H, W) uint8;
    ``normals`` (H, W, 3) float32 with ``normals_mask`` (H, W) bool). Output: tensors (``image`` (3, h, w) float,
    ImageNet-normalised; label maps (h, w) long with 255 outside the source; ``normals`` (3, h, w) unit vectors or
    0 and ``normals_mask`` (h, w) bool).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        train: bool = False,
        hflip_prob: float = 0.5,
        scale_range: Sequence[float] = (0.75, 1.25),
        max_rotation: float = 20.0,
        normalize: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = _pair(size)
        self.train = bool(train)
        self.hflip_prob = float(hflip_prob)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {scale_range}")
        self.max_rotation = float(max_rotation)
        self.normalize = bool(normalize)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def sample_params(self, generator: torch.Generator | None = None) -> tuple[bool, float, float]:
        """(flip, scale, angle in degrees) for one sample; identity when not training."""
        if not self.train:
            return False, 1.0, 0.0
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        flip = u[0] < self.hflip_prob
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u[1]
        angle = (2.0 * u[2] - 1.0) * self.max_rotation
        return flip, scale, angle

    def grid(self, in_hw: tuple[int, int], flip: bool, scale: float, angle: float) -> torch.Tensor:
        """Sampling grid (1, h, w, 2) in the input's normalised coordinates (grid_sample, align_corners=False)."""
        h_out, w_out = self.size
        H, W = in_hw
        yo = (torch.arange(h_out, dtype=torch.float64) * 2 + 1) / h_out - 1
        xo = (torch.arange(w_out, dtype=torch.float64) * 2 + 1) / w_out - 1
        gy, gx = torch.meshgrid(yo, xo, indexing="ij")
        dx, dy = gx * (W / 2.0), gy * (H / 2.0)  # pixel offsets from the centre, before the resize
        a = math.radians(angle)
        c, s = math.cos(a), math.sin(a)
        # forward: d = scale * R q with R = [[c, s], [-s, c]] (anticlockwise on screen, y down); invert it
        qx = (c * dx - s * dy) / scale
        qy = (s * dx + c * dy) / scale
        xin, yin = qx / (W / 2.0), qy / (H / 2.0)
        if flip:
            xin = -xin
        return torch.stack([xin, yin], dim=-1).float()[None]

    @staticmethod
    def rotate_normals(normals: torch.Tensor, flip: bool, angle: float) -> torch.Tensor:
        """Transform normal vectors (3, H, W) like the image: flip negates x, then an anticlockwise rotation."""
        n = normals.clone()
        if flip:
            n[0] = -n[0]
        if angle != 0.0:
            a = math.radians(angle)
            c, s = math.cos(a), math.sin(a)
            x, y = n[0].clone(), n[1].clone()
            n[0] = c * x + s * y
            n[1] = -s * x + c * y
        return n

    def __call__(
        self, sample: dict[str, np.ndarray], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        flip, scale, angle = self.sample_params(generator)
        return self.apply(sample, flip, scale, angle)

    def apply(
        self, sample: dict[str, np.ndarray], flip: bool, scale: float, angle: float
    ) -> dict[str, torch.Tensor]:
        """Apply given augmentation parameters (deterministic; used by tests and by :meth:`__call__`)."""
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1).float()
        H, W = image.shape[-2:]
        identity = (not flip) and scale == 1.0 and angle == 0.0 and (H, W) == self.size
        grid = None if identity else self.grid((H, W), flip, scale, angle)
        out: dict[str, torch.Tensor] = {}

        if grid is None:
            img = image
        else:
            img = F.grid_sample(image[None], grid, mode="bicubic", padding_mode="zeros", align_corners=False)[
                0
            ]
            img = img.clamp(0.0, 255.0)
        img = img / 255.0
        if self.normalize:
            img = (img - self.mean) / self.std
        out["image"] = img

        label_keys = [k for k in ("semseg", "human_parts", "sal") if k in sample]
        if label_keys:
            labels = torch.stack(
                [torch.from_numpy(np.ascontiguousarray(sample[k])).long() for k in label_keys]
            )
            if grid is not None:
                src = torch.cat([labels.float(), torch.ones(1, H, W)], dim=0)
                warped = F.grid_sample(
                    src[None], grid, mode="nearest", padding_mode="zeros", align_corners=False
                )[0]
                inside = warped[-1] > 0.5
                labels = warped[:-1].round().long()
                labels[:, ~inside] = IGNORE_INDEX
            for i, k in enumerate(label_keys):
                out[k] = labels[i]
            if "human_parts" in out:
                hp = out["human_parts"]
                if not bool(((hp > 0) & (hp != IGNORE_INDEX)).any()):
                    out["human_parts"] = torch.full_like(hp, IGNORE_INDEX)

        if "normals" in sample:
            n = torch.from_numpy(np.ascontiguousarray(sample["normals"])).permute(2, 0, 1).float()
            mask = torch.from_numpy(np.ascontiguousarray(sample["normals_mask"])).bool()
            n = n * mask[None]
            if grid is not None:
                n = self.rotate_normals(n, flip, angle)
                n = F.grid_sample(n[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[
                    0
                ]
                m = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="zeros",
                                  align_corners=False)[0, 0] > 0.5  # fmt: skip
                norm = n.norm(dim=0)
                mask = m & (norm > 1e-6)
                n = torch.where(mask[None], n / norm.clamp_min(1e-12)[None], torch.zeros_like(n))
            out["normals"] = n
            out["normals_mask"] = mask
        return out


# --------------------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------------------


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks has duplicates: {list(tasks)}")
    return tasks


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
        on_error: Literal["raise", "skip"] = "skip",
        normals_valid_ids: frozenset[int] | None = NORMALS_VALID_CONTEXT_IDS,
        area_threshold: int = 0,
        cache_in_memory: bool = False,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        self.split = split
        self.tasks = _check_tasks(tasks)
        self.transform = transform
        self.on_error = on_error
        self.normals_valid_ids = normals_valid_ids
        self.area_threshold = int(area_threshold)
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache_in_memory else None
        #: (id, reason) of every sample left out, at setup and (in this process) at load time
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
                warnings.warn(f"skipping: {msg}", stacklevel=2)
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

    def __getitem__(self, index: int) -> dict[str, Any] | None:
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
            warnings.warn(f"skipping broken sample {im_id!r}: {err}", stacklevel=2)
            self.skipped.append((im_id, str(err)))
            return None
        if self.transform is None:
            out = MultiTaskTransform(raw["image"].shape[:2], train=False).apply(raw, False, 1.0, 0.0)
        else:
            out = self.transform(raw)
        out["id"] = im_id
        return out


class SkipCollate:
    """Collate that drops skipped (None) samples and reports how many in ``batch["skipped"]`` (long scalar).

    A batch whose samples were all skipped has zero-length tensors of the expected shapes.
    """

    def __init__(self, tasks: Sequence[str], size: tuple[int, int]) -> None:
        self.tasks = tuple(tasks)
        self.size = size

    def __call__(self, samples: list[dict[str, Any] | None]) -> dict[str, Any]:
        kept = [s for s in samples if s is not None]
        skipped = torch.tensor(len(samples) - len(kept), dtype=torch.long)
        if kept:
            batch = default_collate(kept)
        else:
            h, w = self.size
            batch = {"image": torch.zeros(0, 3, h, w), "id": []}
            for t in self.tasks:
                if t == "normals":
                    batch["normals"] = torch.zeros(0, 3, h, w)
                    batch["normals_mask"] = torch.zeros(0, h, w, dtype=torch.bool)
                else:
                    batch[t] = torch.zeros(0, h, w, dtype=torch.long)
        batch["skipped"] = skipped
        return batch


# --------------------------------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------------------------------


class PascalContextMTDataModule(CVDataModule):
    """PASCAL-Context multi-task (semseg, human parts, saliency, normals) in the PASCAL_MT layout.

    Args:
        root: the PASCAL_MT folder (default: ``outputs/data/pascal-context``, where the ShapesWorld writer puts it).
        tasks: subset of ``[semseg, human_parts, sal, normals]``.
        image_size: the fixed resize (int or [H, W]; upstream 512, MTLoRA 448, ShapesWorld presets 64).
        augment: use the training augmentation on the train split.
        hflip_prob / scale_range / max_rotation: the augmentation (upstream 0.5, [0.75, 1.25], 20 degrees).
        train_split / val_split / test_split: ``ImageSets/Context/<name>.txt`` lists (test defaults to val, as
            the benchmark reports on val).
        on_error: ``skip`` (warn, leave the sample out, count it) or ``raise``.
        normals_valid_classes: PASCAL-Context ids where normals are valid (None: the NYU-compatible set).
        generate_if_missing: write the ShapesWorld stand-in to ``root`` (on local rank 0, in ``prepare_data``) when
            ``root`` does not exist; ``synth_options`` go to :func:`common.data.synth.pascal_mt.write_pascal_mt`.
        cache_in_memory: keep decoded samples in memory after the first epoch (small datasets only; see
            :class:`PascalContextMT`).
        batch_size / num_workers / eval_batch_size: loaders.
    """

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
        on_error: Literal["raise", "skip"] = "skip",
        normals_valid_classes: list[int] | None = None,
        generate_if_missing: bool = False,
        synth_options: dict[str, Any] | None = None,
        cache_in_memory: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size)
        self.root = Path(root).expanduser() if root else data_dir() / "pascal-context"
        self.tasks = _check_tasks(tasks if tasks is not None else TASKS)
        self.image_size = _pair(image_size)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.augment = augment
        self.aug = dict(hflip_prob=hflip_prob, scale_range=tuple(scale_range), max_rotation=max_rotation)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.normals_valid_ids = (
            NORMALS_VALID_CONTEXT_IDS
            if normals_valid_classes is None
            else frozenset(int(c) for c in normals_valid_classes)
        )
        self.generate_if_missing = generate_if_missing
        self.synth_options = dict(synth_options or {})
        self.cache_in_memory = cache_in_memory
        self.datasets: dict[str, PascalContextMT] = {}
        self.collate = SkipCollate(self.tasks, self.image_size)

    # --- data preparation
    def prepare_data(self) -> None:
        """Write the ShapesWorld stand-in when asked to and the root is missing (Lightning: local rank 0 only)."""
        if not self.generate_if_missing:
            return
        from common.data.synth.pascal_mt import (
            STAMP_NAME,
            requested_options,
            write_pascal_mt,
            written_options,
        )

        if not self.root.exists():
            write_pascal_mt(self.root, **self.synth_options)
            return
        have, want = written_options(self.root), requested_options(**self.synth_options)
        if have is not None and have != want:
            diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
            raise PascalLayoutError(
                f"{self.root / STAMP_NAME}: this ShapesWorld PASCAL_MT was written with other options than "
                f"data.synth_options asks for ({', '.join(f'{k}: {a} here, {b} asked' for k, (a, b) in diff.items())}); "
                f"delete {self.root} to regenerate it, or point data.root at another folder")

    def _dataset(self, stage: str) -> PascalContextMT:
        split = self.splits[stage]
        key = f"{stage}:{split}"
        if key not in self.datasets:
            train = stage == "train" and self.augment
            transform = MultiTaskTransform(self.image_size, train=train, **self.aug)
            self.datasets[key] = PascalContextMT(
                self.root,
                split,
                self.tasks,
                transform,
                on_error=self.on_error,
                normals_valid_ids=self.normals_valid_ids,
                cache_in_memory=self.cache_in_memory,
            )
        return self.datasets[key]

    def setup(self, stage: str | None = None) -> None:
        """Index the splits a stage needs (checks the layout; missing files are skipped or raised)."""
        if stage in (None, "fit"):
            self._dataset("train")
            self._dataset("val")
        if stage == "validate":
            self._dataset("val")
        if stage in (None, "test", "predict"):
            self._dataset("test")

    # --- loaders
    def train_dataloader(self):
        return self.train_loader(self._dataset("train"), collate_fn=self.collate)

    def val_dataloader(self):
        return self.eval_loader(self._dataset("val"), collate_fn=self.collate)

    def test_dataloader(self):
        return self.eval_loader(self._dataset("test"), collate_fn=self.collate)

    def predict_dataloader(self):
        return self.eval_loader(self._dataset("test"), collate_fn=self.collate)

    # --- facts for the model
    @property
    def num_skipped(self) -> int:
        """Samples left out so far in this process (setup-time, plus load-time with ``num_workers=0``)."""
        return sum(len(ds.skipped) for ds in self.datasets.values())

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
        if self.generate_if_missing and not self.root.exists():
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
