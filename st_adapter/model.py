"""ST-Adapter inserted into open_clip's ``VisionTransformer``, run over the frames of a clip (plain PyTorch).

:class:`VideoViT` keeps open_clip's vision tower untouched (its parameters keep their names under ``backbone.``) and
runs its blocks through :mod:`common.models.clip_vit` (frames batched, batch-first attention through
``scaled_dot_product_attention``), with an :class:`~st_adapter.adapter.STAdapter` as the hook before attention
and/or before the MLP of the chosen blocks::

    frames (B*T) -> conv1 + [CLS] + pos + ln_pre -> for each block: [adapter] x += attn(ln_1 x); [adapter] x += mlp(ln_2 x)
    -> CLS of every frame -> mean over T -> ln_post (the backbone's) -> Dropout(0.5) -> Linear(width, classes)

That is the official head (``models_adapter.py``): the class token after the last block, averaged over frames, the
frozen ``ln_post``, dropout 0.5 and a linear classifier on the ViT width (768 at ViT-B/16; CLIP's projection is not
used), weight ``N(0, 0.02)``, bias 0.

The three methods of the paper's comparison share this model (:func:`build_video_vit`):

* ``st_adapter``: frozen backbone (optionally held in fp16/bf16, as the official code holds it in fp16) + adapters
  + head trainable;
* ``linear_probe``: frozen backbone, no adapters, the same frame-mean head (the per-frame features are mean-pooled,
  so frame order is invisible to it);
* ``full_finetune``: every backbone parameter trainable (fp32), no adapters, the same head.

No Lightning, no I/O beyond :func:`common.models.load_clip` (the project's one way to get a CLIP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from common.models import clip_vit
from common.peft.accounting import count_parameters
from st_adapter.adapter import POSITIONS, AdapterPlacement, STAdapter

__all__ = [
    "METHODS",
    "DTYPES",
    "VideoViT",
    "build_video_vit",
    "average_view_softmax",  # noqa: F822 (common.module's, re-exported by __getattr__)
    "load_visual",
]

Method = Literal["st_adapter", "linear_probe", "full_finetune"]
METHODS: tuple[str, ...] = ("st_adapter", "linear_probe", "full_finetune")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _check_visual(visual: nn.Module) -> None:
    clip_vit.check_vit(visual, where="st_adapter/model.py: VideoViT")
    if not isinstance(getattr(visual, "patch_dropout", nn.Identity()), nn.Identity):
        raise ValueError("st_adapter/model.py: patch dropout changes the token grid the adapters need; "
                         "build the CLIP with patch_dropout=0")


class VideoViT(nn.Module):
    """An open_clip vision tower over video clips, with optional ST-Adapters and the frame-mean linear head.

    Args:
        visual: open_clip ``VisionTransformer`` (e.g. ``load_clip("ViT-B-16", "openai").model.visual``).
        num_classes: classifier outputs.
        placement: where the adapters go (None: no adapters).
        freeze_backbone: freeze every backbone parameter (ST-Adapter, linear probe) or train them (full fine-tuning).
        backbone_dtype: dtype the (frozen) backbone is held in; fp16/bf16 halve its memory (the official code uses
            fp16). Adapters and head stay fp32. A trainable backbone must be fp32.
        dropout: dropout before the classifier (0.5 in the paper).
        head_init_std: std of the classifier's normal weight init (0.02).
        grad_checkpointing: recompute each block in the backward pass (less memory, ~30% more time).
    """

    def __init__(
        self,
        visual: nn.Module,
        num_classes: int,
        placement: AdapterPlacement | None = None,
        freeze_backbone: bool = True,
        backbone_dtype: torch.dtype = torch.float32,
        dropout: float = 0.5,
        head_init_std: float = 0.02,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _check_visual(visual)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not freeze_backbone and backbone_dtype != torch.float32:
            raise ValueError("a trainable backbone must be held in fp32 (use trainer.precision for mixed precision); "
                             f"got backbone_dtype={backbone_dtype}")
        self.backbone = visual
        self.width = int(visual.class_embedding.shape[-1])
        self.depth = len(visual.transformer.resblocks)
        self.grid = tuple(int(g) for g in getattr(visual, "grid_size", ()) or ()) or None
        self.placement = placement
        self.freeze_backbone = freeze_backbone
        self.grad_checkpointing = grad_checkpointing
        self.backbone.requires_grad_(not freeze_backbone)
        if getattr(visual, "proj", None) is not None:
            visual.proj.requires_grad_(False)  # CLIP's projection is not used by the video head
        if freeze_backbone:
            self.backbone.to(backbone_dtype)
        self.adapters = nn.ModuleDict()
        self._slots: dict[tuple[int, str], str] = {}
        if placement is not None:
            for i in placement.block_indices(self.depth):
                for pos in placement.positions:
                    key = f"{i}_{pos}"
                    self.adapters[key] = STAdapter(self.width, placement.width, placement.kernel_size,
                                                   placement.activation)
                    self._slots[(i, pos)] = key
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.width, num_classes)
        nn.init.normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> VideoViT:
        """A frozen backbone always stays in eval mode (CLIP has no dropout or batch norm, so this changes no
        result; it lets torch use the fused inference attention where no gradient flows)."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    @property
    def backbone_dtype(self) -> torch.dtype:
        return self.backbone.conv1.weight.dtype

    def adapter(self, block: int, position: str) -> STAdapter | None:
        """The adapter at ``(block, position)``, or None."""
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
        key = self._slots.get((block, position))
        return None if key is None else self.adapters[key]  # type: ignore[return-value]

    # -- forward ---------------------------------------------------------------------------------------------------
    def _hooks(self) -> dict[str, dict[int, clip_vit.Hook]]:
        """The adapters as :mod:`common.models.clip_vit` hooks: ``{"pre_attn": {block: hook}, "pre_mlp": {...}}``."""
        hooks: dict[str, dict[int, clip_vit.Hook]] = {pos: {} for pos in POSITIONS}
        for (i, pos), key in self._slots.items():
            ad = self.adapters[key]
            hooks[pos][i] = lambda x, layout, ad=ad: ad(x, layout.num_frames, layout.grid)
        return hooks

    def forward_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> tokens after the last block, ``(B*T, 1 + H'W', width)`` (before ``ln_post``)."""
        if video.ndim != 5:
            raise ValueError(f"expected a video batch (B, T, 3, H, W), got shape {tuple(video.shape)}")
        x, layout = clip_vit.embed(self.backbone, video)
        hooks = self._hooks()
        return clip_vit.run_blocks(self.backbone, x, layout, pre_attn=hooks["pre_attn"], pre_mlp=hooks["pre_mlp"],
                                   grad_checkpointing=self.grad_checkpointing and self.training)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> ``(B, width)``: per-frame CLS, mean over T, ``ln_post``."""
        b, t = video.shape[:2]
        x = self.forward_tokens(video)
        cls = x[:, 0].reshape(b, t, -1).mean(dim=1)
        return self.backbone.ln_post(cls)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> logits ``(B, num_classes)`` (fp32)."""
        feats = self.forward_features(video)
        return self.head(self.dropout(feats.to(self.head.weight.dtype)))

    # -- parameter groups ------------------------------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters split into adapters / head / backbone, and the total of the model."""
        return {"adapters": count_parameters(self.adapters, trainable_only=True),
                "head": count_parameters(self.head, trainable_only=True),
                "backbone": count_parameters(self.backbone, trainable_only=True),
                "total": count_parameters(self)}


def __getattr__(name: str):
    """``average_view_softmax`` is :func:`common.module.average_view_softmax` (softmax per view, then the mean: the
    official multi-view evaluation), re-exported lazily: ``common.module`` imports Lightning, this file does not."""
    if name == "average_view_softmax":
        from common.module import average_view_softmax

        return average_view_softmax
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_visual(arch: str, pretrained: str | None, device: str | torch.device = "cpu") -> nn.Module:
    """The vision tower of an open_clip CLIP through :func:`common.models.load_clip` (text tower discarded).

    ``pretrained``: None (random), ``shapes-clip-tiny`` (the ShapesWorld-pretrained tiny CLIP), an open_clip tag
    (``openai``: downloads) or a local checkpoint path. ``device="meta"`` builds without allocating (for counting).
    """
    from common.models import load_clip

    if str(device) == "meta":
        with torch.device("meta"):
            model = load_clip(arch, pretrained, device="meta").model
    else:
        model = load_clip(arch, pretrained, device=device).model
    visual = model.visual
    del model
    return visual


def build_video_vit(
    arch: str = "ViT-B-16",
    pretrained: str | None = None,
    num_classes: int = 400,
    method: str = "st_adapter",
    adapter_width: int = 384,
    adapter_positions: Sequence[str] = ("pre_mlp",),
    adapter_blocks: int | Sequence[int] | None = None,
    adapter_kernel_size: Sequence[int] = (3, 1, 1),
    adapter_activation: str | None = None,
    backbone_dtype: str = "fp32",
    dropout: float = 0.5,
    head_init_std: float = 0.02,
    grad_checkpointing: bool = False,
    device: str | torch.device = "cpu",
) -> VideoViT:
    """A :class:`VideoViT` for one of :data:`METHODS` (see the module docstring); the arguments mirror the config."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if backbone_dtype not in DTYPES:
        raise ValueError(f"backbone_dtype must be one of {sorted(DTYPES)}, got {backbone_dtype!r}")
    placement = None
    if method == "st_adapter":
        blocks = adapter_blocks if adapter_blocks is None or isinstance(adapter_blocks, int) else tuple(adapter_blocks)
        placement = AdapterPlacement(width=adapter_width, positions=tuple(adapter_positions), blocks=blocks,
                                     kernel_size=tuple(adapter_kernel_size), activation=adapter_activation)
    dtype = DTYPES[backbone_dtype] if method != "full_finetune" else torch.float32
    visual = load_visual(arch, pretrained, device)
    if str(device) == "meta":
        with torch.device("meta"):
            return VideoViT(visual, num_classes, placement, method != "full_finetune", dtype, dropout,
                            head_init_std, grad_checkpointing)
    return VideoViT(visual, num_classes, placement, method != "full_finetune", dtype, dropout, head_init_std,
                    grad_checkpointing)
