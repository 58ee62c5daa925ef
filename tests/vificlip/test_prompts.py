"""Bridge-and-prompt: deep prompts replaced before every block below depth J and nowhere above; only they train."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from common.models import load_clip
from vificlip.model import ViFiCLIP, build_vificlip
from vificlip.prompts import DeepPrompts, PromptConfig

NAMES = ["red circle", "blue square", "green triangle"]
N, J = 3, 2  # tokens per tower, depth (the tiny CLIP has 4 vision and 3 text blocks)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("shapes-clip-tiny", None)


def _capture_block_inputs(blocks) -> tuple[list[torch.Tensor], list]:
    """The tokens each block's ln_1 sees (after any pre-attention replacement)."""
    seen: list[torch.Tensor] = []
    handles = [blk.ln_1.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
               for blk in blocks]
    return seen, handles


def test_prompts_are_replaced_below_depth_and_flow_on_above(tiny_clip) -> None:
    clip = copy.deepcopy(tiny_clip.model)
    model = ViFiCLIP(clip, tiny_clip.tokenizer, NAMES, "prompting", prompts=PromptConfig(N, N, J, J)).eval()
    p = model.prompts
    vblocks, tblocks = clip.visual.transformer.resblocks, clip.transformer.resblocks
    vseen, vh = _capture_block_inputs(vblocks)
    tseen, th = _capture_block_inputs(tblocks)
    with torch.no_grad():
        model(torch.randn(2, 2, 3, 64, 64))
    for h in vh + th:
        h.remove()
    assert len(vseen) == len(vblocks) and len(tseen) == len(tblocks)
    # vision: appended after the 1 + 64 patch tokens; block 0 sees ln_pre of the input prompts
    assert vseen[0].shape[1] == 1 + 64 + N
    torch.testing.assert_close(vseen[0][:, -N:], clip.visual.ln_pre(p.vision[0]).expand(4, -1, -1))
    for i in range(1, len(vblocks)):
        last = vseen[i][:, -N:]
        if i < J:
            torch.testing.assert_close(last, p.vision[i].expand(4, -1, -1), atol=0, rtol=0)
        else:
            assert not any(torch.allclose(last[0], p.vision[k], atol=1e-3) for k in range(J))
    # text: right after the start token; block 0 sees the context + positional embedding
    pos = clip.positional_embedding[1:1 + N]
    torch.testing.assert_close(tseen[0][:, 1:1 + N], (p.text[0] + pos).expand(len(NAMES), -1, -1))
    for i in range(1, len(tblocks)):
        ctx = tseen[i][:, 1:1 + N]
        if i < J:
            torch.testing.assert_close(ctx, p.text[i].expand(len(NAMES), -1, -1), atol=0, rtol=0)
        else:
            assert not any(torch.allclose(ctx[0], p.text[k], atol=1e-3) for k in range(J))
    # the start token and the rest of the prompt are the tokenizer's: "X X X red circle."
    assert model.text_head.prompts() == [[f"X X X {n}." for n in NAMES]]


def test_only_prompts_train_and_every_prompt_row_gets_gradient(tiny_clip) -> None:
    clip = copy.deepcopy(tiny_clip.model)
    model = ViFiCLIP(clip, tiny_clip.tokenizer, NAMES, "prompting", prompts=PromptConfig(N, N, J, J)).train()
    assert {n for n, q in model.named_parameters() if q.requires_grad} == {"prompts.vision", "prompts.text"}
    F.cross_entropy(model(torch.randn(2, 2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    for t in (model.prompts.vision, model.prompts.text):
        assert t.shape[0] == J and all(t.grad[i].abs().sum() > 0 for i in range(J))
    assert all(q.grad is None for q in clip.parameters())
    # N(0, 0.02) init
    big = DeepPrompts(PromptConfig(16, 16, 9, 9), 768, 512, 12, 12)
    assert abs(float(big.vision.detach().std()) - 0.02) < 2e-3 and abs(float(big.vision.detach().mean())) < 2e-3


def test_paper_prompt_budgets() -> None:
    assert sum(q.numel() for q in DeepPrompts(PromptConfig(16, 16, 9, 9), 768, 512, 12, 12).parameters()) \
        == 16 * 768 * 9 + 16 * 512 * 9
    assert sum(q.numel() for q in DeepPrompts(PromptConfig(10, 10, 12, 12), 768, 512, 12, 12).parameters()) \
        == 10 * 768 * 12 + 10 * 512 * 12
    with pytest.raises(ValueError, match="exceed"):
        DeepPrompts(PromptConfig(4, 4, 13, 1), 768, 512, 12, 12)


def test_init_from_loads_a_vificlip_checkpoint(tiny_clip, tmp_path) -> None:
    trained = copy.deepcopy(tiny_clip.model)
    with torch.no_grad():
        trained.visual.conv1.weight.add_(1.0)
        trained.transformer.resblocks[0].mlp.c_fc.weight.mul_(0.5)
    ckpt = tmp_path / "vificlip.ckpt"
    torch.save({"state_dict": {f"model.clip.{k}": v for k, v in trained.state_dict().items()}}, ckpt)
    model = build_vificlip("shapes-clip-tiny", None, NAMES, "prompting", prompts=PromptConfig(N, N, J, J),
                           init_from=str(ckpt))
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(model.clip.state_dict()[k], v)
