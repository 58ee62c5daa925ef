"""The base LightningModules every paper's module derives from.

:class:`CVModule` carries what every paper shares, so that a paper module reads as its paper (forward, loss, what
is trainable):

* ``data_info``: values derived from the data (``num_classes``, ``class_names``, ``tasks`` ...), linked by the CLI
  from the datamodule's :attr:`common.data.base.CVDataModule.info`, and re-read from the datamodule at the start of
  every stage (:meth:`CVModule.setup`), so class names may change between fit and validate/test (cross-dataset
  zero-shot, base-to-novel); :meth:`CVModule.on_data_info_changed` tells the subclass.
* the optimiser and schedule (:meth:`CVModule.configure_optimizers`): AdamW over the trainable parameters with the
  project's one group rule and one warm-up + cosine schedule (:mod:`common.optim`); subclasses choose through
  constructor arguments and the hooks :meth:`base_lr`, :meth:`lr_multiplier` and the class attributes
  ``no_decay`` / ``no_decay_1d``.
* the evaluation plumbing: ``validation_step`` / ``test_step`` skip empty batches (every sample unreadable) and
  call :meth:`eval_step`; at epoch end :meth:`compute_eval_metrics` computes, logs and resets the torchmetrics in
  ``self.eval_metrics[stage]`` and :meth:`on_eval_epoch_end` may add pictures. Skipped samples are counted by the
  CLI's ``SkippedSamples`` callback (``data/skipped``), never by the module.
* :meth:`log_losses`: logs each loss term as ``train/loss_<name>`` and remembers them for the non-finite guard.
* predictions a user can open: in ``predict``, :meth:`CVModule.configure_callbacks` adds a
  :class:`common.callbacks.predict.PredictionWriter`, which hands each batch's outputs to
  :meth:`CVModule.write_prediction` (the subclass decides what is written) and writes ``predictions.csv`` from the
  rows it returns, under ``predictions/`` in the run's folder and on the MLflow run.

:class:`ClassificationModule` adds classification: top-1/top-5, mean-class accuracy, NLL, multi-view softmax
averaging, the row-normalised confusion-matrix picture on the MLflow run, and predictions as the top-5 classes with
their probabilities per input file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from common.optim import NO_DECAY, adamw, warmup_cosine

__all__ = ["CVModule", "ClassificationModule", "average_view_softmax", "global_batch_size"]


def global_batch_size(trainer: pl.Trainer) -> int:
    """Samples per optimiser step over all devices: per-device batch x world size x gradient accumulation."""
    per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if per_device is None and trainer.train_dataloader is not None:
        per_device = getattr(trainer.train_dataloader, "batch_size", None)
    if not per_device:
        raise ValueError("common/module.py: cannot tell the training batch size to scale the learning rate; give "
                         "the datamodule a batch_size or set an absolute model.init_args.lr")
    return int(per_device) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)


def average_view_softmax(logits: torch.Tensor, num_views: int) -> torch.Tensor:
    """``(B*V, K)`` logits of ``V`` consecutive views per sample -> ``(B, K)`` mean of the per-view softmax (fp32):
    softmax first, then the average (the multi-view evaluation of the video papers)."""
    if num_views < 1 or logits.shape[0] % num_views:
        raise ValueError(f"{logits.shape[0]} rows are not a multiple of num_views={num_views}")
    probs = logits.float().softmax(dim=-1)
    return probs.reshape(-1, num_views, probs.shape[-1]).mean(dim=1)


class CVModule(pl.LightningModule):
    """Base class of cvinw LightningModules (see the module docstring).

    Args:
        data_info: linked by the CLI from the datamodule's ``info``.
        lr: base learning rate (see :meth:`base_lr`).
        weight_decay: AdamW decoupled weight decay of the parameters that decay.
        warmup_steps / warmup_epochs: linear warm-up length, added together (epochs converted with the steps per
            epoch); then half-cosine to ``min_lr_ratio`` x lr at the last step.
        min_lr_ratio: the final learning rate as a fraction of the base one.
        betas / eps: AdamW's.
    """

    #: metric that ModelCheckpoint monitors (and keeps the best of) unless the config says otherwise
    monitor: str = "val/loss"
    #: "min" or "max"
    monitor_mode: str = "min"
    #: the batch key whose first dimension is the batch size
    input_key: str = "image"
    #: parameter-name patterns without weight decay (see :data:`common.optim.NO_DECAY`), and whether 1-D tensors
    #: (biases, norms) are exempt too
    no_decay: tuple[str, ...] = NO_DECAY
    no_decay_1d: bool = True
    #: warm-up factor of the first step (None: ``1 / (W + 1)``, see :func:`common.optim.warmup_cosine`)
    warmup_start_factor: float | None = None

    def __init__(
        self,
        data_info: dict[str, Any] | None = None,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.data_info: dict[str, Any] = dict(data_info or {})
        self.last_loss_terms: dict[str, float] = {}
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.warmup_epochs, self.min_lr_ratio = warmup_steps, warmup_epochs, min_lr_ratio
        self.betas, self.eps = tuple(betas), eps
        self.effective_lr: float | None = None
        self.eval_metrics = nn.ModuleDict()

    # -- data info ---------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Re-read the datamodule's ``info`` (it is set up by now); call :meth:`on_data_info_changed` on a change."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        info = getattr(dm, "info", None)
        if isinstance(info, Mapping) and info:
            new = {**self.data_info, **dict(info)}
            if new != self.data_info:
                old, self.data_info = self.data_info, new
                self.on_data_info_changed(old, stage)

    def on_data_info_changed(self, old: dict[str, Any], stage: str) -> None:
        """Called by :meth:`setup` when the data's info (e.g. class names) differs from what the module had."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep ``data_info`` in the checkpoint (``checkpoint["data_info"]``), whatever the hyper-parameters keep."""
        checkpoint["data_info"] = dict(self.data_info)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take back the checkpoint's ``data_info`` keys that the datamodule did not give (predicting on a user's
        files: the class names and tasks the model was trained with); the datamodule's own values win."""
        saved = checkpoint.get("data_info") or (checkpoint.get("hyper_parameters") or {}).get("data_info") or {}
        missing = {k: v for k, v in dict(saved).items() if k not in self.data_info}
        if missing:
            old, self.data_info = self.data_info, {**self.data_info, **missing}
            self.on_data_info_changed(old, "checkpoint")

    # -- losses ------------------------------------------------------------------------------------------------------
    def log_losses(self, terms: Mapping[str, torch.Tensor], prefix: str = "train", **log_kwargs: Any) -> torch.Tensor:
        """Sum weighted loss ``terms``, log each one and the total, and remember them for the NaN guard."""
        if not terms:
            raise ValueError("log_losses() needs at least one loss term")
        total = torch.stack([t.float() for t in terms.values()]).sum()
        self.last_loss_terms = {k: float(v.detach()) for k, v in terms.items()}
        self.last_loss_terms["total"] = float(total.detach())
        opts: dict[str, Any] = {"on_step": prefix == "train", "on_epoch": True, "prog_bar": False}
        opts.update(log_kwargs)
        for name, value in terms.items():
            self.log(f"{prefix}/loss_{name}", value.detach(), **opts)
        self.log(f"{prefix}/loss", total.detach(), **{**opts, "prog_bar": True})
        return total

    def trainable_parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, each shared tensor counted once."""
        from common.peft.accounting import count_parameters

        return count_parameters(self, trainable_only=True), count_parameters(self)

    # -- evaluation --------------------------------------------------------------------------------------------------
    def batch_size_of(self, batch: Mapping[str, Any]) -> int:
        return int(batch[self.input_key].shape[0])

    def eval_step(self, batch: dict[str, Any], stage: str) -> None:
        """Update ``self.eval_metrics[stage]`` (and log per-batch values) for one non-empty batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement eval_step(batch, stage)")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.batch_size_of(batch):
            self.eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.batch_size_of(batch):
            self.eval_step(batch, "test")

    def compute_eval_metrics(self, stage: str) -> dict[str, float | torch.Tensor]:
        """Compute and reset the updated metrics of ``self.eval_metrics[stage]``: ``{"<stage>/<name>": value}``
        (a metric returning a dict gives ``<stage>/<name>/<key>``)."""
        values: dict[str, float | torch.Tensor] = {}
        if stage not in self.eval_metrics:
            return values
        for name, metric in self.eval_metrics[stage].items():
            if not metric.update_called:
                continue
            out = metric.compute()
            metric.reset()
            if isinstance(out, Mapping):
                values.update({f"{stage}/{name}/{k}": v for k, v in out.items()})
            else:
                values[f"{stage}/{name}"] = out
        return values

    def on_eval_epoch_end(self, stage: str, values: dict[str, Any]) -> None:
        """After the metrics are logged: pictures and other extras (default: nothing)."""

    # -- prediction files --------------------------------------------------------------------------------------------
    def configure_callbacks(self) -> list[pl.Callback]:
        """In ``predict``, for a module that writes predictions (overrides :meth:`write_prediction`): a
        :class:`common.callbacks.predict.PredictionWriter`, unless the trainer has a prediction writer already
        (Lightning merges these callbacks into the trainer's)."""
        from lightning.pytorch.callbacks import BasePredictionWriter

        trainer = self._trainer
        writes = type(self).write_prediction is not CVModule.write_prediction
        if trainer is None or trainer.state.fn != "predict" or not writes:
            return []
        if any(isinstance(cb, BasePredictionWriter) for cb in trainer.callbacks):
            return []
        from common.callbacks.predict import PredictionWriter

        return [PredictionWriter()]

    def write_prediction(self, outputs: Any, batch: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
        """Write the files of one predict batch (``outputs``: what :meth:`predict_step` returned) under ``out_dir``
        and return one row per sample for ``predictions.csv`` (``input``: the file, then what a user wants to read).
        Default: nothing written, no rows. Batches of the predict datamodules (:mod:`common.data.predict`) carry
        ``path`` and ``name`` (a unique file-name stem) per sample."""
        return []

    def _end_eval(self, stage: str) -> None:
        values = self.compute_eval_metrics(stage)
        for k, v in values.items():
            self.log(k, v, sync_dist=False)  # torchmetrics states are already reduced over ranks
        self.on_eval_epoch_end(stage, values)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def is_last_validation(self) -> bool:
        """True at the last validation of a fit, and at every validation outside fit."""
        if self.trainer.state.fn != "fit":
            return True
        return self.current_epoch + 1 >= (self.trainer.max_epochs or 0) or (
            self.trainer.max_steps > 0 and self.trainer.global_step >= self.trainer.max_steps)

    # -- optimisation ------------------------------------------------------------------------------------------------
    def base_lr(self) -> float:
        """The learning rate before multipliers and schedule (override e.g. to scale with the global batch)."""
        return float(self.lr)

    def lr_multiplier(self, name: str, param: nn.Parameter) -> float:
        """Learning-rate multiplier of one trainable parameter (default 1)."""
        return 1.0

    def schedule_steps(self) -> tuple[int, int]:
        """(total optimiser steps, warm-up steps) of this fit."""
        if self._trainer is None:
            return 1, int(self.warmup_steps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(self.warmup_steps)
        if self.warmup_epochs:
            epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
            batches = self.trainer.num_training_batches
            if epochs:
                per_epoch = total / epochs
            elif batches and batches != float("inf"):
                per_epoch = batches / self.trainer.accumulate_grad_batches
            else:
                raise ValueError(f"{type(self).__name__}: warmup_epochs needs trainer.max_epochs (or a sized "
                                 "training loader); give the warm-up in steps (warmup_steps) instead")
            warm += int(self.warmup_epochs * per_epoch)
        return total, warm

    def configure_optimizers(self) -> dict[str, Any]:
        lr = self.base_lr()
        self.effective_lr = lr
        opt = adamw(self.named_parameters(), lr, self.weight_decay, betas=self.betas, eps=self.eps,
                    no_decay=self.no_decay, no_decay_1d=self.no_decay_1d, lr_scale=self.lr_multiplier)
        total, warm = self.schedule_steps()
        sched = warmup_cosine(opt, total, warm, start_factor=self.warmup_start_factor,
                              min_lr_ratio=self.min_lr_ratio)
        rank_zero_info(f"[{type(self).__name__}] AdamW lr {lr:.3g}, weight decay {self.weight_decay:g}, "
                       f"{total} steps, warm-up {min(warm, total - 1)} steps")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _classification_metrics(num_classes: int) -> nn.ModuleDict:
    return nn.ModuleDict({
        "acc1": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, top_k=1, average="micro"),
        "acc5": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, top_k=min(5, num_classes),
                                      average="micro"),
        "mean_class_acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, average="macro"),
        "loss": torchmetrics.MeanMetric().set_dtype(torch.float64),
        "count": torchmetrics.SumMetric().set_dtype(torch.float64),
        "confusion": torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes),
    })


class ClassificationModule(CVModule):
    """Classification on top of :class:`CVModule`: a subclass implements :meth:`forward_logits` (one view,
    ``(B, ...) -> (B, K)``) and declares what trains.

    Training: :meth:`classification_loss` (cross-entropy with ``label_smoothing``) and ``train/acc1``.
    Evaluation batches may hold ``V`` views per sample (one more leading dimension than a single-view batch:
    ``view_ndim``); their softmax is averaged over the views, and ``<stage>/acc1``, ``acc5``, ``mean_class_acc``,
    ``loss`` (NLL of the averaged probabilities) and ``count`` are logged (DDP-exact torchmetrics). After the last
    validation of a fit, every validation outside fit and every test, the row-normalised confusion matrix goes to
    the MLflow run as ``confusion/<stage>_epoch<N>.png``. The number of classes follows ``data_info`` at every stage.
    """

    monitor = "val/acc1"
    monitor_mode = "max"
    #: dimensions of a single-view input batch (images (B, 3, H, W): 4; videos (B, T, 3, H, W): 5)
    view_ndim: int = 4

    def __init__(self, data_info: dict[str, Any] | None = None, *, num_classes: int | None = None,
                 label_smoothing: float = 0.0, **optim: Any) -> None:
        super().__init__(data_info, **optim)
        n = num_classes or self.data_info.get("num_classes")
        if not n:
            raise ValueError(f"{type(self).__name__}: num_classes unknown; run through the CLI with a datamodule "
                             "(linked data_info) or set model.init_args.num_classes (predicting on your own files "
                             "from a checkpoint that does not record it: give data.init_args.class_names)")
        self.num_classes = int(n)
        self.label_smoothing = label_smoothing
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=self.num_classes)
        self.eval_metrics = nn.ModuleDict({s: _classification_metrics(self.num_classes) for s in ("val", "test")})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also record the classifier's size where its hyper-parameters left ``num_classes`` to the data, so that
        the checkpoint rebuilds the model without a labelled datamodule (LightningCLI puts a checkpoint's
        hyper-parameters into the model's arguments: ``predict --ckpt_path`` on a user's files)."""
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict) and "num_classes" in hparams and not hparams["num_classes"]:
            hparams["num_classes"] = self.num_classes

    def on_data_info_changed(self, old: dict[str, Any], stage: str) -> None:
        n = int(self.data_info.get("num_classes") or self.num_classes)
        for s in ("val", "test"):
            if self.eval_metrics[s]["acc1"].num_classes != n:
                self.eval_metrics[s] = _classification_metrics(n).to(self.device)

    # -- model -------------------------------------------------------------------------------------------------------
    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """One view per sample -> ``(B, K)`` logits."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_logits(x)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Single-view batch -> logits; multi-view batch (one more dimension) -> view-averaged probabilities."""
        if x.ndim == self.view_ndim + 1:
            return average_view_softmax(self.forward_logits(x.flatten(0, 1)), x.shape[1])
        return self.forward_logits(x)

    def view_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation input, single- or multi-view -> ``(B, K)`` class probabilities."""
        if x.ndim == self.view_ndim:
            x = x.unsqueeze(1)
        if x.ndim != self.view_ndim + 1:
            raise ValueError(f"expected an evaluation batch with {self.view_ndim} or {self.view_ndim + 1} "
                             f"dimensions, got shape {tuple(x.shape)}")
        return self(x)

    # -- steps -------------------------------------------------------------------------------------------------------
    def classification_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss terms of a training batch (default: cross-entropy with label smoothing)."""
        return {"ce": F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        x, label = batch[self.input_key], batch["label"]
        if x.shape[0] == 0:  # every sample of the batch was unreadable (counted by the SkippedSamples callback)
            return None
        logits = self.forward_logits(x)
        terms = self.classification_loss(logits, batch)
        if label.ndim == 1:
            self.train_acc(logits.detach(), label)
            self.log("train/acc1", self.train_acc, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return self.log_losses(terms, batch_size=x.shape[0])

    def eval_step(self, batch: dict[str, Any], stage: str) -> None:
        probs = self.view_probabilities(batch[self.input_key])
        label = batch["label"]
        m = self.eval_metrics[stage]
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), label, reduction="none")
        for name in ("acc1", "acc5", "mean_class_acc", "confusion"):
            m[name].update(probs, label)
        m["loss"].update(nll.double())
        m["count"].update(torch.ones_like(nll, dtype=torch.float64).sum())

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        if not self.batch_size_of(batch):  # every input of the batch unreadable (counted and listed by the writer)
            return None
        probs = self.view_probabilities(batch[self.input_key])
        return {"probs": probs, "pred": probs.argmax(-1), "index": batch.get("index", torch.arange(len(probs)))}

    #: classes per row of ``predictions.csv``
    predict_top_k: int = 5

    def write_prediction(self, outputs: Any, batch: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
        """One row per input: ``input``, then ``top<i>_class`` / ``top<i>_prob`` for the ``predict_top_k`` most
        probable classes (names from ``data_info["class_names"]``, else the index), most probable first."""
        probs = outputs["probs"].float().cpu()
        names = list(self.data_info.get("class_names") or [])
        k = min(self.predict_top_k, probs.shape[-1])
        top_p, top_i = probs.topk(k, dim=-1)
        paths = batch.get("path") or [str(int(i)) for i in outputs["index"]]
        rows = []
        for path, ps, ids in zip(paths, top_p.tolist(), top_i.tolist()):
            row: dict[str, Any] = {"input": path}
            for rank, (p, c) in enumerate(zip(ps, ids), 1):
                row[f"top{rank}_class"] = names[c] if c < len(names) else str(c)
                row[f"top{rank}_prob"] = f"{p:.6f}"
            rows.append(row)
        return rows

    def compute_eval_metrics(self, stage: str) -> dict[str, Any]:
        confusion = self.eval_metrics[stage]["confusion"]
        self._confusion = confusion.compute() if confusion.update_called else None
        confusion.reset()
        return super().compute_eval_metrics(stage)

    def on_eval_epoch_end(self, stage: str, values: dict[str, Any]) -> None:
        matrix = getattr(self, "_confusion", None)
        if matrix is None or not (stage == "test" or self.is_last_validation()):
            return
        if self.trainer.is_global_zero:
            from common.figures import confusion_figure, log_figure

            names = list(self.data_info.get("class_names") or [])
            acc = float(matrix.diag().sum() / matrix.sum().clamp_min(1))
            title = f"{self.figure_title()} {stage} (epoch {self.current_epoch}), top-1 {100 * acc:.1f}%"
            log_figure(self.trainer, confusion_figure(matrix, names, title),
                       f"confusion/{stage}_epoch{self.current_epoch}.png")

    def figure_title(self) -> str:
        return type(self).__name__
