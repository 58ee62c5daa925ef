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
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from common.peft.context import TaskContext


class TaskDelta(nn.Module):
    """Parametrization ``original -> original + delta[ctx.task]`` with one zero-initialised delta per task.

    ``applied_per_chunk``: a forward hook of the owning module applies the deltas per chunk when the context runs
    tasks stacked (:func:`add_task_norm_deltas` does for layer norms); the parametrization then gives the original
    tensor. Without such a hook a stacked pass has no single task to read, and fails loudly.
    """

    def __init__(self, shape: torch.Size, ctx: TaskContext, shared: bool = False) -> None:
        super().__init__()
        self.ctx = ctx
        self.shared = shared
        self.applied_per_chunk = False
        names = ["shared"] if shared else list(ctx.tasks)
        self.deltas = nn.ParameterDict({t: nn.Parameter(torch.zeros(shape)) for t in names})

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return original + self.deltas["shared"]
        if self.applied_per_chunk and self.ctx.stacked is not None:
            return original
        return original + self.deltas[self.ctx.task]


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


class StackedNormHook:
    """Forward hook of a layer norm with per-task weight / bias deltas: in a stacked pass, the output again with
    each chunk's task's affine map (``norm(x) * (w + dw_t) + (b + db_t)``; the module's own output, made with the
    original affine map, is discarded: a layer norm is a small part of a step); otherwise nothing. A class, not a
    closure, so ``copy.deepcopy`` of the model maps its context onto the copy's."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx

    def __call__(self, module: nn.LayerNorm, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor
                 ) -> torch.Tensor | None:
        tasks = self.ctx.stacked
        if tasks is None:
            return None
        x = inputs[0]
        affine = []
        for name in ("weight", "bias"):
            p = module.parametrizations[name]
            affine.append(torch.stack([p.original + p[0].deltas[t] for t in tasks]).unsqueeze(1))
        y = F.layer_norm(x, module.normalized_shape, None, None, module.eps).reshape(len(tasks), -1, x.shape[-1])
        return torch.addcmul(affine[1], y, affine[0]).reshape(x.shape)


def add_task_norm_deltas(
    model: nn.Module, ctx: TaskContext, norm_types: tuple[type[nn.Module], ...] = (nn.LayerNorm,)
) -> list[str]:
    """Per-task deltas on the weight and bias of every norm layer of ``model`` (Compacter tunes layer norms).

    Stacked passes (:meth:`TaskContext.use_stacked`) work through layer norms over the last dimension with a weight
    and a bias: a forward hook re-applies each chunk's task's affine map to the normalised input. Any other norm
    keeps the single-task parametrization and fails loudly in a stacked pass."""
    norms = {name: m for name, m in model.named_modules() if isinstance(m, norm_types)}
    done = add_task_deltas(model, ctx, lambda mod_name, t: mod_name in norms and t in ("weight", "bias"))
    for m in norms.values():
        if (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1
                and set(getattr(m, "parametrizations", {}).keys()) == {"weight", "bias"}):
            for name in ("weight", "bias"):
                m.parametrizations[name][0].applied_per_chunk = True
            m.register_forward_hook(StackedNormHook(ctx))
    return done
