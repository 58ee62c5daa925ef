"""MaskCLIP's inference from per-proposal class logits and mask logits: panoptic, semantic and instance, as the
official code (Mask2Former's), for one image at a time.

The class logits are ``(Q, K)``. In training "other" (no-object) is appended as the last column; at evaluation the
official code (since its Oct 2023 change) does not append it, yet its semantic and instance inference still slice off
the last column (``[..., :-1]``), dropping a real class, and its instance labels (``arange(num_classes)`` repeated per
query) no longer line up with the flattened scores. Here every function takes ``has_no_object``: the last column is
dropped only when it is the no-object column.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F

__all__ = ["instance_inference", "panoptic_inference", "semantic_inference"]


def _class_probs(mask_cls: torch.Tensor, has_no_object: bool) -> torch.Tensor:
    probs = F.softmax(mask_cls.float(), dim=-1)
    return probs[..., :-1] if has_no_object else probs


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, *, has_no_object: bool = False
                       ) -> torch.Tensor:
    """``(Q, K)`` class logits, ``(Q, H, W)`` mask logits -> ``(C, H, W)`` per-class scores
    ``sum_q softmax(cls)_q,c * sigmoid(mask)_q`` (the no-object column dropped when present)."""
    return torch.einsum("qc,qhw->chw", _class_probs(mask_cls, has_no_object), mask_pred.float().sigmoid())


def panoptic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, thing_classes: Collection[int], *,
                       has_no_object: bool = False, object_threshold: float = 0.5, overlap_threshold: float = 0.5
                       ) -> tuple[torch.Tensor, list[dict]]:
    """Mask2Former's panoptic assembly.

    Keep the proposals whose top class (softmax over all columns) is not no-object and scores above
    ``object_threshold`` (0.5 in the official COCO config, 0.3 in its ADE20K config); each pixel goes to
    ``argmax_q score_q * sigmoid(mask_q)``; a proposal becomes a segment on its pixels that are also inside its own
    mask (``sigmoid >= 0.5``) if that assigned area / its own mask area >= ``overlap_threshold`` (0.5); stuff
    segments of one class are merged into one; unassigned pixels stay 0 (VOID).

    Args:
        mask_cls: ``(Q, K)`` class logits.
        mask_pred: ``(Q, H, W)`` mask logits.
        thing_classes: the contiguous class indices that are things.

    Returns:
        ``(H, W)`` int32 segment ids (0 = VOID) and ``[{"id", "category_id" (contiguous), "isthing"}]``.
    """
    probs = F.softmax(mask_cls.float(), dim=-1)
    scores, labels = probs.max(-1)
    keep = scores > object_threshold
    if has_no_object:
        keep &= labels.ne(mask_cls.shape[-1] - 1)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep].float().sigmoid()
    h, w = mask_pred.shape[-2:]
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
    segments: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic, segments
    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    things = set(int(c) for c in thing_classes)
    stuff_ids: dict[int, int] = {}
    next_id = 0
    for k in range(cur_classes.shape[0]):
        cls = int(cur_classes[k])
        isthing = cls in things
        mine = owner == k
        inside = cur_masks[k] >= 0.5
        mask = mine & inside
        mask_area, original_area = int(mine.sum()), int(inside.sum())
        if mask_area == 0 or original_area == 0 or int(mask.sum()) == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        if not isthing and cls in stuff_ids:
            panoptic[mask] = stuff_ids[cls]
            continue
        next_id += 1
        if not isthing:
            stuff_ids[cls] = next_id
        panoptic[mask] = next_id
        segments.append({"id": next_id, "category_id": cls, "isthing": isthing})
    return panoptic, segments


def instance_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, *, has_no_object: bool = False,
                       topk: int = 100, thing_classes: Collection[int] | None = None) -> dict[str, torch.Tensor]:
    """Mask2Former's instance inference: the ``topk`` (query, class) pairs by class probability (no-object column
    dropped when present), masks ``logit > 0``, score = class probability x the mean ``sigmoid`` inside the mask;
    only thing classes when ``thing_classes`` is given (panoptic datasets).

    Returns ``{"masks" (N, H, W) bool, "scores" (N,), "labels" (N,) contiguous class, "queries" (N,)}``.
    """
    probs = _class_probs(mask_cls, has_no_object)                   # (Q, C): columns are exactly the classes
    q, c = probs.shape
    scores, flat = probs.flatten().topk(min(topk, q * c), sorted=False)
    labels, queries = flat % c, flat // c                           # labels from the same flattening: aligned
    if thing_classes is not None:
        things = torch.as_tensor(sorted(int(t) for t in thing_classes), dtype=labels.dtype, device=labels.device)
        keep = torch.isin(labels, things)
        scores, labels, queries = scores[keep], labels[keep], queries[keep]
    logits = mask_pred[queries].float()
    masks = logits > 0
    mask_scores = (logits.sigmoid().flatten(1) * masks.flatten(1)).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    return {"masks": masks, "scores": scores * mask_scores, "labels": labels, "queries": queries}
