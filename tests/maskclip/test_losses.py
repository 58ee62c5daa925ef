"""MaskCLIP's set criterion (maskclip/losses.py): Hungarian matching, importance sampling, weights, aux losses."""

from __future__ import annotations

import torch

from maskclip.losses import MaskCLIPCriterion, hungarian_match, point_sample, uncertain_points

H = W = 16


def _halves() -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.zeros(H, W)
    left[:, : W // 2] = 1
    return left, 1 - left


def _case() -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """3 predictions, 2 targets (class 1 = left half, class 0 = right half); 3 classes + no-object."""
    left, right = _halves()
    logits = torch.tensor([[8.0, 0, 0, 0],      # pred 0: class 0, right half -> target 1
                           [0, 0, 0, 8.0],      # pred 1: no-object, a blob
                           [0, 8.0, 0, 0]])[None]  # pred 2: class 1, left half -> target 0
    masks = torch.stack([right, torch.zeros(H, W), left])[None] * 20 - 10
    targets = [{"labels": torch.tensor([1, 0]), "masks": torch.stack([left, right])}]
    return logits, masks, targets


def test_hungarian_matching_on_a_constructed_case() -> None:
    logits, masks, targets = _case()
    g = torch.Generator().manual_seed(0)
    [(rows, cols)] = hungarian_match(logits, masks, targets, num_points=256, generator=g)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 2: 0}
    # the class cost alone can flip the match: swap the classes of the predictions, keep the masks
    swapped = logits[:, [2, 1, 0]]
    [(rows, cols)] = hungarian_match(swapped, masks, targets, num_points=256, cost_mask=0.0, cost_dice=0.0)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 0, 2: 1}
    [(rows, cols)] = hungarian_match(logits, masks, [{"labels": torch.zeros(0), "masks": torch.zeros(0, H, W)}],
                                     num_points=16)
    assert rows.numel() == cols.numel() == 0


def test_importance_sampling_prefers_uncertain_points() -> None:
    logits = torch.full((1, 1, H, W), 20.0)
    logits[..., 4:8, 4:8] = 0.0                                   # the only uncertain region
    g = torch.Generator().manual_seed(0)
    pts = uncertain_points(logits, 100, 10.0, 0.75, g)  # 1000 candidates, ~140 uncertain
    assert pts.shape == (1, 100, 2) and pts.min() >= 0 and pts.max() <= 1
    picked = point_sample(logits, pts[:, :75])[0, 0].abs()        # the importance share: near-zero logits
    uniform = point_sample(logits, torch.rand(1, 1000, 2, generator=g))[0, 0].abs()
    assert picked.mean() < 5.0 < 15.0 < uniform.mean()


def test_criterion_losses_weights_no_object_and_aux() -> None:
    logits, masks, targets = _case()
    crit = MaskCLIPCriterion(num_points=256)
    crit.generator = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": logits.clone().requires_grad_(), "pred_masks": masks.clone().requires_grad_(),
               "aux_outputs": [{"pred_logits": logits, "pred_masks": masks.flip(-1)}]}
    losses = crit(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0", "loss"}
    # right classes and masks: tiny class loss; the mask losses stay positive (75% of the points are the most
    # uncertain ones, on the boundaries, where the targets are interpolated too); the flipped aux output, matched
    # anew on its masks, pays for its now wrong classes
    assert losses["loss_ce"] < 0.01
    assert losses["loss_mask"] + losses["loss_dice"] < 0.5 * (losses["loss_mask_0"] + losses["loss_dice_0"]
                                                              + losses["loss_ce_0"])
    torch.testing.assert_close(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))
    losses["loss"].backward()
    # no-object weight 0 (official COCO): the unmatched prediction's class logits get no gradient
    assert outputs["pred_logits"].grad[0, 1].abs().max() == 0
    assert outputs["pred_logits"].grad[0, 0].abs().max() > 0
    crit.no_object_weight = 0.1                                   # the ADE20K config: now it does
    outputs["pred_logits"].grad = None
    crit(outputs, targets)["loss"].backward()
    assert outputs["pred_logits"].grad[0, 1].abs().max() > 0
    # the class loss is 2.0 x the cross-entropy, the mask losses 5.0 x
    unit = MaskCLIPCriterion(num_points=256, class_weight=1.0, mask_weight=1.0, dice_weight=1.0)
    unit.generator = torch.Generator().manual_seed(0)
    base = unit({"pred_logits": logits, "pred_masks": masks}, targets)
    crit.no_object_weight = 0.0
    crit.generator = torch.Generator().manual_seed(0)
    weighted = crit({"pred_logits": logits, "pred_masks": masks}, targets)
    torch.testing.assert_close(weighted["loss_ce"], 2.0 * base["loss_ce"])
    torch.testing.assert_close(weighted["loss_mask"], 5.0 * base["loss_mask"])
