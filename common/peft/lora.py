"""LoRA (Hu et al. 2021): a low-rank update ``(alpha / r) B A x`` added to a frozen linear layer's output.

``B`` starts at zero, so the frozen layer is unchanged at init. Fused projections (timm's ``qkv``: one Linear
giving q, k and v) take ``out_slices``: one (A, B) pair per slice, e.g. q and v only as in the LoRA paper, the
other slices receive no update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LoRADelta(nn.Module):
    """The low-rank update of one linear layer: ``x -> (alpha/r) [B_i A_i x]`` placed in its output slices."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float | None = None,
        out_slices: Sequence[tuple[int, int]] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.slices = [tuple(s) for s in (out_slices or [(0, out_features)])]
        for s, e in self.slices:
            if not 0 <= s < e <= out_features:
                raise ValueError(f"LoRA out slice ({s}, {e}) outside [0, {out_features})")
        self.lora_A = nn.ParameterList(
            [nn.Parameter(torch.empty(rank, in_features)) for _ in self.slices])
        self.lora_B = nn.ParameterList(
            [nn.Parameter(torch.zeros(e - s, rank)) for s, e in self.slices])
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        parts: list[torch.Tensor] = []
        cursor = 0
        for (s, e), a, b in zip(self.slices, self.lora_A, self.lora_B):
            if s > cursor:
                parts.append(x.new_zeros(*x.shape[:-1], s - cursor))
            parts.append((x @ a.t() @ b.t()) * self.scaling)
            cursor = e
        if cursor < self.out_features:
            parts.append(x.new_zeros(*x.shape[:-1], self.out_features - cursor))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, slices={self.slices}"


def qkv_slices(dim: int, targets: Sequence[str]) -> list[tuple[int, int]]:
    """Output slices of a fused ``qkv`` Linear (q, k, v stacked, each ``dim`` wide) for the named targets."""
    order = {"q": 0, "k": 1, "v": 2}
    bad = [t for t in targets if t not in order]
    if bad:
        raise ValueError(f"LoRA qkv targets must be among q, k, v; got {bad}")
    return [(order[t] * dim, (order[t] + 1) * dim) for t in sorted(set(targets), key=order.get)]
