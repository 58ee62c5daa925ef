import torch

from common.peft.context import TaskContext
from common.peft.swin import stage_dims, swin_blocks, swin_stage_features
from common.peft.vpt import SwinPrompts, prompted_block


def test_stage_features_match_timm_intermediates(tiny_swin):
    x = torch.randn(2, 3, 32, 32)
    ours = swin_stage_features(tiny_swin, x)
    ref = tiny_swin.forward_intermediates(x, norm=True, intermediates_only=True)
    assert [f.shape[1] for f in ours] == stage_dims(tiny_swin) == [8, 16, 32, 64]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, ref))


def test_prompted_block_without_prompts_is_the_timm_block(tiny_swin):
    x = torch.randn(2, 8, 8, 8)
    for info in swin_blocks(tiny_swin)[:2]:  # stage 1: plain and shifted windows
        empty = torch.zeros(2, 0, 8)
        y, _ = prompted_block(info.block, x, empty)
        assert torch.allclose(y, info.block(x), atol=1e-5)


def test_vpt_counts_and_prompts_change_the_features(tiny_swin):
    ctx = TaskContext(["a", "b"])
    blocks = swin_blocks(tiny_swin)
    deep = SwinPrompts(tiny_swin, 3, ctx, deep=True)
    shallow = SwinPrompts(tiny_swin, 3, ctx, deep=False)
    assert sum(p.numel() for p in deep.parameters()) == 2 * 3 * sum(b.dim for b in blocks)
    assert sum(p.numel() for p in shallow.parameters()) == 2 * 3 * blocks[0].dim
    x = torch.randn(2, 3, 32, 32)
    plain = swin_stage_features(tiny_swin, x)
    for vpt in (deep, shallow):
        with ctx.use("a"):
            fa = vpt.stage_features(tiny_swin, x)
        with ctx.use("b"):
            fb = vpt.stage_features(tiny_swin, x)
        assert [f.shape for f in fa] == [f.shape for f in plain]
        assert not torch.allclose(fa[0], plain[0]) and not torch.allclose(fa[-1], fb[-1])
