"""The whole multi-task network of one table row: shared Swin (+ PEFT) and one SegFormer decoder per task.

Plain ``nn.Module`` (no Lightning): the LightningModule, the parameter-budget benchmark and the tests all build it
through :func:`build_network`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from common.ops import resize_bilinear
from common.peft.accounting import count_parameters
from polyhistor.decoder import SegFormerHead
from polyhistor.encoder import MultiTaskSwin, PeftConfig

#: output channels of the PASCAL-Context tasks (semseg 21 classes, 7 part groups, 1 saliency logit, 3 normals)
PASCAL_OUTPUTS: dict[str, int] = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}


class MultiTaskDenseNet(nn.Module):
    """``forward(images) -> {task: prediction at the input resolution}`` (logits; raw normals)."""

    def __init__(self, encoder: MultiTaskSwin, num_outputs: Mapping[str, int], decoder_embed_dim: int = 256,
                 decoder_dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = list(encoder.tasks)
        missing = [t for t in self.tasks if t not in num_outputs]
        if missing:
            raise ValueError(f"no output size for task(s) {missing}; num_outputs has {sorted(num_outputs)}")
        self.decoders = nn.ModuleDict({
            t: SegFormerHead(encoder.dims, int(num_outputs[t]), decoder_embed_dim, decoder_dropout) for t in self.tasks})

    def forward(self, images: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        tasks = list(tasks or self.tasks)
        feats = self.encoder.forward_tasks(images, tasks)
        size = images.shape[-2:]
        return {t: resize_bilinear(self.decoders[t](feats[t]), size) for t in tasks}

    def trainable_parameters(self) -> int:
        return count_parameters(self, trainable_only=True)


def build_network(
    swin: nn.Module,
    method: str,
    tasks: Sequence[str],
    num_outputs: Mapping[str, int] | None = None,
    peft: PeftConfig | None = None,
    decoder_embed_dim: int = 256,
    decoder_dropout: float = 0.1,
) -> MultiTaskDenseNet:
    """Wrap an already built (and, if wanted, pretrained) timm Swin for ``method`` and add the task decoders."""
    encoder = MultiTaskSwin(swin, list(tasks), method, peft)
    return MultiTaskDenseNet(encoder, num_outputs or PASCAL_OUTPUTS, decoder_embed_dim, decoder_dropout)
