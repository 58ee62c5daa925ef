"""Compacter (Karimi Mahabadi et al. 2021): adapters whose projections are low-rank PHM layers.

A PHM layer builds its (in x out) weight as a sum of Kronecker products ``W = sum_i A_i (x) B_i`` with
``A_i`` (n x n) "rules" shared by all the adapter layers of a model and ``B_i`` ((in/n) x (out/n)) layer-specific
and factorised rank-r: ``B_i = s_i t_i^T``. Defaults follow the official Compacter configs: n = 4, rank 1,
shared rules. A layer then holds r(in + out) weights + out biases instead of in*out + out.

Compacter inserts an adapter after both the attention and the feed-forward sub-layers; Compacter++ only after the
feed-forward one. The up projection's ``t`` factors start at zero, so a new adapter is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.peft.adapter import activation_fn, task_bottleneck_branches


def phm_rules(n: int, std: float = 0.01) -> nn.Parameter:
    """A fresh (n, n, n) tensor of PHM rules (the shared ``A_i``)."""
    return nn.Parameter(torch.randn(n, n, n) * std)


def phm_weight(rules: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``sum_i A_i (x) (left_i @ right_i)`` as a (in, out) matrix; left: (n, in/n, r), right: (n, r, out/n).
    Leading dimensions (e.g. tasks) on all three give one matrix each: (..., in, out)."""
    n = rules.shape[-1]
    b = left @ right  # (..., n, in/n, out/n)
    w = torch.einsum("...iac,...ibd->...abcd", rules, b)  # (..., n, in/n, n, out/n)
    return w.reshape(*b.shape[:-3], n * b.shape[-2], n * b.shape[-1])


class PHMLinear(nn.Module):
    """Parameterised-hypercomplex linear layer with factorised ``B_i`` and externally shared rules ``A_i``."""

    def __init__(
        self, in_features: int, out_features: int, rules: nn.Parameter, rank: int = 1, zero_init: bool = False
    ) -> None:
        super().__init__()
        n = rules.shape[0]
        if in_features % n or out_features % n:
            raise ValueError(
                f"PHMLinear: in ({in_features}) and out ({out_features}) features must be divisible by n={n}; "
                "pick a bottleneck that is a multiple of the PHM dimension")
        self.in_features, self.out_features, self.n, self.rank = in_features, out_features, n, rank
        self.rules = rules
        self.left = nn.Parameter(torch.empty(n, in_features // n, rank))
        self.right = nn.Parameter(torch.empty(n, rank, out_features // n))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.left)
        if zero_init:
            nn.init.zeros_(self.right)
        else:
            nn.init.xavier_uniform_(self.right)

    def weight(self) -> torch.Tensor:
        """The (out, in) weight this layer applies."""
        return phm_weight(self.rules, self.left, self.right).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class CompacterAdapter(nn.Module):
    """``h + up(act(down(h)))`` with PHM projections; identity at init."""

    def __init__(self, dim: int, bottleneck: int, rules: nn.Parameter, rank: int = 1, activation: str = "gelu"):
        super().__init__()
        self.activation = activation
        activation_fn(activation)
        self.down = PHMLinear(dim, bottleneck, rules, rank)
        self.up = PHMLinear(bottleneck, dim, rules, rank, zero_init=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(activation_fn(self.activation)(self.down(h)))

    @staticmethod
    def forward_tasks(adapters: Sequence[CompacterAdapter], h: torch.Tensor) -> torch.Tensor:
        """``adapters[t]`` on chunk ``t`` of ``h`` (T equal chunks along the first dimension, a stacked multi-task
        pass), every task's PHM weights built in one batched product instead of one small product per task."""
        weights = []
        for name in ("down", "up"):
            layers = [getattr(a, name) for a in adapters]
            w = phm_weight(torch.stack([m.rules for m in layers]), torch.stack([m.left for m in layers]),
                           torch.stack([m.right for m in layers]))  # (T, in, out)
            weights += [w.transpose(1, 2), torch.stack([m.bias for m in layers])]  # F.linear layout, biases
        x = task_bottleneck_branches(h, *weights, activation=adapters[0].activation)
        return h + x.view(h.shape)
