""":class:`COCOPanopticQuality`, the tensor front end of :mod:`common.metrics.panoptic`: a DDP-safe
``torchmetrics.Metric`` with per-class sums as states.

This module imports torchmetrics (seconds); :mod:`common.metrics.panoptic` loads it only when the class is asked for,
so ``python -m common.metrics.panoptic`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from common.metrics.panoptic_stats import (
    PQStats,
    panoptic_image_stats,
    semantic_image_stats,
    summarize_panoptic,
)

__all__ = ["COCOPanopticQuality"]


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


# named by its public place (where it was defined before the split): configs, reprs and pickles use that path
COCOPanopticQuality.__module__ = "common.metrics.panoptic"
