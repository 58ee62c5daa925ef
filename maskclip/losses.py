"""MaskCLIP's training loss: Mask2Former's set criterion on the mask-token class scores and the (RMA-refined) masks.

* Hungarian matching per image (``scipy.optimize.linear_sum_assignment``) on
  ``cost = 2.0 * (-p(class)) + 5.0 * mask BCE + 5.0 * dice``, the mask costs on ``num_points`` points sampled uniformly
  at random (the same points for every prediction and target of the image).
* Losses on the matched pairs: class cross-entropy over the classes + the no-object column ("other", last), with the
  no-object class weighted ``no_object_weight`` (0.0 in the official COCO config, 0.1 in its ADE20K config); mask BCE
  and dice on ``num_points`` importance-sampled points (PointRend / Mask2Former: ``oversample_ratio * num_points``
  random points, the ``importance_sample_ratio`` share with the most uncertain logits (``-|logit|``) kept, the rest
  fresh random points), normalised by the number of target masks in the batch.
* The same losses on every auxiliary mask output (matched anew), keys suffixed ``_0, _1, ...``.

Point coordinates are in ``[0, 1]``, sampled with ``grid_sample(align_corners=False)``, so predictions (336 x 336 at
ViT-L/14@336) and targets (the image's size) need not share a resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["MaskCLIPCriterion", "hungarian_match", "point_sample", "uncertain_points"]

Target = dict[str, torch.Tensor]  # {"labels": (T,) long, "masks": (T, H, W) 0/1}


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` at ``(N, P, 2)`` points in ``[0, 1]`` (x, y) -> ``(N, C, P)`` (bilinear, align_corners=False)."""
    return F.grid_sample(x, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)


def uncertain_points(logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance sampling of ``num_points`` points per mask ``(N, 1, H, W)`` -> ``(N, P, 2)`` in ``[0, 1]``."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits, coords)[:, 0].abs()                        # (N, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    picked = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        picked = torch.cat([picked, torch.rand(n, num_random, 2, device=logits.device, generator=generator)], 1)
    return picked


def _batch_bce(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """(N, P) logits, (M, P) 0/1 -> (N, M) mean BCE over the points."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ tgt.t() + neg @ (1 - tgt).t()) / pred.shape[1]


def _batch_dice(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """(N, P) logits, (M, P) 0/1 -> (N, M) dice loss ``1 - (2|p t| + 1) / (|p| + |t| + 1)``."""
    p = pred.sigmoid()
    return 1 - (2 * p @ tgt.t() + 1) / (p.sum(-1)[:, None] + tgt.sum(-1)[None, :] + 1)


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, masks: torch.Tensor, targets: Sequence[Target], *, num_points: int,
                    cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                    generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: (prediction indices, target indices) minimising the Mask2Former matching cost.

    Args:
        logits: ``(B, Q, K)`` class logits (softmaxed here; K may include the no-object column).
        masks: ``(B, Q, H, W)`` mask logits.
        targets: per image ``{"labels": (T,), "masks": (T, H', W')}``.
    """
    out = []
    for b, tgt in enumerate(targets):
        labels = tgt["labels"].long()
        if labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.long)
            out.append((empty, empty))
            continue
        prob = logits[b].float().softmax(-1)
        c_class = -prob[:, labels]                                                 # (Q, T)
        coords = torch.rand(1, num_points, 2, device=masks.device, generator=generator)
        pm = point_sample(masks[b][:, None].float(), coords.expand(masks.shape[1], -1, -1))[:, 0]
        tm = point_sample(tgt["masks"][:, None].to(pm), coords.expand(labels.numel(), -1, -1))[:, 0]
        cost = cost_class * c_class + cost_mask * _batch_bce(pm, tm) + cost_dice * _batch_dice(pm, tm)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return out


class MaskCLIPCriterion(nn.Module):
    """Mask2Former's set criterion with MaskCLIP's official weights (COCO: class 2.0, mask 5.0, dice 5.0, no-object
    0.0; 12,544 points, oversample 3, importance 0.75).

    ``forward(outputs, targets)`` takes :class:`maskclip.mask_tokens.MaskCLIP`'s training output (``pred_logits``
    ``(B, Q, C + 1)`` with the no-object column last, ``pred_masks``, ``aux_outputs``) and per-image targets; returns
    the weighted losses by name and their sum under ``"loss"``.
    """

    def __init__(self, *, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 no_object_weight: float = 0.0, num_points: int = 112 * 112, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75,
                 num_masks_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.no_object_weight = no_object_weight
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        #: sums the batch's target count over processes (DDP) before the division; identity by default
        self.num_masks_reduce = num_masks_reduce
        self.generator: torch.Generator | None = None

    def match(self, logits: torch.Tensor, masks: torch.Tensor, targets: Sequence[Target]
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return hungarian_match(logits, masks, targets, num_points=self.num_points, cost_class=self.class_weight,
                               cost_mask=self.mask_weight, cost_dice=self.dice_weight, generator=self.generator)

    def loss_labels(self, logits: torch.Tensor, targets: Sequence[Target],
                    indices: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        b, q, k = logits.shape
        no_object = k - 1
        target_classes = torch.full((b, q), no_object, dtype=torch.long, device=logits.device)
        for i, (src, tgt) in enumerate(indices):
            target_classes[i, src.to(logits.device)] = targets[i]["labels"].to(logits.device)[tgt]
        weight = torch.ones(k, device=logits.device)
        weight[no_object] = self.no_object_weight
        per = F.cross_entropy(logits.float().transpose(1, 2), target_classes, reduction="none")  # (B, Q)
        w = weight[target_classes]
        # weighted mean as F.cross_entropy(weight=...): sum(w l) / sum(w); 0 when every weight is 0
        return (w * per).sum() / w.sum().clamp_min(torch.finfo(per.dtype).tiny)

    def loss_masks(self, masks: torch.Tensor, targets: Sequence[Target],
                   indices: list[tuple[torch.Tensor, torch.Tensor]], num_masks: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.cat([masks[i, s.to(masks.device)] for i, (s, _) in enumerate(indices)])   # (M, H, W)
        if src.shape[0] == 0:
            zero = masks.sum() * 0.0
            return zero, zero
        src = src[:, None].float()
        with torch.no_grad():
            coords = uncertain_points(src, self.num_points, self.oversample_ratio, self.importance_sample_ratio,
                                      self.generator)
            offs = self._offsets(indices)
            labels = torch.cat([point_sample(targets[i]["masks"][t.to(masks.device)][:, None].float(),
                                             coords[offs[i]:offs[i + 1]])[:, 0]
                                for i, (_, t) in enumerate(indices)])
        logits = point_sample(src, coords)[:, 0]                                             # (M, P)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks
        p = logits.sigmoid()
        dice = (1 - (2 * (p * labels).sum(-1) + 1) / (p.sum(-1) + labels.sum(-1) + 1)).sum() / num_masks
        return bce, dice

    @staticmethod
    def _offsets(indices: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
        offs = [0]
        for s, _ in indices:
            offs.append(offs[-1] + len(s))
        return offs

    def single(self, logits: torch.Tensor, masks: torch.Tensor, targets: Sequence[Target], num_masks: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        indices = self.match(logits, masks, targets)
        bce, dice = self.loss_masks(masks, targets, indices, num_masks)
        return {"loss_ce": self.class_weight * self.loss_labels(logits, targets, indices),
                "loss_mask": self.mask_weight * bce, "loss_dice": self.dice_weight * dice}

    def forward(self, outputs: dict, targets: Sequence[Target]) -> dict[str, torch.Tensor]:
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        num = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=logits.device)
        if self.num_masks_reduce is not None:
            num = self.num_masks_reduce(num)
        num = num.clamp_min(1.0)
        losses = self.single(logits, masks, targets, num)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self.single(aux["pred_logits"], aux["pred_masks"], targets,
                                                                  num).items()})
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses
