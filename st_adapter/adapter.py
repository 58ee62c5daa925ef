"""The ST-Adapter kernel: a spatio-temporal bottleneck adapter for ViT tokens of video frames (plain PyTorch).

``STAdapter(x) = x + W_up · act(DWConv3D(W_down · x))`` on the **patch tokens** of every frame; the class token (and
any other prefix token) bypasses the adapter unchanged, as in the official code (``linziyi96/st-adapter``,
``models_adapter.py``):

* ``W_down``: ``Linear(D -> r)``; ``W_up``: ``Linear(r -> D)`` (both with bias; default weight init, biases zero);
* ``DWConv3D``: depthwise ``Conv3d(r, r, kernel (3, 1, 1), padding (1, 0, 0), groups=r)`` over ``(T, H, W)``, weight
  **and** bias zero-initialised, so a freshly built adapter is exactly the identity;
* ``act``: none by default. The released code has no non-linearity; the paper writes one around the depthwise
  convolution. ``activation="gelu"`` (or ``quick_gelu`` / ``relu``) applies it after the convolution, the paper's form.

With kernel ``(k_t, 1, 1)`` a patch token of frame ``t`` only sees the same spatial position in frames
``t - k_t//2 .. t + k_t//2``: temporal reasoning is local and grows with depth.

Placement (:class:`AdapterPlacement`): ``pre_mlp`` (the official ``12x384``: one adapter before the MLP of every
block, K400) or ``pre_attn`` + ``pre_mlp`` (``24x384``, SSv2); any width; any subset of blocks (the official
``adapter_layers = n`` puts them in the last ``n`` blocks).

No Lightning, no I/O, no config parsing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STAdapter", "AdapterPlacement", "POSITIONS", "adapter_parameter_count"]

#: where in a transformer block an adapter can sit
POSITIONS: tuple[str, ...] = ("pre_attn", "pre_mlp")


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {"gelu": F.gelu, "quick_gelu": _quick_gelu, "relu": F.relu}


class STAdapter(nn.Module):
    """One spatio-temporal adapter (see the module docstring).

    Args:
        dim: token width D of the ViT.
        width: bottleneck width r (384 at ViT-B/16 in the paper).
        kernel_size: depthwise convolution kernel over ``(T, H, W)``; odd sizes (padding ``k // 2`` keeps the shape).
        activation: ``None`` (the released code), ``"gelu"``, ``"quick_gelu"`` or ``"relu"`` after the convolution
            (the paper's equation).
        num_prefix_tokens: leading tokens per frame that bypass the adapter (1: the class token).
    """

    def __init__(
        self,
        dim: int,
        width: int = 384,
        kernel_size: Sequence[int] = (3, 1, 1),
        activation: str | None = None,
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        kernel = tuple(int(k) for k in kernel_size)
        if len(kernel) != 3 or any(k < 1 or k % 2 == 0 for k in kernel):
            raise ValueError(f"STAdapter: kernel_size must be three odd positive ints (T, H, W), got {kernel_size}")
        if dim < 1 or width < 1:
            raise ValueError(f"STAdapter: dim and width must be positive, got dim={dim}, width={width}")
        if activation is not None and activation not in _ACTIVATIONS:
            raise ValueError(f"STAdapter: unknown activation {activation!r}; use None or one of {sorted(_ACTIVATIONS)}")
        self.dim, self.width, self.kernel_size = dim, width, kernel
        self.activation = activation
        self.num_prefix_tokens = num_prefix_tokens
        self.fc1 = nn.Linear(dim, width)
        self.conv = nn.Conv3d(width, width, kernel_size=kernel, stride=1, padding=tuple(k // 2 for k in kernel),
                              groups=width)
        self.fc2 = nn.Linear(width, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: fc weights torch's default, fc biases and the whole conv zero."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, width={self.width}, kernel_size={self.kernel_size}, activation={self.activation}"

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Adapt ``x`` of shape ``(B*T, P + H*W, D)`` (frames of a clip consecutive, frame-major within the batch).

        Args:
            x: tokens of ``B`` clips of ``num_frames`` frames each; ``P = num_prefix_tokens`` leading tokens.
            num_frames: T.
            grid: ``(H, W)`` of the patch grid; default a square grid inferred from the token count.

        Returns:
            A new tensor of the same shape and dtype; the prefix tokens are returned unchanged.
        """
        bt, length, d = x.shape
        if d != self.dim:
            raise ValueError(f"STAdapter: expected token width {self.dim}, got {d}")
        if num_frames < 1 or bt % num_frames:
            raise ValueError(f"STAdapter: {bt} frames in the batch are not a multiple of num_frames={num_frames}")
        p = self.num_prefix_tokens
        n = length - p
        if grid is None:
            h = w = math.isqrt(n)
            if h * w != n:
                raise ValueError(f"STAdapter: {n} patch tokens are not a square grid; pass grid=(H, W)")
        else:
            h, w = grid
            if h * w != n:
                raise ValueError(f"STAdapter: grid {grid} does not fit {n} patch tokens")
        b = bt // num_frames
        dtype = self.fc1.weight.dtype
        z = self.fc1(x[:, p:].to(dtype))                                  # (BT, HW, r)
        if self.kernel_size[1:] == (1, 1):  # temporal-only kernel: shifted sums, channels-last, no permutes
            z = self._temporal_conv(z.view(b, num_frames, n, self.width))
        else:
            z = z.reshape(b, num_frames, h, w, self.width).permute(0, 4, 1, 2, 3)  # (B, r, T, H, W)
            z = self.conv(z.contiguous()).permute(0, 2, 3, 4, 1)
        if self.activation is not None:
            z = _ACTIVATIONS[self.activation](z)
        delta = self.fc2(z.reshape(bt, n, self.width)).to(x.dtype)
        return x + F.pad(delta, (0, 0, p, 0))  # the prefix tokens get + 0: unchanged

    def _temporal_conv(self, z: torch.Tensor) -> torch.Tensor:
        """``self.conv`` for a ``(k, 1, 1)`` kernel on channels-last ``(B, T, HW, r)``: the same depthwise
        convolution (zero padding ``k // 2`` in time) as ``k`` shifted multiply-adds, without the two permuted
        copies and the 3-D convolution call."""
        k, t = self.kernel_size[0], z.shape[1]
        weight = self.conv.weight.view(self.width, k).t().to(z.dtype)    # (k, r)
        zp = F.pad(z, (0, 0, 0, 0, k // 2, k // 2)) if k > 1 else z
        out = self.conv.bias.to(z.dtype) + zp[:, 0:t] * weight[0]
        for j in range(1, k):
            out = out + zp[:, j : j + t] * weight[j]
        return out


def adapter_parameter_count(dim: int, width: int, kernel_size: Sequence[int] = (3, 1, 1)) -> int:
    """Parameters of one :class:`STAdapter` (``D=768, r=384``: 592,512)."""
    kt = math.prod(int(k) for k in kernel_size)
    return (dim * width + width) + (width * kt + width) + (width * dim + dim)


_NAME = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class AdapterPlacement:
    """Which blocks get adapters, where in the block, and how wide.

    Args:
        width: bottleneck width r.
        positions: subset of :data:`POSITIONS`: ``("pre_mlp",)`` = the official ``12x384`` (K400),
            ``("pre_attn", "pre_mlp")`` = ``24x384`` (SSv2).
        blocks: ``None`` (every block), an int ``n`` (the last ``n`` blocks, the official ``adapter_layers``) or an
            explicit list of block indices (negative indices count from the end).
        kernel_size, activation: see :class:`STAdapter`.
    """

    width: int = 384
    positions: tuple[str, ...] = ("pre_mlp",)
    blocks: int | tuple[int, ...] | None = None
    kernel_size: tuple[int, int, int] = (3, 1, 1)
    activation: str | None = None

    def __post_init__(self) -> None:
        positions = tuple(self.positions)
        bad = [p for p in positions if p not in POSITIONS]
        if bad or not positions or len(set(positions)) != len(positions):
            raise ValueError(f"AdapterPlacement: positions must be distinct values of {POSITIONS}, got {self.positions}")
        object.__setattr__(self, "positions", tuple(p for p in POSITIONS if p in positions))
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        object.__setattr__(self, "kernel_size", tuple(int(k) for k in self.kernel_size))

    def block_indices(self, depth: int) -> list[int]:
        """The (sorted, non-negative) indices of the blocks that get adapters in a ``depth``-block ViT."""
        if self.blocks is None:
            return list(range(depth))
        if isinstance(self.blocks, int):
            if not 0 <= self.blocks <= depth:
                raise ValueError(f"AdapterPlacement: blocks={self.blocks} (last n blocks) must be in 0..{depth}")
            return list(range(depth - self.blocks, depth))
        return sorted({b % depth if -depth <= b < depth else _raise_block(b, depth) for b in self.blocks})

    def num_adapters(self, depth: int) -> int:
        return len(self.block_indices(depth)) * len(self.positions)

    def name(self, depth: int) -> str:
        """The paper's ``<number of adapters>x<width>`` name, e.g. ``12x384``."""
        return f"{self.num_adapters(depth)}x{self.width}"

    @classmethod
    def from_name(cls, name: str, depth: int, **kwargs: object) -> AdapterPlacement:
        """Parse the paper's ``NxR`` names for a ``depth``-block ViT: ``N == depth`` -> before the MLP of every block;
        ``N == 2 * depth`` -> before attention and before the MLP of every block; ``N < depth`` -> before the MLP of
        the last ``N`` blocks (the official ``adapter_layers``)."""
        m = _NAME.match(name.strip())
        if not m:
            raise ValueError(f"adapter setting {name!r} is not of the form '<adapters>x<width>', e.g. '12x384'")
        n, width = int(m.group(1)), int(m.group(2))
        if n == 2 * depth:
            return cls(width=width, positions=("pre_attn", "pre_mlp"), **kwargs)  # type: ignore[arg-type]
        if 0 < n <= depth:
            return cls(width=width, positions=("pre_mlp",), blocks=None if n == depth else n, **kwargs)  # type: ignore[arg-type]
        raise ValueError(f"adapter setting {name!r}: {n} adapters do not fit a {depth}-block ViT "
                         f"(use {depth} for pre-MLP in every block, {2 * depth} for pre-attention + pre-MLP, or fewer)")


def _raise_block(b: int, depth: int) -> int:
    raise ValueError(f"AdapterPlacement: block index {b} outside a {depth}-block ViT")
