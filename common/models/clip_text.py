"""Block-level access to the text tower of an open_clip ``CLIP``: embed, run the blocks with hooks, pool.

The text counterpart of :mod:`common.models.clip_vit`. ``clip.encode_text(tokens)`` is one opaque call; deep text
prompting needs to replace tokens before chosen blocks. These functions step through an unmodified open_clip
``CLIP`` (its parameters keep their names)::

    x = embed(clip, tokens)                                 # token embedding + positional embedding (N, L, D)
    x = run_blocks(clip, x, pre_block={3: hook})            # hook(x) -> x before block 3; causal mask as open_clip
    feats = head(clip, x, tokens)                           # ln_final + pool at the end-of-text token + projection

``embed`` takes ``token_embeddings`` to replace the looked-up embeddings (e.g. learnt context vectors spliced in)
before the positional embedding is added. Token sequences shorter than the context length are allowed (the positional
embedding and the causal mask are cut to their length): :func:`shortest_context` cuts a batch of prompts after its
last end-of-text token, which changes no pooled embedding, since with causal attention no token before the end of
text sees a later one. With no hooks, ``forward(clip, tokens)`` equals ``clip.encode_text(tokens)``
(tested to 1e-5). Only the built-in text tower of ``CLIP`` is supported (not ``CustomTextCLIP``'s HF towers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from common.models.clip_vit import TokenLayout, block_forward

__all__ = ["TextHook", "check_text_tower", "embed", "run_blocks", "head", "forward", "shortest_context"]

_WHERE = "common/models/clip_text.py"
#: a hook before a text block: ``hook(tokens (N, L, D)) -> tokens``
TextHook = Callable[[torch.Tensor], torch.Tensor]


def check_text_tower(clip: nn.Module, where: str = _WHERE) -> None:
    """Raise a clear error unless ``clip`` has open_clip's built-in text tower."""
    need = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    missing = [a for a in need if not hasattr(clip, a)]
    if missing:
        raise TypeError(f"{where}: needs an open_clip CLIP with the built-in text tower (missing {missing}); got "
                        f"{type(clip).__name__}")
    if not getattr(clip.transformer, "batch_first", True):
        raise ValueError(f"{where}: the text transformer must be batch_first (open_clip >= 2.24)")


def embed(clip: nn.Module, tokens: torch.Tensor, token_embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, L)`` token ids -> ``(N, L, D)``: token embedding (or ``token_embeddings``) + positional embedding."""
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens) if token_embeddings is None else token_embeddings
    return x.to(cast) + clip.positional_embedding[: x.shape[1]].to(cast)


def _layout(x: torch.Tensor) -> TokenLayout:
    return TokenLayout(num_frames=1, grid=(1, int(x.shape[1])), num_prefix_tokens=0)


def run_blocks(clip: nn.Module, x: torch.Tensor, *, pre_block: Mapping[int, TextHook] | None = None,
               grad_checkpointing: bool = False) -> torch.Tensor:
    """Run every text block over ``x`` ``(N, L, D)`` with open_clip's causal mask; ``pre_block[i](x)`` first.
    ``grad_checkpointing``: recompute each block in the backward pass (when gradients are recorded)."""
    blocks = clip.transformer.resblocks
    pre_block = pre_block or {}
    bad = sorted(i for i in pre_block if not 0 <= i < len(blocks))
    if bad:
        raise ValueError(f"{_WHERE}: hooks at blocks {bad} outside a {len(blocks)}-block text tower")
    mask = getattr(clip, "attn_mask", None)
    if mask is not None:
        mask = mask[: x.shape[1], : x.shape[1]]
    layout = _layout(x)
    recompute = grad_checkpointing and torch.is_grad_enabled()
    for i, blk in enumerate(blocks):
        hook = pre_block.get(i)
        if hook is not None:
            x = hook(x)
        if recompute:
            x = checkpoint(block_forward, blk, x, layout, None, None, mask, use_reentrant=False)
        else:
            x = block_forward(blk, x, layout, attn_mask=mask)
    return x


def head(clip: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``ln_final``, pool (open_clip's ``text_global_pool``: the end-of-text token for OpenAI's tokenizer) and the
    text projection, as ``encode_text`` does."""
    from open_clip.transformer import text_global_pool

    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    proj = clip.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def shortest_context(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` cut after the last end-of-text token of the batch (argmax pooling, causal mask): the pooled
    embeddings are those of the full-length pass. Returned unchanged where that does not hold."""
    if getattr(clip, "text_pool_type", "argmax") != "argmax" or getattr(clip, "attn_mask", None) is None:
        return tokens
    length = int(tokens.argmax(dim=-1).max()) + 1
    return tokens[:, :length]


def forward(clip: nn.Module, tokens: torch.Tensor, *, token_embeddings: torch.Tensor | None = None,
            pre_block: Mapping[int, TextHook] | None = None, grad_checkpointing: bool = False) -> torch.Tensor:
    """``embed -> run_blocks -> head``; with no hooks this is ``clip.encode_text(tokens)``."""
    x = run_blocks(clip, embed(clip, tokens, token_embeddings), pre_block=pre_block,
                   grad_checkpointing=grad_checkpointing)
    return head(clip, x, tokens)
