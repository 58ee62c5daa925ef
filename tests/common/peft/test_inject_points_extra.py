"""Insertion points added for Conv-Adapter: timm ResNetV2 ``PreActBottleneck`` (BiT) ``conv3x3`` / ``block``, and the
Swin ``attn_grid`` / ``block`` points on the (B, H, W, C) grid."""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import GroupNormAct
from timm.models.resnetv2 import ResNetV2
from torch import nn

from common.peft.inject import inject, insertion_points

from .conftest import make_tiny_swin


def tiny_bit(seed: int = 0) -> ResNetV2:
    torch.manual_seed(seed)
    return ResNetV2(layers=(1, 1, 1, 1), channels=(32, 32, 64, 64), num_classes=0, stem_type="fixed",
                    norm_layer=partial(GroupNormAct, num_groups=4)).eval()


def test_preact_bottleneck_points_widths_strides_and_placement():
    model = tiny_bit()
    points = insertion_points(model)
    assert [p.kind for p in points] == ["conv3x3", "block"] * 4
    strides = {p.name: p.stride for p in points}
    assert strides["stages.0.blocks.0.conv3x3"] == 1 and strides["stages.1.blocks.0.conv3x3"] == 2
    assert strides["stages.1.blocks.0.block"] == 2
    blk = model.stages[1].blocks[0]
    (conv,) = insertion_points(model, "stages.1.blocks.0.conv3x3")
    assert (conv.in_dim, conv.out_dim) == (blk.conv2.in_channels, blk.conv2.out_channels)
    # a parallel branch on conv3x3 reads conv2's input (norm2's output) and is added to conv2's output
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["in"] = x
            return torch.ones(x.shape[0], conv.out_dim, (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2)

    got = {}
    blk.conv2.register_forward_pre_hook(lambda m, i: got.update(norm2=i[0]))
    blk.norm3.register_forward_pre_hook(lambda m, i: got.update(out=i[0]))  # conv2's output as the block uses it
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)
        before = dict(got)
        inject(model, lambda p: Probe(), "stages.1.blocks.0.conv3x3", mode="parallel")
        model(x)
    assert torch.equal(seen["in"], before["norm2"])
    assert torch.allclose(got["out"], before["out"] + 1)


def test_swin_attn_grid_branch_joins_the_residual_stream_before_the_mlp():
    model = make_tiny_swin(img_size=64)
    blk = model.layers[0].blocks[1]  # a shifted-window block
    (pt,) = insertion_points(model, "layers.0.blocks.1.attn_grid")
    assert (pt.layout, pt.in_dim, pt.stride) == ("nhwc", blk.norm1.normalized_shape[0], 1)
    x = torch.randn(2, 16, 16, pt.in_dim)
    with torch.no_grad():
        base = blk(x)
        # reference: h = x + attn(norm1 x) + norm1(x); out = h + mlp(norm2 h)
        h = x + blk._attn(blk.norm1(x)) + blk.norm1(x)
        ref = h + blk.mlp(blk.norm2(h))
        inject(model, lambda p: nn.Identity(), "layers.0.blocks.1.attn_grid", mode="parallel")
        ours = blk(x)
    assert not torch.allclose(base, ours)
    assert torch.allclose(ours, ref, atol=1e-5)
    kinds = [p.kind for p in insertion_points(model, "layers.0.blocks.0.*")]
    assert kinds == ["attn", "qkv", "attn_grid", "mlp", "block"]
