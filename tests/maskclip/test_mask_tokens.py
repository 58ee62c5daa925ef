"""Mask class tokens and Relative Mask Attention (maskclip/mask_tokens.py, maskclip/rma.py) on tiny random ViTs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from common.models import clip_vit
from maskclip.mask_tokens import MaskTokenViT, mask_token_attention, patch_masks
from maskclip.rma import RelativeMaskAttention, rma_parameter_count

from .conftest import tiny_vit

S, P = 32, 8  # image size, patch size: a 4 x 4 patch grid


def _plain(visual: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, layout = clip_vit.embed(visual, images)
    tokens = clip_vit.run_blocks(visual, tokens, layout)
    return tokens, clip_vit.head(visual, tokens)


def _proposals() -> torch.Tensor:
    """(1, 3, 32, 32): 0 = one pixel of patch 0 at logit 0 (sigmoid exactly 0.5: inside), 1 = empty, 2 = all."""
    m = torch.full((1, 3, S, S), -10.0)
    m[0, 0, 3, 5] = 0.0
    m[0, 2] = 10.0
    return m


def test_attention_pattern_on_a_hand_made_proposal_set() -> None:
    inside = patch_masks(_proposals(), P)
    assert inside.shape == (1, 3, 16)
    assert inside[0, 0].nonzero().flatten().tolist() == [0]
    assert not inside[0, 1].any() and inside[0, 2].all()
    mask = mask_token_attention(_proposals(), P)                   # bool, True = may attend (SDPA convention)
    q, length = 3, 3 + 1 + 16
    assert mask.shape == (1, length, length) and mask.dtype == torch.bool
    assert not mask[:, :, :q].any()                               # nobody attends to a mask token, not even itself
    assert mask[:, q:, q:].all()                                  # CLS and patches attend as in CLIP
    assert mask[0, :q, q].all()                                   # every mask token sees CLS
    assert mask[0, 0, q + 1:].nonzero().flatten().tolist() == [0]  # token 0: its one patch
    assert not mask[0, 1, q + 1:].any()                           # empty proposal: CLS only
    assert mask[0, 2, q + 1:].all()


@pytest.mark.parametrize("rma", [False, True])
def test_class_and_patch_tokens_compute_as_plain_clip(rma: bool) -> None:
    visual = tiny_vit()
    model = MaskTokenViT(visual, rma=rma, rma_blocks=(1, 3, 5))
    images = torch.randn(2, 3, S, S)
    out = model(images, torch.randn(2, 5, S, S) * 3)
    plain, _ = _plain(visual, images)
    torch.testing.assert_close(out.tokens, plain, atol=1e-5, rtol=0)
    assert out.embeddings.shape == (2, 5, 16)
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(2, 5))


def test_whole_image_proposal_gives_clips_image_embedding_and_empty_gives_no_nan() -> None:
    visual = tiny_vit()
    model = MaskTokenViT(visual, rma=False)
    images = torch.randn(2, 3, S, S)
    masks = torch.stack([torch.full((2, S, S), 10.0), torch.full((2, S, S), -10.0)], dim=1)  # whole, empty
    out = model(images, masks)
    _, image_emb = _plain(visual, images)
    torch.testing.assert_close(out.embeddings[:, 0], F.normalize(image_emb, dim=-1), atol=1e-5, rtol=0)
    assert torch.isfinite(out.embeddings).all()
    assert torch.equal(out.masks, masks) and out.aux_masks == []


def test_mask_tokens_do_not_see_each_other() -> None:
    model = MaskTokenViT(tiny_vit(), rma=False)
    images = torch.randn(1, 3, S, S)
    masks = torch.randn(1, 3, S, S) * 5
    other = masks.clone()
    other[0, 1:] = torch.randn(2, S, S) * 5                        # change the other proposals only
    torch.testing.assert_close(model(images, masks).embeddings[0, 0], model(images, other).embeddings[0, 0],
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("rma", [False, True])
def test_a_mask_token_reads_only_the_patches_inside_its_proposal(rma: bool) -> None:
    """In one block, a mask token's output depends on CLS (image-independent after ln_pre) and its proposal's
    patches only. (In a deeper ViT it depends on the outside patches through the inside ones, which attend to every
    patch as in CLIP; per block the locality is the same.)"""
    model = MaskTokenViT(tiny_vit(layers=1), rma=rma, rma_blocks=(0,))
    masks = torch.full((1, 1, S, S), -10.0)
    masks[0, 0, :16, :16] = 10.0                                   # the top-left 2 x 2 patches
    images = torch.randn(1, 3, S, S)
    changed = images.clone()
    changed[0, :, 24:, 24:] += 3.0                                 # a patch outside
    base = model(images, masks).embeddings
    torch.testing.assert_close(model(changed, masks).embeddings, base, atol=1e-6, rtol=0)
    changed_in = images.clone()
    changed_in[0, :, :8, :8] += 3.0                                # a patch inside
    assert (model(changed_in, masks).embeddings - base).abs().max() > 1e-4


def test_rma_refines_masks_feeds_later_blocks_and_gives_aux_masks() -> None:
    visual = tiny_vit()
    images, masks = torch.randn(1, 3, S, S), torch.randn(1, 4, S, S)
    out = MaskTokenViT(visual, rma_blocks=(1, 3, 5))(images, masks)
    assert len(out.aux_masks) == 2 and out.masks.shape == masks.shape
    assert not torch.allclose(out.aux_masks[0], masks) and not torch.allclose(out.masks, out.aux_masks[1])
    still = MaskTokenViT(visual, rma_blocks=(1, 3, 5), zero_init_refine=True)(images, masks)
    assert torch.equal(still.masks, masks)                         # zero refinement: proposals unchanged
    plain = MaskTokenViT(visual, rma=False)(images, masks)
    assert (still.embeddings - plain.embeddings).abs().max() > 1e-5  # the relative logits still act


def test_chunked_refinement_equals_the_naive_one() -> None:
    torch.manual_seed(0)
    rma = RelativeMaskAttention(32, P)
    q, k = torch.randn(2, 7, 32), torch.randn(2, 16, 32)
    naive = rma.refinement(q, k, (4, 4))
    rma.refine_chunk = 3
    torch.testing.assert_close(rma.refinement(q, k, (4, 4)), naive, atol=1e-5, rtol=0)
    assert naive.shape == (2, 7, S, S)


def test_only_rma_trains_and_the_frozen_clip_is_unchanged_by_a_step() -> None:
    visual = tiny_vit()
    model = MaskTokenViT(visual, rma_blocks=(1, 3, 5))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("rma.") for n in trainable)
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    rma_before = {k: v.clone() for k, v in model.rma.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    out = model(torch.randn(2, 3, S, S), torch.randn(2, 3, S, S))
    (out.embeddings.sum() + out.masks.pow(2).mean() + sum(m.mean() for m in out.aux_masks)).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in visual.state_dict().items())
    assert all(p.grad is None for p in visual.parameters())
    assert any(not torch.equal(rma_before[k], v) for k, v in model.rma.state_dict().items())
    assert not visual.training


def test_rma_parameter_count_by_formula_and_at_paper_scale() -> None:
    model = MaskTokenViT(tiny_vit(), rma_blocks=(1, 3, 5))
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    d, p2 = 32, P * P
    assert count == 3 * ((d * p2 + d) + 2 * d + (d * d + d) + (d * p2 + p2)) == 3 * rma_parameter_count(d, P)
    with torch.device("meta"):  # ViT-L/14@336, nothing allocated
        big = VisionTransformer(image_size=336, patch_size=14, width=1024, layers=24, heads=16, mlp_ratio=4.0,
                                output_dim=768)
        paper = MaskTokenViT(big)
    assert paper.rma_blocks == (5, 11, 17, 23)
    trainable = sum(p.numel() for p in paper.parameters() if p.requires_grad)
    assert rma_parameter_count(1024, 14) == 1_454_276
    assert trainable == 4 * 1_454_276 == 5_817_104                # the paper: ~5.82M


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    visual = tiny_vit()
    images, masks = torch.randn(2, 3, S, S), torch.randn(2, 3, S, S)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        model = MaskTokenViT(visual, rma_blocks=(1, 3, 5), grad_checkpointing=ckpt)
        out = model(images, masks)
        (out.embeddings.pow(2).sum() + out.masks.mean() + out.aux_masks[0].mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)
