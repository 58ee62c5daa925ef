"""The ViFi-CLIP LightningModule: video classification by a (fine-tuned) CLIP against class-name prompts.

``method`` picks the row of the paper (:mod:`vificlip.model`): ``vificlip`` (both towers + logit scale),
``image_ft``, ``text_ft``, ``zero_shot`` (nothing trains: vanilla CLIP with bare class names) and ``prompting``
(bridge-and-prompt, :mod:`vificlip.prompts`: deep vision + text prompts on a frozen ViFi-CLIP loaded with
``init_from``).

Training follows the official recipe (``muzairkhattak/ViFi-CLIP`` ``main.py``, ``utils/optimizer.py``,
``utils/config.py``):

* AdamW, betas (0.9, 0.98), eps 1e-8, weight decay 0.001 on **every** trainable tensor (the official
  ``build_optimizer`` passes ``model.parameters()`` without groups);
* per-step schedule: linear warm-up over ``warmup_epochs`` (5), then cosine to ``lr / 100`` (``min_lr_ratio`` 0.01)
  (:func:`common.optim.warmup_cosine`; timm's scheduler starts the warm-up at exactly 0, ours one ramp step above);
* Mixup 0.8 / CutMix 1.0 (switch probability 0.5) on every training batch, label smoothing 0.1 in the soft targets,
  soft-target cross-entropy (:mod:`vificlip.mixup`); with ``mixup_alpha = cutmix_alpha = 0`` plain cross-entropy
  with ``label_smoothing``.

The class names come from the data at every stage (``data_info["class_names"]``, re-read by
:class:`common.module.CVModule` when a stage starts), so ``validate`` / ``test`` with another dataset's datamodule
(or the novel classes of a base-to-novel split) classify into that dataset's classes with no other switch.
Evaluation batches ``(B, V, T, 3, S, S)`` have their softmax averaged over the V views (``ClassificationModule``).

Gradient accumulation (``trainer.accumulate_grad_batches`` A > 1) with a training text tower: the class embeddings
are the same for every micro-batch of an optimiser step, so they are computed once, at its first micro-batch
(``text_once_per_step``, default on). The first A - 1 micro-batches score against a detached copy whose gradient
accumulates; the last scores against the embeddings with their graph and adds a zero-valued term whose gradient is
that accumulated gradient, so one backward pass through the text tower carries the whole step's gradient (exact:
the text tower has no dropout; under AMP the copy's gradient is already loss-scaled and the term is divided by the
scale; the last micro-batch's backward reaches every trainable tensor, as DDP's gradient sync expects).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from common.module import ClassificationModule
from vificlip.mixup import VideoMixup
from vificlip.model import METHODS, build_vificlip
from vificlip.prompts import PromptConfig

__all__ = ["ViFiCLIPModule"]


class ViFiCLIPModule(ClassificationModule):
    """ViFi-CLIP and its baselines (see the module docstring).

    Args:
        method: ``vificlip``, ``image_ft``, ``text_ft``, ``zero_shot`` or ``prompting``.
        arch: open_clip architecture (``ViT-B-16``) or ``shapes-clip-tiny``.
        pretrained: ``openai`` (open_clip downloads it; QuickGELU), ``shapes-clip-tiny`` (ShapesWorld-pretrained,
            cached), a local CLIP checkpoint, or None (random init, tests only).
        init_from: a ViFi-CLIP checkpoint (a ``.ckpt`` of this module, or a CLIP state dict) loaded over the CLIP
            weights: the frozen starting point of ``prompting``.
        templates: prompt templates; default ``["a photo of a {}."]`` (``zero_shot``: ``["{}"]``).
        n_ctx_vision, n_ctx_text, prompt_depth_vision, prompt_depth_text: the deep prompts of ``prompting``
            (base-to-novel 16 + 16 tokens, depth 9; few-shot 10 + 10, depth 12).
        train_token_embedding: also train the token-embedding table (the official code does not).
        grad_checkpointing: recompute blocks in the backward pass.
        short_text_context: the text pass on the shortest context holding the longest prompt instead of 77 tokens
            (same class embeddings; several times cheaper for short prompts).
        text_once_per_step: under gradient accumulation, one text pass per optimiser step instead of one per
            micro-batch (same gradients; see the module docstring).
        lr, weight_decay, warmup_epochs, min_lr_ratio, betas, eps: the optimiser and schedule (official values).
        mixup_alpha, cutmix_alpha, mixup_switch_prob: batch blending (0 and 0: off).
        label_smoothing: in the soft targets (or in the plain cross-entropy when blending is off).
        num_classes, data_info: linked by the CLI from the datamodule.
    """

    input_key = "video"
    view_ndim = 5
    #: the official optimiser decays every trainable tensor
    no_decay: tuple[str, ...] = ()
    no_decay_1d = False

    def __init__(
        self,
        method: Literal["vificlip", "image_ft", "text_ft", "zero_shot", "prompting"] = "vificlip",
        arch: str = "ViT-B-16",
        pretrained: str | None = "openai",
        init_from: str | None = None,
        templates: list[str] | None = None,
        n_ctx_vision: int = 16,
        n_ctx_text: int = 16,
        prompt_depth_vision: int = 9,
        prompt_depth_text: int = 9,
        train_token_embedding: bool = False,
        grad_checkpointing: bool = False,
        short_text_context: bool = True,
        text_once_per_step: bool = True,
        lr: float = 2.2e-5,
        weight_decay: float = 0.001,
        warmup_epochs: float = 5.0,
        min_lr_ratio: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mixup_switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        num_classes: int | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_info, num_classes=num_classes, label_smoothing=label_smoothing, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, min_lr_ratio=min_lr_ratio,
                         betas=betas, eps=eps)
        self.save_hyperparameters()
        if method not in METHODS:
            raise ValueError(f"vificlip: unknown method {method!r}; choose one of {METHODS}")
        prompts = None
        if method == "prompting":
            prompts = PromptConfig(n_ctx_vision, n_ctx_text, prompt_depth_vision, prompt_depth_text)
            if not init_from:
                rank_zero_warn("vificlip: prompting without init_from prompts the plain CLIP; the paper's bridge-and-"
                               "prompt starts from a K400 ViFi-CLIP (model.init_args.init_from: <its .ckpt>)")
        self.model = build_vificlip(arch, pretrained, self.class_names_from_data(), method, templates, prompts,
                                    init_from, train_token_embedding, grad_checkpointing, short_text_context)
        self.mixup = VideoMixup(self.num_classes, mixup_alpha, cutmix_alpha, mixup_switch_prob, label_smoothing)
        self.model.train()  # load_clip hands the CLIP over in eval mode; Lightning keeps a module's mode
        #: the class embeddings of the optimiser step in progress (graph, detached copy) and the text passes run
        self._step_text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._use_text: torch.Tensor | None = None
        self.text_passes = 0

    # -- classes -----------------------------------------------------------------------------------------------------
    def class_names_from_data(self) -> list[str]:
        names = list(self.data_info.get("class_names") or [])
        if not names:  # e.g. a module built by hand in a test: generic names of the right count
            names = [f"class {i}" for i in range(self.num_classes)]
        if len(names) != int(self.data_info.get("num_classes") or len(names)):
            raise ValueError(f"vificlip: {len(names)} class names for num_classes={self.data_info['num_classes']}")
        return names

    def on_data_info_changed(self, old: dict[str, Any], stage: str) -> None:
        """Another class list (another dataset, the novel split): the text classifier follows it."""
        super().on_data_info_changed(old, stage)
        names = self.class_names_from_data()
        if tuple(names) != self.model.class_names:
            self.model.set_class_names(names)

    # -- model -------------------------------------------------------------------------------------------------------
    def forward_logits(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S, S)`` -> ``(B, classes)`` scaled cosine logits."""
        if self._use_text is not None and self.training:
            return self.model(video, self._use_text)
        if self.training and not self.model.text_head.text_tower_frozen():
            self.text_passes += 1
        return self.model(video)

    def _accumulation(self) -> int:
        """The micro-batches of an optimiser step when the text pass is shared by them, else 1."""
        trainer = self._trainer
        if (not self.hparams.text_once_per_step or trainer is None or not self.training
                or self.model.text_head.text_tower_frozen()):
            return 1
        return int(trainer.accumulate_grad_batches)

    def on_train_epoch_start(self) -> None:
        self._step_text, self._use_text = None, None

    # -- training ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        """Blend the batch (Mixup / CutMix, soft label-smoothed targets) and train on it (class embeddings once per
        optimiser step under gradient accumulation, see the module docstring)."""
        video, label = batch[self.input_key], batch["label"]
        if self.mixup.enabled and video.shape[0] > 0:
            if self.model.text_head.num_classes != self.mixup.num_classes:
                self.mixup.num_classes = self.model.text_head.num_classes
            video, target = self.mixup(video, label)
            batch = {**batch, self.input_key: video, "label": target}
        accumulate = self._accumulation()
        if accumulate == 1:
            return super().training_step(batch, batch_idx)
        if self._step_text is None:  # the first micro-batch of the step: the one text pass
            emb = self.model.text_head.class_embeddings()
            self.text_passes += 1
            self._step_text = (emb, emb.detach().requires_grad_(True))
        graph, copy = self._step_text
        last = not self.trainer.fit_loop._should_accumulate()
        self._use_text = graph if last else copy
        try:
            loss = super().training_step(batch, batch_idx)
        finally:
            self._use_text = None
        if not last:
            return loss
        self._step_text = None
        if copy.grad is None:  # the step had one micro-batch
            return loss
        # the earlier micro-batches' gradient of the embeddings, through the one graph: value 0, gradient
        # copy.grad once Lightning has divided by A and the AMP scaler multiplied by its scale
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        term = (graph * copy.grad.to(graph.dtype)).sum()
        term = (term - term.detach()) * (accumulate / scale)
        return term if loss is None else loss + term

    def classification_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Soft-target cross-entropy for blended batches, else cross-entropy with label smoothing."""
        target = batch["label"]
        if target.ndim == 2:
            return {"ce": torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()}
        return super().classification_loss(logits, batch)

    def configure_optimizers(self) -> dict[str, Any]:
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError(f"vificlip: method {self.hparams.method!r} trains nothing; run `validate` or `test` "
                             "with it (python -m vificlip validate --config ...), not `fit`")
        return super().configure_optimizers()

    def figure_title(self) -> str:
        return str(self.hparams.method)
