"""The insertion points of real timm / open_clip blocks: names, widths, strides, and what each mode computes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.peft.inject import InsertionPoint, inject, insertion_points

from .tiny_backbones import BACKBONES, images


class Recorder(nn.Module):
    """Identity that records the shapes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[torch.Size] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(x.shape)
        return x


class ZeroBranch(nn.Module):
    """A parallel branch built from the point's declared shapes: zeros with ``out_dim`` channels at ``stride``.
    Checks the input width; a wrong out_dim or stride makes the addition fail or broadcast to a wrong shape."""

    def __init__(self, point: InsertionPoint) -> None:
        super().__init__()
        self.point = point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.point
        if p.layout == "nchw":
            assert x.shape[1] == p.in_dim, p.name
            h, w = (math.ceil(s / p.stride) for s in x.shape[-2:])
            return x.new_zeros(x.shape[0], p.out_dim, h, w)
        assert x.shape[-1] == p.in_dim, p.name
        return x.new_zeros(*x.shape[:-1], p.out_dim)


EXPECTED_KINDS = {
    "swin": ["attn", "qkv", "attn_grid", "mlp", "block"], "vit": ["attn", "qkv", "mlp"], "open_clip_vit": ["attn", "mlp"],
    "resnet_bottleneck": ["conv3x3", "block"], "resnet_basic": ["conv3x3", "conv3x3_2", "block"],
    "convnext": ["conv_dw", "block"],
}
EXPECTED_NAMES = {  # a few points each, as a person would type them
    "swin": ["layers.0.blocks.0.attn", "layers.3.blocks.1.mlp", "layers.2.blocks.1.qkv"],
    "vit": ["blocks.0.attn", "blocks.1.mlp"],
    "open_clip_vit": ["transformer.resblocks.0.attn", "transformer.resblocks.1.mlp"],
    "resnet_bottleneck": ["layer1.0.conv3x3", "layer4.0.block"],
    "resnet_basic": ["layer2.0.conv3x3", "layer2.0.conv3x3_2", "layer3.0.block"],
    "convnext": ["stages.0.blocks.0.conv_dw", "stages.3.blocks.0.block"],
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_points_are_named_per_block_in_forward_order(backbone):
    points = insertion_points(BACKBONES[backbone]())
    names = [p.name for p in points]
    assert len(set(names)) == len(names)
    assert all(n in names for n in EXPECTED_NAMES[backbone])
    blocks = list(dict.fromkeys(p.block for p in points))
    assert [p.kind for p in points] == EXPECTED_KINDS[backbone] * len(blocks)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_declared_widths_and_strides_match_the_tensors(backbone):
    model = BACKBONES[backbone]()
    entries = inject(model, lambda p: Recorder(), "*", mode="pre")
    exits = inject(model, lambda p: Recorder(), "*", mode="sequential")
    with torch.no_grad():
        model(images(backbone))
    for key, point in entries.points.items():
        (seen_in,), (seen_out,) = entries[key].shapes, exits[key].shapes
        if point.layout == "nchw":
            assert (seen_in[1], seen_out[1]) == (point.in_dim, point.out_dim), point.name
            assert tuple(math.ceil(s / point.stride) for s in seen_in[-2:]) == tuple(seen_out[-2:]), point.name
        else:
            assert (seen_in[-1], seen_out[-1]) == (point.in_dim, point.out_dim), point.name
            assert seen_in[:-1] == seen_out[:-1] and point.stride == 1, point.name


def test_resnet_strides_are_the_papers():
    strides = {p.name: p.stride for p in insertion_points(BACKBONES["resnet_bottleneck"]())}
    assert strides["layer1.0.conv3x3"] == strides["layer1.0.block"] == 1
    assert strides["layer2.0.conv3x3"] == strides["layer2.0.block"] == strides["layer4.0.block"] == 2
    basic = {p.name: p.stride for p in insertion_points(BACKBONES["resnet_basic"]())}
    assert basic["layer3.0.conv3x3"] == basic["layer3.0.block"] == 2 and basic["layer3.0.conv3x3_2"] == 1


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_parallel_branches_of_the_declared_shape_fit_everywhere(backbone):
    model = BACKBONES[backbone]()
    x = images(backbone)
    with torch.no_grad():
        expected = model(x)
        injected = inject(model, ZeroBranch, "*", mode="parallel")
        assert torch.equal(model(x), expected)
    assert len(injected) == len(insertion_points(model))


def _conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
    torch.manual_seed(7)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def test_bottleneck_conv_parallel_is_conv_adapters_placement():
    """in = relu(bn1(conv1(x))), added after relu(bn2(conv2(in))), before conv3 (Conv-Adapter's conv-parallel)."""
    model = BACKBONES["resnet_bottleneck"]()
    blk = model.layer2[0]
    x = torch.randn(2, blk.conv1.in_channels, 16, 16)
    (point,) = insertion_points(model, "layer2.0.conv3x3")
    adapter = _conv(point.in_dim, point.out_dim, point.stride)
    with torch.no_grad():
        y = blk.act1(blk.bn1(blk.conv1(x)))
        z = blk.act2(blk.bn2(blk.conv2(y))) + adapter(y)
        expected = blk.act3(blk.bn3(blk.conv3(z)) + blk.downsample(x))
        inject(model, lambda p: adapter, point.name, mode="parallel")
        assert torch.allclose(blk(x), expected, atol=1e-6)


def test_block_parallel_and_sequential_wrap_the_whole_block():
    model = BACKBONES["resnet_basic"]()
    blk = model.layer2[0]
    x = torch.randn(2, blk.conv1.in_channels, 16, 16)
    (point,) = insertion_points(model, "layer2.0.block")
    par, seq = _conv(point.in_dim, point.out_dim, point.stride), _conv(point.out_dim, point.out_dim, 1)
    with torch.no_grad():
        plain = blk(x)
        inject(model, lambda p: par, point.name, mode="parallel")
        inject(model, lambda p: seq, point.name, mode="sequential")
        assert torch.allclose(blk(x), seq(plain + par(x)), atol=1e-6)


def test_convnext_dw_parallel_adds_to_the_depthwise_output_before_the_norm():
    model = BACKBONES["convnext"]()
    blk = model.stages[1].blocks[0]
    x = torch.randn(2, blk.conv_dw.in_channels, 8, 8)
    (point,) = insertion_points(model, "stages.1.blocks.0.conv_dw")
    adapter = _conv(point.in_dim, point.out_dim, point.stride)
    with torch.no_grad():
        h = (blk.conv_dw(x) + adapter(x)).permute(0, 2, 3, 1)
        h = blk.mlp(blk.norm(h)).permute(0, 3, 1, 2).mul(blk.gamma.reshape(1, -1, 1, 1))
        expected = h + blk.shortcut(x)
        inject(model, lambda p: adapter, point.name, mode="parallel")
        assert torch.allclose(blk(x), expected, atol=1e-5)


def test_open_clip_attention_points_act_on_the_normed_input_and_the_attention_output():
    model = BACKBONES["open_clip_vit"]()
    blk = model.transformer.resblocks[0]
    x = torch.randn(2, 5, 16)
    torch.manual_seed(3)
    f, g = nn.Linear(16, 16), nn.Linear(16, 16)

    def attn(h: torch.Tensor) -> torch.Tensor:
        return blk.attn(h, h, h, need_weights=False)[0]

    with torch.no_grad():
        h = blk.ln_1(x)
        y = x + blk.ls_1(attn(g(h)) + f(g(h)))
        expected = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
        inject(model, lambda p: g, "transformer.resblocks.0.attn", mode="pre")  # injections at one point compose
        inject(model, lambda p: f, "transformer.resblocks.0.attn", mode="parallel")  # in order: f reads g's output
        assert torch.allclose(blk(x), expected, atol=1e-5)


def test_swin_sequential_attn_and_mlp_are_the_sublayer_outputs():
    model = BACKBONES["swin"]()
    blk = model.layers[0].blocks[0]
    torch.manual_seed(3)
    f, g = nn.Linear(8, 8), nn.Linear(8, 8)
    x = torch.randn(2, 16, 16, 8)
    with torch.no_grad():
        y = x + blk._attn(blk.norm1(x))  # _attn: windows -> attn -> windows back; a row-wise f commutes with it
        y_f = x + F.linear(blk._attn(blk.norm1(x)), f.weight, f.bias)
        assert not torch.allclose(y, y_f)
        y = y_f.reshape(2, -1, 8)
        expected = (y + g(blk.mlp(blk.norm2(y)))).reshape(2, 16, 16, 8)
        inject(model, lambda p: f, "layers.0.blocks.0.attn")
        inject(model, lambda p: g, "layers.0.blocks.0.mlp", mode="post")
        assert torch.allclose(blk(x), expected, atol=1e-5)


def test_remove_restores_the_backbone_and_a_frozen_checkpoint_still_loads():
    model = BACKBONES["resnet_bottleneck"]()
    plain_state = copy.deepcopy(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        injected = inject(model, lambda p: _conv(p.in_dim, p.out_dim, p.stride), "conv3x3", mode="parallel")
        assert not torch.allclose(model(x), expected)
        assert set(model.state_dict()) == set(plain_state)  # hooks: the backbone's keys are unchanged
        model.load_state_dict(plain_state, strict=True)
        injected.remove()
        assert torch.equal(model(x), expected)


def test_deepcopy_maps_the_attached_modules_onto_the_copy():
    holder = nn.Module()
    holder.backbone = BACKBONES["vit"]()
    holder.peft = inject(holder.backbone, lambda p: nn.Linear(p.dim, p.dim), "mlp")
    clone = copy.deepcopy(holder)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = holder.backbone(x)
        for p in clone.peft.parameters():
            p.zero_()
        assert torch.equal(holder.backbone(x), before)  # the original still runs its own modules
        assert not torch.allclose(clone.backbone(x), before)
    clone.peft.remove()  # removes the copy's hooks, not the original's
    with torch.no_grad():
        assert torch.equal(holder.backbone(x), before)


def test_make_may_skip_points_and_keys_are_stable():
    model = BACKBONES["swin"]()
    injected = inject(model, lambda p: nn.Identity() if p.block.startswith("layers.3") else None, "attn")
    assert list(injected) == ["layers_3_blocks_0_attn", "layers_3_blocks_1_attn"]
    assert injected.points["layers_3_blocks_0_attn"].dim == 64


def test_clear_errors():
    model = BACKBONES["convnext"]()
    with pytest.raises(ValueError, match=r"select nothing.*kinds are \['block', 'conv_dw'\]"):
        insertion_points(model, ["conv_dw", "mlp"])
    with pytest.raises(ValueError, match="mode must be one of"):
        inject(model, lambda p: nn.Identity(), "block", mode="after")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no block common/peft/inject.py knows"):
        insertion_points(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="two points map to the key"):
        inject(model, lambda p: nn.Identity(), "*", key=lambda p: "same")


@pytest.mark.parametrize("mode", ["sequential", "parallel", "pre"])
def test_open_clip_points_fire_when_clip_vit_runs_the_blocks(mode):
    """common/models/clip_vit.py runs the attention's weights without calling ``attn``: the points still act."""
    from common.models import clip_vit

    model = BACKBONES["open_clip_vit"]()
    torch.manual_seed(4)
    inject(model, lambda p: nn.Linear(p.in_dim, p.out_dim), ["attn", "mlp"], mode=mode)
    x = images("open_clip_vit")
    with torch.no_grad():
        plain = BACKBONES["open_clip_vit"]()(x)
        assert not torch.allclose(model(x), plain, atol=1e-4)
        assert torch.allclose(clip_vit.forward(model, x), model(x), atol=1e-5)


def test_a_forward_that_skips_a_parallel_points_exit_is_an_error():
    model = BACKBONES["resnet_bottleneck"]()
    inject(model, lambda p: _conv(p.in_dim, p.out_dim, p.stride), "layer1.0.conv3x3", mode="parallel")
    conv2 = model.layer1[0].conv2
    x = torch.randn(1, conv2.in_channels, 8, 8)
    conv2(x)  # entry read, exit (aa) never runs
    with pytest.raises(RuntimeError, match="silently dropped"):
        conv2(x)
    model(torch.randn(1, 3, 32, 32))  # the error reset the point: a whole forward runs again
