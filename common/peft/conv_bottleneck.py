"""A convolutional bottleneck with a learnable channel scale: the Conv-Adapter kernel (its package calls it ConvAdapter).

``ConvBottleneck(C_in, C_out, gamma, k, stride)`` computes ``alpha * conv2(act(conv1(x)))`` with

* ``conv1``: a k x k grouped convolution from ``C_in`` to ``w = C_in // gamma`` channels with ``w`` groups: every
  group reads ``gamma`` input channels and writes one (the paper's compression factor gamma; the official code's
  ``adapt_size``), stride of the layer it adapts, padding ``k // 2``, with bias;
* ``act``: ReLU on ResNets, GELU on ConvNeXt and Swin;
* ``conv2``: a 1 x 1 convolution ``w -> C_out`` with bias;
* ``alpha``: a learnable per-channel scale of shape ``(1, C_out, 1, 1)``, initialised to 1, multiplied last.

No norm layer. The official code (Hhhhhhao/Conv-Adapter, ``models/tuning_modules/conv_adapter.py``) does **not** start
the adapter as the zero map: ``alpha`` is 1 and both convolutions keep their backbone's initialisation, which
differs per backbone file there (``init`` here):

* ``kaiming_fan_out`` - ResNet: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` weights, zero biases (the
  torchvision-style init loop of the ResNet runs after the adapters are built);
* ``trunc_normal`` - ConvNeXt: ``trunc_normal_(std=0.02)`` weights, zero biases;
* ``zero_bias`` - BiT ResNetV2: PyTorch's default weights, zero biases;
* ``torch`` - Swin: PyTorch's default initialisation.

``alpha_init=0`` (not the paper) makes the adapter start as the zero map, so an injected network starts as its
frozen backbone.

``layout="nhwc"`` takes and returns channels-last ``(B, H, W, C)`` maps (Swin's grid); the convolutions run on the
permuted NCHW map, as the official Swin code does. :class:`Residual` wraps an adapter as ``x + f(x)`` for the
sequential placements.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Init = Literal["kaiming_fan_out", "trunc_normal", "zero_bias", "torch"]
INITS: tuple[str, ...] = ("kaiming_fan_out", "trunc_normal", "zero_bias", "torch")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def adapter_width(in_channels: int, gamma: int) -> int:
    """The bottleneck width ``C_in // gamma`` (at least 1); ``C_in`` must split into that many equal groups."""
    if gamma < 1:
        raise ValueError(f"Conv-Adapter: gamma must be >= 1, got {gamma}")
    width = max(1, in_channels // gamma)
    if in_channels % width:
        raise ValueError(f"Conv-Adapter: {in_channels} input channels do not split into {width} groups "
                         f"(width = C_in // gamma = {in_channels} // {gamma}); pick a gamma that divides C_in")
    return width


def adapter_parameter_count(in_channels: int, out_channels: int, gamma: int, kernel_size: int) -> int:
    """Parameters of one adapter: conv1 ``C_in k^2 + w`` + conv2 ``w C_out + C_out`` + alpha ``C_out``."""
    w = adapter_width(in_channels, gamma)
    return in_channels * kernel_size * kernel_size + w + w * out_channels + out_channels + out_channels


class ConvBottleneck(nn.Module):
    """``alpha * conv1x1(act(grouped_conv_kxk(x)))`` (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, gamma: int = 8, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, activation: str = "relu", layout: Literal["nchw", "nhwc"] = "nchw",
                 init: Init = "torch", alpha_init: float = 1.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Conv-Adapter: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"Conv-Adapter: layout must be 'nchw' or 'nhwc', got {layout!r}")
        if init not in INITS:
            raise ValueError(f"Conv-Adapter: init must be one of {INITS}, got {init!r}")
        self.width = adapter_width(in_channels, gamma)
        self.gamma, self.layout = gamma, layout
        pad = kernel_size // 2 if padding is None else padding
        self.conv1 = nn.Conv2d(in_channels, self.width, kernel_size, stride=stride, padding=pad, groups=self.width)
        self.act = ACTIVATIONS[activation]()
        self.conv2 = nn.Conv2d(self.width, out_channels, 1)
        self.alpha = nn.Parameter(torch.full((1, out_channels, 1, 1), float(alpha_init)))
        self.reset_parameters(init)

    def reset_parameters(self, init: Init) -> None:
        for conv in (self.conv1, self.conv2):
            if init == "kaiming_fan_out":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            elif init == "trunc_normal":
                nn.init.trunc_normal_(conv.weight, std=0.02)
            if init != "torch":
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            return self._nchw(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self._nchw(x)

    def _nchw(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x))) * self.alpha


class Residual(nn.Module):
    """``x + f(x)``: a sequential adapter placement (``h -> h + alpha * delta(h)``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.module(x)


__all__ = ["ACTIVATIONS", "INITS", "ConvBottleneck", "Residual", "adapter_parameter_count", "adapter_width"]
