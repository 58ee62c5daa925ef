"""The ST-Adapter LightningModule: video classification with a frozen CLIP ViT + ST-Adapters, or the baselines.

``method`` picks one of the paper's comparison rows on the same model (:mod:`st_adapter.model`):
``st_adapter`` (frozen backbone, adapters + head trained), ``linear_probe`` (frozen backbone, frame-mean linear head)
and ``full_finetune`` (everything trained).

Training follows the official recipe (``linziyi96/st-adapter`` ``main.py``):

* AdamW, ``lr = base_lr x global batch / 256`` (``base_lr`` 1e-3; global batch = per-device batch x devices x
  gradient accumulation), or an absolute ``lr``; weight decay 0.01 on every trainable tensor except biases
  (parameters whose name contains ``.bias``);
* per-step schedule: linear warm-up over ``warmup_epochs`` (2), then half-cosine to 0 at the last step
  (:func:`common.optim.warmup_cosine`; the official warm-up starts at exactly 0, torch's ``LinearLR`` one ramp step
  above 0: step ``k`` of ``W`` has ``(k + 1) / (W + 1)`` of the lr instead of ``k / W``);
* plain cross-entropy (``label_smoothing`` 0).

Evaluation: validation/test batches hold ``V`` views per video, ``video (B, V, T, 3, S, S)``
(:mod:`common.data.video_dataset`; ``V = clips x crops``, may be 1); the softmax of each view is averaged over the
views (:func:`common.module.average_view_softmax`) and top-1 / top-5 accuracy and the NLL of the averaged
probabilities are logged as ``<stage>/acc1``, ``<stage>/acc5``, ``<stage>/loss`` (DDP-exact torchmetrics), all
from :class:`common.module.ClassificationModule`.
Mixed precision and multi-GPU are trainer settings (``common/configs/trainer/*.yaml``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from common.module import ClassificationModule, global_batch_size
from st_adapter.model import METHODS, build_video_vit

__all__ = ["STAdapterModule"]


class STAdapterModule(ClassificationModule):
    """Video classification with ST-Adapters on a frozen open_clip ViT (or the linear-probe / full-FT baselines).

    Args:
        method: ``st_adapter``, ``linear_probe`` or ``full_finetune``.
        arch: open_clip architecture (``ViT-B-16``, ``ViT-L-14``) or ``shapes-clip-tiny``.
        pretrained: ``openai`` (download), ``shapes-clip-tiny`` (ShapesWorld-pretrained, cached), a local checkpoint
            path, or None (random init, tests only).
        adapter_width: bottleneck width r (384 in the paper).
        adapter_positions: ``[pre_mlp]`` (12x384, K400) or ``[pre_attn, pre_mlp]`` (24x384, SSv2).
        adapter_blocks: None (all blocks), an int n (the last n blocks) or a list of block indices.
        adapter_kernel_size: depthwise kernel over (T, H, W); (3, 1, 1) in the paper.
        adapter_activation: None (released code) or ``gelu`` / ``quick_gelu`` / ``relu`` (the paper's equation).
        backbone_dtype: ``fp32``, ``fp16`` (the official code) or ``bf16`` for the frozen backbone.
        dropout, head_init_std: the head (0.5, 0.02).
        grad_checkpointing: recompute blocks in the backward pass.
        base_lr: learning rate per 256 samples of global batch (1e-3); ``lr`` overrides it with an absolute value.
        weight_decay: AdamW weight decay (0.01; never on biases).
        backbone_lr_scale: the CLIP backbone's own weights (trained only by ``full_finetune``) use the lr times this
            (1.0: one lr for everything; the tiny full fine-tuning recipe [ours] trains the backbone 10x slower
            than the head).
        warmup_epochs: linear warm-up length in epochs (2; fractions allowed).
        label_smoothing: cross-entropy label smoothing (0 in the paper).
        num_classes: classifier size; default ``data_info["num_classes"]`` (linked from the datamodule).
        data_info: linked by the CLI from the datamodule's ``info``.
    """

    input_key = "video"
    view_ndim = 5
    #: the official rule: weight decay on every trainable tensor except biases (``'.bias' in name``)
    no_decay = (r"\.bias|bias$",)
    no_decay_1d = False

    def __init__(
        self,
        method: Literal["st_adapter", "linear_probe", "full_finetune"] = "st_adapter",
        arch: str = "ViT-B-16",
        pretrained: str | None = "openai",
        adapter_width: int = 384,
        adapter_positions: tuple[str, ...] = ("pre_mlp",),
        adapter_blocks: int | list[int] | None = None,
        adapter_kernel_size: tuple[int, int, int] = (3, 1, 1),
        adapter_activation: str | None = None,
        backbone_dtype: Literal["fp32", "fp16", "bf16"] = "fp32",
        dropout: float = 0.5,
        head_init_std: float = 0.02,
        grad_checkpointing: bool = False,
        base_lr: float = 1e-3,
        lr: float | None = None,
        weight_decay: float = 0.01,
        backbone_lr_scale: float = 1.0,
        warmup_epochs: float = 2.0,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_info, num_classes=num_classes, label_smoothing=label_smoothing,
                         lr=base_lr if lr is None else lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs)
        self.save_hyperparameters()
        if method not in METHODS:
            raise ValueError(f"st_adapter: unknown method {method!r}; choose one of {METHODS}")
        self.model = build_video_vit(
            arch, pretrained, self.num_classes, method, adapter_width=adapter_width,
            adapter_positions=tuple(adapter_positions), adapter_blocks=adapter_blocks,
            adapter_kernel_size=tuple(adapter_kernel_size), adapter_activation=adapter_activation,
            backbone_dtype=backbone_dtype, dropout=dropout, head_init_std=head_init_std,
            grad_checkpointing=grad_checkpointing,
        )

    def forward_logits(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S, S)`` -> ``(B, classes)`` logits."""
        return self.model(video)

    def base_lr(self) -> float:
        """``base_lr x global batch / 256`` (the official scaling), or the absolute ``lr``."""
        if self.hparams.lr is not None:
            return float(self.hparams.lr)
        return self.hparams.base_lr * global_batch_size(self.trainer) / 256

    def lr_multiplier(self, name: str, param: nn.Parameter) -> float:
        """``backbone_lr_scale`` for the backbone's own weights, 1 for the adapters and the head."""
        return float(self.hparams.backbone_lr_scale) if name.startswith("model.backbone.") else 1.0

    def figure_title(self) -> str:
        return str(self.hparams.method)
