"""Block-level access to open_clip's ``VisionTransformer``: embed, run the blocks with hooks and masks, pool.

open_clip's ``visual(x)`` is one opaque call. Methods that adapt a CLIP ViT need to get between its parts: insert a
module before the attention or the MLP of chosen blocks (adapters, prompts), batch the frames of a video through the
image tower and know how many frames a row belongs to, or restrict which tokens a block may attend to (mask tokens).
This module gives those seams as plain functions over an unmodified open_clip ``VisionTransformer`` (its parameters
keep their names, so checkpoints load as before)::

    tokens, layout = embed(visual, frames)                     # (B, T, 3, H, W) -> (B*T, 1 + H'W', D) (or images)
    tokens = run_blocks(visual, tokens, layout,
                        pre_mlp={i: hook for i in range(12)},  # hook(tokens, layout) -> tokens
                        attn_masks={11: mask})                 # per-block mask or additive bias
    pooled = head(visual, tokens)                              # ln_post + pool + proj, as open_clip does

With no hooks and no mask, ``forward(visual, x)`` equals ``visual(x)`` (tested to 1e-5).

Attention masks follow :func:`torch.nn.functional.scaled_dot_product_attention`: a **bool** mask is ``True`` where a
query **may attend** (the opposite of ``nn.MultiheadAttention``, where ``True`` blocks); a float mask is an additive
bias (``-inf`` blocks). Shapes: ``(L, L)`` (every row and head), ``(N, L, L)`` (per row, every head) or
``(N, heads, L, L)`` / ``(N, 1, L, L)``, where ``N`` is the number of rows (``B*T`` for video). A query row that may
attend to nothing gives NaN, as in torch.

Speed: the default open_clip block runs ``nn.MultiheadAttention``, which in training transposes to sequence-first
and runs its projections on non-contiguous views (batched matmuls against an expanded weight in the backward pass).
:func:`attention` runs the same weights (``in_proj_weight``, ``out_proj``) batch-first through
``scaled_dot_product_attention`` instead: same numbers, and a frozen backbone's training step (adapters only) is
cheaper (see ``benchmarks/st_adapter_cost.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "Hook",
    "TokenLayout",
    "attention",
    "block_forward",
    "check_vit",
    "embed",
    "forward",
    "head",
    "run_blocks",
]

_WHERE = "common/models/clip_vit.py"


@dataclass(frozen=True)
class TokenLayout:
    """How the rows and tokens of a ``(N, L, D)`` token tensor are laid out.

    Attributes:
        num_frames: frames per clip ``T``; the ``N = B*T`` rows are clip-major (the frames of a clip consecutive).
            1 for images.
        grid: ``(H', W')`` of the patch grid.
        num_prefix_tokens: leading tokens per row before the patch tokens (1: the class token).
    """

    num_frames: int
    grid: tuple[int, int]
    num_prefix_tokens: int = 1


#: a hook before the attention or the MLP of a block: ``hook(tokens (N, L, D), layout) -> tokens (N, L, D)``
Hook = Callable[[torch.Tensor, TokenLayout], torch.Tensor]
#: per-block attention masks: one mask for every block, ``{block index: mask}``, or a sequence (``None`` = no mask)
Masks = torch.Tensor | Mapping[int, torch.Tensor | None] | Sequence[torch.Tensor | None] | None


def check_vit(visual: nn.Module, where: str = _WHERE) -> None:
    """Raise a clear error unless ``visual`` is an open_clip class-token ViT these functions can step through.

    ``where`` names the caller's file in the message.
    """
    need = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post")
    missing = [a for a in need if not hasattr(visual, a)]
    if missing:
        raise TypeError(f"{where}: needs an open_clip VisionTransformer (missing {missing}); got "
                        f"{type(visual).__name__}. Build it with common.models.load_clip(<arch>).model.visual")
    if getattr(visual, "attn_pool", None) is not None:
        raise TypeError(f"{where}: attentional-pool ViTs (CoCa) are not supported; use a CLIP ViT")
    if not getattr(visual.transformer, "batch_first", True):
        raise ValueError(f"{where}: the vision transformer must be batch_first (open_clip >= 2.24)")
    for blk in visual.transformer.resblocks:
        if not all(hasattr(blk, a) for a in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2")):
            raise TypeError(f"{where}: unsupported transformer block {type(blk).__name__}")


def _grid(visual: nn.Module, height: int, width: int) -> tuple[int, int]:
    ph, pw = (int(s) for s in visual.conv1.kernel_size)
    return height // ph, width // pw


def embed(visual: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
    """Images ``(N, 3, H, W)`` or frames ``(B, T, 3, H, W)`` -> tokens ``(N or B*T, 1 + H'W', D)`` and their layout.

    conv1 (patchify), class token, positional embedding, patch dropout (identity unless configured and training),
    ``ln_pre``, exactly as open_clip's ``VisionTransformer``. The input is cast to the tower's weight dtype.
    """
    if x.ndim == 5:
        num_frames = int(x.shape[1])
        x = x.flatten(0, 1)
    elif x.ndim == 4:
        num_frames = 1
    else:
        raise ValueError(f"{_WHERE}: expected images (N, 3, H, W) or frames (B, T, 3, H, W), got {tuple(x.shape)}")
    grid = _grid(visual, int(x.shape[-2]), int(x.shape[-1]))
    x = visual.conv1(x.to(visual.conv1.weight.dtype))                  # (N, D, H', W')
    x = x.flatten(2).transpose(1, 2)                                   # (N, H'W', D)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    return visual.ln_pre(x), TokenLayout(num_frames=num_frames, grid=grid, num_prefix_tokens=1)


# -- attention -------------------------------------------------------------------------------------------------------
def _sdpa_mask(mask: torch.Tensor, n: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """A mask in this module's convention -> what ``scaled_dot_product_attention`` takes for (N, heads, L, L)."""
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    elif mask.ndim not in (2, 4):
        raise ValueError(f"{_WHERE}: an attention mask must be (L, L), (N, L, L) or (N, heads, L, L); "
                         f"got {tuple(mask.shape)}")
    if mask.shape[-2:] != (length, length) or (mask.ndim == 4 and mask.shape[0] not in (1, n)):
        raise ValueError(f"{_WHERE}: attention mask of shape {tuple(mask.shape)} does not fit {n} rows of "
                         f"{length} tokens")
    return mask if mask.dtype == torch.bool else mask.to(dtype)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool (True = may attend) -> additive float bias; float masks pass through."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _fast_mha(attn: nn.Module) -> bool:
    """Whether an ``nn.MultiheadAttention`` can run through the batch-first SDPA path with identical numbers."""
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.in_proj_weight is not None
            and attn.bias_k is None and attn.bias_v is None and not attn.add_zero_attn
            and (attn.dropout == 0.0 or not attn.training))


def attention(blk: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention of an open_clip block on already-normalised tokens ``x`` ``(N, L, D)`` (no ``ls_1``, no
    residual), with an optional mask in this module's convention (see the module docstring)."""
    attn = blk.attn
    n, length, d = x.shape
    mask = None if attn_mask is None else _sdpa_mask(attn_mask, n, length, x.dtype)
    if _fast_mha(attn):
        heads = attn.num_heads
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)     # (N, L, 3D): one matmul on contiguous rows
        q, k, v = qkv.view(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (N, h, L, d/h)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(n, length, d)
        return F.linear(o, attn.out_proj.weight, attn.out_proj.bias)
    if isinstance(attn, nn.MultiheadAttention):  # an unusual MHA: torch's own path, with its mask convention
        if mask is not None:
            mask = _additive(mask, x.dtype)
            if mask.ndim == 4:  # MHA wants (L, L) or (N*heads, L, L)
                mask = mask.expand(n, attn.num_heads, length, length).reshape(n * attn.num_heads, length, length)
        return blk.attention(q_x=x, attn_mask=mask)
    # open_clip's custom Attention: additive (L, L) or (N, heads, L, L)
    if mask is not None:
        mask = _additive(mask, x.dtype)
        if mask.ndim == 4:
            mask = mask.expand(n, attn.num_heads, length, length)
    out = attn(x, attn_mask=mask)
    return blk.ln_attn(out) if hasattr(blk, "ln_attn") else out


def block_forward(
    blk: nn.Module,
    x: torch.Tensor,
    layout: TokenLayout,
    pre_attn: Hook | None = None,
    pre_mlp: Hook | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One open_clip block: ``[pre_attn] x += ls_1(attn(ln_1 x)); [pre_mlp] x += ls_2(mlp(ln_2 x))``."""
    if pre_attn is not None:
        x = pre_attn(x, layout)
    x = x + blk.ls_1(attention(blk, blk.ln_1(x), attn_mask))
    if pre_mlp is not None:
        x = pre_mlp(x, layout)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _mask_for(masks: Masks, i: int, depth: int) -> torch.Tensor | None:
    if masks is None or isinstance(masks, torch.Tensor):
        return masks
    if isinstance(masks, Mapping):
        return masks.get(i)
    if len(masks) != depth:
        raise ValueError(f"{_WHERE}: {len(masks)} attention masks for a {depth}-block ViT; give one per block "
                         "(None for no mask) or a {{block: mask}} mapping")
    return masks[i]


def run_blocks(
    visual: nn.Module,
    x: torch.Tensor,
    layout: TokenLayout,
    *,
    pre_attn: Mapping[int, Hook] | None = None,
    pre_mlp: Mapping[int, Hook] | None = None,
    attn_masks: Masks = None,
    blocks: Sequence[int] | None = None,
    grad_checkpointing: bool = False,
) -> torch.Tensor:
    """Run the transformer blocks of ``visual`` over tokens ``(N, L, D)`` (from :func:`embed`).

    Args:
        visual: the open_clip ``VisionTransformer``.
        x: tokens; ``layout`` describes them and is passed to every hook.
        pre_attn, pre_mlp: ``{block index: hook}`` called on the tokens before that block's attention / MLP branch.
        attn_masks: one mask for every block, ``{block: mask}`` or one entry per block (see the module docstring).
        blocks: which blocks to run, in order (default all; e.g. ``range(k)`` to stop early).
        grad_checkpointing: recompute each block in the backward pass (when gradients are being recorded).

    Returns:
        The tokens after the last block run (before ``ln_post``).
    """
    resblocks = visual.transformer.resblocks
    depth = len(resblocks)
    pre_attn, pre_mlp = pre_attn or {}, pre_mlp or {}
    bad = sorted(i for i in (*pre_attn, *pre_mlp) if not 0 <= i < depth)
    if bad:
        raise ValueError(f"{_WHERE}: hooks at blocks {bad} outside a {depth}-block ViT")
    recompute = grad_checkpointing and torch.is_grad_enabled()
    for i in range(depth) if blocks is None else blocks:
        args = (resblocks[i], x, layout, pre_attn.get(i), pre_mlp.get(i), _mask_for(attn_masks, i, depth))
        x = checkpoint(block_forward, *args, use_reentrant=False) if recompute else block_forward(*args)
    return x


def head(visual: nn.Module, x: torch.Tensor, *, return_tokens: bool = False
         ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Tokens after the blocks -> the image embedding: ``ln_post``, the tower's pooling (class token or mean) and
    ``proj``, as open_clip does. ``return_tokens``: also the (``ln_post``-ed) patch tokens, ``(N, H'W', D)``."""
    pooled, tokens = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return (pooled, tokens) if return_tokens else pooled


def forward(visual: nn.Module, x: torch.Tensor, **run_kwargs: object) -> torch.Tensor:
    """``embed -> run_blocks(**run_kwargs) -> head``; images ``(N, 3, H, W)`` or frames ``(B, T, 3, H, W)`` (one
    embedding per frame, ``(B*T, E)``). With no hooks and no masks this is ``visual(x)``."""
    tokens, layout = embed(visual, x)
    tokens = run_blocks(visual, tokens, layout, **run_kwargs)  # type: ignore[arg-type]
    return head(visual, tokens)  # type: ignore[return-value]
