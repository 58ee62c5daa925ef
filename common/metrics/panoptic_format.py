"""The COCO panoptic format, as :mod:`common.metrics.panoptic` reads it: segment ids <-> PNG colours, the PNG and
JSON files, and the checks on ``segments_info`` lists and id maps (errors name the image and the segment).

The project's one :func:`rgb2id` / :func:`id2rgb` live here (re-exported by :mod:`common.metrics.panoptic`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: ids are < 256^3; a (gt, pred) pair is encoded as gt * OFFSET + pred
OFFSET = 256**3
#: the id of unlabeled pixels
VOID = 0

__all__ = ["OFFSET", "VOID", "PanopticFormatError", "rgb2id", "id2rgb", "load_panoptic_png", "load_panoptic_json"]


class PanopticFormatError(ValueError):
    """A panoptic annotation or prediction that breaks the COCO panoptic format (the message names image + segment)."""


# ----------------------------------------------------------------------------------------------------------------
# id <-> colour
# ----------------------------------------------------------------------------------------------------------------
def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) int64 segment ids ``R + 256 G + 256^2 B``."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb2id expects an (H, W, 3) array, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray | int) -> np.ndarray:
    """Segment ids -> colours (inverse of :func:`rgb2id`); an int gives a (3,) array."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= OFFSET):
        raise ValueError(f"segment ids must lie in [0, {OFFSET}), got [{arr.min()}, {arr.max()}]")
    out = np.stack([arr % 256, (arr // 256) % 256, arr // (256 * 256)], axis=-1)
    return out.astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------
def load_panoptic_json(path: Path, what: str) -> dict[str, Any]:
    """A COCO panoptic JSON (``what``: "ground-truth" or "prediction", for the messages) with an ``annotations`` list."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} JSON {path} does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise PanopticFormatError(f"{what} JSON {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise PanopticFormatError(f"{what} JSON {path} has no 'annotations' list (COCO panoptic format expected)")
    return data


def load_panoptic_png(path: Path) -> np.ndarray:
    """A COCO panoptic PNG -> (H, W) int64 segment ids."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"panoptic PNG {path} does not exist")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return rgb2id(arr)


# ----------------------------------------------------------------------------------------------------------------
# checks on segments_info lists and id maps
# ----------------------------------------------------------------------------------------------------------------
def segment_table(
    segments: Sequence[Mapping[str, Any]], category_index: Mapping[int, int], image: str, who: str
) -> dict[int, tuple[int, bool]]:
    """``segments_info`` -> {segment id: (class index, iscrowd)} with format checks."""
    table: dict[int, tuple[int, bool]] = {}
    for seg in segments:
        try:
            sid = int(seg["id"])
            cat = int(seg["category_id"])
        except KeyError as err:
            raise PanopticFormatError(f"{who} of image {image}: a segment lacks the key {err} ({dict(seg)})") from None
        if sid in table:
            raise PanopticFormatError(f"{who} of image {image}: segment id {sid} is listed twice in segments_info")
        if not 0 < sid < OFFSET:
            raise PanopticFormatError(f"{who} of image {image}: segment id {sid} is outside [1, {OFFSET})")
        if cat not in category_index:
            raise PanopticFormatError(
                f"{who} of image {image}: segment {sid} has unknown category_id {cat} "
                f"(known: {short_list(sorted(category_index))})"
            )
        table[sid] = (category_index[cat], bool(seg.get("iscrowd", 0)))
    return table


def short_list(values: Sequence[Any], limit: int = 12) -> str:
    """``[a, b, ...]`` with at most ``limit`` values (for error messages)."""
    vals = list(values)
    text = ", ".join(str(v) for v in vals[:limit])
    return f"[{text}{', ...' if len(vals) > limit else ''}]"


def as_id_map(ids: Tensor | np.ndarray, image: str, who: str) -> Tensor:
    """An (H, W) integer id map as an int64 tensor, or a :class:`PanopticFormatError`."""
    t = torch.as_tensor(ids)
    if t.ndim != 2:
        raise PanopticFormatError(f"{who} of image {image}: expected an (H, W) id map, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise PanopticFormatError(f"{who} of image {image}: id map must be an integer tensor, got {t.dtype}")
    return t.long()


def id_map_pair(gt_ids: Tensor | np.ndarray, pred_ids: Tensor | np.ndarray, image: str) -> tuple[Tensor, Tensor]:
    """Ground-truth and predicted id maps, checked (:func:`as_id_map`), on the ground truth's device, same size."""
    gt = as_id_map(gt_ids, image, "ground truth")
    pred = as_id_map(pred_ids, image, "prediction").to(gt.device)
    if gt.shape != pred.shape:
        raise PanopticFormatError(
            f"image {image}: prediction size {tuple(pred.shape)} differs from ground-truth size {tuple(gt.shape)} (H, W)"
        )
    return gt, pred
