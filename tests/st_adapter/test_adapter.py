"""The ST-Adapter kernel and its insertion into open_clip's ViT (tiny random ViT, 32 px, few frames)."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import VisionTransformer

from common.models import clip_vit
from st_adapter.adapter import AdapterPlacement, STAdapter, adapter_parameter_count
from st_adapter.model import VideoViT, average_view_softmax, build_video_vit

TINY = "shapes-clip-tiny"


def _make_visual() -> VisionTransformer:
    """A real open_clip ViT at test size: 32 px, patch 8 (4x4 grid), width 32, 4 blocks."""
    return VisionTransformer(image_size=32, patch_size=8, width=32, layers=4, heads=2, mlp_ratio=2.0, output_dim=16)


@pytest.fixture(scope="module")
def tiny_visual_state() -> dict:
    torch.manual_seed(0)
    return _make_visual().state_dict()


def _visual(state: dict) -> VisionTransformer:
    visual = _make_visual()
    visual.load_state_dict(state)
    return visual


def _randomise(adapter: STAdapter) -> None:
    g = torch.Generator().manual_seed(1)
    for p in adapter.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.2


def test_adapter_is_identity_at_init_and_has_the_official_shapes() -> None:
    ad = STAdapter(96, 48)
    assert tuple(ad.conv.weight.shape) == (48, 1, 3, 1, 1) and ad.conv.groups == 48
    assert ad.conv.padding == (1, 0, 0)
    assert not ad.conv.weight.any() and not ad.conv.bias.any()
    assert not ad.fc1.bias.any() and not ad.fc2.bias.any() and ad.fc1.weight.any() and ad.fc2.weight.any()
    x = torch.randn(2 * 3, 1 + 16, 96, requires_grad=True)
    assert torch.equal(ad(x, num_frames=3), x)
    assert sum(p.numel() for p in ad.parameters()) == adapter_parameter_count(96, 48)
    assert adapter_parameter_count(768, 384) == 592_512  # ViT-B/16, r = 384


def test_adapter_temporal_receptive_field_is_t_minus_1_to_t_plus_1() -> None:
    b, t, hw, d = 2, 6, 9, 32
    ad = STAdapter(d, 16)
    _randomise(ad)
    x = torch.randn(b * t, 1 + hw, d)
    frame = 2
    x2 = x.clone().reshape(b, t, 1 + hw, d)
    x2[1, frame] += torch.randn(1 + hw, d)  # change every token (CLS too) of frame 2 of clip 1
    x2 = x2.reshape(b * t, 1 + hw, d)
    with torch.no_grad():
        diff = (ad(x, t) - ad(x2, t)).reshape(b, t, 1 + hw, d).abs().amax(dim=-1)
    assert diff[0].max() == 0, "another clip of the batch must not change"
    changed = sorted({int(f) for f in torch.nonzero(diff[1, :, 1:] > 1e-6)[:, 0]})
    assert changed == [frame - 1, frame, frame + 1]
    # CLS bypasses the adapter: only frame 2's own CLS changed (its input changed), the others did not
    assert [int(f) for f in torch.nonzero(diff[1, :, 0] > 0)[:, 0]] == [frame]
    # a 1x1x1 spatial kernel: a patch only sees its own position in the neighbouring frames
    x3 = x.clone().reshape(b, t, 1 + hw, d)
    x3[0, frame, 1 + 4] += 1.0  # patch 4 of frame 2
    with torch.no_grad():
        d3 = (ad(x, t) - ad(x3.reshape(b * t, 1 + hw, d), t)).reshape(b, t, 1 + hw, d).abs().amax(dim=-1)
    assert set(map(tuple, torch.nonzero(d3[0] > 1e-6).tolist())) == {(frame - 1, 5), (frame, 5), (frame + 1, 5)}


def test_adapter_activation_and_bad_input() -> None:
    ad = STAdapter(16, 8, activation="gelu")
    _randomise(ad)
    x = torch.randn(4, 1 + 4, 16)
    plain = STAdapter(16, 8)
    plain.load_state_dict(ad.state_dict())
    assert not torch.allclose(ad(x, 2), plain(x, 2))
    with pytest.raises(ValueError, match="not a multiple"):
        ad(x, 3)
    with pytest.raises(ValueError, match="square"):
        ad(torch.randn(2, 1 + 6, 16), 2)
    assert ad(torch.randn(2, 1 + 6, 16), 2, grid=(2, 3)).shape == (2, 7, 16)
    with pytest.raises(ValueError, match="activation"):
        STAdapter(16, 8, activation="swishy")


def test_placement_names_and_subsets() -> None:
    assert AdapterPlacement.from_name("12x384", 12) == AdapterPlacement(384, ("pre_mlp",))
    p24 = AdapterPlacement.from_name("24x384", 12)
    assert p24.positions == ("pre_attn", "pre_mlp") and p24.num_adapters(12) == 24 and p24.name(12) == "24x384"
    last4 = AdapterPlacement.from_name("4x128", 12)
    assert last4.block_indices(12) == [8, 9, 10, 11]
    assert AdapterPlacement(64, ("pre_mlp", "pre_attn"), blocks=[0, -1]).block_indices(4) == [0, 3]
    with pytest.raises(ValueError, match="do not fit"):
        AdapterPlacement.from_name("30x384", 12)
    with pytest.raises(ValueError, match="positions"):
        AdapterPlacement(8, ("post_mlp",))


def test_backbone_plus_adapters_at_init_equals_backbone_alone(tiny_visual_state: dict) -> None:
    visual = _visual(tiny_visual_state)
    ref = _visual(tiny_visual_state).requires_grad_(False)
    model = VideoViT(visual, 5, AdapterPlacement(32, ("pre_attn", "pre_mlp")))
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_tokens(video)
        # adapters at init are exactly the identity: bit-equal to the backbone run through the same block stepper
        x, layout = clip_vit.embed(ref, video)
        assert torch.equal(tokens, clip_vit.run_blocks(ref, x, layout))
        # ... and that stepper is open_clip's own transformer (a different attention kernel: float rounding only)
        torch.testing.assert_close(tokens, ref.transformer(ref._embeds(video.flatten(0, 1))), rtol=0, atol=1e-5)
        # one frame: our pooled feature through CLIP's projection is CLIP's image embedding
        one = video[:, :1]
        assert torch.equal(model.forward_features(one) @ ref.proj, clip_vit.forward(ref, one[:, 0]))
        torch.testing.assert_close(model.forward_features(one) @ ref.proj, ref(one[:, 0]), rtol=0, atol=1e-5)
    assert len(model.adapters) == 2 * 4


def test_only_adapters_and_head_are_trainable(tiny_visual_state: dict) -> None:
    model = VideoViT(_visual(tiny_visual_state), 7, AdapterPlacement(32, ("pre_mlp",), blocks=2))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(("adapters.", "head.")) for n in names)
    assert sorted(model.adapters.keys()) == ["2_pre_mlp", "3_pre_mlp"]
    video = torch.randn(2, 4, 3, 32, 32)
    model(video).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    counts = model.parameter_counts()
    assert counts["adapters"] == 2 * adapter_parameter_count(32, 32) and counts["head"] == 32 * 7 + 7
    assert counts["backbone"] == 0


def test_methods_share_the_model(tiny_visual_state: dict) -> None:
    probe = build_video_vit(TINY, None, 4, "linear_probe")
    full = build_video_vit(TINY, None, 4, "full_finetune")
    assert len(probe.adapters) == 0 and probe.parameter_counts()["backbone"] == 0
    fc = full.parameter_counts()
    assert fc["backbone"] > 0 and fc["adapters"] == 0
    # CLIP's projection is unused by the video head and stays frozen even in full fine-tuning
    assert not full.backbone.proj.requires_grad
    # the linear probe is blind to frame order: reversing the clip gives the same logits
    probe.eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(probe(video), probe(video.flip(1)), atol=1e-5)
    with pytest.raises(ValueError, match="fp32"):
        VideoViT(_visual(tiny_visual_state), 3, None, freeze_backbone=False, backbone_dtype=torch.float16)


def test_half_precision_backbone_keeps_adapters_fp32(tiny_visual_state: dict) -> None:
    model = build_video_vit(TINY, None, 3, "st_adapter", adapter_width=16, backbone_dtype="bf16")
    assert model.backbone.conv1.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.adapters.parameters())
    out = model(torch.randn(1, 2, 3, 64, 64))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.adapters.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(tiny_visual_state: dict) -> None:
    torch.manual_seed(0)
    a = VideoViT(_visual(tiny_visual_state), 3, AdapterPlacement(16, ("pre_mlp",)), dropout=0.0)
    b = VideoViT(_visual(tiny_visual_state), 3, AdapterPlacement(16, ("pre_mlp",)), dropout=0.0,
                 grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        for ad in m.adapters.values():
            torch.nn.init.constant_(ad.conv.weight, 0.1)
    video = torch.randn(2, 3, 3, 32, 32)
    a(video).square().sum().backward()
    b(video).square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.requires_grad:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-5), n


def test_average_view_softmax_averages_probabilities_not_logits() -> None:
    logits = torch.tensor([[10.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 3.0]])  # 2 videos x 2 views
    probs = average_view_softmax(logits, 2)
    expected = torch.stack([logits[:2].softmax(-1).mean(0), logits[2:].softmax(-1).mean(0)])
    assert torch.allclose(probs, expected)
    # averaging logits would have picked class 0 for video 0 by a wider margin; softmax averaging differs
    assert not torch.allclose(probs, logits.reshape(2, 2, 2).mean(1).softmax(-1))
    with pytest.raises(ValueError):
        average_view_softmax(logits, 3)


class _ReferenceVideoViT(torch.nn.Module):
    """The ST-Adapter forward as it ran before common/models/clip_vit.py: open_clip's own block pieces
    (``ln_1``, ``attention`` through ``nn.MultiheadAttention``, ``mlp``), the adapters called in between."""

    def __init__(self, model: VideoViT) -> None:
        super().__init__()
        self.m = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        m, (b, t) = self.m, video.shape[:2]
        x = m.backbone._embeds(video.flatten(0, 1))
        for i, blk in enumerate(m.backbone.transformer.resblocks):
            if (ad := m.adapter(i, "pre_attn")) is not None:
                x = ad(x, t)
            x = x + blk.ls_1(blk.attention(q_x=blk.ln_1(x)))
            if (ad := m.adapter(i, "pre_mlp")) is not None:
                x = ad(x, t)
            x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
        return m.head(m.dropout(m.backbone.ln_post(x[:, 0].reshape(b, t, -1).mean(1))))


@pytest.mark.parametrize("method", ["st_adapter", "full_finetune"])
def test_outputs_and_gradients_equal_the_previous_implementation(tiny_visual_state: dict, method: str) -> None:
    """Same weights, same video: the clip_vit-based VideoViT gives the old code's logits and gradients (1e-5)."""
    placement = AdapterPlacement(16, ("pre_attn", "pre_mlp"), blocks=3) if method == "st_adapter" else None
    model = VideoViT(_visual(tiny_visual_state), 5, placement, freeze_backbone=method == "st_adapter",
                     dropout=0.0).train()
    for ad in model.adapters.values():
        _randomise(ad)  # non-identity adapters, so that the hooks really act
    ref = _ReferenceVideoViT(model)
    video = torch.randn(2, 4, 3, 32, 32)
    out, expected = model(video), ref(video)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    params = [p for _, p in model.trainable_named_parameters()]
    grads_new = torch.autograd.grad(out.square().sum(), params)
    grads_ref = torch.autograd.grad(expected.square().sum(), params)
    assert len(grads_new) == len(grads_ref) > 2
    for a, b in zip(grads_new, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
