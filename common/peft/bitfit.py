"""Per-task deltas on frozen tensors: multi-task BitFit (Ben Zaken et al. 2021) and per-task norm tuning.

BitFit trains only the bias terms. In a multi-task network each task owns its biases: the pretrained bias stays
frozen and every task adds its own delta (zero at init, so the network starts as the pretrained one). This is the
same count and the same function family as copying the biases per task, and it keeps the pretrained tensor intact.

The deltas are torch parametrizations: ``module.bias`` (or any named tensor, e.g. Swin's
``relative_position_bias_table``) reads ``original + delta[active task]`` wherever the backbone's code uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from common.peft.context import TaskContext


class TaskDelta(nn.Module):
    """Parametrization ``original -> original + delta[ctx.task]`` with one zero-initialised delta per task."""

    def __init__(self, shape: torch.Size, ctx: TaskContext, shared: bool = False) -> None:
        super().__init__()
        self.ctx = ctx
        self.shared = shared
        names = ["shared"] if shared else list(ctx.tasks)
        self.deltas = nn.ParameterDict({t: nn.Parameter(torch.zeros(shape)) for t in names})

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original + self.deltas["shared" if self.shared else self.ctx.task]


def default_bias_predicate(include_relative_position_bias: bool = True) -> Callable[[str, str], bool]:
    """Selects ``bias`` tensors (and, if asked, ``relative_position_bias_table``) by their attribute name."""

    def pred(_module_name: str, tensor_name: str) -> bool:
        if tensor_name == "bias":
            return True
        return include_relative_position_bias and tensor_name == "relative_position_bias_table"

    return pred


def add_task_deltas(
    model: nn.Module, ctx: TaskContext, select: Callable[[str, str], bool], shared: bool = False
) -> list[str]:
    """Give every selected tensor of ``model`` a per-task delta; freezes the originals.

    ``select(module_name, tensor_name)`` picks the tensors (direct parameters of each sub-module). Returns the
    dotted names that were parametrized. Call it once, after loading the pretrained weights.
    """
    targets: list[tuple[str, nn.Module, str]] = []
    for mod_name, mod in model.named_modules():
        for t_name, p in list(mod.named_parameters(recurse=False)):
            if p is not None and select(mod_name, t_name):
                targets.append((mod_name, mod, t_name))
    done = []
    with ctx.use(ctx.tasks[0]):  # registering evaluates the parametrization once
        for mod_name, mod, t_name in targets:
            original = getattr(mod, t_name)
            original.requires_grad_(False)
            parametrize.register_parametrization(mod, t_name, TaskDelta(original.shape, ctx, shared=shared))
            getattr(mod.parametrizations, t_name).original.requires_grad_(False)
            done.append(f"{mod_name}.{t_name}" if mod_name else t_name)
    if not done:
        raise ValueError("add_task_deltas: the selector matched no tensor (common/peft/bitfit.py)")
    return done


def add_task_norm_deltas(
    model: nn.Module, ctx: TaskContext, norm_types: tuple[type[nn.Module], ...] = (nn.LayerNorm,)
) -> list[str]:
    """Per-task deltas on the weight and bias of every norm layer of ``model`` (Compacter tunes layer norms)."""
    norm_names = {name for name, m in model.named_modules() if isinstance(m, norm_types)}
    return add_task_deltas(model, ctx, lambda mod_name, t: mod_name in norm_names and t in ("weight", "bias"))
