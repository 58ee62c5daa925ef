"""The Conv-Adapter LightningModule: image classification with a frozen timm ConvNet / Swin + Conv-Adapters, or a
baseline on the same model (:mod:`conv_adapter.model`).

``method``: ``conv_parallel`` (the paper's choice and the official code's only placement), ``conv_sequential``,
``residual_parallel``, ``residual_sequential``, or the baselines ``linear_probe``, ``full_finetune``, ``bitfit``,
``vpt`` (Swin). What trains: the adapters (or prompts / biases), the head, and the norms the official code trains
(see :mod:`conv_adapter.model`: ResNet's extra BatchNorm before pooling, BiT's final GroupNorm, ConvNeXt's block and
final LayerNorms, every Swin LayerNorm); everything for ``full_finetune``.

Training follows the official code's defaults (``Hhhhhhao/Conv-Adapter`` ``main.py``): AdamW, lr 1e-3, weight decay
1e-4 (none on biases and 1-D tensors, as timm's optimiser factory), per-step cosine from lr to 1e-6 (``min_lr_ratio``
1e-3), no warm-up, cross-entropy without label smoothing; 100 epochs, batch 64, 224 px are trainer / data settings.
The official training loop puts the whole network in train mode, so the frozen backbone's BatchNorm statistics
follow the new data; ``frozen_bn: eval`` keeps them at their pretrained values instead (not the paper).

Input: ``batch["image"]`` ``(B, 3, H, W)``; evaluation batches of ``(B, V, 3, H, W)`` are averaged over the V views
(:class:`common.module.ClassificationModule`), as :class:`common.data.image_classification.ImageClassificationDataModule`
gives them (VTAB-1k, FGVC, few-shot lists, CUB, class folders; ShapesWorld VTAB-like tasks by default).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from common.module import ClassificationModule
from conv_adapter.model import METHODS, build

__all__ = ["ConvAdapterModule"]


class ConvAdapterModule(ClassificationModule):
    """Image classification with Conv-Adapter (or a baseline) on a timm backbone.

    Args:
        method: one of :data:`conv_adapter.model.METHODS`.
        backbone: a timm name (``resnet50``, ``resnetv2_50x1_bit``, ``convnext_base``,
            ``swin_base_patch4_window7_224``, ...) or a tiny ShapesWorld one (``shapes-resnet-tiny``, ...).
        pretrained: weights for :func:`common.models.build_timm` (a timm tag, True, a local file, the ShapesWorld name,
            or None for random weights: tests only).
        gamma: compression factor (``adapt_size``; 8 in the official code's defaults).
        kernel_size, activation: None = the family's (3 / ReLU on ResNets, 7 / GELU on ConvNeXt and Swin).
        alpha_init: initial alpha (1.0 official; 0.0 starts the adapters as the zero map).
        train_norms: train the norms the official code trains (True).
        downsample_adapters: ConvNeXt's adapters at the downsampling convs (None: with ``conv_parallel`` only).
        head_dropout: dropout before the linear head (0.2).
        vpt_tokens, vpt_deep: VPT baseline prompts (Swin).
        frozen_bn: ``train`` (official: frozen BatchNorms still update their statistics) or ``eval``.
        lr, weight_decay, warmup_epochs, min_lr_ratio, label_smoothing: optimisation (official defaults).
        num_classes: classifier size; default ``data_info["num_classes"]`` (linked from the datamodule).
    """

    input_key = "image"
    view_ndim = 4

    def __init__(
        self,
        method: str = "conv_parallel",
        backbone: str = "shapes-resnet-tiny",
        pretrained: str | bool | None = "shapes-resnet-tiny",
        gamma: int = 8,
        kernel_size: int | None = None,
        activation: str | None = None,
        alpha_init: float = 1.0,
        train_norms: bool = True,
        downsample_adapters: bool | None = None,
        head_dropout: float = 0.2,
        vpt_tokens: int = 10,
        vpt_deep: bool = False,
        frozen_bn: Literal["train", "eval"] = "train",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 1e-3,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_info, num_classes=num_classes, label_smoothing=label_smoothing, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, min_lr_ratio=min_lr_ratio)
        self.save_hyperparameters(ignore=["data_info"])
        if method not in METHODS:
            raise ValueError(f"conv_adapter: unknown method {method!r}; choose one of {METHODS}")
        if frozen_bn not in ("train", "eval"):
            raise ValueError(f"conv_adapter: frozen_bn must be 'train' or 'eval', got {frozen_bn!r}")
        self.frozen_bn = frozen_bn
        self.model = build(backbone, method, num_classes=self.num_classes, pretrained=pretrained, gamma=gamma,
                           kernel_size=kernel_size, activation=activation, alpha_init=alpha_init,
                           train_norms=train_norms, downsample_adapters=downsample_adapters,
                           head_dropout=head_dropout, vpt_tokens=vpt_tokens, vpt_deep=vpt_deep)

    def forward_logits(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, classes)`` logits."""
        return self.model(image)

    def train(self, mode: bool = True) -> ConvAdapterModule:
        super().train(mode)
        if mode and self.frozen_bn == "eval":
            for m in self.model.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in m.parameters(recurse=False)):
                    m.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        return self.model.parameter_counts()

    def figure_title(self) -> str:
        return f"{self.hparams.method} ({self.hparams.backbone})"
