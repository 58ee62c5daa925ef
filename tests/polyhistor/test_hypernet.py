"""Hypernetwork banks: shapes at Swin-T scale, Kronecker structure, low rank, once-per-task generation."""

import pytest
import torch

from polyhistor.hypernet import (
    ADAPTER_DOWN_STD,
    AdapterSlot,
    DecomposedAdapterBank,
    FullAdapterBank,
    KroneckerAdapterBank,
    kron_scale,
)
from polyhistor.network import PASCAL_OUTPUTS, build_network

from .conftest import make_tiny_swin

SWIN_T = [AdapterSlot(d, d // 4) for d in (96, 192, 384, 768)]


def test_kronecker_scaling_shapes_for_all_four_swin_t_stages():
    bank = KroneckerAdapterBank(SWIN_T, num_tasks=4, rank=8)
    assert bank.ks == [1, 2, 4, 8]
    assert [tuple(s.shape) for s in bank.scale_down] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    for p in bank.scale_up:
        torch.nn.init.normal_(p)
    torch.nn.init.normal_(bank.up.right.weight)
    weights = bank(2)
    for slot, k, w, s_up in zip(SWIN_T, bank.ks, weights, bank.scale_up):
        assert w.w_down.shape == (slot.bottleneck, slot.dim)
        assert w.w_up.shape == (slot.dim, slot.bottleneck)
        assert w.b_down.shape == (slot.bottleneck,) and w.b_up.shape == (slot.dim,)
        # block (i, j) of W_l is S_l[i, j] * T
        t = w.w_up[:96, :24] / s_up[0, 0]
        for i in range(k):
            for j in range(k):
                block = w.w_up[i * 96:(i + 1) * 96, j * 24:(j + 1) * 24]
                assert torch.allclose(block, s_up[i, j] * t, atol=1e-5, rtol=1e-4)


def test_kron_scale_matches_definition():
    s, t = torch.randn(2, 2), torch.randn(3, 5)
    out = kron_scale(s, t)
    assert out.shape == (6, 10)
    assert torch.allclose(out[3:, :5], s[1, 0] * t)


def test_decomposed_weights_have_rank_at_most_rho_and_full_ones_do_not():
    slots = [AdapterSlot(32, 16)]
    dec = DecomposedAdapterBank(slots, num_tasks=2, rank=3)
    full = FullAdapterBank(slots, num_tasks=2)
    for bank in (dec, full):
        for gen in bank.generators:
            for p in gen.parameters():
                torch.nn.init.normal_(p)
    assert torch.linalg.matrix_rank(dec(0)[0].w_down) <= 3
    assert torch.linalg.matrix_rank(full(0)[0].w_down) == 16
    # the decomposition's point: rank*(rows+cols) outputs instead of rows*cols
    assert dec.generators[0].down.left.out_features + dec.generators[0].down.right.out_features == 3 * (32 + 16)
    assert full.generators[0].w_down.out_features == 32 * 16


def test_hypernet_weights_are_generated_once_per_task_per_step():
    for method in ("hyperformer", "polyhistor", "polyhistor_lite"):
        net = build_network(make_tiny_swin(), method, list(PASCAL_OUTPUTS), decoder_embed_dim=16).train()
        bank = net.encoder.bank
        bank.calls = 0
        out = net(torch.randn(3, 3, 32, 32))  # batch of 3: still once per task
        sum(o.mean() for o in out.values()).backward()
        assert bank.calls == len(PASCAL_OUTPUTS), method
        assert all(p.grad is not None for p in bank.projector.parameters())


@pytest.mark.parametrize("bank_cls", [FullAdapterBank, DecomposedAdapterBank, KroneckerAdapterBank])
@pytest.mark.parametrize("rank", [2, 8])
def test_generated_adapters_start_like_a_plain_adapter(bank_cls, rank):
    """W_down has the plain adapter's init std (0.02), everything else is zero (identity adapter)."""
    torch.manual_seed(0)
    slots = [AdapterSlot(32, 16), AdapterSlot(64, 32), AdapterSlot(128, 64)]
    kwargs = {} if bank_cls is FullAdapterBank else {"rank": rank}
    bank = bank_cls(slots, num_tasks=4, **kwargs)
    stds = []
    with torch.no_grad():
        for task in range(4):
            for w in bank(task):
                stds.append(float(w.w_down.std()))
                assert not w.b_down.any() and not w.w_up.any() and not w.b_up.any()
    mean_std = sum(stds) / len(stds)
    assert ADAPTER_DOWN_STD * 0.7 < mean_std < ADAPTER_DOWN_STD * 1.3, mean_std
