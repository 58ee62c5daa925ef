"""The project's one optimiser rule and one learning-rate schedule.

* :func:`param_groups`: AdamW parameter groups from a module's trainable parameters. No weight decay for biases,
  norm weights and other 1-D tensors, position / relative-position tables, tokens, prompts, embeddings and CLIP's
  logit scale (:data:`NO_DECAY`); optional learning-rate multipliers chosen by name pattern.
* :func:`warmup_cosine`: per-step linear warm-up then half-cosine decay, built from ``torch.optim.lr_scheduler``
  (``LinearLR`` followed by ``CosineAnnealingLR`` in a ``SequentialLR``).
* :func:`adamw`: the two together.

Every paper module (through :class:`common.module.CVModule`) and the backbone pretraining use these; a paper that
follows an official recipe with another no-decay rule passes it (``no_decay=``), it does not write its own loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

__all__ = ["NO_DECAY", "adamw", "param_groups", "warmup_cosine"]

#: name patterns (regular expressions, searched in the parameter name) that get no weight decay, on top of every
#: tensor with fewer than two dimensions (biases, norm weights, scalars such as a logit scale)
NO_DECAY: tuple[str, ...] = (
    r"(^|\.)bias$", r"norm", r"(^|\.)bn\d*\.", r"(^|\.)ln_", r"position", r"pos_embed", r"relative_position",
    r"embedding", r"token", r"prompt", r"logit_scale",
)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


def param_groups(
    named_parameters: nn.Module | Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    lr: float,
    *,
    no_decay: Sequence[str] = NO_DECAY,
    no_decay_1d: bool = True,
    lr_scale: Mapping[str, float] | Callable[[str, nn.Parameter], float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups over the trainable parameters (each shared tensor once).

    Args:
        named_parameters: a module, or ``(name, parameter)`` pairs.
        weight_decay: decay of the parameters that decay.
        lr: base learning rate; a group's ``lr`` is ``lr`` times its multiplier.
        no_decay: name patterns (``re.search``) without weight decay (default :data:`NO_DECAY`).
        no_decay_1d: also no decay for every tensor with fewer than 2 dimensions.
        lr_scale: ``{pattern: multiplier}`` (the first pattern that matches a name sets its multiplier, else 1), or a
            function ``(name, parameter) -> multiplier``.

    Returns:
        One group per (decay, multiplier) pair in first-seen order, each ``{"params", "weight_decay", "lr",
        "names"}`` (``names`` for logging and tests; torch ignores extra keys).
    """
    items = named_parameters.named_parameters() if isinstance(named_parameters, nn.Module) else named_parameters
    if callable(lr_scale):
        multiplier = lr_scale
    else:
        scales = dict(lr_scale or {})

        def multiplier(name: str, _p: nn.Parameter) -> float:
            return next((m for pat, m in scales.items() if re.search(pat, name)), 1.0)
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, p in items:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        decay = not (_matches(name, no_decay) or (no_decay_1d and p.ndim < 2))
        mult = float(multiplier(name, p))
        g = groups.setdefault((decay, mult), {"params": [], "names": [], "weight_decay": weight_decay if decay
                                              else 0.0, "lr": lr * mult})
        g["params"].append(p)
        g["names"].append(name)
    if not groups:
        raise ValueError("common/optim.py: no trainable parameters to optimise; check which parameters the method "
                         "leaves trainable (requires_grad)")
    return list(groups.values())


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    *,
    start_factor: float | None = None,
    ramp_steps: int | None = None,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """Per-step schedule: linear warm-up, then half-cosine from the base lr to ``min_lr_ratio`` x base.

    The factor at optimiser step ``k`` is ``start_factor + (1 - start_factor) * k / ramp_steps`` while ``k <
    warmup_steps`` (``torch.optim.lr_scheduler.LinearLR``), then ``min + (1 - min) (1 + cos(pi (k - W) / (total -
    W))) / 2`` (``CosineAnnealingLR``), so it reaches the minimum at ``total_steps``.

    Args:
        optimizer: its groups' current ``lr`` are the base rates.
        total_steps: optimiser steps of the whole run (Lightning's ``estimated_stepping_batches``).
        warmup_steps: ``W``, steps before the cosine starts (clipped to ``total_steps - 1``); 0: no warm-up.
        start_factor: factor of the first step; default ``1 / (W + 1)`` (so step k has ``(k + 1) / (W + 1)``).
            torch's ``LinearLR`` needs it > 0: a warm-up "from 0" starts one ramp step above 0.
        ramp_steps: steps over which the factor reaches 1 (default ``W``; ``W - 1`` gives ``(k + 1) / W`` with
            ``start_factor = 1 / W``).
        min_lr_ratio: the final lr as a fraction of each base lr (needs equal base lrs in every group: torch's
            ``eta_min`` is one absolute value).
    """
    total = max(1, int(total_steps))
    warm = max(0, min(int(warmup_steps), total - 1))
    bases = {float(g["lr"]) for g in optimizer.param_groups}
    if min_lr_ratio and len(bases) > 1:
        raise ValueError("common/optim.py: min_lr_ratio needs one base lr for every parameter group "
                         f"(got {sorted(bases)}); CosineAnnealingLR's eta_min is absolute")
    eta_min = min_lr_ratio * max(bases)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warm), eta_min=eta_min)
    if warm == 0:
        return cosine
    start = 1.0 / (warm + 1) if start_factor is None else float(start_factor)
    if not 0.0 < start <= 1.0:
        raise ValueError(f"common/optim.py: warm-up start_factor must be in (0, 1], got {start}")
    ramp = warm if ramp_steps is None else max(1, int(ramp_steps))
    linear = LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=ramp)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def adamw(
    named_parameters: nn.Module | Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    no_decay: Sequence[str] = NO_DECAY,
    no_decay_1d: bool = True,
    lr_scale: Mapping[str, float] | Callable[[str, nn.Parameter], float] | None = None,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`param_groups`, fused (one kernel for every tensor) where the parameters
    allow it: floating tensors on the CPU or on CUDA. PyTorch's CPU default is a Python loop over the tensors: at the
    tiny Polyhistor Adapter row's ~300 small tensors the update took 14.6 ms, fused 4.2 (profiler), the whole step
    195 -> 171 ms (one thread); the update is the same AdamW (tested against the loop)."""
    groups = param_groups(named_parameters, weight_decay, lr, no_decay=no_decay, no_decay_1d=no_decay_1d,
                          lr_scale=lr_scale)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) and len(
        {p.device for p in params}) == 1
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
