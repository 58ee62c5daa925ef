"""The per-image kernel of :mod:`common.metrics.panoptic` (panopticapi's ``pq_compute_single_core``, semantic
confusion from the same labels) and the summary of per-class sums (panopticapi's ``pq_average`` + mIoU).

The semantics are described in :mod:`common.metrics.panoptic`; both front ends (files, torchmetrics) call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.metrics.panoptic_format import (
    OFFSET,
    VOID,
    PanopticFormatError,
    id_map_pair,
    segment_table,
    short_list,
)

__all__ = ["PQStats", "panoptic_image_stats", "semantic_image_stats", "summarize_panoptic"]


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


def _areas(ids: Tensor) -> dict[int, int]:
    uniq, counts = torch.unique(ids, return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist()))


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
    gt, pred = id_map_pair(gt_ids, pred_ids, image)
    gt_info = segment_table(gt_segments, category_index, image, "ground truth")
    pred_info = segment_table(pred_segments, category_index, image, "prediction")
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
                f"prediction of image {image}: segment ids {short_list(absent)} are in segments_info but not in the PNG/id map"
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
    gt, pred = id_map_pair(gt_ids, pred_ids, image)
    k = max(category_index.values(), default=-1) + 1
    gt_cls = _class_map(gt.flatten(), segment_table(gt_segments, category_index, image, "ground truth"), k)
    pred_cls = _class_map(pred.flatten(), segment_table(pred_segments, category_index, image, "prediction"), k)
    valid = gt_cls < k
    conf = torch.bincount(gt_cls[valid] * (k + 1) + pred_cls[valid], minlength=(k + 1) ** 2).view(k + 1, k + 1)
    return conf.diagonal()[:k].clone(), conf[:k].sum(1), conf[:, :k].sum(0)


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
