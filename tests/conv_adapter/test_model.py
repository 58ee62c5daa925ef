"""Every Conv-Adapter variant x backbone family on tiny real timm models: where the adapters sit (kinds, shapes,
strides), exactly adapters + declared norms + head train, frozen weights unchanged after an optimiser step, the
parameter count by formula; the baselines' trainable sets; BasicBlock; the start at init."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from timm.models.convnext import ConvNeXtBlock
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.resnetv2 import PreActBottleneck
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from conv_adapter.adapter import ConvAdapter, Residual
from conv_adapter.model import VARIANTS, ConvAdapterNet, build

from .conftest import GAMMA, TINY, images

BLOCKS = (Bottleneck, BasicBlock, PreActBottleneck, ConvNeXtBlock, SwinTransformerBlock)
CONV_KIND = {"resnet_bottleneck": "conv3x3", "resnet_basic": "conv3x3", "bit": "conv3x3", "convnext": "conv_dw",
             "swin": "attn_grid"}
KERNEL = {"resnet_bottleneck": 3, "resnet_basic": 3, "bit": 3, "convnext": 7, "swin": 7}
CASES = [(b, v) for b in TINY for v in VARIANTS]


def net(backbone: str, method: str, seed: int = 0, **kw) -> ConvAdapterNet:
    torch.manual_seed(seed + 1)
    return ConvAdapterNet(TINY[backbone](seed), num_classes=5, method=method, gamma=GAMMA, **kw)


def expected_norm_names(backbone: str, model: ConvAdapterNet, top_only: bool = False) -> set[str]:
    """The norms the official code trains, found by module type (independently of the model's name patterns)."""
    bb = model.backbone
    if backbone.startswith("resnet"):
        return {"extra_norm.weight", "extra_norm.bias"}
    if backbone == "bit":
        mods = {"norm": bb.norm}
    elif backbone == "convnext":
        mods = {"head.norm": bb.head.norm}
        if not top_only:
            mods.update({n + ".norm": m.norm for n, m in bb.named_modules() if isinstance(m, ConvNeXtBlock)})
    else:
        mods = {"norm": bb.norm} if top_only else {n: m for n, m in bb.named_modules() if isinstance(m, nn.LayerNorm)}
    return {f"backbone.{n}.{p}" for n, m in mods.items() for p, _ in m.named_parameters()}


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def formula(cin: int, cout: int, k: int) -> int:
    w = cin // GAMMA
    return cin * k * k + w + w * cout + 2 * cout


@pytest.mark.parametrize(("backbone", "variant"), CASES)
def test_adapters_sit_where_the_variant_says(backbone, variant):
    model = net(backbone, variant)
    adapters = model.peft["adapters"]
    blocks = [n for n, m in model.backbone.named_modules() if isinstance(m, BLOCKS)]
    kind = CONV_KIND[backbone] if variant.startswith("conv_") else "block"
    assert [p.kind for p in adapters.points.values()] == [kind] * len(blocks)
    assert [p.block for p in adapters.points.values()] == blocks
    assert adapters.mode == ("parallel" if variant.endswith("parallel") else "sequential")
    seen: dict[str, tuple[torch.Size, torch.Size]] = {}
    for key, mod in adapters.items():
        core = mod.module if isinstance(mod, Residual) else mod
        assert isinstance(core, ConvAdapter) and core.conv1.kernel_size == (KERNEL[backbone],) * 2
        assert isinstance(core.act, nn.ReLU if backbone in ("resnet_bottleneck", "resnet_basic", "bit") else nn.GELU)
        core.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, (i[0].shape, o.shape)))
    with torch.no_grad():
        model(images())
    assert set(seen) == set(adapters)
    for key, point in adapters.points.items():
        (shape_in, shape_out) = seen[key]
        parallel = variant.endswith("parallel")
        stride = point.stride if parallel else 1
        core = adapters[key].module if not parallel else adapters[key]
        assert core.conv1.stride == (stride, stride)
        if point.layout == "nchw":
            c_in, c_out, hw_in, hw_out = shape_in[1], shape_out[1], shape_in[-2:], shape_out[-2:]
        else:  # Swin: the (B, H, W, C) grid, never windows
            c_in, c_out, hw_in, hw_out = shape_in[-1], shape_out[-1], shape_in[1:3], shape_out[1:3]
            assert len(shape_in) == 4 and shape_in[0] == 2
        assert c_in == (point.in_dim if parallel else point.out_dim) and c_out == point.out_dim
        assert tuple(hw_out) == tuple(-(-s // stride) for s in hw_in)
    if backbone.startswith("resnet") or backbone == "bit":
        first_of_stage2 = [k for k, p in adapters.points.items() if p.block in ("layer2.0", "stages.1.blocks.0")]
        assert [adapters.points[k].stride for k in first_of_stage2] == [2]


@pytest.mark.parametrize(("backbone", "variant"), CASES)
def test_exactly_adapters_norms_and_head_train_and_count_by_formula(backbone, variant):
    model = net(backbone, variant)
    names = trainable(model)
    peft = {n for n in names if n.startswith("peft.")}
    assert peft == {f"peft.{n}" for n, _ in model.peft.named_parameters()}
    assert names - peft == expected_norm_names(backbone, model) | {"head.1.weight", "head.1.bias"}
    counted = 0
    for point in model.peft["adapters"].points.values():
        parallel = variant.endswith("parallel")
        counted += formula(point.in_dim if parallel else point.out_dim, point.out_dim, KERNEL[backbone])
    if backbone == "convnext" and variant == "conv_parallel":  # the official 2x2 stride-2 downsampling adapters
        convs = [s.downsample[1] for s in model.backbone.stages if isinstance(s.downsample, nn.Sequential)]
        assert len(convs) == 3 == len(model.peft["downsample"])
        counted += sum(formula(c.in_channels, c.out_channels, 2) for c in convs)
    assert model.parameter_counts()["adapters"] == counted


@pytest.mark.parametrize(("backbone", "variant"), CASES)
def test_a_step_moves_adapters_and_never_a_frozen_weight(backbone, variant):
    model = net(backbone, variant).train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    tuned = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = F.cross_entropy(model(images(4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    moved = {n for n, v in tuned.items() if not torch.equal(params[n], v)}
    alphas = {n for n in tuned if n.endswith("alpha")}
    assert alphas and alphas <= moved
    assert {"head.1.weight", "head.1.bias"} <= moved


@pytest.mark.parametrize("backbone", list(TINY))
def test_baselines_train_what_they_declare(backbone):
    head = {"head.1.weight", "head.1.bias"}
    probe = net(backbone, "linear_probe")
    assert trainable(probe) == head | expected_norm_names(backbone, probe, top_only=True)
    full = net(backbone, "full_finetune")
    assert trainable(full) == {n for n, _ in full.named_parameters()}
    bitfit = net(backbone, "bitfit")
    biases = {f"backbone.{n}" for n, _ in bitfit.backbone.named_parameters() if n.endswith("bias")}
    assert biases and trainable(bitfit) == head | biases | expected_norm_names(backbone, bitfit, top_only=True)
    if backbone == "swin":
        vpt = net(backbone, "vpt", vpt_tokens=3)
        prompts = {n for n in trainable(vpt) if n.startswith("peft.prompts")}
        assert prompts and trainable(vpt) == head | prompts | expected_norm_names(backbone, vpt, top_only=True)
        assert vpt(images()).shape == (2, 5)
    else:
        with pytest.raises(ValueError, match="Swin backbones only"):
            net(backbone, "vpt")


def test_basic_block_works_for_every_variant():
    """The official BasicBlock calls its adapter on a variable it has not defined yet; here all four variants run
    on a timm BasicBlock ResNet, and the parallel branch reads the block input at the first conv's stride."""
    for variant in VARIANTS:
        model = net("resnet_basic", variant)
        out = model(images())
        assert out.shape == (2, 5) and torch.isfinite(out).all()
    model = net("resnet_basic", "conv_parallel")
    p = model.peft["adapters"].points["layer3_0_conv3x3"]
    blk = model.backbone.layer3[0]
    assert (p.in_dim, p.out_dim, p.stride) == (blk.conv1.in_channels, blk.conv1.out_channels, 2)


@pytest.mark.parametrize(("backbone", "variant"), CASES)
def test_start_at_init(backbone, variant):
    """The official adapter is not the zero map at init (alpha = 1, backbone-style conv init): the network's output
    differs from its frozen backbone's. With alpha_init=0 the injected network is the frozen backbone exactly."""
    x = images()
    bare = net(backbone, "linear_probe").eval()
    with torch.no_grad():
        ref = bare(x)
        zero = net(backbone, variant, alpha_init=0.0).eval()
        assert torch.allclose(zero(x), ref, atol=1e-6)
        official = net(backbone, variant).eval()
        assert not torch.allclose(official(x), ref, atol=1e-4)


def test_deepcopy_keeps_the_adapters_working():
    model = net("convnext", "conv_parallel").eval()
    twin = copy.deepcopy(model)
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
        twin.peft["downsample"]["stages_1_downsample"].alpha.zero_()
        assert not torch.equal(model(x), twin(x))


def test_resnet50_paper_scale_points_on_meta():
    model = build("resnet50", "conv_parallel", num_classes=100, device="meta")
    pts = model.peft["adapters"].points
    assert len(pts) == 16
    assert [p.stride for p in pts.values()] == [1, 1, 1, 2, 1, 1, 1, 2] + [1] * 5 + [2, 1, 1]
    assert [p.in_dim for p in pts.values()] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
