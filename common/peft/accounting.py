"""Freezing helpers and parameter accounting shared by every PEFT method.

Counting rules (the ones the papers' tables use): a tensor shared by several modules is counted once, buffers are
never counted, and "trainable" means ``requires_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from torch import nn


def unique_named_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``named_parameters()`` with every tensor once (under its first name)."""
    seen: set[int] = set()
    for name, p in module.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield name, p


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (each shared tensor once); only ``requires_grad`` ones if asked."""
    return sum(p.numel() for _, p in unique_named_parameters(module) if p.requires_grad or not trainable_only)


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module``; returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=True`` on every parameter of ``module``; returns it."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def set_trainable(module: nn.Module, predicate: Callable[[str, nn.Parameter], bool]) -> list[str]:
    """Make exactly the parameters for which ``predicate(name, param)`` holds trainable; returns their names."""
    chosen = []
    for name, p in module.named_parameters():
        keep = bool(predicate(name, p))
        p.requires_grad_(keep)
        if keep:
            chosen.append(name)
    return chosen


def trainable_parameter_names(module: nn.Module) -> set[str]:
    """Names of the trainable parameters (each shared tensor under its first name)."""
    return {name for name, p in unique_named_parameters(module) if p.requires_grad}


def parameter_breakdown(module: nn.Module, depth: int = 1) -> dict[str, tuple[int, int]]:
    """``{name prefix (first `depth` dotted parts): (trainable, total)}`` over the unique parameters."""
    out: dict[str, list[int]] = {}
    for name, p in unique_named_parameters(module):
        key = ".".join(name.split(".")[:depth])
        row = out.setdefault(key, [0, 0])
        row[1] += p.numel()
        if p.requires_grad:
            row[0] += p.numel()
    return {k: (v[0], v[1]) for k, v in out.items()}


def parameters_of(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """Unique parameters of several modules (for optimiser groups)."""
    seen: set[int] = set()
    out = []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def millions(n: int, digits: int = 2) -> str:
    """``12345678 -> '12.35'`` (the unit the papers' tables use)."""
    return f"{n / 1e6:.{digits}f}"
