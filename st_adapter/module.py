"""The ST-Adapter LightningModule: video classification with a frozen CLIP ViT + ST-Adapters, or the baselines.

``method`` picks one of the paper's comparison rows on the same model (:mod:`st_adapter.model`):
``st_adapter`` (frozen backbone, adapters + head trained), ``linear_probe`` (frozen backbone, frame-mean linear head)
and ``full_finetune`` (everything trained).

Training follows the official recipe (``linziyi96/st-adapter`` ``main.py``):

* AdamW, ``lr = base_lr x global batch / 256`` (``base_lr`` 1e-3; global batch = per-device batch x devices x
  gradient accumulation), or an absolute ``lr``; weight decay 0.01 on every trainable tensor except biases
  (parameters whose name contains ``.bias``);
* per-step schedule: linear warm-up from 0 over ``warmup_epochs`` (2), then half-cosine to 0 at the last step;
* plain cross-entropy (``label_smoothing`` 0).

Evaluation: validation/test batches hold ``V`` views per video, ``video (B, V, T, 3, S, S)``
(:mod:`common.data.video_dataset`; ``V = clips x crops``, may be 1); the softmax of each view is averaged over the
views (:func:`st_adapter.model.average_view_softmax`) and top-1 / top-5 accuracy and the NLL of the averaged
probabilities are logged as ``<stage>/acc1``, ``<stage>/acc5``, ``<stage>/loss`` (DDP-exact torchmetrics).
Mixed precision and multi-GPU are trainer settings (``common/configs/trainer/*.yaml``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from common.module import CVModule
from st_adapter.model import METHODS, average_view_softmax, build_video_vit

__all__ = ["STAdapterModule", "warmup_cosine", "global_batch_size"]


def warmup_cosine(step: int, warmup_steps: float, total_steps: int) -> float:
    """LR factor of the official schedule: ``step / warmup`` during warm-up, then ``0.5 + 0.5 cos(pi * progress)``."""
    if step < warmup_steps:
        return step / warmup_steps
    span = max(total_steps - warmup_steps, 1e-9)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return 0.5 + 0.5 * math.cos(math.pi * progress)


def global_batch_size(trainer: Any) -> int:
    """Samples per optimiser step over all devices: per-device batch x world size x gradient accumulation."""
    dm = getattr(trainer, "datamodule", None)
    per_device = getattr(dm, "batch_size", None)
    if per_device is None:
        loader = trainer.train_dataloader if trainer.train_dataloader is not None else None
        per_device = getattr(loader, "batch_size", None)
    if not per_device:
        raise ValueError("st_adapter/module.py: cannot tell the training batch size to scale the learning rate; "
                         "give the datamodule a batch_size or set model.init_args.lr (absolute)")
    return int(per_device) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)


def _stage_metrics(num_classes: int) -> nn.ModuleDict:
    return nn.ModuleDict({
        "acc1": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, top_k=1, average="micro"),
        "acc5": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, top_k=min(5, num_classes),
                                      average="micro"),
        "mean_class_acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, average="macro"),
        "loss": torchmetrics.MeanMetric().set_dtype(torch.float64),
        "count": torchmetrics.SumMetric().set_dtype(torch.float64),
        "confusion": torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes),
    })


def confusion_figure(matrix: torch.Tensor, class_names: list[str], title: str):  # noqa: ANN201 - a Figure
    """A row-normalised confusion matrix (rows: true class) as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.double()
    m = (m / m.sum(1, keepdim=True).clamp_min(1)).cpu().numpy()
    k = len(m)
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * k, 2 + 0.4 * k), dpi=100)
    ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
    ticks = list(range(k))
    names = class_names if len(class_names) == k else [str(i) for i in ticks]
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j] >= 0.005:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class STAdapterModule(CVModule):
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
        warmup_epochs: linear warm-up length in epochs (2; fractions allowed).
        label_smoothing: cross-entropy label smoothing (0 in the paper).
        num_classes: classifier size; default ``data_info["num_classes"]`` (linked from the datamodule).
        data_info: linked by the CLI from the datamodule's ``info``.
    """

    monitor = "val/acc1"
    monitor_mode = "max"

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
        warmup_epochs: float = 2.0,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_info)
        self.save_hyperparameters()
        if method not in METHODS:
            raise ValueError(f"st_adapter: unknown method {method!r}; choose one of {METHODS}")
        n = num_classes or self.data_info.get("num_classes")
        if not n:
            raise ValueError("st_adapter: num_classes unknown; run through the CLI with a datamodule (linked "
                             "data_info) or set model.init_args.num_classes")
        self.num_classes = int(n)
        self.model = build_video_vit(
            arch, pretrained, self.num_classes, method, adapter_width=adapter_width,
            adapter_positions=tuple(adapter_positions), adapter_blocks=adapter_blocks,
            adapter_kernel_size=tuple(adapter_kernel_size), adapter_activation=adapter_activation,
            backbone_dtype=backbone_dtype, dropout=dropout, head_init_std=head_init_std,
            grad_checkpointing=grad_checkpointing,
        )
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=self.num_classes)
        self.eval_metrics = nn.ModuleDict({"val": _stage_metrics(self.num_classes),
                                           "test": _stage_metrics(self.num_classes)})
        self.effective_lr: float | None = None

    # -- forward / steps -------------------------------------------------------------------------------------------
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S, S)`` -> logits; ``(B, V, T, 3, S, S)`` -> view-averaged class probabilities."""
        if video.ndim == 6:
            b, v = video.shape[:2]
            return average_view_softmax(self.model(video.flatten(0, 1)), v)
        return self.model(video)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        video, label = batch["video"], batch["label"]
        if video.shape[0] == 0:  # every sample of the batch was unreadable (counted by the datamodule)
            return None
        logits = self.model(video)
        ce = F.cross_entropy(logits.float(), label, label_smoothing=self.hparams.label_smoothing)
        self.train_acc(logits.detach(), label)
        self.log("train/acc1", self.train_acc, on_step=False, on_epoch=True, batch_size=video.shape[0])
        return self.log_losses({"ce": ce}, batch_size=video.shape[0])

    def view_probabilities(self, video: torch.Tensor) -> torch.Tensor:
        """Evaluation batch ``(B, V, T, 3, S, S)`` (or ``(B, T, 3, S, S)``: one view) -> ``(B, K)`` probabilities."""
        if video.ndim == 5:
            video = video.unsqueeze(1)
        if video.ndim != 6:
            raise ValueError(f"expected an evaluation batch (B, V, T, 3, S, S), got shape {tuple(video.shape)}")
        return self(video)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        video, label = batch["video"], batch["label"]
        if video.shape[0] == 0:
            return
        probs = self.view_probabilities(video)
        m = self.eval_metrics[stage]
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), label, reduction="none")
        m["acc1"].update(probs, label)
        m["acc5"].update(probs, label)
        m["mean_class_acc"].update(probs, label)
        m["loss"].update(nll.double())
        m["count"].update(torch.ones_like(nll, dtype=torch.float64).sum())
        m["confusion"].update(probs, label)

    def _log_stage(self, stage: str) -> None:
        for name, metric in self.eval_metrics[stage].items():
            if name == "confusion":
                continue
            self.log(f"{stage}/{name}", metric.compute(), sync_dist=False)
            metric.reset()
        confusion = self.eval_metrics[stage]["confusion"]
        matrix = confusion.compute()
        confusion.reset()
        last_val = stage == "val" and (self.trainer.state.fn != "fit"
                                       or self.current_epoch + 1 >= (self.trainer.max_epochs or 0))
        if (stage == "test" or last_val) and self.trainer.is_global_zero:
            self._log_confusion(matrix, stage)

    def _log_confusion(self, matrix: torch.Tensor, stage: str) -> None:
        """Upload the confusion matrix picture to the MLflow run (rank 0; other loggers are skipped)."""
        from common.tracking import CVMLFlowLogger

        loggers = [lg for lg in self.trainer.loggers if isinstance(lg, CVMLFlowLogger)]
        if not loggers:
            return
        import matplotlib.pyplot as plt

        names = list(self.data_info.get("class_names") or [])
        acc = float(matrix.diag().sum() / matrix.sum().clamp_min(1))
        fig = confusion_figure(matrix, names, f"{self.hparams.method} {stage} (epoch {self.current_epoch}), "
                                              f"top-1 {100 * acc:.1f}%")
        try:
            for lg in loggers:
                lg.experiment.log_figure(lg.run_id, fig, f"confusion/{stage}_epoch{self.current_epoch}.png")
        except Exception as err:  # an artifact-store problem must not end the run
            rank_zero_info(f"[st_adapter] could not upload the confusion matrix: {err}")
        finally:
            plt.close(fig)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.eval_metrics["val"]["count"].update_called:
            self._log_stage("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        if self.eval_metrics["test"]["count"].update_called:
            self._log_stage("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        probs = self.view_probabilities(batch["video"])
        return {"probs": probs, "pred": probs.argmax(-1), "index": batch.get("index", torch.arange(len(probs)))}

    # -- optimisation ----------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on trainable weights, none on biases (the official ``'.bias' in name`` rule)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if ".bias" in name or name.endswith("bias") else decay).append(p)
        return [{"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.lr is not None:
            lr = float(hp.lr)
        else:
            lr = hp.base_lr * global_batch_size(self.trainer) / 256
        self.effective_lr = lr
        opt = torch.optim.AdamW(self.parameter_groups(), lr=lr)
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
        steps_per_epoch = total / epochs if epochs else max(int(self.trainer.num_training_batches or 1), 1)
        warmup = hp.warmup_epochs * steps_per_epoch
        rank_zero_info(f"[st_adapter] {hp.method}: lr {lr:.3g} (base {hp.base_lr:g} x global batch / 256"
                       f"{', absolute' if hp.lr is not None else ''}), {total} steps, warm-up {warmup:.0f} steps")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
