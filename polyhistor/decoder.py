"""SegFormer's All-MLP decoder (Xie et al. 2021), one per task, as in the Polyhistor benchmark.

Each of the 4 encoder stages is projected to ``embed_dim`` channels (a linear layer per pixel), upsampled to the
stride-4 grid, the four maps are concatenated (deepest first), fused by a 1x1 convolution + BatchNorm + ReLU, and a
1x1 convolution predicts the task's channels. The result is at 1/4 of the input resolution; the model upsamples.

Size per decoder: sum_i (C_i + 1) E + 4 E^2 + 2 E + (E + 1) K. With Swin-T (96/192/384/768) and E = 256 the four
PASCAL-Context decoders (K = 21, 7, 1, 3) hold 2,537,504 parameters -- the figure that makes the paper's full
fine-tuning rows (30.06M = 27.52M Swin-T + decoders; 112.62M = 4 x 27.52M + decoders) come out exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.ops import resize_bilinear


class SegFormerHead(nn.Module):
    """All-MLP decoder: 4 stage maps (NCHW) -> ``num_outputs`` maps at the first stage's resolution."""

    def __init__(self, in_dims: Sequence[int], num_outputs: int, embed_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if len(in_dims) < 1:
            raise ValueError("SegFormerHead needs at least one input stage")
        self.in_dims = list(in_dims)
        self.embed_dim = embed_dim
        self.proj = nn.ModuleList([nn.Conv2d(c, embed_dim, kernel_size=1) for c in self.in_dims])
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(self.in_dims), embed_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.pred = nn.Conv2d(embed_dim, num_outputs, kernel_size=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.proj):
            raise ValueError(f"SegFormerHead expects {len(self.proj)} stage maps, got {len(feats)}")
        size = feats[0].shape[-2:]
        maps = []
        for f, proj in zip(reversed(feats), reversed(self.proj)):
            m = proj(f)
            if m.shape[-2:] != size:
                m = resize_bilinear(m, size)
            maps.append(m)
        return self.pred(self.dropout(self.fuse(torch.cat(maps, dim=1))))


def segformer_head_parameters(in_dims: Sequence[int], num_outputs: int, embed_dim: int) -> int:
    """Closed-form size of :class:`SegFormerHead` (for budget arithmetic)."""
    e = embed_dim
    return sum((c + 1) * e for c in in_dims) + len(in_dims) * e * e + 2 * e + (e + 1) * num_outputs
