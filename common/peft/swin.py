"""PEFT-facing helpers for timm's ``SwinTransformer``: its blocks (stage, index, width) and its 4 stage features.

The insertion points inside the blocks (``attn``, ``qkv``, ``mlp``) are :mod:`common.peft.inject`'s.

timm layout (1.0.x): ``patch_embed`` gives NHWC tokens; ``layers[s]`` is a stage = ``downsample`` (PatchMerging,
Identity for stage 0) then ``blocks``; each block is ``x + attn(norm1(x))`` over (shifted) windows, then
``x + mlp(norm2(x))``; ``norm`` is the final LayerNorm (sized for the last stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SwinBlockInfo:
    """One transformer block of a Swin: where it is, its width, and the module."""

    stage: int
    index: int  # within the stage
    layer: int  # global block index, 0..sum(depths)-1
    dim: int
    name: str  # dotted path in the Swin, e.g. "layers.2.blocks.5"
    block: nn.Module


def check_swin(model: nn.Module) -> None:
    """Raise a clear error unless ``model`` looks like a timm SwinTransformer."""
    ok = hasattr(model, "patch_embed") and hasattr(model, "layers") and all(
        hasattr(stage, "blocks") and hasattr(stage, "downsample") for stage in model.layers)
    if not ok:
        raise TypeError(
            f"expected a timm SwinTransformer (patch_embed, layers[s].downsample/.blocks), got {type(model).__name__};"
            " build it with timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, ...) "
            "(common/peft/swin.py)")


def swin_blocks(model: nn.Module) -> list[SwinBlockInfo]:
    """All blocks of a timm Swin in forward order."""
    check_swin(model)
    out: list[SwinBlockInfo] = []
    layer = 0
    for s, stage in enumerate(model.layers):
        for i, block in enumerate(stage.blocks):
            dim = block.norm1.normalized_shape[0]
            out.append(SwinBlockInfo(s, i, layer, dim, f"layers.{s}.blocks.{i}", block))
            layer += 1
    return out


def stage_dims(model: nn.Module) -> list[int]:
    """Channel width of each stage's output."""
    check_swin(model)
    return [stage.blocks[-1].norm1.normalized_shape[0] for stage in model.layers]


def stage_depths(model: nn.Module) -> list[int]:
    """Number of blocks in each stage."""
    check_swin(model)
    return [len(stage.blocks) for stage in model.layers]


def swin_stage_features(model: nn.Module, x: torch.Tensor, final_norm: bool = True, repeat: int = 1
                        ) -> list[torch.Tensor]:
    """The output of every stage as NCHW maps (strides 4, 8, 16, 32); the last one through the final norm.

    ``repeat``: the stages run on the patch embedding repeated that many times along the batch (a multi-task stacked
    pass, every chunk from the same images): the same as ``x.repeat(repeat, 1, 1, 1)`` when nothing task-specific
    acts on the patch embedding, with the embedding computed once."""
    check_swin(model)
    h = model.patch_embed(x)
    if repeat > 1:
        h = h.repeat(repeat, *([1] * (h.ndim - 1)))
    feats = []
    for s, stage in enumerate(model.layers):
        h = stage(h)
        out = model.norm(h) if final_norm and s == len(model.layers) - 1 else h
        feats.append(out.permute(0, 3, 1, 2).contiguous())
    return feats
