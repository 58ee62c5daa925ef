"""The Conv-Adapter kernel under the paper's name.

The module itself lives in :mod:`common.peft.conv_bottleneck` (``ConvBottleneck``: grouped k x k convolution
``C -> C / gamma``, activation, 1 x 1 convolution back, learnable per-channel scale alpha), because a second paper
uses it too (Polyhistor's beyond-the-paper Conv-Adapter row). This file gives it the paper's name for the
conv_adapter package and its users.
"""

from __future__ import annotations

from common.peft.conv_bottleneck import (
    ACTIVATIONS,
    INITS,
    ConvBottleneck,
    Init,
    Residual,
    adapter_parameter_count,
    adapter_width,
)

#: the paper's name for :class:`common.peft.conv_bottleneck.ConvBottleneck`
ConvAdapter = ConvBottleneck

__all__ = ["ACTIVATIONS", "INITS", "ConvAdapter", "Init", "Residual", "adapter_parameter_count", "adapter_width"]
