"""The one LightningModule of the Polyhistor table: ``method`` picks the row.

``model: {class_path: polyhistor.module.PolyhistorModule, init_args: {method: polyhistor, ...}}``. The tasks, their
output channels and the image size come from the datamodule (``data_info``, linked by the CLI). Logs
``train/loss_<task>``, ``val/<task>/<metric>`` (semseg/human_parts ``mIoU``, sal ``mIoU`` and ``maxF``, normals
``mean``/``median``/``rmse``/``within_*``), ``val/loss`` and, when ``single_task_baseline`` is given,
``val/delta_m`` (same for ``test/``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from common.metrics.dense import NormalsMetrics, SaliencyMetrics, SemSegMIoU, delta_m
from common.module import CVModule
from polyhistor.encoder import PeftConfig
from polyhistor.losses import DEFAULT_WEIGHTS, weighted_losses
from polyhistor.methods import method_spec
from polyhistor.network import PASCAL_OUTPUTS, MultiTaskDenseNet, build_network

#: the metric of each task that enters the table and Δm (normals: lower is better)
MAIN_METRIC: dict[str, str] = {"semseg": "mIoU", "human_parts": "mIoU", "sal": "mIoU", "normals": "mean"}
LOWER_IS_BETTER = ("normals",)


def build_backbone(name: str, pretrained: str | bool | None, kwargs: dict[str, Any]) -> nn.Module:
    """A timm Swin without classifier: the project's tiny ones and any timm name via common.models.build_timm."""
    from common.models import build_timm

    return build_timm(name, pretrained, num_classes=0, **kwargs)


def _task_metrics(task: str, num_classes: int, ignore_index: int) -> nn.Module:
    if task == "semseg":
        return SemSegMIoU(num_classes, ignore_index, ignore_absent=True)
    if task == "human_parts":
        return SemSegMIoU(num_classes, ignore_index, foreground_images_only=True, ignore_absent=True)
    if task == "sal":
        return SaliencyMetrics(ignore_index=ignore_index, from_logits=True)
    if task == "normals":
        return NormalsMetrics()
    raise ValueError(f"no metric for task {task!r} (polyhistor/module.py)")


class PolyhistorModule(CVModule):
    """Multi-task dense prediction on a shared Swin with the PEFT method of one table row.

    Args:
        method: the row (``polyhistor.methods.METHODS``): single_task, decoders_only, mtl_full_ft, adapter, bitfit,
            vpt_shallow, vpt_deep, compacter, compacter_pp, lora, vl_adapter, hyperformer, polyhistor,
            polyhistor_lite.
        tasks: tasks to train (default: the datamodule's). ``single_task`` needs exactly one.
        backbone / pretrained / backbone_kwargs: the Swin (``common.models.build_timm``): ``shapes-swin-tiny`` with
            its ShapesWorld weights, or e.g. ``swin_tiny_patch4_window7_224`` with ``timm`` / a checkpoint path.
            ``img_size`` defaults to the data's image size.
        peft: shapes of the PEFT methods (:class:`polyhistor.encoder.PeftConfig`).
        decoder_embed_dim / decoder_dropout: the SegFormer decoders.
        loss_weights: per-task loss weights (default semseg 1, human_parts 2, sal 5, normals 10).
        lr / weight_decay / warmup_steps / warmup_epochs: AdamW, linear warm-up (steps + epochs) then cosine decay
            to 0, stepped per optimiser step.
        backbone_lr_scale: the Swin's own weights (trained by the full fine-tuning rows) use ``lr`` times this.
        generator_lr_scale: the hypernetwork rows' generator weights use ``lr`` times this. None (default):
            ``sqrt(pi/2) / hyper_z``. Adam moves every weight of a linear generator by about ``lr`` per step, so a
            generated adapter weight moves by ``lr * ||c||_1`` (``c``: the LayerNorm-ed conditioning of width
            ``hyper_z``, ``E||c||_1 = hyper_z * sqrt(2/pi)``), about 26x faster than a directly learned adapter at
            z = 32; the default makes a full generator's (Hyperformer's) weights move at the plain adapter's rate.
            A low-rank pair's product ``L R^T`` then moves slower (about ``lr * rank * |factor|`` per factor step:
            2-5x slower at the tiny preset's rank 2); doubling the scale for Polyhistor there gave no clear gain
            (measured), so one rule serves all three rows. 1.0 turns it off.
        single_task_baseline: ``{task: main metric}`` of single-task fine-tuning, for ``val/delta_m``.
        data_info: linked from the datamodule.
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        method: str = "polyhistor",
        tasks: list[str] | None = None,
        backbone: str = "shapes-swin-tiny",
        pretrained: str | bool | None = "shapes-swin-tiny",
        backbone_kwargs: dict[str, Any] | None = None,
        peft: PeftConfig | None = None,
        decoder_embed_dim: int = 256,
        decoder_dropout: float = 0.1,
        loss_weights: dict[str, float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        backbone_lr_scale: float = 1.0,
        generator_lr_scale: float | None = None,
        single_task_baseline: dict[str, float] | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_info)
        self.save_hyperparameters(ignore=["data_info"])
        self.spec = method_spec(method)
        info = self.data_info
        self.tasks = list(tasks or info.get("tasks") or PASCAL_OUTPUTS)
        if self.spec.single_task and len(self.tasks) != 1:
            raise ValueError(f"method single_task trains one task per run; got tasks {self.tasks}: set "
                             "model.init_args.tasks (and data.init_args.tasks) to one task")
        outputs = {**PASCAL_OUTPUTS, **dict(info.get("num_classes") or {})}
        self.ignore_index = int(info.get("ignore_index", 255))
        kwargs = dict(backbone_kwargs or {})
        if "img_size" not in kwargs and info.get("image_size"):
            kwargs["img_size"] = tuple(int(s) for s in info["image_size"])
        swin = build_backbone(backbone, pretrained, kwargs)
        self.net: MultiTaskDenseNet = build_network(swin, method, self.tasks, outputs, peft, decoder_embed_dim,
                                                    decoder_dropout)
        self.loss_weights = {**DEFAULT_WEIGHTS, **(loss_weights or {})}
        self.baseline = dict(single_task_baseline or {})
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.warmup_epochs = warmup_steps, warmup_epochs
        self.backbone_lr_scale = backbone_lr_scale
        z = self.net.encoder.cfg.hyper_z
        self.generator_lr_scale = math.sqrt(math.pi / 2) / z if generator_lr_scale is None else generator_lr_scale
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({t: _task_metrics(t, outputs[t], self.ignore_index) for t in self.tasks})
            for stage in ("val", "test")})

    # ------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._log_skipped(batch, "train")
        if batch["image"].shape[0] == 0:
            return None
        preds = self.net(batch["image"])
        terms = weighted_losses(preds, batch, self.loss_weights, self.ignore_index)
        return self.log_losses(terms, batch_size=batch["image"].shape[0])

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        self._log_skipped(batch, stage)
        if batch["image"].shape[0] == 0:
            return
        preds = self.net(batch["image"])
        terms = weighted_losses(preds, batch, self.loss_weights, self.ignore_index)
        bs = batch["image"].shape[0]
        self.log(f"{stage}/loss", torch.stack(list(terms.values())).sum(), on_epoch=True, batch_size=bs,
                 sync_dist=True)
        for t, p in preds.items():
            m = self.metrics[stage][t]
            if t == "normals":
                m.update(p, batch["normals"], batch.get("normals_mask"))
            else:
                m.update(p, batch[t])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.net(batch["image"])

    def _log_skipped(self, batch: dict[str, Any], stage: str) -> None:
        if "skipped" in batch:
            self.log(f"data/skipped_{stage}", batch["skipped"].float(), reduce_fx="sum", on_step=False,
                     on_epoch=True, batch_size=1, sync_dist=True)

    # ------------------------------------------------------------------ epoch ends
    def _compute(self, stage: str) -> dict[str, float]:
        values: dict[str, float] = {}
        main: dict[str, float] = {}
        for t, metric in self.metrics[stage].items():
            out = metric.compute()
            out = out if isinstance(out, dict) else {"mIoU": out}
            for k, v in out.items():
                values[f"{stage}/{t}/{k}"] = float(v)
            main[t] = float(out[MAIN_METRIC[t]])
            metric.reset()
        usable = {t: v for t, v in main.items() if t in self.baseline and math.isfinite(v)}
        if usable:
            values[f"{stage}/delta_m"] = delta_m(usable, self.baseline, LOWER_IS_BETTER)
        return values

    def on_validation_epoch_end(self) -> None:
        for k, v in self._compute("val").items():
            self.log(k, v, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        for k, v in self._compute("test").items():
            self.log(k, v, sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        backbone = {id(p) for n, p in self.net.encoder.swin.named_parameters() if ".deltas." not in n}
        generators = {id(p) for p in self.net.encoder.generator_parameters()}
        scale = {"backbone": self.backbone_lr_scale, "generator": self.generator_lr_scale, "other": 1.0}
        groups: dict[tuple[bool, str], list[nn.Parameter]] = {}
        for p in self.parameters():
            if p.requires_grad:
                kind = "backbone" if id(p) in backbone else "generator" if id(p) in generators else "other"
                groups.setdefault((p.ndim >= 2, kind), []).append(p)
        opt = torch.optim.AdamW(
            [{"params": ps, "weight_decay": self.weight_decay if decay else 0.0, "lr": self.lr * scale[kind]}
             for (decay, kind), ps in groups.items()], lr=self.lr)
        total, warm = 1, self.warmup_steps
        if self._trainer is not None:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            epochs = self.trainer.max_epochs
            if self.warmup_epochs and epochs and epochs > 0:
                warm += int(self.warmup_epochs * total / epochs)
        warm = min(warm, total - 1)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
