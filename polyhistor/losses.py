"""Per-task losses of the PASCAL-Context multi-task benchmark (the ASTMT / MTI-Net / MTL-PyTorch lineage).

* semseg, human_parts: cross-entropy over non-ignored pixels (255). A batch without any valid pixel (human parts on
  images without people) contributes a zero loss, not NaN.
* sal: balanced binary cross-entropy (HED-style): positives weighted by the fraction of negatives and vice versa,
  over valid pixels, averaged over the valid pixels (the lineage averages over all pixels; they coincide when
  nothing is padded).
* normals: L1 between the L2-normalised prediction and the target unit vectors over valid pixels, averaged over
  the valid elements (3 per pixel), as the lineage's ``NormalsLoss(normalize=True)``.

Default task weights (MTL-PyTorch's PASCAL config): semseg 1, human_parts 2, sal 5, normals 10.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from common.ops import channel_norm

DEFAULT_WEIGHTS: dict[str, float] = {"semseg": 1.0, "human_parts": 2.0, "sal": 5.0, "normals": 10.0}


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean CE over pixels whose target is not ``ignore_index``; 0 (with a graph) when there are none."""
    valid = target != ignore_index
    loss = F.cross_entropy(logits, target.masked_fill(~valid, 0), reduction="none")
    return (loss * valid).sum() / valid.sum().clamp_min(1)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Class-balanced BCE for saliency; ``logits`` (B, 1, H, W) or (B, H, W), ``target`` {0, 1, ignore}."""
    if logits.ndim == 4:
        logits = logits[:, 0]
    valid = (target != ignore_index).float()
    pos = (target == 1).float() * valid
    neg = valid - pos
    n_valid = valid.sum().clamp_min(1)
    w = neg.sum() / n_valid  # weight of the positives = fraction of negatives
    per_pixel = F.binary_cross_entropy_with_logits(logits, pos, reduction="none")
    return (w * (per_pixel * pos).sum() + (1 - w) * (per_pixel * neg).sum()) / n_valid


def normals_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between L2-normalised predictions (B, 3, H, W) and target normals over valid pixels."""
    if mask is None:
        mask = (target * target).sum(dim=1) > 0
    unit = pred / channel_norm(pred, dim=1, keepdim=True)
    m = mask.unsqueeze(1).float()
    return ((unit - target).abs() * m).sum() / (3 * m.sum()).clamp_min(1)


def task_loss(task: str, pred: torch.Tensor, batch: Mapping[str, torch.Tensor], ignore_index: int = 255):
    """The unweighted loss of ``task`` for a batch dict holding its targets."""
    if task in ("semseg", "human_parts"):
        return masked_cross_entropy(pred, batch[task], ignore_index)
    if task == "sal":
        return balanced_bce(pred, batch[task], ignore_index)
    if task == "normals":
        return normals_l1(pred, batch["normals"], batch.get("normals_mask"))
    raise ValueError(f"no loss for task {task!r}; known: semseg, human_parts, sal, normals (polyhistor/losses.py)")


def weighted_losses(preds: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
                    weights: Mapping[str, float] | None = None, ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """``{task: weight * loss}`` for every predicted task, computed in float32 (predictions of a bf16 / fp16
    autocast forward are upcast first)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    return {t: float(w[t]) * task_loss(t, p.float(), batch, ignore_index) for t, p in preds.items()}
