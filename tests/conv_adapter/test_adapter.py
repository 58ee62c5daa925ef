"""The Conv-Adapter kernel alone: grouped k x k down-projection (gamma channels per group), activation, 1x1
up-projection, per-channel alpha = 1, stride, channels-last layout, the official initialisations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conv_adapter.adapter import ConvAdapter, Residual, adapter_parameter_count, adapter_width


def test_shapes_groups_stride_and_count():
    a = ConvAdapter(64, 256, gamma=8, kernel_size=3, stride=2, activation="relu")
    assert a.width == 8 and a.conv1.groups == 8
    assert tuple(a.conv1.weight.shape) == (8, 8, 3, 3)  # each of the 8 groups reads gamma = 8 channels, writes 1
    assert tuple(a.conv2.weight.shape) == (256, 8, 1, 1)
    assert tuple(a.alpha.shape) == (1, 256, 1, 1) and torch.all(a.alpha == 1)
    assert isinstance(a.act, nn.ReLU) and a.conv1.bias is not None and a.conv2.bias is not None
    assert a(torch.randn(2, 64, 15, 15)).shape == (2, 256, 8, 8)  # stride 2, padding k // 2 (ceil)
    n = sum(p.numel() for p in a.parameters())
    assert n == adapter_parameter_count(64, 256, 8, 3) == 64 * 9 + 8 + 8 * 256 + 256 + 256


def test_alpha_multiplies_the_output_per_channel():
    torch.manual_seed(0)
    a = ConvAdapter(16, 16, gamma=4, kernel_size=7, activation="gelu")
    x = torch.randn(1, 16, 9, 9)
    base = a(x)
    with torch.no_grad():
        a.alpha[0, 3] = 0.0
        a.alpha[0, 5] = 2.0
    out = a(x)
    assert torch.all(out[:, 3] == 0) and torch.allclose(out[:, 5], 2 * base[:, 5])
    assert torch.allclose(out[:, 6], base[:, 6])


def test_nhwc_layout_is_the_permuted_nchw_adapter():
    torch.manual_seed(0)
    a = ConvAdapter(16, 16, gamma=4, kernel_size=7, activation="gelu", layout="nhwc")
    x = torch.randn(2, 8, 8, 16)
    ref = a._nchw(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.equal(a(x), ref)


@pytest.mark.parametrize("init", ["kaiming_fan_out", "trunc_normal", "zero_bias"])
def test_official_inits_zero_the_biases(init):
    a = ConvAdapter(32, 32, gamma=4, init=init)
    assert torch.all(a.conv1.bias == 0) and torch.all(a.conv2.bias == 0)
    if init == "trunc_normal":
        assert 0.01 < a.conv2.weight.std().item() < 0.03  # N(0, 0.02), truncated at +-2 (absolute, as timm's)
    if init == "kaiming_fan_out":  # std sqrt(2 / fan_out), fan_out of conv2 = 32 x 1 x 1
        assert 0.1 < a.conv2.weight.std().item() < 0.4


def test_not_identity_at_init_unless_alpha_starts_at_zero():
    x = torch.randn(2, 16, 8, 8)
    assert ConvAdapter(16, 16, gamma=4)(x).abs().sum() > 0  # the official adapter starts non-zero
    assert torch.equal(Residual(ConvAdapter(16, 16, gamma=4, alpha_init=0.0))(x), x)


def test_clear_errors():
    with pytest.raises(ValueError, match="do not split"):
        adapter_width(20, 3)  # width 6 does not divide 20
    with pytest.raises(ValueError, match="gamma must be"):
        adapter_width(16, 0)
    with pytest.raises(ValueError, match="activation"):
        ConvAdapter(16, 16, activation="swish")
