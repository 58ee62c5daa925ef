"""Small tensor operations shared by the packages."""

from __future__ import annotations

import torch


def channel_norm(x: torch.Tensor, dim: int = 1, keepdim: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """The L2 norm of ``x`` along ``dim``, at least ``eps``: ``x.norm(dim=dim).clamp_min(eps)`` as the square root of
    the clamped sum of squares.

    Why not ``Tensor.norm``: over a short channel axis of an image-shaped tensor (normals: 3 channels) torch's
    vector-norm kernel is slow on CPU: (4, 3, 96, 96) along dim 1 took 5.65 ms against 0.08 ms for this (1 thread,
    2026-12-07), about 10 ms of a 185 ms tiny Polyhistor training step with its backward. Values agree to float
    rounding (4.8e-7 on unit-scale inputs). The clamp sits under the square root (at ``eps ** 2``), so a zero vector
    gets norm ``eps`` and a zero gradient, as ``norm().clamp_min(eps)`` gives, never a NaN.
    """
    return (x * x).sum(dim=dim, keepdim=keepdim).clamp_min(eps * eps).sqrt()
