"""Panoptic quality (PQ / SQ / RQ) computed exactly as the official COCO panoptic evaluation, plus semantic mIoU.

The semantics follow ``cocodataset/panopticapi`` (``pq_compute``), which detectron2 and Mask2Former call:

* Segments come from id maps (a PNG's ``R + 256 G + 256^2 B``; id 0 = VOID) and the ``segments_info`` list of
  each image (``id``, ``category_id``, ``iscrowd`` for ground truth).
* A prediction matches a ground-truth segment of the SAME category that is not crowd when
  ``IoU > 0.5`` (strict), where ``union = |P| + |G| - |P∩G| - |P∩VOID_gt|``. Each match is a TP adding its IoU.
* FN: unmatched non-crowd ground-truth segments (a segment listed in the JSON but absent from the PNG counts too).
* FP: unmatched predictions, except those whose ``(|P∩VOID_gt| + |P∩crowd_c|) / |P| > 0.5``, where ``crowd_c`` is
  the crowd segment of the prediction's category (as in panopticapi: the LAST crowd segment of that category in
  ``segments_info`` order, one per category).
* Per class ``PQ = ΣIoU / (TP + FP/2 + FN/2)``, ``SQ = ΣIoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``; classes with
  ``TP + FP + FN = 0`` are left out of the averages; averages over All / Things / Stuff classes.

One deliberate difference: ground-truth areas are counted from the PNG, where panopticapi reads the JSON ``area``
field; on well-formed data (COCO, ADE20K converted by Mask2Former's script, the ShapesWorld writer) they agree.
Numbers are reported in percent (perfect = 100), as detectron2's evaluator reports them.

Semantic mIoU is derived from the same labels: every pixel takes its segment's category (crowd included), ground
truth VOID pixels are ignored, predicted VOID counts as a miss; mIoU averages the classes that occur in the ground
truth or the prediction.

Two front ends share one per-image kernel (:func:`panoptic_image_stats`):

* files: :func:`evaluate_panoptic_files` and ``python -m common.metrics.panoptic --gt-json J --gt-folder D
  --pred-json J --pred-folder D [--json] [--per-class]``;
* tensors: :class:`COCOPanopticQuality`, a DDP-safe ``torchmetrics.Metric`` (per-class sums as states) fed with
  per-image ``{"panoptic": (H, W) ids, "segments_info": [...]}`` predictions and targets whose ``category_id`` are
  contiguous class indices.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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

__all__ = [
    "OFFSET",
    "VOID",
    "PanopticFormatError",
    "PQStats",
    "rgb2id",
    "id2rgb",
    "panoptic_image_stats",
    "semantic_image_stats",
    "summarize_panoptic",
    "evaluate_panoptic_files",
    "COCOPanopticQuality",  # noqa: F822 (defined lazily by __getattr__)
    "main",
]


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
# per-image kernel
# ----------------------------------------------------------------------------------------------------------------
class PQStats:
    """Per-class sums of one or many images: ``iou`` (float64), ``tp``/``fp``/``fn`` (int64), all shape (K,)."""

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        self.iou = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.tp = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.fp = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.fn = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def __iadd__(self, other: PQStats) -> PQStats:
        self.iou += other.iou.to(self.iou.device)
        self.tp += other.tp.to(self.tp.device)
        self.fp += other.fp.to(self.fp.device)
        self.fn += other.fn.to(self.fn.device)
        return self


def _segment_table(
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
                f"(known: {_short(sorted(category_index))})"
            )
        table[sid] = (category_index[cat], bool(seg.get("iscrowd", 0)))
    return table


def _short(values: Sequence[Any], limit: int = 12) -> str:
    vals = list(values)
    text = ", ".join(str(v) for v in vals[:limit])
    return f"[{text}{', ...' if len(vals) > limit else ''}]"


def _areas(ids: Tensor) -> dict[int, int]:
    uniq, counts = torch.unique(ids, return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist()))


def _as_id_map(ids: Tensor | np.ndarray, image: str, who: str) -> Tensor:
    t = torch.as_tensor(ids)
    if t.ndim != 2:
        raise PanopticFormatError(f"{who} of image {image}: expected an (H, W) id map, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise PanopticFormatError(f"{who} of image {image}: id map must be an integer tensor, got {t.dtype}")
    return t.long()


def panoptic_image_stats(
    gt_ids: Tensor | np.ndarray,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_ids: Tensor | np.ndarray,
    pred_segments: Sequence[Mapping[str, Any]],
    category_index: Mapping[int, int],
    *,
    image: str = "?",
    strict: bool = True,
) -> PQStats:
    """PQ sums of one image, exactly as panopticapi's ``pq_compute_single_core``.

    Args:
        gt_ids, pred_ids: (H, W) integer segment-id maps (0 = VOID), same size.
        gt_segments, pred_segments: ``segments_info`` lists (``id``, ``category_id``; ``iscrowd`` for ground truth).
        category_index: ``category_id`` -> class column in [0, K).
        image: name used in error messages.
        strict: official checks on the prediction: a predicted segment listed but absent from the map is an error.
            With ``strict=False`` such empty predicted segments are ignored (useful when a model's segments can lose
            all their pixels to others). Ids in a map but missing from the list are an error either way.

    Raises:
        PanopticFormatError: size mismatch, an id in a map missing from its ``segments_info``, an unknown category,
            duplicate ids; the message names the image and the segment.
    """
    gt = _as_id_map(gt_ids, image, "ground truth")
    pred = _as_id_map(pred_ids, image, "prediction").to(gt.device)
    if gt.shape != pred.shape:
        raise PanopticFormatError(
            f"image {image}: prediction size {tuple(pred.shape)} differs from ground-truth size {tuple(gt.shape)} (H, W)"
        )
    gt_info = _segment_table(gt_segments, category_index, image, "ground truth")
    pred_info = _segment_table(pred_segments, category_index, image, "prediction")
    num_classes = max(category_index.values(), default=-1) + 1
    iou_sum, tp, fp, fn = [0.0] * num_classes, [0] * num_classes, [0] * num_classes, [0] * num_classes

    pred_area = _areas(pred)
    for sid in pred_area:
        if sid != VOID and sid not in pred_info:
            raise PanopticFormatError(
                f"prediction of image {image}: segment id {sid} is in the PNG/id map but not in segments_info"
            )
    absent = [sid for sid in pred_info if sid not in pred_area]
    if absent:
        if strict:
            raise PanopticFormatError(
                f"prediction of image {image}: segment ids {_short(absent)} are in segments_info but not in the PNG/id map"
            )
        pred_info = {k: v for k, v in pred_info.items() if k in pred_area}
    gt_area = _areas(gt)
    for sid in gt_area:
        if sid != VOID and sid not in gt_info:
            raise PanopticFormatError(
                f"ground truth of image {image}: segment id {sid} is in the PNG/id map but not in segments_info"
            )

    joint = _areas(gt * OFFSET + pred)
    inter = {(k // OFFSET, k % OFFSET): v for k, v in joint.items()}

    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    for (g, p), n in inter.items():
        if g not in gt_info or p not in pred_info:
            continue
        g_cls, g_crowd = gt_info[g]
        if g_crowd or g_cls != pred_info[p][0]:
            continue
        union = pred_area[p] + gt_area.get(g, 0) - n - inter.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            tp[g_cls] += 1
            iou_sum[g_cls] += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd_of_class: dict[int, int] = {}
    for g, (g_cls, g_crowd) in gt_info.items():  # segments_info order: the last crowd of a class wins
        if g in gt_matched:
            continue
        if g_crowd:
            crowd_of_class[g_cls] = g
            continue
        fn[g_cls] += 1

    for p, (p_cls, _) in pred_info.items():
        if p in pred_matched:
            continue
        ignored = inter.get((VOID, p), 0)
        if p_cls in crowd_of_class:
            ignored += inter.get((crowd_of_class[p_cls], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        fp[p_cls] += 1
    stats = PQStats(num_classes)
    stats.iou = torch.tensor(iou_sum, dtype=torch.float64)
    stats.tp, stats.fp, stats.fn = (torch.tensor(v, dtype=torch.int64) for v in (tp, fp, fn))
    return stats


def _class_map(ids: Tensor, table: Mapping[int, tuple[int, bool]], void_class: int) -> Tensor:
    """Per-pixel class index (``void_class`` for VOID and unlisted ids)."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    lut = torch.tensor([table[i][0] if i in table else void_class for i in uniq.tolist()], dtype=torch.long)
    return lut.to(ids.device)[inverse]


def semantic_image_stats(
    gt_ids: Tensor | np.ndarray,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_ids: Tensor | np.ndarray,
    pred_segments: Sequence[Mapping[str, Any]],
    category_index: Mapping[int, int],
    *,
    image: str = "?",
) -> tuple[Tensor, Tensor, Tensor]:
    """Semantic (intersection, ground-truth area, predicted area) per class, each (K,) int64, of one image.

    Pixels take their segment's class (crowd included); ground-truth VOID pixels are ignored; predicted VOID
    pixels on labelled ground truth count in the ground-truth area only (a miss).
    """
    gt = _as_id_map(gt_ids, image, "ground truth")
    pred = _as_id_map(pred_ids, image, "prediction").to(gt.device)
    if gt.shape != pred.shape:
        raise PanopticFormatError(
            f"image {image}: prediction size {tuple(pred.shape)} differs from ground-truth size {tuple(gt.shape)} (H, W)"
        )
    k = max(category_index.values(), default=-1) + 1
    gt_cls = _class_map(gt.flatten(), _segment_table(gt_segments, category_index, image, "ground truth"), k)
    pred_cls = _class_map(pred.flatten(), _segment_table(pred_segments, category_index, image, "prediction"), k)
    valid = gt_cls < k
    conf = torch.bincount(gt_cls[valid] * (k + 1) + pred_cls[valid], minlength=(k + 1) ** 2).view(k + 1, k + 1)
    return conf.diagonal()[:k].clone(), conf[:k].sum(1), conf[:, :k].sum(0)


# ----------------------------------------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------------------------------------
def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def summarize_panoptic(
    stats: PQStats,
    is_thing: Sequence[bool],
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    semantic: tuple[Tensor, Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """Per-class and averaged PQ/SQ/RQ in percent, as panopticapi's ``pq_average`` (+ mIoU when given).

    Returns ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": [{"class", "name", "category_id",
    "isthing", "pq", "sq", "rq", "tp", "fp", "fn"}], "miou": float | None}``. A group without any counted class has
    ``n = 0`` and NaN averages (panopticapi divides by zero there).
    """
    iou = stats.iou.double().cpu()
    tp, fp, fn = stats.tp.cpu(), stats.fp.cpu(), stats.fn.cpu()
    k = iou.numel()
    if len(is_thing) != k:
        raise ValueError(f"is_thing has {len(is_thing)} entries for {k} classes")
    denom = tp.double() + 0.5 * fp.double() + 0.5 * fn.double()
    counted = (tp + fp + fn) > 0
    safe = denom.clamp_min(1e-12)
    pq = torch.where(counted, iou / safe, torch.zeros_like(iou))
    sq = torch.where(tp > 0, iou / tp.double().clamp_min(1), torch.zeros_like(iou))
    rq = torch.where(counted, tp.double() / safe, torch.zeros_like(iou))
    thing = torch.tensor([bool(t) for t in is_thing], dtype=torch.bool)
    out: dict[str, Any] = {}
    for name, group in (("All", torch.ones(k, dtype=torch.bool)), ("Things", thing), ("Stuff", ~thing)):
        sel = counted & group
        n = int(sel.sum())
        mean = (lambda v, sel=sel, n=n: float(100 * v[sel].sum() / n) if n else float("nan"))  # noqa: E731
        out[name] = {"pq": mean(pq), "sq": mean(sq), "rq": mean(rq), "n": n}
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    cids = list(category_ids) if category_ids is not None else list(range(k))
    out["per_class"] = [
        {
            "class": i, "name": names[i], "category_id": cids[i], "isthing": bool(is_thing[i]),
            "pq": float(100 * pq[i]), "sq": float(100 * sq[i]), "rq": float(100 * rq[i]),
            "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i]), "counted": bool(counted[i]),
        }
        for i in range(k)
    ]
    out["miou"] = float("nan")
    if semantic is not None:
        inter, gt_area, pred_area = (t.double().cpu() for t in semantic)
        union = gt_area + pred_area - inter
        present = union > 0
        ious = inter / union.clamp_min(1)
        out["miou"] = float(100 * ious[present].mean()) if bool(present.any()) else float("nan")
        for i, row in enumerate(out["per_class"]):
            row["iou"] = float(100 * ious[i]) if bool(present[i]) else float("nan")
    return out


# ----------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------
def _load_json(path: Path, what: str) -> dict[str, Any]:
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


def evaluate_panoptic_files(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Official-equivalent PQ of a prediction set in COCO panoptic format against its ground truth.

    Folders default to the JSON path without ``.json`` (as panopticapi). Every ground-truth image needs a
    prediction (predictions for other images are ignored). Categories come from the ground-truth JSON.
    Returns :func:`summarize_panoptic`'s dict plus ``num_images``.
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder = Path(gt_folder) if gt_folder is not None else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder is not None else pred_json.with_suffix("")
    gt_data = _load_json(gt_json, "ground-truth")
    pred_data = _load_json(pred_json, "prediction")
    for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} PNG folder {folder} does not exist")
    categories = gt_data.get("categories")
    if not categories:
        raise PanopticFormatError(f"ground-truth JSON {gt_json} has no 'categories'")
    category_index = {int(c["id"]): i for i, c in enumerate(categories)}
    is_thing = [bool(c.get("isthing", 0)) for c in categories]
    names = [str(c.get("name", c["id"])) for c in categories]

    pred_by_image = {a["image_id"]: a for a in pred_data["annotations"]}
    k = len(categories)
    stats = PQStats(k)
    sem = [torch.zeros(k, dtype=torch.int64) for _ in range(3)]
    annotations = gt_data["annotations"]
    for gt_ann in _track(annotations, "PQ", progress):
        image_id = gt_ann["image_id"]
        if image_id not in pred_by_image:
            raise PanopticFormatError(f"{pred_json}: no prediction for the image with id {image_id!r}")
        pred_ann = pred_by_image[image_id]
        name = f"{image_id!r} ({gt_ann['file_name']})"
        gt_ids = torch.from_numpy(load_panoptic_png(gt_folder / gt_ann["file_name"]))
        pred_ids = torch.from_numpy(load_panoptic_png(pred_folder / pred_ann["file_name"]))
        gt_segs, pred_segs = gt_ann["segments_info"], pred_ann["segments_info"]
        stats += panoptic_image_stats(gt_ids, gt_segs, pred_ids, pred_segs, category_index, image=name)
        for acc, part in zip(sem, semantic_image_stats(gt_ids, gt_segs, pred_ids, pred_segs, category_index, image=name)):
            acc += part
    out = summarize_panoptic(stats, is_thing, names, [int(c["id"]) for c in categories], semantic=tuple(sem))
    out["num_images"] = len(annotations)
    return out


def _track(items: Sequence[Any], description: str, enabled: bool):
    if not enabled or len(items) < 2:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=len(items), console=Console(stderr=True), transient=True)


# ----------------------------------------------------------------------------------------------------------------
# tensors: a DDP-safe torchmetrics Metric
# ----------------------------------------------------------------------------------------------------------------
def _unpack_sample(sample: Any, who: str, index: int) -> tuple[Tensor, Sequence[Mapping[str, Any]], str]:
    if isinstance(sample, Mapping):
        try:
            ids, segs = sample["panoptic"], sample["segments_info"]
        except KeyError as err:
            raise ValueError(f"{who} {index}: a dict sample needs the keys 'panoptic' and 'segments_info' ({err})") from None
        name = sample.get("file_name", sample.get("image_id", index))
        return ids, segs, str(name)
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return sample[0], sample[1], str(index)
    raise ValueError(f"{who} {index}: expected a dict with 'panoptic'/'segments_info' or a pair (ids, segments_info)")


def _define_metric_class() -> type:
    """Build :class:`COCOPanopticQuality` (torchmetrics is imported here: it takes seconds, the file CLI skips it)."""
    from torchmetrics import Metric

    class COCOPanopticQuality(Metric):
        """Official-equivalent PQ/SQ/RQ (All/Things/Stuff) and semantic mIoU over contiguous classes, DDP-safe.

        ``update(preds, targets)`` takes per-image lists; each item is ``{"panoptic": (H, W) int ids (0 = VOID),
        "segments_info": [{"id", "category_id", "iscrowd"?}, ...]}`` (or the pair ``(ids, segments_info)``, as
        Mask2Former's panoptic inference returns), with ``category_id`` a class index in ``[0, num_classes)``.
        Prediction and target of an image must have the same size (evaluate at the original resolution).
        States are per-class sums (``dist_reduce_fx="sum"``), so a DDP run gives the single-process numbers when each
        image is seen once (use ``CVDataModule.eval_loader``).

        ``compute()`` returns percentages: ``pq sq rq pq_th sq_th rq_th pq_st sq_st rq_st miou``;
        :meth:`summary` gives the full dict with per-class rows.
        """

        full_state_update = False
        higher_is_better = True
        is_differentiable = False

        iou_sum: Tensor
        tp: Tensor
        fp: Tensor
        fn: Tensor
        sem_inter: Tensor
        sem_gt: Tensor
        sem_pred: Tensor
        num_images: Tensor

        def __init__(
            self,
            num_classes: int,
            is_thing: Sequence[bool],
            class_names: Sequence[str] | None = None,
            *,
            strict: bool = False,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            if len(is_thing) != num_classes:
                raise ValueError(f"is_thing has {len(is_thing)} entries, expected num_classes={num_classes}")
            if class_names is not None and len(class_names) != num_classes:
                raise ValueError(f"class_names has {len(class_names)} entries, expected num_classes={num_classes}")
            self.num_classes = num_classes
            self.is_thing = [bool(t) for t in is_thing]
            self.class_names = list(class_names) if class_names is not None else None
            self.strict = strict
            self._category_index = {i: i for i in range(num_classes)}
            self.add_state("iou_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
            for name in ("tp", "fp", "fn", "sem_inter", "sem_gt", "sem_pred"):
                self.add_state(name, torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")
            self.add_state("num_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

        def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
            """Add a batch of images (see the class docstring for the item format)."""
            if len(preds) != len(targets):
                raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets")
            for i, (pred, target) in enumerate(zip(preds, targets)):
                p_ids, p_segs, _ = _unpack_sample(pred, "prediction", i)
                g_ids, g_segs, name = _unpack_sample(target, "target", i)
                g_ids = torch.as_tensor(g_ids, device=self.tp.device)
                s = panoptic_image_stats(
                    g_ids, g_segs, p_ids, p_segs, self._category_index, image=name, strict=self.strict
                )
                self.iou_sum += s.iou.to(self.iou_sum.device)
                self.tp += s.tp.to(self.tp.device)
                self.fp += s.fp.to(self.fp.device)
                self.fn += s.fn.to(self.fn.device)
                inter, gt_area, pred_area = semantic_image_stats(g_ids, g_segs, p_ids, p_segs, self._category_index, image=name)
                self.sem_inter += inter.to(self.sem_inter.device)
                self.sem_gt += gt_area.to(self.sem_gt.device)
                self.sem_pred += pred_area.to(self.sem_pred.device)
                self.num_images += 1

        def _stats(self) -> PQStats:
            stats = PQStats(self.num_classes, device=self.tp.device)
            stats.iou, stats.tp, stats.fp, stats.fn = self.iou_sum, self.tp, self.fp, self.fn
            return stats

        def summary(self) -> dict[str, Any]:
            """Full results (percent): All/Things/Stuff, per class, mIoU, number of images (synced under DDP)."""
            # compute() syncs states across processes; reuse its synced states by calling the summary inside it
            self.compute()
            return self._last_summary

        def compute(self) -> dict[str, Tensor]:
            """``pq sq rq pq_th sq_th rq_th pq_st sq_st rq_st miou`` (percent, NaN for an empty group)."""
            res = summarize_panoptic(
                self._stats(), self.is_thing, self.class_names,
                semantic=(self.sem_inter, self.sem_gt, self.sem_pred),
            )
            res["num_images"] = int(self.num_images)
            self._last_summary = res
            out: dict[str, Tensor] = {}
            for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
                for key in ("pq", "sq", "rq"):
                    out[f"{key}{suffix}"] = torch.tensor(res[group][key], dtype=torch.float32)
            out["miou"] = torch.tensor(res["miou"], dtype=torch.float32)
            return out

    COCOPanopticQuality.__module__ = __name__
    COCOPanopticQuality.__qualname__ = "COCOPanopticQuality"
    return COCOPanopticQuality


def __getattr__(name: str) -> Any:
    """Lazy ``COCOPanopticQuality`` (PEP 562), so ``python -m common.metrics.panoptic`` does not import torchmetrics."""
    if name == "COCOPanopticQuality":
        cls = _define_metric_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _nan_to_none(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def print_table(results: dict[str, Any], per_class: bool = False) -> None:
    """The panopticapi table (PQ SQ RQ N for All/Things/Stuff) with rich, plus mIoU and optionally per class."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Panoptic quality ({results.get('num_images', '?')} images)")
    for col in ("", "PQ", "SQ", "RQ", "N"):
        table.add_column(col, justify="left" if not col else "right")
    for group in ("All", "Things", "Stuff"):
        r = results[group]
        table.add_row(group, _fmt(r["pq"]), _fmt(r["sq"]), _fmt(r["rq"]), str(r["n"]))
    console.print(table)
    console.print(f"semantic mIoU (from panoptic labels): {_fmt(results['miou'])}")
    if per_class:
        t = Table(title="per class")
        for col in ("id", "name", "thing", "PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU"):
            t.add_column(col, justify="right" if col not in ("name",) else "left")
        for row in results["per_class"]:
            t.add_row(
                str(row["category_id"]), row["name"], "yes" if row["isthing"] else "no",
                _fmt(row["pq"]) if row["counted"] else "-", _fmt(row["sq"]) if row["counted"] else "-",
                _fmt(row["rq"]) if row["counted"] else "-", str(row["tp"]), str(row["fp"]), str(row["fn"]),
                _fmt(row.get("iou", float("nan"))),
            )
        console.print(t)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m common.metrics.panoptic --gt-json J --gt-folder D --pred-json J --pred-folder D [--json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m common.metrics.panoptic",
        description="Official-equivalent COCO panoptic quality (PQ/SQ/RQ) and semantic mIoU of a prediction set.",
    )
    parser.add_argument("--gt-json", required=True, help="ground-truth panoptic JSON (COCO format)")
    parser.add_argument("--gt-folder", default=None, help="ground-truth PNG folder (default: the JSON path without .json)")
    parser.add_argument("--pred-json", required=True, help="prediction panoptic JSON (COCO format)")
    parser.add_argument("--pred-folder", default=None, help="prediction PNG folder (default: the JSON path without .json)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (percent; null for NaN)")
    parser.add_argument("--per-class", action="store_true", help="also print the per-class table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        results = evaluate_panoptic_files(
            args.gt_json, args.pred_json, args.gt_folder, args.pred_folder,
            progress=not args.no_progress and not args.json,
        )
    except (FileNotFoundError, PanopticFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_jsonable(results), indent=2))
    else:
        print_table(results, per_class=args.per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
