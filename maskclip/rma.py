"""Relative Mask Attention (RMA): the only trained part of MaskCLIP.

In every sixth block of the frozen CLIP ViT (blocks 6, 12, 18, 24 of ViT-L/14, 0-based 5, 11, 17, 23) the mask class
tokens' attention to the patches gets a second logit that depends on the proposal mask, and the proposal masks are
refined from the mask tokens' queries and the patches' keys (the official code's ``Transformer`` and
``MultiheadAttention``; facts below, not its code):

* mask embedding: ``Conv2d(1, D, k=stride=patch)`` on ``tanh(mask logits)`` -> ``LayerNorm(D)`` = one query
  ``q_m[i, j]`` per (proposal i, patch j);
* key projection: ``Linear(D, D)`` on the block's ``ln_1``-ed patch tokens = ``k_m[j]``;
* per head, ``a2[i, j] = <q_m[i, j], k_m[j]> / sqrt(head dim)``; the mask token -> patch logits become
  ``(a + a2) / 2`` before the attention mask and the softmax (every other logit as in CLIP);
* refinement: ``f[i, j] = (q_i / sqrt(head dim)) * k_j`` elementwise over the full width (CLIP's own query of mask token
  i and key of patch j, heads concatenated) -> GELU (the sigmoid approximation ``x * sigmoid(1.702 x)``, as the code)
  -> ``Conv2d(D, patch^2, 1)`` -> pixel shuffle to one logit per pixel, added to the mask logits. The refined masks
  drive the attention masks and mask embeddings of the later blocks; the masks after each RMA block are the
  auxiliary (and, after the last, the final) mask predictions.

Initialisation as the code: both convolutions Kaiming-normal weights and U(0, 1) biases, the key projection
Kaiming-normal with a zero bias, the LayerNorm (1, 0). ``zero_init_refine=True`` zeroes the refinement convolution
instead, so a fresh RMA leaves the proposal masks unchanged (the attention logits still change).

Memory: the naive refinement holds ``B x Q x P x D`` features (100 x 576 x 1024 floats = 225 MiB per image per block
at ViT-L/14@336, fp32). ``refine_chunk`` computes it over chunks of proposals (equal outputs, peak memory
``chunk / Q`` of the naive one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RelativeMaskAttention", "quick_gelu", "rma_block_forward", "rma_parameter_count"]


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)``: the activation of the refinement in the official code."""
    return x * torch.sigmoid(1.702 * x)


def rma_parameter_count(width: int, patch_size: int) -> int:
    """Parameters of one RMA block by formula: mask conv ``D p^2 + D``, LayerNorm ``2D``, key projection ``D^2 + D``,
    refinement conv ``D p^2 + p^2`` (1,454,276 at ViT-L/14: D=1024, p=14)."""
    d, p2 = width, patch_size * patch_size
    return (d * p2 + d) + 2 * d + (d * d + d) + (d * p2 + p2)


class RelativeMaskAttention(nn.Module):
    """The parameters of one RMA block and its two computations (mask queries, mask refinement).

    Args:
        width: the ViT width ``D``.
        patch_size: the ViT patch size ``p`` (the mask convolution's kernel and stride; ``p^2`` refinement channels).
        zero_init_refine: start with a zero refinement (see the module docstring).
        refine_chunk: proposals per chunk of the refinement (``None``: all at once).
    """

    def __init__(self, width: int, patch_size: int, *, zero_init_refine: bool = False,
                 refine_chunk: int | None = None) -> None:
        super().__init__()
        self.width, self.patch_size = width, patch_size
        self.refine_chunk = refine_chunk
        self.mask_embed = nn.Conv2d(1, width, patch_size, patch_size)
        self.mask_norm = nn.LayerNorm(width)
        self.key_proj = nn.Linear(width, width)
        self.refine = nn.Conv2d(width, patch_size * patch_size, 1)
        for conv in (self.mask_embed, self.refine):
            nn.init.kaiming_normal_(conv.weight)
            nn.init.uniform_(conv.bias)
        nn.init.kaiming_normal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)
        if zero_init_refine:
            nn.init.zeros_(self.refine.weight)
            nn.init.zeros_(self.refine.bias)

    def mask_queries(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """``(B, Q, H, W)`` mask logits -> ``(B, Q, H'W', D)``: LayerNorm(conv(tanh(logits))) per patch."""
        b, q, h, w = mask_logits.shape
        x = self.mask_embed(mask_logits.tanh().reshape(b * q, 1, h, w).to(self.mask_embed.weight.dtype))
        x = x.flatten(2).transpose(1, 2).reshape(b, q, -1, self.width)
        return self.mask_norm(x)

    def refinement(self, queries: torch.Tensor, keys: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Mask-logit refinement ``(B, Q, H'p, W'p)`` from the mask tokens' scaled queries ``(B, Q, D)`` and the
        patches' keys ``(B, H'W', D)``: ``pixel_shuffle(conv1x1(gelu(q_i * k_j)))``, chunked over proposals."""
        b, q, d = queries.shape
        gh, gw = grid
        step = q if not self.refine_chunk else max(1, int(self.refine_chunk))
        w = self.refine.weight.view(-1, d)                                    # (p^2, D)
        out = []
        for s in range(0, q, step):
            f = quick_gelu(queries[:, s:s + step, None, :] * keys[:, None, :, :])  # (B, q', P, D)
            r = f @ w.t().to(f.dtype) + self.refine.bias.to(f.dtype)                # (B, q', P, p^2)
            r = r.transpose(2, 3).reshape(-1, w.shape[0], gh, gw)                   # (B q', p^2, H', W')
            out.append(F.pixel_shuffle(r, self.patch_size).view(b, -1, gh * self.patch_size, gw * self.patch_size))
        return torch.cat(out, dim=1)


def rma_block_forward(
    blk: nn.Module,
    rma: RelativeMaskAttention,
    x: torch.Tensor,
    mask_logits: torch.Tensor,
    attn_mask: torch.Tensor,
    num_masks: int,
    grid: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One open_clip block with Relative Mask Attention, over tokens ``[Q mask tokens | CLS | patches]``.

    Args:
        blk: the (frozen) open_clip ``ResidualAttentionBlock`` with an ``nn.MultiheadAttention``.
        rma: this block's RMA parameters.
        x: tokens ``(B, L, D)``, ``L = Q + 1 + H'W'``.
        mask_logits: the current proposal mask logits ``(B, Q, H'p, W'p)``.
        attn_mask: bool ``(B, L, L)``, ``True`` = may attend (SDPA convention).
        num_masks: ``Q``.
        grid: ``(H', W')``.

    Returns:
        The block's output tokens and the refinement to add to the mask logits.
    """
    attn = blk.attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise TypeError("maskclip/rma.py: RMA needs open_clip blocks with nn.MultiheadAttention (block_type default)")
    n, length, d = x.shape
    heads = attn.num_heads
    hd = d // heads
    h = blk.ln_1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)     # (B, h, L, hd)
    q = q / math.sqrt(hd)
    logits = q @ k.transpose(-2, -1)                                                  # (B, h, L, L)
    qm = rma.mask_queries(mask_logits).to(x.dtype)                                    # (B, Q, P, D)
    km = rma.key_proj(h[:, num_masks + 1:])                                           # (B, P, D)
    qm = qm.view(n, num_masks, -1, heads, hd)
    km = km.view(n, -1, heads, hd)
    a2 = torch.einsum("bqphe,bphe->bhqp", qm, km) / math.sqrt(hd)                     # (B, h, Q, P)
    top = torch.cat([logits[:, :, :num_masks, :num_masks + 1],
                     (logits[:, :, :num_masks, num_masks + 1:] + a2) / 2], dim=-1)
    logits = torch.cat([top, logits[:, :, num_masks:]], dim=2)
    logits = logits.masked_fill(~attn_mask[:, None], float("-inf"))
    o = logits.softmax(-1) @ v                                                        # (B, h, L, hd)
    o = F.linear(o.transpose(1, 2).reshape(n, length, d), attn.out_proj.weight, attn.out_proj.bias)
    x = x + blk.ls_1(o)
    x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    mq = q[:, :, :num_masks].transpose(1, 2).reshape(n, num_masks, d)                # scaled queries, heads concat
    pk = k[:, :, num_masks + 1:].transpose(1, 2).reshape(n, -1, d)                  # patch keys
    return x, rma.refinement(mq, pk, grid)
