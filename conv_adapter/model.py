"""Conv-Adapter on a timm backbone, its four placements and the baselines of the paper on the same model.

:class:`ConvAdapterNet` holds a timm backbone built without its classifier, the PEFT modules attached to it through
:func:`common.peft.inject.inject` (forward hooks: the backbone's state-dict keys stay the pretrained ones), and the
official head: ``Dropout(0.2) -> Linear(num_features, num_classes)``, weight ``U(-1/sqrt(d), 1/sqrt(d))``, bias 0::

    image -> backbone.forward_features [-> extra BatchNorm2d (ResNet)] -> backbone pooling (+ its head norm) -> head

Methods (``METHODS``):

=====================  ==========================================================================================
``conv_parallel``      Convolution Parallel (the official code's only placement): ``h_out + alpha * adapter(h_in)``
                       around the block's spatial conv - ResNet: the 3x3 conv (Bottleneck ``conv2``, BasicBlock
                       ``conv1``, BiT ``conv2``), stride of that conv; ConvNeXt: the 7x7 depthwise conv, plus (as the
                       official ConvNeXt) a k=2, stride-2 adapter parallel to each downsampling conv of stages 2-4;
                       Swin: ``norm1(x)`` on the (B, H, W, C) grid, added to the residual stream after the attention,
                       before the MLP (insertion point ``attn_grid``)
``conv_sequential``    Convolution Sequential: ``h -> h + alpha * adapter(h)`` after the same conv (stride 1)
``residual_parallel``  Residual Parallel: the adapter spans the whole residual block, ``out + adapter(block input)``
                       at the block's stride, ``C_in -> C_out`` (insertion point ``block``)
``residual_sequential``  Residual Sequential: ``out -> out + adapter(out)`` after the block
``linear_probe``       frozen backbone, head (+ the top norm)
``full_finetune``      everything
``bitfit``             every bias of the backbone (norm and conv/linear biases that exist; no conv biases are
                       added), head (+ the top norm)
``vpt``                Swin only: VPT prompt tokens in every window (:class:`common.peft.vpt.SwinPrompts`), head (+
                       the top norm)
=====================  ==========================================================================================

What trains besides the adapters and the head follows the official freezing rule (``'norm' in name`` for
``conv_adapt``, ``name.startswith('norm')`` for the linear probe / bias / prompt baselines), mapped onto timm's
names (``TRAINED_NORMS``, switched off with ``train_norms=False``):

* ResNet (timm Bottleneck / BasicBlock): an extra ``BatchNorm2d(num_features)`` before the pooling (the official
  ResNet adds ``self.norm``; no BatchNorm of the backbone trains);
* BiT ResNetV2: the final GroupNorm (``norm``); the block norms (``gn1..gn3`` there) stay frozen;
* ConvNeXt: every block's LayerNorm and the final norm (``head.norm``); the stem and downsampling norms stay frozen
  (their names carry no ``norm`` in the official code);
* Swin: every LayerNorm (patch embedding, ``norm1``/``norm2`` of each block, patch merging, final).

The baselines that train only a top norm: ResNet's extra BatchNorm, BiT's ``norm``, ConvNeXt's ``head.norm``,
Swin's ``norm``. Kernel 3 and ReLU on ResNets, 7 and GELU on ConvNeXt and Swin; gamma (``adapt_size``) 8 by default.
No Lightning, no I/O beyond :func:`common.models.build_timm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import torch
from timm.models.convnext import ConvNeXt
from timm.models.resnet import ResNet
from timm.models.resnetv2 import ResNetV2
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from common.peft.accounting import count_parameters, freeze
from common.peft.context import TaskContext
from common.peft.inject import AdditiveHook, InsertionPoint, inject
from common.peft.vpt import SwinPrompts
from conv_adapter.adapter import ConvAdapter, Init, Residual

VARIANTS: tuple[str, ...] = ("conv_parallel", "conv_sequential", "residual_parallel", "residual_sequential")
BASELINES: tuple[str, ...] = ("linear_probe", "full_finetune", "bitfit", "vpt")
METHODS: tuple[str, ...] = VARIANTS + BASELINES
Family = Literal["resnet", "resnetv2", "convnext", "swin"]


@dataclass(frozen=True)
class FamilySpec:
    """How Conv-Adapter sits in one backbone family (the official code's choices)."""

    conv_point: str  # insertion-point kind of the "convolution" placements
    kernel_size: int
    activation: str
    init: Init
    trained_norms: tuple[str, ...]  # parameter-name patterns (fnmatch) of the norms the variants train
    top_norm: tuple[str, ...]  # the norm the linear probe / BitFit / VPT train
    extra_norm: bool = False  # an extra BatchNorm2d before pooling (official ResNet)


FAMILIES: dict[str, FamilySpec] = {
    "resnet": FamilySpec("conv3x3", 3, "relu", "kaiming_fan_out", (), (), extra_norm=True),
    "resnetv2": FamilySpec("conv3x3", 3, "relu", "zero_bias", ("norm.*",), ("norm.*",)),
    "convnext": FamilySpec("conv_dw", 7, "gelu", "trunc_normal", ("stages.*.blocks.*.norm.*", "head.norm.*"),
                           ("head.norm.*",)),
    "swin": FamilySpec("attn_grid", 7, "gelu", "torch", ("*norm*",), ("norm.*",)),
}
TRAINED_NORMS = {k: v.trained_norms for k, v in FAMILIES.items()}


def family_of(backbone: nn.Module) -> Family:
    """The backbone family, from its timm class."""
    for cls, fam in ((SwinTransformer, "swin"), (ConvNeXt, "convnext"), (ResNetV2, "resnetv2"), (ResNet, "resnet")):
        if isinstance(backbone, cls):
            return fam  # type: ignore[return-value]
    raise TypeError(f"conv_adapter: {type(backbone).__name__} is not a timm ResNet / ResNetV2 / ConvNeXt / "
                    "SwinTransformer")


class ConvAdapterNet(nn.Module):
    """A timm backbone + Conv-Adapters (or a baseline) + the official linear head (see the module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, method: str = "conv_parallel", gamma: int = 8,
                 kernel_size: int | None = None, activation: str | None = None, init: Init | None = None,
                 alpha_init: float = 1.0, train_norms: bool = True, downsample_adapters: bool | None = None,
                 head_dropout: float = 0.2, vpt_tokens: int = 10, vpt_deep: bool = False) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"conv_adapter: method must be one of {METHODS}, got {method!r}")
        self.family = family_of(backbone)
        spec = FAMILIES[self.family]
        if method == "vpt" and self.family != "swin":
            raise ValueError(f"conv_adapter: VPT is built for Swin backbones only, not {self.family}")
        self.method, self.gamma = method, gamma
        self.kernel_size = kernel_size or spec.kernel_size
        self.activation = activation or spec.activation
        self.init, self.alpha_init = init or spec.init, alpha_init
        if hasattr(backbone, "reset_classifier") and getattr(backbone, "num_classes", 0):
            backbone.reset_classifier(0)
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.peft = nn.ModuleDict()
        self.extra_norm = nn.BatchNorm2d(self.num_features) if spec.extra_norm else None
        self.head = nn.Sequential(nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity(),
                                  nn.Linear(self.num_features, num_classes))
        lin = self.head[1]
        bound = 1.0 / math.sqrt(lin.in_features)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound)
            lin.bias.zero_()
        self.prompt_ctx: TaskContext | None = None

        if method in VARIANTS:
            self._attach_adapters(method, downsample_adapters)
        elif method == "vpt":
            self.prompt_ctx = TaskContext(["task"])
            self.peft["prompts"] = SwinPrompts(backbone, vpt_tokens, self.prompt_ctx, deep=vpt_deep)
        self._set_trainable(method, train_norms)

    # -- construction --------------------------------------------------------------------------------------------
    def make_adapter(self, point: InsertionPoint, parallel: bool, **over) -> nn.Module:
        """One adapter for ``point``: ``in_dim -> out_dim`` at the point's stride (parallel) or ``out_dim ->
        out_dim``, stride 1, wrapped as ``x + f(x)`` (sequential)."""
        kw = dict(gamma=self.gamma, kernel_size=self.kernel_size, activation=self.activation, init=self.init,
                  alpha_init=self.alpha_init, layout="nhwc" if point.layout == "nhwc" else "nchw")
        kw.update(over)
        if parallel:
            return ConvAdapter(point.in_dim, point.out_dim, stride=point.stride, **kw)
        return Residual(ConvAdapter(point.out_dim, point.out_dim, stride=1, **kw))

    def _attach_adapters(self, method: str, downsample_adapters: bool | None) -> None:
        parallel = method.endswith("_parallel")
        where = FAMILIES[self.family].conv_point if method.startswith("conv_") else "block"
        self.peft["adapters"] = inject(self.backbone, lambda p: self.make_adapter(p, parallel), where,
                                       mode="parallel" if parallel else "sequential")
        if downsample_adapters is None:
            downsample_adapters = self.family == "convnext" and method == "conv_parallel"
        if downsample_adapters:
            if self.family != "convnext":
                raise ValueError("conv_adapter: downsample adapters exist for ConvNeXt only")
            self.peft["downsample"] = self._downsample_adapters()

    def _downsample_adapters(self) -> nn.ModuleDict:
        """ConvNeXt (official): ``conv(LN(x)) + adapter(LN(x))`` at every 2x2 stride-2 downsampling conv."""
        adapters = nn.ModuleDict()
        for i, stage in enumerate(self.backbone.stages):
            ds = stage.downsample
            if not isinstance(ds, nn.Sequential):
                continue
            conv = ds[-1]
            k = conv.kernel_size[0]
            a = ConvAdapter(conv.in_channels, conv.out_channels, self.gamma, kernel_size=k, stride=conv.stride[0],
                            padding=0, activation=self.activation, init=self.init, alpha_init=self.alpha_init)
            adapters[f"stages_{i}_downsample"] = a
            conv.register_forward_hook(AdditiveHook(a))
        return adapters

    def _set_trainable(self, method: str, train_norms: bool) -> None:
        spec = FAMILIES[self.family]
        if method == "full_finetune":
            for p in self.parameters():
                p.requires_grad_(True)
            return
        freeze(self.backbone)
        patterns: tuple[str, ...] = ()
        if train_norms:
            patterns = spec.trained_norms if method in VARIANTS else spec.top_norm
        for name, p in self.backbone.named_parameters():
            if any(fnmatchcase(name, pat) for pat in patterns) or (method == "bitfit" and name.endswith("bias")):
                p.requires_grad_(True)
        if self.extra_norm is not None:
            self.extra_norm.requires_grad_(train_norms)

    # -- forward -------------------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` before the head."""
        if self.prompt_ctx is not None:
            with self.prompt_ctx.use("task"):
                f = self.peft["prompts"].stage_features(self.backbone, x)[-1]  # (B, C, H, W), final norm applied
            return f.mean(dim=(2, 3))
        f = self.backbone.forward_features(x)
        if self.extra_norm is not None:
            f = self.extra_norm(f)
        return self.backbone.forward_head(f, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters by part: adapters (or prompts), backbone (norms / biases / all), head, total."""
        peft = count_parameters(self.peft, trainable_only=True)
        backbone = count_parameters(self.backbone, trainable_only=True)
        extra = count_parameters(self.extra_norm, trainable_only=True) if self.extra_norm is not None else 0
        head = count_parameters(self.head, trainable_only=True)
        return {"adapters": peft, "backbone": backbone + extra, "head": head, "total": peft + backbone + extra + head,
                "backbone_all": count_parameters(self.backbone)}


def build(backbone: str | nn.Module, method: str = "conv_parallel", num_classes: int = 100,
          pretrained: str | bool | None = None, gamma: int = 8, device: str | torch.device | None = None,
          **kwargs) -> ConvAdapterNet:
    """A :class:`ConvAdapterNet` on ``backbone`` (a timm model, or a name for :func:`common.models.build_timm`:
    ``resnet50``, ``resnet18``, ``resnetv2_50x1_bit``, ``convnext_base``, ``swin_base_patch4_window7_224``,
    ``shapes-resnet-tiny``, ...). ``device="meta"`` builds without allocating (parameter counts at paper scale)."""
    if isinstance(backbone, str):
        from common.models import build_timm

        if device is not None:
            with torch.device(device):
                model = build_timm(backbone, pretrained, num_classes=0)
        else:
            model = build_timm(backbone, pretrained, num_classes=0)
    else:
        model = backbone
    if device is not None:
        with torch.device(device):
            return ConvAdapterNet(model, num_classes, method, gamma=gamma, **kwargs)
    return ConvAdapterNet(model, num_classes, method, gamma=gamma, **kwargs)


__all__ = ["BASELINES", "FAMILIES", "METHODS", "TRAINED_NORMS", "VARIANTS", "ConvAdapterNet", "FamilySpec", "build",
           "family_of"]
