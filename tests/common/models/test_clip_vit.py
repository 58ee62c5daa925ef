"""Block-level access to open_clip's ViT (common/models/clip_vit.py) on tiny random towers, no weights, no network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from common.models import clip_vit
from common.models.clip import load_clip


def _vit(seed: int = 0, **kwargs: object) -> VisionTransformer:
    torch.manual_seed(seed)
    opts = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "heads": 4, "mlp_ratio": 2.0,
            "output_dim": 16, **kwargs}
    return VisionTransformer(**opts).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{}, {"pool_type": "avg"}, {"final_ln_after_pool": True}, {"ls_init_value": 0.5},
                                    {"block_type": "custom"}])
def test_forward_without_hooks_is_open_clips_forward(kwargs: dict) -> None:
    visual = _vit(**kwargs)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clip_vit.forward(visual, x), visual(x), rtol=0, atol=1e-5)
    # and with gradients flowing (nn.MultiheadAttention takes its slow path then; we do not)
    x.requires_grad_(True)
    torch.testing.assert_close(clip_vit.forward(visual, x), visual(x), rtol=0, atol=1e-5)


def test_forward_of_the_tiny_clip_tower_and_its_tokens() -> None:
    torch.manual_seed(0)
    visual = load_clip("shapes-clip-tiny", None).model.visual
    size = int(visual.image_size[0])
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(clip_vit.forward(visual, x), visual(x), rtol=0, atol=1e-5)
        tokens, layout = clip_vit.embed(visual, x)
        assert layout == clip_vit.TokenLayout(1, tuple(visual.grid_size), 1)
        assert tokens.shape == (2, 1 + layout.grid[0] * layout.grid[1], visual.class_embedding.shape[0])
        torch.testing.assert_close(tokens, visual._embeds(x), rtol=0, atol=0)
        pooled, patches = clip_vit.head(visual, clip_vit.run_blocks(visual, tokens, layout), return_tokens=True)
        assert patches.shape[1] == layout.grid[0] * layout.grid[1]


def test_frames_are_batched_clip_major() -> None:
    visual = _vit()
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        tokens, layout = clip_vit.embed(visual, video)
        assert layout.num_frames == 4 and tokens.shape[0] == 8
        per_frame = clip_vit.forward(visual, video)
        torch.testing.assert_close(per_frame, visual(video.flatten(0, 1)), rtol=0, atol=1e-5)
        torch.testing.assert_close(per_frame.view(2, 4, -1)[1, 2], visual(video[1, 2:3])[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="expected images"):
        clip_vit.embed(visual, torch.randn(3, 32, 32))


def test_hooks_run_where_asked_with_the_layout() -> None:
    visual = _vit()
    video = torch.randn(2, 3, 3, 32, 32)
    calls: list[tuple[str, int, clip_vit.TokenLayout]] = []

    def recorder(tag: str, block: int) -> clip_vit.Hook:
        def hook(x: torch.Tensor, layout: clip_vit.TokenLayout) -> torch.Tensor:
            calls.append((tag, block, layout))
            return x
        return hook

    tokens, layout = clip_vit.embed(visual, video)
    with torch.no_grad():
        plain = clip_vit.run_blocks(visual, tokens, layout)
        hooked = clip_vit.run_blocks(visual, tokens, layout, pre_attn={2: recorder("attn", 2)},
                                     pre_mlp={0: recorder("mlp", 0), 2: recorder("mlp", 2)})
        assert torch.equal(plain, hooked)  # identity hooks change nothing
        assert [(t, b) for t, b, _ in calls] == [("mlp", 0), ("attn", 2), ("mlp", 2)]
        assert all(lay == clip_vit.TokenLayout(3, (4, 4), 1) for _, _, lay in calls)
        # a hook's change propagates: before the MLP of the last block it adds straight to the output's input
        shift = clip_vit.run_blocks(visual, tokens, layout, pre_mlp={2: lambda x, _: x + 1.0})
        assert not torch.allclose(shift, plain)
        # blocks= runs a prefix only
        two = clip_vit.run_blocks(visual, tokens, layout, blocks=range(2))
        blk = visual.transformer.resblocks
        torch.testing.assert_close(two, blk[1](blk[0](tokens)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="outside a 3-block ViT"):
        clip_vit.run_blocks(visual, tokens, layout, pre_mlp={3: lambda x, _: x})


def _reference_attention(blk: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v through the MHA's weights, written out; bias (N, heads, L, L)."""
    attn = blk.attn
    n, length, d = x.shape
    h = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.view(n, length, h, d // h).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2) / (d // h) ** 0.5 + bias).softmax(-1)
    return attn.out_proj((w @ v).transpose(1, 2).reshape(n, length, d))


def test_attention_masks_follow_sdpa_convention_in_every_shape() -> None:
    visual = _vit()
    blk = visual.transformer.resblocks[0]
    n, length, heads = 2, 17, 4
    x = torch.randn(n, length, 32)
    allow = torch.rand(n, heads, length, length) > 0.3
    allow |= torch.eye(length, dtype=torch.bool)  # every query may attend to itself: no empty row
    bias = torch.zeros(allow.shape).masked_fill(~allow, float("-inf"))
    with torch.no_grad():
        expected = _reference_attention(blk, x, bias)
        torch.testing.assert_close(clip_vit.attention(blk, x, allow), expected, rtol=0, atol=1e-5)   # bool: True=attend
        torch.testing.assert_close(clip_vit.attention(blk, x, bias), expected, rtol=0, atol=1e-5)    # additive
        # (N, L, L): one mask per row shared by heads; (L, L): one for all
        torch.testing.assert_close(clip_vit.attention(blk, x, allow[:, 0]),
                                   _reference_attention(blk, x, bias[:, :1]), rtol=0, atol=1e-5)
        torch.testing.assert_close(clip_vit.attention(blk, x, allow[0, 0]),
                                   _reference_attention(blk, x, bias[:1, :1]), rtol=0, atol=1e-5)
        # nn.MultiheadAttention's convention is the opposite (True = blocked): our True-mask must not mean that
        mha = blk.attn(x, x, x, attn_mask=~allow[0, 0], need_weights=False)[0]
        torch.testing.assert_close(clip_vit.attention(blk, x, allow[0, 0]), mha, rtol=0, atol=1e-5)
        # all True = no mask
        torch.testing.assert_close(clip_vit.attention(blk, x, torch.ones(length, length, dtype=torch.bool)),
                                   clip_vit.attention(blk, x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        clip_vit.attention(blk, x, allow[..., :5])


def test_masked_keys_do_not_reach_the_query_in_custom_blocks_too() -> None:
    """Query 0 may attend to tokens {0, 1} only: changing the other tokens leaves its output unchanged."""
    for visual in (_vit(), _vit(block_type="custom")):
        blk = visual.transformer.resblocks[1]
        x = torch.randn(2, 17, 32)
        y = x.clone()
        y[:, 2:] += torch.randn(2, 15, 32)
        allow = torch.ones(17, 17, dtype=torch.bool)
        allow[0, 2:] = False
        for mask in (allow, allow.expand(2, 17, 17), allow.expand(2, 4, 17, 17)):
            with torch.no_grad():
                a, b = clip_vit.attention(blk, x, mask), clip_vit.attention(blk, y, mask)
                torch.testing.assert_close(a[:, 0], b[:, 0], rtol=0, atol=1e-5)
                assert not torch.allclose(a[:, 1], b[:, 1])
                free = clip_vit.attention(blk, y)
                assert not torch.allclose(free[:, 0], a[:, 0])


def test_per_block_masks_apply_to_their_block_only() -> None:
    visual = _vit()
    x = torch.randn(2, 3, 32, 32)
    tokens, layout = clip_vit.embed(visual, x)
    only_self = torch.eye(17, dtype=torch.bool)
    with torch.no_grad():
        plain = clip_vit.run_blocks(visual, tokens, layout)
        last = clip_vit.run_blocks(visual, tokens, layout, attn_masks={2: only_self})
        seq = clip_vit.run_blocks(visual, tokens, layout, attn_masks=[None, None, only_self])
        assert torch.equal(last, seq) and not torch.allclose(last, plain)
        # the first two blocks ran unmasked: recompute block 2 by hand with "each token attends to itself only"
        blk = visual.transformer.resblocks
        h = blk[1](blk[0](tokens))
        v = F.linear(blk[2].ln_1(h), blk[2].attn.in_proj_weight, blk[2].attn.in_proj_bias).chunk(3, -1)[2]
        h = h + blk[2].attn.out_proj(v)  # softmax over one key is 1: attention returns that token's value
        h = h + blk[2].mlp(blk[2].ln_2(h))
        torch.testing.assert_close(last, h, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one per block"):
        clip_vit.run_blocks(visual, tokens, layout, attn_masks=[None, only_self])


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for ckpt in (False, True):
        visual = _vit().train()
        x = torch.randn(2, 3, 32, 32, requires_grad=True)
        clip_vit.forward(visual, x, grad_checkpointing=ckpt, pre_mlp={1: lambda t, _: t * 1.5}).square().sum().backward()
        grads.append([x.grad, *(p.grad for p in visual.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clear_errors_for_towers_it_cannot_step() -> None:
    with pytest.raises(TypeError, match="needs an open_clip VisionTransformer"):
        clip_vit.check_vit(torch.nn.Linear(2, 2), where="my/file.py")
    with pytest.raises(TypeError, match="attentional-pool"):
        clip_vit.check_vit(_vit(attentional_pool=True, attn_pooler_heads=4))
    clip_vit.check_vit(_vit())
