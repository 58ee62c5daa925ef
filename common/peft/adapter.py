"""Bottleneck adapters (Houlsby et al. 2019) and their task-routed, optionally shared, multi-task form.

``adapter(h) = h + W_up act(W_down h + b_down) + b_up``; W_down: dim -> bottleneck, W_up: bottleneck -> dim.
``W_up`` and ``b_up`` start at zero (``zero_init=True``), so a freshly inserted adapter is exactly the identity and
the frozen backbone's features are unchanged until training moves it (Houlsby's near-identity init, made exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.peft.context import TaskContext

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu, "tanh": torch.tanh}


def activation_fn(name: str):
    """The elementwise non-linearity called ``name`` (gelu, relu, silu/swish, tanh)."""
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError as err:
        raise ValueError(f"unknown adapter activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from err


def bottleneck_adapter(
    h: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor | None,
    w_up: torch.Tensor,
    b_up: torch.Tensor | None,
    activation: str = "gelu",
) -> torch.Tensor:
    """Functional adapter with given weights (``w_down``: (bottleneck, dim), ``w_up``: (dim, bottleneck))."""
    z = activation_fn(activation)(F.linear(h, w_down, b_down))
    return h + F.linear(z, w_up, b_up)


def task_bottleneck_branches(
    h: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    activation: str = "gelu",
) -> torch.Tensor:
    """The bottleneck branch ``W_up act(W_down h + b_down) + b_up`` of T tasks' adapters at once (no skip).

    ``h``: T equal chunks along its first dimension (a stacked multi-task pass; T = 1: one task), chunk ``t`` for
    task ``t``; weights with a leading task dimension in ``F.linear`` layout: ``w_down`` (T, bottleneck, dim),
    ``w_up`` (T, dim, bottleneck), biases (T, width). Returns (T, rows per task, dim): batched matrix products over
    the tasks instead of a loop over their chunks."""
    t, dim = w_down.shape[0], h.shape[-1]
    if h.shape[0] % t:
        raise RuntimeError(f"a batch of {h.shape[0]} does not split into {t} task chunks (common/peft/adapter.py)")
    x = h.reshape(t, -1, dim)
    z = activation_fn(activation)(torch.baddbmm(b_down.unsqueeze(1), x, w_down.transpose(1, 2)))
    return torch.baddbmm(b_up.unsqueeze(1), z, w_up.transpose(1, 2))


def bottleneck_size(dim: int, reduction: float) -> int:
    """``dim / reduction`` rounded, at least 1 (the adapter's hidden width)."""
    if reduction <= 0:
        raise ValueError(f"adapter reduction factor must be > 0, got {reduction}")
    return max(1, int(round(dim / reduction)))


class BottleneckAdapter(nn.Module):
    """A Houlsby bottleneck adapter with its own skip connection."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "gelu", zero_init: bool = True) -> None:
        super().__init__()
        self.dim, self.bottleneck, self.activation = dim, bottleneck, activation
        activation_fn(activation)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return bottleneck_adapter(h, self.down.weight, self.down.bias, self.up.weight, self.up.bias, self.activation)


class TaskRouted(nn.Module):
    """One module per task (or one ``shared`` by all), chosen by the context's active task at call time.

    When the context runs tasks stacked, each task's module gets that task's chunk of the first argument: the
    routed modules must act on rows independently (adapters and LoRA deltas do). A module type with a static
    ``forward_tasks(modules, x)`` (Compacter's) gets every task's module and the whole stacked batch instead.

    ``shared=True`` is VL-Adapter's "single adapter" multi-task setting: one set of weights serves every task.
    """

    def __init__(self, modules: dict[str, nn.Module] | nn.Module, ctx: TaskContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.shared = isinstance(modules, nn.Module)
        if self.shared:
            self.module = modules
        else:
            missing = set(ctx.tasks) - set(modules)
            if missing:
                raise ValueError(f"TaskRouted: no module for task(s) {sorted(missing)}")
            self.per_task = nn.ModuleDict(modules)

    def forward(self, *args, **kwargs):
        if self.shared:
            return self.module(*args, **kwargs)
        stacked = self.ctx.stacked
        if stacked is not None and len(stacked) > 1 and len(args) == 1 and not kwargs:
            batched = getattr(type(self.per_task[stacked[0]]), "forward_tasks", None)
            if batched is not None:  # the module type applies every task's weights to its chunk in one go
                return batched([self.per_task[t] for t in stacked], args[0])
        # per task, or per task's chunk of the batch when the context runs tasks stacked (row-wise modules only)
        return self.ctx.per_chunk(args[0], lambda t, x: self.per_task[t](x, *args[1:], **kwargs))


def task_adapters(
    dim: int,
    bottleneck: int,
    ctx: TaskContext,
    shared: bool = False,
    activation: str = "gelu",
    tasks: Sequence[str] | None = None,
) -> TaskRouted:
    """Per-task bottleneck adapters at one insertion point (or one shared by all tasks)."""
    if shared:
        return TaskRouted(BottleneckAdapter(dim, bottleneck, activation), ctx)
    return TaskRouted({t: BottleneckAdapter(dim, bottleneck, activation) for t in (tasks or ctx.tasks)}, ctx)
