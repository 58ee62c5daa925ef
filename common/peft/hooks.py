"""Attach PEFT modules to a frozen backbone without editing it.

A forward hook on a sub-module replaces its output. The backbone's module tree and state-dict keys stay those of
the pretrained model (a timm checkpoint still loads after the PEFT modules are attached), and the PEFT modules live
in their own container where the optimiser and the parameter accounting see them.

Hooks are small callable objects (not closures), so ``copy.deepcopy`` and pickling of the whole model map them onto
the copied PEFT modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class ResidualHook:
    """Sequential (Houlsby) placement: ``out -> module(out)``; the adapter carries its own skip connection."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, _mod: nn.Module, _inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return self.module(output)


class AdditiveHook:
    """Parallel placement (LoRA): ``out -> out + module(input)``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, _mod: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return output + self.module(inputs[0])


def attach(module: nn.Module, hook) -> RemovableHandle:
    """Register ``hook(module, inputs, output) -> new output`` as a forward hook of ``module``."""
    return module.register_forward_hook(hook)
