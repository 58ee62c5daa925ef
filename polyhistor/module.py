"""The one LightningModule of the Polyhistor table: ``method`` picks the row.

``model: {class_path: polyhistor.module.PolyhistorModule, init_args: {method: polyhistor, ...}}``. The tasks, their
output channels and the image size come from the datamodule (``data_info``, linked by the CLI). Logs
``train/loss_<task>``, ``val/<task>/<metric>`` (semseg/human_parts ``mIoU``, sal ``mIoU`` and ``maxF``, normals
``mean``/``median``/``rmse``/``within_*``), ``val/loss`` and, when ``single_task_baseline`` is given,
``val/delta_m`` (same for ``test/``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

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
        generator_lr_scale: the hypernetwork rows' generator weights use ``lr`` times this. 1.0 (default): the
            papers' recipe, one learning rate for everything. ``"auto"``: this project's tiny-scale knob,
            ``sqrt(pi/2) / hyper_z``. Adam moves every weight of a linear generator by about ``lr`` per step, so a
            generated adapter weight moves by ``lr * ||c||_1`` (``c``: the LayerNorm-ed conditioning of width
            ``hyper_z``, ``E||c||_1 = hyper_z * sqrt(2/pi)``), about 51x faster than a directly learned adapter at
            z = 64; "auto" makes a full generator's (Hyperformer's) weights move at the plain adapter's rate.
            A low-rank pair's product ``L R^T`` then moves slower (about ``lr * rank * |factor|`` per factor step).
            The tiny configs use "auto", the paper configs the default.
        peft_lr_scale: the encoder-side PEFT weights (adapters, LoRA, prompts, BitFit deltas, hypernetworks; the
            generators then at ``peft_lr_scale * generator_lr_scale``) use ``lr`` times this; the decoders ``lr``.
            1.0 (default; every paper config): one learning rate, the papers' recipe. The tiny and smoke Adapter
            configs set 0.1, the LoRA configs 0.3 (polyhistor/README.md, "Training choices").
        single_task_baseline: ``{task: main metric}`` of single-task fine-tuning, for ``val/delta_m``.
        data_info: linked from the datamodule.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    #: weight decay on every trainable tensor of two or more dimensions (the rule of the landed tables)
    no_decay: tuple[str, ...] = ()
    no_decay_1d = True

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
        generator_lr_scale: float | Literal["auto"] = 1.0,
        peft_lr_scale: float = 1.0,
        single_task_baseline: dict[str, float] | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_info, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         warmup_epochs=warmup_epochs)
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
        self.backbone_lr_scale = backbone_lr_scale
        z = self.net.encoder.cfg.hyper_z
        self.generator_lr_scale = (math.sqrt(math.pi / 2) / z if generator_lr_scale == "auto"
                                   else float(generator_lr_scale))
        if peft_lr_scale <= 0:
            raise ValueError(f"peft_lr_scale must be > 0, got {peft_lr_scale}")
        self.peft_lr_scale = float(peft_lr_scale)
        self.eval_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({t: _task_metrics(t, outputs[t], self.ignore_index) for t in self.tasks})
            for stage in ("val", "test")})

    # ------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch["image"].shape[0] == 0:  # every sample unreadable (counted by the SkippedSamples callback)
            return None
        preds = self.net(batch["image"])
        terms = weighted_losses(preds, batch, self.loss_weights, self.ignore_index)
        return self.log_losses(terms, batch_size=batch["image"].shape[0])

    def eval_step(self, batch: dict[str, Any], stage: str) -> None:
        preds = self.net(batch["image"])
        terms = weighted_losses(preds, batch, self.loss_weights, self.ignore_index)
        bs = batch["image"].shape[0]
        self.log(f"{stage}/loss", torch.stack(list(terms.values())).sum(), on_epoch=True, batch_size=bs,
                 sync_dist=True)
        for t, p in preds.items():
            m = self.eval_metrics[stage][t]
            if t == "normals":
                m.update(p, batch["normals"], batch.get("normals_mask"))
            else:
                m.update(p, batch[t])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        if batch["image"].shape[0] == 0:  # every image unreadable (listed in skipped.csv by the writer)
            return None
        return self.net(batch["image"])

    def write_prediction(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any], out_dir: Path
                         ) -> list[dict[str, Any]]:
        """Per image, at the input file's size: ``<name>_<task>.png`` (semseg / human_parts: palette label maps whose
        pixel values are the class indices; sal: grey probability; normals: RGB, ``v = 255 (n + 1) / 2``) and
        ``<name>_overlay.png`` (the input beside each prediction); the row lists the files."""
        from common.data.pascal_readers import IMAGENET_MEAN, IMAGENET_STD, read_image
        from common.figures import dense_prediction_images, overlay_picture

        rows = []
        for i in range(batch["image"].shape[0]):
            if "path" in batch:  # a user's file (common.data.predict.ImageFiles): its own pixels and size
                source, name = batch["path"][i], batch["name"][i]
                image = read_image(source)
            else:  # a dataset split: the network's input, de-normalised
                source = name = str(batch["id"][i]) if "id" in batch else f"{int(batch['index'][i]):06d}"
                mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
                x = batch["image"][i].float().cpu() * std + mean
                image = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            pictures = dense_prediction_images({t: p[i] for t, p in outputs.items()}, image.shape[:2])
            row: dict[str, Any] = {"input": source}
            for task, picture in pictures.items():
                picture.save(out_dir / f"{name}_{task}.png")
                row[task] = f"{name}_{task}.png"
            overlay_picture(image, pictures).save(out_dir / f"{name}_overlay.png")
            row["overlay"] = f"{name}_overlay.png"
            rows.append(row)
        return rows

    def compute_eval_metrics(self, stage: str) -> dict[str, float]:
        """Every task's metrics (``<stage>/<task>/<metric>``) and, with a single-task baseline, ``<stage>/delta_m``."""
        values: dict[str, float] = {}
        main: dict[str, float] = {}
        for t, metric in self.eval_metrics[stage].items():
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

    # ------------------------------------------------------------------ optimisation
    def lr_multiplier(self, name: str, param: nn.Parameter) -> float:
        """The Swin's own weights at ``backbone_lr_scale``; the encoder-side PEFT weights at ``peft_lr_scale``
        (hypernetwork generators at ``peft_lr_scale * generator_lr_scale``); the decoders at 1."""
        enc = self.net.encoder
        if any(p is param for n, p in enc.swin.named_parameters() if ".deltas." not in n):
            return self.backbone_lr_scale
        if any(p is param for p in enc.generator_parameters()):
            return self.peft_lr_scale * self.generator_lr_scale
        if any(p is param for p in enc.parameters()):  # adapters, LoRA, prompts, BitFit deltas, hypernet rest
            return self.peft_lr_scale
        return 1.0
