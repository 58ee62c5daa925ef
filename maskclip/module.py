"""MaskCLIP as a Lightning module: frozen proposals -> mask class tokens (+ RMA) on a frozen CLIP -> panoptic PQ.

One module runs the three methods of the paper's comparison on the same proposals and class names
(``method``):

* ``maskclip``: mask class tokens with Relative Mask Attention; only RMA trains, with
  :class:`maskclip.losses.MaskCLIPCriterion` (Hungarian matching, class 2.0 / mask BCE 5.0 / dice 5.0, no-object
  weight 0), "other" appended as the no-object class in training only;
* ``no_rma``: mask class tokens only (nothing trains: ``validate`` / ``test``);
* ``crop_classify``: each proposal's masked crop through CLIP (:mod:`maskclip.crop_classify`; nothing trains).

The forward pass (:meth:`MaskCLIPModule.forward`): the batch's ``[0, 1]`` images are normalised with the proposal
network's statistics and run through it (frozen, eval mode) for ``(B, Q, H/4, W/4)`` mask logits; the images are
resized (bicubic) to CLIP's input size and CLIP-normalised, the mask logits resized (bilinear) to the same size, as
the official code does at 336 x 336.

Classes follow ``data_info`` (:class:`common.data.coco_panoptic.COCOPanopticDataModule`'s ``info``): training scores
the ``train_classes`` (the base classes with ``train_classes: base``) plus "other"; evaluation scores the
``eval_classes`` (all, or the novel ones) and the predictions' classes are mapped back to the dataset's contiguous
classes for :class:`common.metrics.panoptic.COCOPanopticQuality`. A different dataset at evaluation (another
``data`` section, or ``data.init_args.categories_file``) brings its own names: the text embeddings follow
(:meth:`CVModule.on_data_info_changed`). ``class_names`` replaces the names the text tower reads (same order and
count as the dataset's classes), e.g. synonyms, without touching the data.

Evaluation (``val`` / ``test``): panoptic assembly (:func:`maskclip.inference.panoptic_inference`) at the image's
original size -> PQ / SQ / RQ over all, things, stuff and the novel classes (``<stage>/pq``, ``pq_th``, ``pq_st``,
``pq_novel`` ...) and semantic mIoU from the semantic inference (``<stage>/miou``, classes present in the ground
truth or the prediction, as detectron2's evaluator); the first ``overlay_images`` images of the last validation
(and of every test) go to the MLflow run as ``panoptic/<stage>_epoch<N>_<k>.png`` (input | prediction | ground
truth).

Checkpoints keep only the trainable RMA weights when the frozen CLIP and proposals are rebuilt from a named source
(``clip_pretrained`` and ``proposals`` not None): a ViT-L/14@336 checkpoint is 23 MB instead of 1.7 GB.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from common.module import CVModule

__all__ = ["METHODS", "MaskCLIPModule"]

Method = Literal["maskclip", "no_rma", "crop_classify"]
METHODS: tuple[str, ...] = ("maskclip", "no_rma", "crop_classify")
_WHERE = "maskclip/module.py"


def _semantic_target(panoptic: torch.Tensor, segments: Sequence[dict[str, Any]]) -> torch.Tensor:
    """``(H, W)`` segment ids + ``segments_info`` (contiguous ``category_id``) -> class map, -1 where VOID."""
    out = torch.full(panoptic.shape, -1, dtype=torch.long, device=panoptic.device)
    for s in segments:
        out[panoptic == int(s["id"])] = int(s["category_id"])
    return out


class MaskCLIPModule(CVModule):
    """MaskCLIP on :class:`common.module.CVModule` (see the module docstring).

    Args:
        data_info: linked by the CLI from the datamodule's ``info``.
        method: ``maskclip`` | ``no_rma`` | ``crop_classify``.
        clip_arch / clip_pretrained: :func:`common.models.load_clip` (``ViT-L-14-336`` + ``openai`` or a local
            file at paper scale; ``shapes-clip-tiny`` for the tiny preset; ``None``: random weights).
        proposals: :func:`maskclip.proposals.load_proposal_network` (``shapes-mask2former-tiny``, a R50 checkpoint
            file, or ``None``: random-init tiny network).
        rma_blocks: 0-based ViT blocks with RMA (default every sixth block: 5, 11, 17, 23 at ViT-L/14).
        zero_init_refine / refine_chunk / grad_checkpointing: :class:`maskclip.mask_tokens.MaskTokenViT`.
        temperature: logits = cosine / temperature (0.01).
        no_object: the no-object class name appended in training ("other").
        class_weight / mask_weight / dice_weight / no_object_weight / num_points / oversample_ratio /
            importance_sample_ratio: :class:`maskclip.losses.MaskCLIPCriterion` (official COCO values).
        object_threshold / overlap_threshold: panoptic assembly (0.5 / 0.5 on COCO; object 0.3 on ADE20K).
        class_names: names the text tower reads instead of the dataset's (same count and order).
        crop_chunk: crops per CLIP pass for ``crop_classify``.
        overlay_images: images per evaluation drawn as overlays on the MLflow run.
        lr / weight_decay / warmup_steps / ...: :class:`common.module.CVModule` (official: AdamW 1e-4, 0.05, 10).
    """

    monitor = "val/pq"
    monitor_mode = "max"
    input_key = "images"

    def __init__(
        self,
        data_info: dict[str, Any] | None = None,
        *,
        method: Method = "maskclip",
        clip_arch: str = "shapes-clip-tiny",
        clip_pretrained: str | None = "shapes-clip-tiny",
        proposals: str | None = "shapes-mask2former-tiny",
        rma_blocks: list[int] | None = None,
        zero_init_refine: bool = False,
        refine_chunk: int | None = None,
        grad_checkpointing: bool = False,
        temperature: float = 0.01,
        no_object: str = "other",
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.0,
        num_points: int = 112 * 112,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        object_threshold: float = 0.5,
        overlap_threshold: float = 0.5,
        class_names: list[str] | None = None,
        crop_chunk: int = 32,
        overlay_images: int = 4,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        warmup_steps: int = 10,
        **optim: Any,
    ) -> None:
        super().__init__(data_info, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, **optim)
        if method not in METHODS:
            raise ValueError(f"{_WHERE}: method {method!r} is not one of {METHODS}")
        self.save_hyperparameters(ignore=["data_info"])
        from common.models import load_clip
        from maskclip.losses import MaskCLIPCriterion
        from maskclip.mask_tokens import MaskCLIP
        from maskclip.proposals import load_proposal_network

        self.method = method
        self.proposals = load_proposal_network(proposals)
        for p in self.proposals.parameters():
            p.requires_grad_(False)
        clip = load_clip(clip_arch, clip_pretrained)
        self.clip_preprocess = clip.preprocess
        names = self._names("train") or ["object"]
        self.model = MaskCLIP(clip.model, clip.tokenizer, names, temperature=temperature, no_object=no_object,
                              rma=method == "maskclip", rma_blocks=rma_blocks, zero_init_refine=zero_init_refine,
                              refine_chunk=refine_chunk, grad_checkpointing=grad_checkpointing)
        self._names_for: str | None = "train"
        self.criterion = MaskCLIPCriterion(class_weight=class_weight, mask_weight=mask_weight,
                                           dice_weight=dice_weight, no_object_weight=no_object_weight,
                                           num_points=num_points, oversample_ratio=oversample_ratio,
                                           importance_sample_ratio=importance_sample_ratio,
                                           num_masks_reduce=self._reduce_num_masks)
        self._build_metrics()
        self._overlays: list[dict[str, Any]] = []

    # -- classes -----------------------------------------------------------------------------------------------------
    def _all_names(self) -> list[str]:
        names = list(self.hparams.get("class_names") or self.data_info.get("class_names") or [])
        given = self.data_info.get("class_names")
        if self.hparams.get("class_names") and given and len(given) != len(names):
            raise ValueError(f"{_WHERE}: class_names has {len(names)} names, the data has {len(given)} classes "
                             f"({', '.join(given[:8])}...); give one name per class, in the data's order")
        return names

    def class_indices(self, which: str) -> list[int]:
        """The dataset's contiguous class indices scored in training (``train``) or evaluation (``eval``)."""
        names = self._all_names()
        key = "train_classes" if which == "train" else "eval_classes"
        idx = self.data_info.get(key)
        return list(range(len(names))) if idx is None else [int(i) for i in idx]

    def _names(self, which: str) -> list[str]:
        names = self._all_names()
        return [names[i] for i in self.class_indices(which)] if names else []

    def _use_names(self, which: str) -> None:
        """Point the text classifier at the training or evaluation class names (re-encoded only on a change)."""
        names = self._names(which)
        if not names:
            raise ValueError(f"{_WHERE}: no class names: run through the CLI with a panoptic datamodule (linked "
                             "data_info) or give model.init_args.class_names")
        if tuple(names) != tuple(self.model.text.class_names):
            self.model.set_class_names(names)
        self._names_for = which

    def on_data_info_changed(self, old: dict[str, Any], stage: str) -> None:
        self._build_metrics()
        self._names_for = None

    def _build_metrics(self) -> None:
        from common.metrics.dense import SemSegMIoU
        from common.metrics.panoptic import COCOPanopticQuality

        names = self._all_names()
        k = len(names)
        if not k:
            self.eval_metrics = nn.ModuleDict()
            return
        is_thing = list(self.data_info.get("is_thing") or [True] * k)
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        self.eval_metrics = nn.ModuleDict({s: nn.ModuleDict({
            "panoptic": COCOPanopticQuality(k, is_thing, names),
            "semantic": SemSegMIoU(k, ignore_index=-1, ignore_absent=True),
            "count": torchmetrics.SumMetric().set_dtype(torch.float64),
        }).to(device) for s in ("val", "test")})

    # -- model -------------------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> MaskCLIPModule:
        super().train(mode)
        self.proposals.eval()  # frozen
        return self

    def _reduce_num_masks(self, n: torch.Tensor) -> torch.Tensor:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(n)
            n = n / torch.distributed.get_world_size()
        return n

    def proposal_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images in [0, 1] -> ``(B, Q, H', W')`` proposal mask logits (frozen network)."""
        net = self.proposals
        mean = torch.as_tensor(net.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.as_tensor(net.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        scale = 255.0 if float(mean.max()) > 1.0 else 1.0  # detectron2 statistics are in 0..255
        with torch.no_grad():
            return net((images * scale - mean) / std).float()

    def clip_inputs(self, images: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images resized (bicubic) to CLIP's input and CLIP-normalised; mask logits resized (bilinear) to it."""
        size = int(self.clip_preprocess.image_size)
        x = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        m = F.interpolate(mask_logits, size=(size, size), mode="bilinear", align_corners=False)
        return self.clip_preprocess.normalize(x), m

    def forward(self, images: torch.Tensor, with_no_object: bool | None = None) -> dict[str, Any]:
        """``(B, 3, H, W)`` images in [0, 1] -> Mask2Former's output layout: ``pred_logits`` ``(B, Q, C[+1])``,
        ``pred_masks`` ``(B, Q, S, S)`` at CLIP's input size, ``aux_outputs``."""
        x, masks = self.clip_inputs(images, self.proposal_logits(images))
        if self.method != "crop_classify":
            return self.model(x, masks, with_no_object=with_no_object)
        from maskclip.crop_classify import crop_and_classify_embeddings

        emb = crop_and_classify_embeddings(self.model.clip.visual, x, masks, chunk=self.hparams.crop_chunk)
        logits = self.model.class_logits(emb, bool(with_no_object))
        return {"pred_logits": logits, "pred_masks": masks, "aux_outputs": []}

    # -- training ----------------------------------------------------------------------------------------------------
    def training_targets(self, targets: Sequence[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Dataset targets -> criterion targets: crowd segments dropped (as Mask2Former), labels as positions in
        the training class list (classes outside it dropped: VOID)."""
        pos = {c: i for i, c in enumerate(self.class_indices("train"))}
        out = []
        for t in targets:
            labels = t["labels"].tolist()
            crowd = t["iscrowd"].tolist() if "iscrowd" in t else [False] * len(labels)
            keep = [i for i, (c, cr) in enumerate(zip(labels, crowd)) if not cr and c in pos]
            masks = torch.as_tensor(t["masks"]).bool()
            out.append({"labels": torch.tensor([pos[labels[i]] for i in keep], dtype=torch.long, device=self.device),
                        "masks": masks[keep].to(self.device) if keep else masks[:0].to(self.device)})
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        images = batch["images"]
        if images.shape[0] == 0:  # every sample unreadable (counted by the SkippedSamples callback)
            return None
        if self.method != "maskclip":
            raise ValueError(f"{_WHERE}: method {self.method!r} trains nothing; run `validate` / `test`")
        self._use_names("train")
        out = self(images, with_no_object=True)
        losses = self.criterion(out, self.training_targets(batch["targets"]))
        losses.pop("loss")
        return self.log_losses({k.removeprefix("loss_"): v for k, v in losses.items()},
                               batch_size=images.shape[0])

    def configure_optimizers(self) -> dict[str, Any]:
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError(f"{_WHERE}: method {self.method!r} has nothing to train; run `validate` or `test` "
                             "with its config (python -m maskclip validate --config ...)")
        return super().configure_optimizers()

    # -- evaluation --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_panoptic(self, images: torch.Tensor, image_sizes: Sequence[Sequence[int]],
                         out_sizes: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
        """Padded ``[0, 1]`` images, their sizes before padding, the sizes to predict at -> per image
        ``{"panoptic": (H, W) int32 ids, "segments_info" (contiguous dataset classes), "semantic": (H, W) classes}``
        over the evaluation classes (images of one size run as one batch)."""
        if self._names_for != "eval":
            self._use_names("eval")
        classes = self.class_indices("eval")
        is_thing = list(self.data_info.get("is_thing") or [True] * len(self._all_names()))
        things = [p for p, c in enumerate(classes) if is_thing[c]]
        lut = torch.tensor(classes, dtype=torch.long, device=images.device)
        results: list[dict[str, Any] | None] = [None] * len(image_sizes)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(image_sizes):
            groups.setdefault((int(s[0]), int(s[1])), []).append(i)
        from maskclip.inference import panoptic_inference, semantic_inference

        for (h, w), idx in groups.items():
            out = self(images[idx, :, :h, :w], with_no_object=False)
            for j, i in enumerate(idx):
                oh, ow = (int(v) for v in out_sizes[i])
                masks = F.interpolate(out["pred_masks"][j:j + 1].float(), size=(oh, ow), mode="bilinear",
                                      align_corners=False)[0]
                cls = out["pred_logits"][j]
                ids, segs = panoptic_inference(cls, masks, things, object_threshold=self.hparams.object_threshold,
                                               overlap_threshold=self.hparams.overlap_threshold)
                for s in segs:
                    s["category_id"] = classes[s["category_id"]]
                semantic = lut[semantic_inference(cls, masks).argmax(0)]
                results[i] = {"panoptic": ids, "segments_info": segs, "semantic": semantic}
        return results  # type: ignore[return-value]

    def eval_step(self, batch: dict[str, Any], stage: str) -> None:
        targets = batch["targets"]
        preds = self.predict_panoptic(batch["images"], batch["image_sizes"], [t["orig_size"] for t in targets])
        m = self.eval_metrics[stage]
        m["panoptic"].update(preds, targets)
        for p, t in zip(preds, targets):
            m["semantic"].update(p["semantic"], _semantic_target(torch.as_tensor(t["panoptic"]).to(self.device),
                                                                  t["segments_info"]))
        m["count"].update(torch.tensor(float(len(preds)), dtype=torch.float64))
        want = self.hparams.overlay_images
        if len(self._overlays) < want and (stage == "test" or self.is_last_validation()) \
                and self.trainer.is_global_zero:
            for i, (p, t) in enumerate(zip(preds, targets)):
                if len(self._overlays) >= want:
                    break
                self._overlays.append({"image": self._display_image(batch, i, t), "pred": p, "target": t})

    def _display_image(self, batch: dict[str, Any], i: int, target: dict[str, Any]) -> np.ndarray:
        h, w = (int(v) for v in batch["image_sizes"][i])
        x = batch["images"][i, :, :h, :w].float()[None]
        oh, ow = (int(v) for v in target["orig_size"])
        if (h, w) != (oh, ow):
            x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
        return (x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    def compute_eval_metrics(self, stage: str) -> dict[str, float]:
        """``<stage>/pq sq rq`` (all), ``pq_th sq_th rq_th``, ``pq_st sq_st rq_st``, ``pq_novel sq_novel rq_novel``
        (mean over the counted novel classes; NaN without any), ``miou`` (semantic inference) and
        ``miou_panoptic`` (from the panoptic segments), ``count``."""
        if stage not in self.eval_metrics:
            return {}
        m = self.eval_metrics[stage]
        if not m["panoptic"].update_called:
            return {}
        summary = m["panoptic"].summary()
        values: dict[str, float] = {}
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for key in ("pq", "sq", "rq"):
                values[f"{stage}/{key}{suffix}"] = float(summary[group][key])
        novel = set(int(i) for i in self.data_info.get("novel_classes") or [])
        rows = [r for r in summary["per_class"] if r["class"] in novel and r["counted"]]
        for key in ("pq", "sq", "rq"):
            values[f"{stage}/{key}_novel"] = float(np.mean([r[key] for r in rows])) if rows else float("nan")
        values[f"{stage}/miou_panoptic"] = float(summary["miou"])
        values[f"{stage}/miou"] = float(m["semantic"].compute())
        values[f"{stage}/count"] = float(m["count"].compute())
        for metric in m.values():
            metric.reset()
        return values

    def on_eval_epoch_end(self, stage: str, values: dict[str, Any]) -> None:
        overlays, self._overlays = self._overlays, []
        if not overlays or not self.trainer.is_global_zero:
            return
        from maskclip.visualize import overlay

        names = self._all_names()
        for k, o in enumerate(overlays):
            t = o["target"]
            pic = overlay(o["image"], {"prediction": (o["pred"]["panoptic"].cpu().numpy(), o["pred"]["segments_info"]),
                                       "ground truth": (torch.as_tensor(t["panoptic"]).cpu().numpy(),
                                                        t["segments_info"])}, names)
            log_image(self.trainer, pic, f"panoptic/{stage}_epoch{self.current_epoch}_{k}.png")

    # -- predictions on a user's files -------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]] | None:
        images = batch.get("images", batch.get("image"))
        if images is None or images.shape[0] == 0:
            return None
        sizes = batch.get("image_sizes") or [tuple(images.shape[-2:])] * images.shape[0]
        out_sizes = batch["size"].tolist() if "size" in batch else sizes
        return self.predict_panoptic(images, sizes, out_sizes)

    def write_prediction(self, outputs: Any, batch: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
        """Per image: ``<name>_panoptic.png`` (COCO format), ``<name>_segments.json``, ``<name>_overlay.png``."""
        from PIL import Image

        from maskclip.visualize import write_panoptic_files

        names = self._all_names()
        rows = []
        for i, pred in enumerate(outputs or []):
            source = batch["path"][i] if "path" in batch else str(i)
            name = batch["name"][i] if "name" in batch else f"{batch_idx_name(batch, i)}"
            if "path" in batch:
                with Image.open(source) as im:
                    image = np.asarray(im.convert("RGB"))
            else:
                image = self._display_image(batch, i, {"orig_size": tuple(pred["panoptic"].shape)})
            rows.append(write_panoptic_files(out_dir, name, image, pred["panoptic"], pred["segments_info"], names,
                                             source))
        return rows

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def _frozen_rebuilt(self) -> bool:
        return self.hparams.clip_pretrained is not None and self.hparams.proposals is not None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep ``data_info``; drop the frozen CLIP and proposal weights when they are rebuilt from their source."""
        super().on_save_checkpoint(checkpoint)
        if self._frozen_rebuilt():
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
            checkpoint["frozen_weights_dropped"] = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Load a checkpoint without the frozen weights (they were rebuilt): every trainable weight must be there."""
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("frozen_weights_dropped"):
            state = checkpoint["state_dict"]
            missing = [n for n, p in self.named_parameters() if p.requires_grad and n not in state]
            if missing:
                raise RuntimeError(f"{_WHERE}: the checkpoint lacks trainable weights {missing[:4]}; it was written "
                                   f"by another MaskCLIP configuration (method / rma_blocks)")
            own = self.state_dict()
            checkpoint["state_dict"] = {**own, **state}


def batch_idx_name(batch: dict[str, Any], i: int) -> str:
    """A file-name stem for sample ``i`` of a dataset batch (its image file's stem, else its position)."""
    targets = batch.get("targets")
    if targets and i < len(targets) and targets[i].get("file_name"):
        return Path(str(targets[i]["file_name"])).stem
    return f"{i:06d}"


def log_image(trainer: Any, image: Any, artifact_file: str) -> bool:
    """Upload a PIL image to every MLflow logger of ``trainer`` (rank 0); a store problem is reported, never
    raised (a picture must not end a run)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_info

    loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)] if trainer.is_global_zero else []
    try:
        for lg in loggers:
            lg.experiment.log_image(lg.run_id, image, artifact_file=artifact_file)
    except Exception as err:  # noqa: BLE001 - see docstring
        rank_zero_info(f"[maskclip] could not upload {artifact_file}: {err}")
        return False
    return bool(loggers)
