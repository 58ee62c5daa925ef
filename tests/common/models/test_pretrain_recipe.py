"""The timm pretraining recipe's knobs: label-group loss weights (toward shape) and the rotation augmentation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from common.models import SHAPES_MODELS
from common.models.pretrain import multilabel_loss
from common.models.pretrain.data import LABEL_GROUPS, LABELS


def _targets() -> torch.Tensor:
    torch.manual_seed(0)
    t = torch.zeros(6, len(LABELS))
    for i in range(6):
        for g in LABEL_GROUPS:
            idx = torch.arange(len(LABELS))[g]
            t[i, idx[torch.randint(len(idx), (1 + i % 2,))]] = 1.0
    t[0, LABEL_GROUPS[2]] = 0.0  # an image without stuff: that group skips it
    return t


def test_loss_weights_scale_each_label_group():
    logits = torch.randn(6, len(LABELS))
    targets = _targets()
    per_group = []
    for g in LABEL_GROUPS:
        t = targets[:, g] / targets[:, g].sum(-1, keepdim=True).clamp_min(1.0)
        has = t.sum(-1) > 0
        per_group.append(F.cross_entropy(logits[has, g], t[has]))
    assert torch.allclose(multilabel_loss(logits, targets), sum(per_group))
    weighted = multilabel_loss(logits, targets, (3.0, 1.0, 0.5))
    assert torch.allclose(weighted, 3.0 * per_group[0] + per_group[1] + 0.5 * per_group[2])
    with pytest.raises(ValueError, match="3 label groups"):
        multilabel_loss(logits, targets, (1.0, 1.0))


def test_only_the_convnets_change_recipe_and_the_swin_keeps_its_own():
    """The Swin's cached weights stay valid: its recipe keeps the defaults of the new fields (unit weights, rotation);
    the ResNet and ConvNeXt weight the things (shape) group up and train without the rotation."""
    swin = SHAPES_MODELS["shapes-swin-tiny"].recipe
    defaults = {f.name: f.default for f in dataclasses.fields(swin) if f.name in ("loss_weights", "rotate")}
    assert (swin.loss_weights, swin.rotate) == (defaults["loss_weights"], defaults["rotate"]) == ((1.0, 1.0, 1.0), True)
    for name in ("shapes-resnet-tiny", "shapes-convnext-tiny"):
        r = SHAPES_MODELS[name].recipe
        assert r.loss_weights[0] > r.loss_weights[1] and not r.rotate, name
