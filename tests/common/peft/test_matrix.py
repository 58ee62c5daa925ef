"""The shared PEFT test matrix: every generic method x every backbone it applies to (tiny real timm / open_clip
models, CPU).

For each pair: exactly the declared parameters train (and their count is the method's formula); adapters start as
the identity where the method says so; an optimiser step moves the PEFT parameters and no frozen weight; the state
dict round-trips into a freshly built model.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

from common.peft.accounting import freeze
from common.peft.adapter import BottleneckAdapter
from common.peft.bitfit import add_task_deltas, default_bias_predicate
from common.peft.compacter import CompacterAdapter, phm_rules
from common.peft.context import TaskContext
from common.peft.inject import ChannelsLast, InsertionPoint, inject
from common.peft.lora import LoRADelta, qkv_slices
from common.peft.swin import swin_stage_features
from common.peft.vpt import SwinPrompts

from .tiny_backbones import BACKBONES, TRANSFORMERS, images

PHM_N, LORA_RANK, VPT_TOKENS = 4, 2, 3


def _adapter_points(backbone: str) -> list[str]:
    """Sequential adapter placements: after attention and MLP (Houlsby); after the 3x3 / depthwise conv and the
    block on ConvNets."""
    if backbone in TRANSFORMERS:
        return ["attn", "mlp"]
    return ["conv_dw", "block"] if backbone == "convnext" else ["conv3x3", "block"]


def _on_layout(point: InsertionPoint, module: nn.Module) -> nn.Module:
    return ChannelsLast(module) if point.layout == "nchw" else module


def _bottleneck(dim: int) -> int:
    return max(1, dim // 4)


def _phm_bottleneck(dim: int) -> int:
    b = _bottleneck(dim)
    return max(PHM_N, b - b % PHM_N)


class Tuned(nn.Module):
    """A frozen backbone + one method's PEFT modules in ``peft``; ``expected`` is the method's trainable count."""

    def __init__(self, backbone_name: str, method: str, seed: int = 0) -> None:
        super().__init__()
        self.backbone = freeze(BACKBONES[backbone_name](seed))
        self.ctx = TaskContext(["t"])
        self.peft = nn.ModuleDict()
        self.declared: list[str] = []  # trainable names the method declares, besides everything under peft.
        self.expected = SETUPS[method](self, backbone_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.ctx.use("t"):
            if "prompts" in self.peft:
                return self.peft["prompts"].stage_features(self.backbone, x)[-1]
            return self.backbone(x)


def _setup_adapter(m: Tuned, backbone: str) -> int:
    def make(p: InsertionPoint) -> nn.Module:
        return _on_layout(p, BottleneckAdapter(p.dim, _bottleneck(p.dim)))

    m.peft["adapters"] = inject(m.backbone, make, _adapter_points(backbone))
    return sum(2 * p.dim * _bottleneck(p.dim) + p.dim + _bottleneck(p.dim) for p in m.peft["adapters"].points.values())


def _setup_compacter(m: Tuned, backbone: str) -> int:
    m.peft["rules"] = nn.ParameterDict({"shared": phm_rules(PHM_N)})

    def make(p: InsertionPoint) -> nn.Module:
        return _on_layout(p, CompacterAdapter(p.dim, _phm_bottleneck(p.dim), m.peft["rules"]["shared"]))

    m.peft["compacter"] = inject(m.backbone, make, _adapter_points(backbone))
    per_point = [(p.dim, _phm_bottleneck(p.dim)) for p in m.peft["compacter"].points.values()]
    return PHM_N ** 3 + sum((d + b) + b + (b + d) + d for d, b in per_point)  # rank 1: r(in + out) + out per PHM


def _setup_lora(m: Tuned, backbone: str) -> int:
    def make(p: InsertionPoint) -> nn.Module:
        return LoRADelta(p.in_dim, p.out_dim, LORA_RANK, out_slices=qkv_slices(p.in_dim, ["q", "v"]))

    m.peft["lora"] = inject(m.backbone, make, "qkv", mode="parallel")
    return sum(2 * LORA_RANK * 2 * p.in_dim for p in m.peft["lora"].points.values())


def _setup_bitfit(m: Tuned, backbone: str) -> int:
    names = add_task_deltas(m.backbone, m.ctx, default_bias_predicate(True))
    m.declared = [f"backbone.{n.rsplit('.', 1)[0]}.parametrizations.{n.rsplit('.', 1)[1]}.0.deltas.t" if "." in n
                  else f"backbone.parametrizations.{n}.0.deltas.t" for n in names]
    state = dict(m.backbone.named_parameters())
    return sum(state[d.removeprefix("backbone.").replace(".0.deltas.t", ".original")].numel() for d in m.declared)


def _setup_vpt(m: Tuned, backbone: str) -> int:
    m.peft["prompts"] = SwinPrompts(m.backbone, VPT_TOKENS, m.ctx, deep=True)
    return VPT_TOKENS * sum(blk.norm1.normalized_shape[0] for stage in m.backbone.layers for blk in stage.blocks)


SETUPS: dict[str, Callable[[Tuned, str], int]] = {
    "adapter": _setup_adapter, "compacter": _setup_compacter, "lora": _setup_lora, "bitfit": _setup_bitfit,
    "vpt": _setup_vpt}
#: method -> backbones it applies to (LoRA: timm blocks with a fused qkv Linear; VPT: its Swin variant)
APPLIES = {"adapter": list(BACKBONES), "compacter": list(BACKBONES), "bitfit": list(BACKBONES),
           "lora": ["swin", "vit"], "vpt": ["swin"]}
IDENTITY_AT_INIT = {"adapter", "compacter", "lora", "bitfit"}
CASES = [(m, b) for m, backbones in APPLIES.items() for b in backbones]
IDS = [f"{m}-{b}" for m, b in CASES]


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("method", "backbone"), CASES, ids=IDS)
def test_exactly_the_declared_parameters_train(method, backbone):
    model = Tuned(backbone, method)
    trainable = _trainable(model)
    declared = {n for n, _ in model.named_parameters() if n.startswith("peft.")} | set(model.declared)
    assert declared and set(trainable) == declared
    assert sum(p.numel() for p in trainable.values()) == model.expected
    own = [n for n, _ in model.backbone.named_parameters() if ".parametrizations." not in n]
    assert own and not any(n in trainable for n in (f"backbone.{o}" for o in own))


@pytest.mark.parametrize(("method", "backbone"), [c for c in CASES if c[0] in IDENTITY_AT_INIT],
                         ids=[i for c, i in zip(CASES, IDS) if c[0] in IDENTITY_AT_INIT])
def test_starts_as_the_frozen_backbone(method, backbone):
    reference = BACKBONES[backbone](3)
    model = Tuned(backbone, method, seed=3).eval()
    x = images(backbone)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)
        for p in _trainable(model).values():  # and the modules do act once they move
            p.add_(torch.randn_like(p) * 0.5)
        assert not torch.allclose(model(x), reference(x), atol=1e-4)


def test_vpt_changes_the_features_from_the_start():
    reference = BACKBONES["swin"](3)
    model = Tuned("swin", "vpt", seed=3).eval()
    x = images("swin")
    with torch.no_grad():
        assert not torch.allclose(model(x), swin_stage_features(reference, x)[-1], atol=1e-4)


@pytest.mark.parametrize(("method", "backbone"), CASES, ids=IDS)
def test_optimiser_steps_move_the_method_and_nothing_frozen(method, backbone):
    model = Tuned(backbone, method).train()
    torch.manual_seed(0)
    with torch.no_grad():  # away from the zero init, where the down-projections / LoRA A get no gradient yet
        for p in _trainable(model).values():
            p.add_(torch.randn_like(p) * 0.3)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in _trainable(model).items()}
    opt = torch.optim.AdamW(list(_trainable(model).values()), lr=1e-2, weight_decay=0.0)
    model(images(backbone)).square().mean().backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
    still = [n for n, p in _trainable(model).items() if torch.equal(p, before[n])]
    assert not still, still[:5]


@pytest.mark.parametrize(("method", "backbone"), CASES, ids=IDS)
def test_state_dict_round_trip(method, backbone):
    model = Tuned(backbone, method, seed=0).eval()
    with torch.no_grad():
        for p in _trainable(model).values():
            p.add_(torch.randn_like(p) * 0.1)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = Tuned(backbone, method, seed=1).eval()
    x = images(backbone)
    with torch.no_grad():
        expected = model(x)
        assert not torch.allclose(fresh(x), expected, atol=1e-4)
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        assert torch.equal(fresh(x), expected)
    assert copy.deepcopy(fresh).state_dict().keys() == model.state_dict().keys()
