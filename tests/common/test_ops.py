"""``common.ops``: ``channel_norm``, the vector norm along a channel axis, as ``Tensor.norm(...).clamp_min(eps)``
gives it, including a zero vector's value and gradient; ``resize_bilinear``, ``F.interpolate(mode="bilinear")`` as
matrix products, in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.ops import channel_norm, resize_bilinear


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


@pytest.mark.parametrize(("shape", "size"), [((2, 5, 24, 24), (96, 96)), ((1, 3, 3, 3), (24, 24)),
                                             ((2, 4, 7, 9), (20, 33)), ((2, 3, 40, 50), (13, 17)),
                                             ((3, 6, 6), (6, 11)), ((1, 1, 1, 1), (5, 4))])
def test_resize_bilinear_equals_interpolate_with_gradient(shape, size) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    batched = a if a.ndim == 4 else a[None]  # F.interpolate wants (N, C, H, W); resize_bilinear any (..., H, W)
    ref = F.interpolate(batched, size=size, mode="bilinear", align_corners=False)
    out = resize_bilinear(b, size)
    assert out.shape == (*shape[:-2], *size)
    torch.testing.assert_close(out, ref.reshape(out.shape), rtol=1e-12, atol=1e-12)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (ref.reshape(out.shape) * weights).sum().backward()
    (out * weights).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)


def test_resize_bilinear_keeps_dtype_and_returns_same_size_input() -> None:
    x = torch.randn(1, 2, 5, 5)
    assert resize_bilinear(x, (5, 5)) is x
    y = resize_bilinear(x.to(torch.bfloat16), (10, 10))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.interpolate(x, size=(10, 10), mode="bilinear", align_corners=False),
                               rtol=2e-2, atol=2e-2)
