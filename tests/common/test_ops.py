"""``common.ops.channel_norm``: the vector norm along a channel axis, as ``Tensor.norm(...).clamp_min(eps)`` gives
it, including a zero vector's value and gradient."""

from __future__ import annotations

import torch

from common.ops import channel_norm


def test_channel_norm_equals_torch_norm_clamped_along_any_axis() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    x[0, :, 1, 2] = 0.0  # a zero normal
    for dim in (0, 1, 3):
        for keepdim in (False, True):
            ref = x.norm(dim=dim, keepdim=keepdim).clamp_min(1e-12)
            out = channel_norm(x, dim=dim, keepdim=keepdim)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-12, atol=0.0)
    assert float(channel_norm(x, dim=1)[0, 1, 2]) == 1e-12


def test_channel_norm_gradient_matches_and_stays_finite_at_zero() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)
    base[1, :, 0, 0] = 0.0
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    (a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)).sum().backward()
    (b / channel_norm(b, dim=1, keepdim=True)).sum().backward()
    assert torch.isfinite(b.grad).all()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12)
