"""The Conv-Adapter row of the Polyhistor table (beyond the paper): per-task Conv-Adapters parallel to every Swin
block's attention, what trains, its parameter count by hand, where it reads and writes, and how it starts."""

import copy

import torch

from benchmarks.param_budgets.polyhistor import count_row
from common.peft.conv_bottleneck import ConvBottleneck as ConvAdapter
from common.peft.swin import swin_stage_features
from polyhistor.decoder import segformer_head_parameters
from polyhistor.encoder import PeftConfig
from polyhistor.network import PASCAL_OUTPUTS, build_network

from .conftest import make_tiny_swin

TASKS = list(PASCAL_OUTPUTS)


def _by_hand(dims_per_block: list[int], gamma: int = 8, k: int = 7) -> int:
    """One adapter per block: grouped k x k conv C -> C/gamma (C k^2 weights + C/gamma biases), 1 x 1 conv back
    (C/gamma x C + C), alpha (C)."""
    total = 0
    for c in dims_per_block:
        w = c // gamma
        total += c * k * k + w + w * c + c + c
    return total


def test_only_the_per_task_conv_adapters_and_the_decoders_train():
    net = build_network(make_tiny_swin(), "conv_adapter", TASKS, decoder_embed_dim=16)
    assert not any(p.requires_grad for p in net.encoder.swin.parameters())
    adapters = net.encoder.peft["conv_adapters"]
    assert list(adapters) == [f"s{s}_b{b}_attn_grid" for s in range(4) for b in range(2)]
    for key in adapters:
        assert set(adapters[key].per_task) == set(TASKS)
        assert all(isinstance(m, ConvAdapter) for m in adapters[key].per_task.values())
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    expected = {n for n, _ in net.named_parameters() if n.startswith(("decoders.", "encoder.peft.conv_adapters."))}
    assert trainable == expected


def test_parameter_count_matches_the_hand_computation_tiny_and_paper_scale():
    # the test Swin: dims 8/16/32/64, 2 blocks a stage; gamma 4 splits the 8-channel stage into 2 groups
    net = build_network(make_tiny_swin(), "conv_adapter", TASKS, peft=PeftConfig(conv_adapter_gamma=4),
                        decoder_embed_dim=16)
    adapters = sum(p.numel() for p in net.encoder.peft.parameters())
    assert adapters == len(TASKS) * _by_hand([8, 8, 16, 16, 32, 32, 64, 64], gamma=4)
    # Swin-T (depths 2-2-6-2, dims 96-192-384-768), gamma 8, k 7: 495,336 per task + the four E=256 decoders
    swin_t = [96] * 2 + [192] * 2 + [384] * 6 + [768] * 2
    assert _by_hand(swin_t) == 495_336
    decoders = sum(segformer_head_parameters([96, 192, 384, 768], k, 256) for k in PASCAL_OUTPUTS.values())
    assert count_row("conv_adapter") == decoders + 4 * 495_336


def test_adapter_reads_norm1_on_the_grid_and_adds_to_the_attention_branch():
    net = build_network(make_tiny_swin(2), "conv_adapter", TASKS, decoder_embed_dim=16).eval()
    block = net.encoder.swin.layers[1].blocks[1]
    adapter = net.encoder.peft["conv_adapters"]["s1_b1_attn_grid"].per_task["sal"]
    seen: dict[str, torch.Tensor] = {}
    hooks = [block.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
             adapter.register_forward_hook(lambda m, a, o: seen.update(a_in=a[0], a_out=o)),
             block.norm2.register_forward_pre_hook(lambda m, a: seen.__setitem__("norm2_in", a[0]))]
    with torch.no_grad():
        net.encoder(torch.randn(2, 3, 32, 32), "sal")
        for h in hooks:
            h.remove()
        x = seen["x"]
        assert x.dim() == 4 and seen["a_in"].shape == x.shape  # (B, H, W, C): the whole grid, not windows
        n1 = block.norm1  # applied by hand: calling the hooked module again would re-arm the parallel point
        normed = torch.nn.functional.layer_norm(x, n1.normalized_shape, n1.weight, n1.bias, n1.eps)
        assert torch.allclose(seen["a_in"], normed)
        attn = block._attn(normed)  # the frozen attention branch (drop-path is the identity in eval)
        residual = x + attn + seen["a_out"]  # the adapter lands in the residual stream before the MLP
        assert torch.allclose(seen["norm2_in"].reshape(residual.shape), residual, atol=1e-5)


def test_official_start_is_not_the_zero_map_and_alpha_zero_starts_as_the_frozen_swin():
    """Conv-Adapter's official code starts alpha at 1 with the backbone's conv init (not the zero map), so the row
    does not start as its frozen backbone; alpha_init=0 (this project's option) does."""
    x = torch.randn(2, 3, 32, 32)
    swin = make_tiny_swin(3)
    with torch.no_grad():
        expected = swin_stage_features(copy.deepcopy(swin), x)
        official = build_network(copy.deepcopy(swin), "conv_adapter", TASKS, decoder_embed_dim=16).eval()
        assert all(torch.equal(m.alpha, torch.ones_like(m.alpha))
                   for m in official.encoder.peft.modules() if isinstance(m, ConvAdapter))
        assert not torch.allclose(official.encoder(x, "semseg")[-1], expected[-1], atol=1e-4)
        zero = build_network(copy.deepcopy(swin), "conv_adapter", TASKS, decoder_embed_dim=16,
                             peft=PeftConfig(conv_adapter_alpha_init=0.0)).eval()
        for task in TASKS:
            assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(zero.encoder(x, task), expected))
