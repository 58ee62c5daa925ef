"""common.optim: the one parameter-group rule and the one warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common.optim import adamw, param_groups, warmup_cosine


def _lrs(total: int, warm: int, **kw) -> list[float]:
    p = nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine(opt, total, warm, **kw)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])
    return out


def test_default_warmup_then_cosine_to_zero() -> None:
    total, warm = 20, 4
    f = _lrs(total, warm)
    ref = [(k + 1) / (warm + 1) if k < warm else 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))
           for k in range(total + 1)]
    assert f == pytest.approx(ref, abs=1e-12)
    assert f[warm] == pytest.approx(1.0) and f[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1:])), "monotone decay after warm-up"


def test_start_factor_and_ramp_give_the_k_plus_1_over_w_warmup() -> None:
    total, warm = 12, 3
    f = _lrs(total, warm, start_factor=1 / warm, ramp_steps=warm - 1)
    assert f[:warm] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert f[warm] == pytest.approx(1.0)


def test_no_warmup_and_min_lr_ratio() -> None:
    f = _lrs(10, 0, min_lr_ratio=0.01)
    assert f[0] == pytest.approx(1.0) and f[5] == pytest.approx(0.01 + 0.99 * 0.5) and f[10] == pytest.approx(0.01)


def test_min_lr_ratio_refuses_groups_with_different_lrs() -> None:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        warmup_cosine(opt, 10, 2, min_lr_ratio=0.1)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        self.prompt_tokens = nn.Parameter(torch.zeros(3, 4))
        self.backbone = nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def test_param_groups_default_rule_and_lr_multipliers() -> None:
    net = _Net()
    groups = param_groups(net, 0.05, 1e-3, lr_scale={r"^backbone\.": 0.1})
    by_name = {n: g for g in groups for n in g["names"]}
    assert "frozen.weight" not in by_name and "frozen.bias" not in by_name
    for n in ("fc.bias", "norm.weight", "norm.bias", "relative_position_bias_table", "prompt_tokens",
              "backbone.bias"):
        assert by_name[n]["weight_decay"] == 0.0, n
    assert by_name["fc.weight"]["weight_decay"] == 0.05
    assert by_name["backbone.weight"]["lr"] == pytest.approx(1e-4) and by_name["fc.weight"]["lr"] == 1e-3
    # every trainable tensor exactly once
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters() if p.requires_grad) and len(set(ids)) == len(ids)


def test_param_groups_custom_rule_and_callable_multiplier() -> None:
    net = _Net()
    groups = param_groups(net, 0.01, 1.0, no_decay=(r"bias$",), no_decay_1d=False,
                          lr_scale=lambda name, p: 2.0 if p.ndim == 1 else 1.0)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["norm.weight"]["weight_decay"] == 0.01 and by_name["norm.weight"]["lr"] == 2.0
    assert by_name["relative_position_bias_table"]["weight_decay"] == 0.01
    assert by_name["fc.bias"]["weight_decay"] == 0.0


def test_adamw_refuses_a_model_with_nothing_to_train() -> None:
    with pytest.raises(ValueError, match="no trainable parameters"):
        adamw(nn.Linear(2, 2).requires_grad_(False), 1e-3, 0.0)


def test_adamw_is_fused_on_cpu_and_steps_like_the_reference_loop() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt = adamw(a, 1e-2, 0.1)
    assert opt.defaults["fused"] is True
    ref = torch.optim.AdamW(param_groups(b, 0.1, 1e-2), lr=1e-2, foreach=False)
    x = torch.randn(5, 4)
    for _ in range(3):
        for model, o in ((a, opt), (b, ref)):
            o.zero_grad()
            model(x).square().sum().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
