"""Mask class tokens on a frozen CLIP ViT: one classification per proposal in a single ViT pass.

After ``ln_pre`` the class token (with its position embedding) is copied once per proposal; the tokens are laid out
``[Q mask tokens | CLS | patches]`` as the official code. In every block (attention masks in
:func:`torch.nn.functional.scaled_dot_product_attention`'s convention, ``True`` = may attend):

* mask token i attends to the class token and to the patches inside proposal i: ``sigmoid(logits) >= 0.5``,
  max-pooled with kernel = stride = patch size (a patch is inside if any of its pixels is);
* no token attends to any mask token, the mask token itself included (the official mask blocks every mask-token
  column; an empty proposal still sees the class token, so no row is all-blocked and nothing is NaN);
* the class and patch tokens attend as in CLIP, so CLIP's own outputs are unchanged.

The mask tokens after the last block go through ``ln_post`` and ``proj`` and are L2-normalised; class scores are
their cosine to the class-name text embeddings divided by a temperature (0.01). With RMA (:mod:`maskclip.rma`, every
sixth block) the proposal masks are refined on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common.models import clip_vit
from common.models.text_head import BARE_NAME, CLIPTextClassifier
from maskclip.rma import RelativeMaskAttention, rma_block_forward

__all__ = ["MaskCLIP", "MaskTokenOutput", "MaskTokenViT", "mask_token_attention", "patch_masks"]

_WHERE = "maskclip/mask_tokens.py"


def patch_masks(mask_logits: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, Q, H, W)`` mask logits -> bool ``(B, Q, H'W')``: a patch is inside a proposal if any of its pixels has
    ``sigmoid >= 0.5`` (max pooling with kernel = stride = patch size)."""
    inside = (mask_logits.sigmoid() >= 0.5).to(torch.float32)
    return F.max_pool2d(inside, patch_size).flatten(2) > 0


def mask_token_attention(mask_logits: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The attention mask of a block over ``[Q mask tokens | CLS | patches]``: bool ``(B, L, L)``, ``True`` = query
    (row) may attend to key (column); ``L = Q + 1 + H'W'``."""
    inside = patch_masks(mask_logits, patch_size)                                 # (B, Q, P)
    b, q, p = inside.shape
    length = q + 1 + p
    mask = torch.ones(b, length, length, dtype=torch.bool, device=mask_logits.device)
    mask[:, :, :q] = False                        # nobody attends to a mask token (not even itself)
    mask[:, :q, q + 1:] = inside                  # a mask token sees the patches of its proposal (and the CLS column)
    return mask


class MaskTokenOutput(NamedTuple):
    """What :class:`MaskTokenViT` returns."""

    #: (B, Q, E) L2-normalised mask-token embeddings (``ln_post`` + ``proj``)
    embeddings: torch.Tensor
    #: (B, Q, H, W) the final mask logits (the input proposals when there is no RMA)
    masks: torch.Tensor
    #: the mask logits after each RMA block but the last (deep supervision), in block order
    aux_masks: list[torch.Tensor]
    #: (B, 1 + H'W', D) the class and patch tokens after the last block (before ``ln_post``), as plain CLIP's
    tokens: torch.Tensor


def default_rma_blocks(depth: int, every: int = 6) -> tuple[int, ...]:
    """Every ``every``-th block, 0-based: ``(5, 11, 17, 23)`` for 24 blocks."""
    return tuple(i for i in range(depth) if (i + 1) % every == 0)


class MaskTokenViT(nn.Module):
    """A frozen open_clip ViT with mask class tokens and (optionally) Relative Mask Attention.

    Args:
        visual: an open_clip ``VisionTransformer`` (frozen here: ``requires_grad=False`` on all its parameters).
        rma: add RMA blocks (``False``: the paper's "mask class tokens only" baseline, nothing trains).
        rma_blocks: 0-based block indices with RMA (default every sixth block).
        zero_init_refine, refine_chunk: see :class:`maskclip.rma.RelativeMaskAttention`.
        register_visual: ``True``: ``visual`` is a submodule; ``False``: only a reference, for an owner that registers
            the CLIP itself (so its weights are not saved twice).
        grad_checkpointing: recompute every block (plain and RMA) in the backward pass when gradients are recorded
            (the mask tokens' path back to the RMA parameters runs through the frozen blocks).
    """

    def __init__(self, visual: nn.Module, *, rma: bool = True, rma_blocks: Sequence[int] | None = None,
                 zero_init_refine: bool = False, refine_chunk: int | None = None,
                 register_visual: bool = True, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        clip_vit.check_vit(visual, _WHERE)
        if register_visual:
            self.visual = visual
        else:
            object.__setattr__(self, "visual", visual)
        for p in visual.parameters():
            p.requires_grad_(False)
        depth = len(visual.transformer.resblocks)
        self.patch_size = int(visual.conv1.kernel_size[0])
        width = int(visual.conv1.out_channels)
        blocks = tuple(default_rma_blocks(depth) if rma_blocks is None else rma_blocks) if rma else ()
        bad = [i for i in blocks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"{_WHERE}: RMA blocks {bad} outside a {depth}-block ViT")
        self.rma_blocks: tuple[int, ...] = tuple(sorted(blocks))
        self.rma = nn.ModuleDict({str(i): RelativeMaskAttention(width, self.patch_size,
                                                                zero_init_refine=zero_init_refine,
                                                                refine_chunk=refine_chunk)
                                  for i in self.rma_blocks})

    def train(self, mode: bool = True) -> MaskTokenViT:
        super().train(mode)
        self.visual.eval()  # frozen: no dropout / patch dropout ever
        return self

    def forward(self, images: torch.Tensor, mask_logits: torch.Tensor) -> MaskTokenOutput:
        """Images ``(B, 3, H, W)`` (CLIP-normalised) and proposal mask logits ``(B, Q, h, w)`` (resized bilinearly to
        ``H x W`` when they differ) -> :class:`MaskTokenOutput`."""
        visual = self.visual
        if mask_logits.ndim != 4 or mask_logits.shape[0] != images.shape[0]:
            raise ValueError(f"{_WHERE}: mask logits must be (B, Q, h, w) for {images.shape[0]} images, "
                             f"got {tuple(mask_logits.shape)}")
        if mask_logits.shape[-2:] != images.shape[-2:]:
            mask_logits = F.interpolate(mask_logits.float(), size=images.shape[-2:], mode="bilinear",
                                        align_corners=False)
        masks = mask_logits
        tokens, layout = clip_vit.embed(visual, images)
        q = masks.shape[1]
        x = torch.cat([tokens[:, :1].expand(-1, q, -1), tokens], dim=1)             # [Q mask | CLS | patches]
        layout = clip_vit.TokenLayout(num_frames=1, grid=layout.grid, num_prefix_tokens=q + 1)
        aux: list[torch.Tensor] = []
        depth = len(visual.transformer.resblocks)
        start = 0
        for stop in (*self.rma_blocks, depth):
            if stop > start:  # plain blocks [start, stop): one attention mask from the current masks
                attn = mask_token_attention(masks, self.patch_size)
                x = clip_vit.run_blocks(visual, x, layout, attn_masks=attn, blocks=range(start, stop),
                                        grad_checkpointing=self.grad_checkpointing)
            if stop == depth:
                break
            attn = mask_token_attention(masks, self.patch_size)
            args = (visual.transformer.resblocks[stop], self.rma[str(stop)], x, masks, attn, q, layout.grid)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, delta = checkpoint(rma_block_forward, *args, use_reentrant=False)
            else:
                x, delta = rma_block_forward(*args)
            masks = masks + delta.to(masks.dtype)
            aux.append(masks)
            start = stop + 1
        emb = visual.ln_post(x[:, :q])
        if visual.proj is not None:
            emb = emb @ visual.proj
        final = aux.pop() if aux else masks
        return MaskTokenOutput(F.normalize(emb, dim=-1), final, aux, x[:, q:])


class MaskCLIP(nn.Module):
    """Mask class tokens (+ RMA) on a frozen CLIP, scored against the raw class names.

    Args:
        clip: an open_clip ``CLIP`` (``common.models.load_clip(...).model``); registered here, frozen.
        tokenizer: its tokenizer.
        class_names: the classes (bare names, no template, as the official code).
        temperature: logits = cosine / temperature (0.01).
        no_object: the name of the no-object class appended as the last column in training ("other");
            ``None``: none.
        **vit_kwargs: :class:`MaskTokenViT` options (``rma``, ``rma_blocks``, ``zero_init_refine``, ``refine_chunk``).
    """

    def __init__(self, clip: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], class_names: Sequence[str],
                 *, temperature: float = 0.01, no_object: str | None = "other", **vit_kwargs: object) -> None:
        super().__init__()
        self.clip = clip
        for p in clip.parameters():
            p.requires_grad_(False)
        self.temperature = float(temperature)
        self.vit = MaskTokenViT(clip.visual, register_visual=False, **vit_kwargs)  # type: ignore[arg-type]
        self.text = CLIPTextClassifier(clip, tokenizer, class_names, BARE_NAME, register_clip=False)
        self.no_object_text = (CLIPTextClassifier(clip, tokenizer, [no_object], BARE_NAME, register_clip=False)
                               if no_object else None)

    def train(self, mode: bool = True) -> MaskCLIP:
        super().train(mode)
        self.clip.eval()
        return self

    def set_class_names(self, class_names: Sequence[str]) -> None:
        self.text.set_class_names(class_names)

    def class_embeddings(self, with_no_object: bool) -> torch.Tensor:
        """(C or C + 1, E) L2-normalised text embeddings, "other" last when asked."""
        emb = self.text.class_embeddings()
        if with_no_object:
            if self.no_object_text is None:
                raise ValueError(f"{_WHERE}: no no-object class configured")
            emb = torch.cat([emb, self.no_object_text.class_embeddings()])
        return emb

    def class_logits(self, embeddings: torch.Tensor, with_no_object: bool) -> torch.Tensor:
        """(B, Q, E) normalised mask embeddings -> (B, Q, C[+1]) cosine / temperature."""
        text = self.class_embeddings(with_no_object).to(embeddings.dtype)
        return embeddings @ text.t() / self.temperature

    def forward(self, images: torch.Tensor, mask_logits: torch.Tensor,
                with_no_object: bool | None = None) -> dict[str, object]:
        """-> ``{"pred_logits" (B, Q, C[+1]), "pred_masks" (B, Q, H, W), "aux_outputs": [{"pred_logits",
        "pred_masks"}, ...]}`` (Mask2Former's output layout; the aux outputs share the final class logits, as the
        official code). ``with_no_object`` defaults to ``self.training`` ("other" in training only)."""
        if with_no_object is None:
            with_no_object = self.training and self.no_object_text is not None
        out = self.vit(images, mask_logits)
        logits = self.class_logits(out.embeddings, with_no_object)
        return {"pred_logits": logits, "pred_masks": out.masks,
                "aux_outputs": [{"pred_logits": logits, "pred_masks": m} for m in out.aux_masks]}
