"""Paper-scale counts (meta device) against closed forms: ResNet-50 Convolution Parallel has 16 adapters on the 3x3
convs (widths 64 x3, 128 x4, 256 x6, 512 x3), Swin-B 24 on the blocks (128 x2, 256 x2, 512 x18, 1024 x2)."""

from __future__ import annotations

import pytest

from benchmarks.param_budgets.conv_adapter import count


def per_adapter(c: int, k: int, gamma: int) -> int:
    return c * k * k + c // gamma + (c // gamma) * c + 2 * c


@pytest.mark.parametrize("gamma", [1, 2, 8])
def test_resnet50_conv_parallel_closed_form(gamma):
    widths = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert count("resnet50", "conv_parallel", gamma)["adapters"] == sum(per_adapter(c, 3, gamma) for c in widths)
    assert count("resnet50", "conv_parallel", gamma)["adapters"] == 41_536 + 1_261_248 // gamma


def test_swin_b_conv_parallel_closed_form():
    widths = [128] * 2 + [256] * 2 + [512] * 18 + [1024] * 2
    assert count("swin_base_patch4_window7_224", "conv_parallel")["adapters"] == sum(
        per_adapter(c, 7, 8) for c in widths)
