"""Hypernetwork banks: sharing as the papers define it (one generator per stage, layer embeddings, templates shared
by layers), shapes at Swin-T scale, Kronecker structure, low rank, one generation per forward pass."""

import pytest
import torch

from polyhistor.hypernet import (
    ADAPTER_DOWN_STD,
    AdapterSlot,
    DecomposedAdapterBank,
    FullAdapterBank,
    KroneckerAdapterBank,
    apply_adapter,
    apply_task_adapters,
    kron_scale,
)
from polyhistor.network import PASCAL_OUTPUTS, build_network

from .conftest import make_tiny_swin

SWIN_T = [AdapterSlot(d, d // 4) for d in (96, 192, 384, 768)]


def swin_slots(dims=(8, 16, 32, 64), depths=(2, 2, 2, 2), reduction=2):
    """Every (block, position) slot of a Swin, in forward order: attn then mlp of each block."""
    slots, layer = [], 0
    for d, n in zip(dims, depths):
        for _ in range(n):
            slots += [AdapterSlot(d, d // reduction, layer, 0), AdapterSlot(d, d // reduction, layer, 1)]
            layer += 1
    return slots


def _randomise(bank):
    """Non-zero generators everywhere (init zeroes some), so every input reaches every output."""
    torch.manual_seed(1)
    for n, p in bank.named_parameters():
        if n.startswith(("generators.", "down.", "up.", "b_down.", "b_up.")):
            torch.nn.init.normal_(p, std=0.1)


@pytest.mark.parametrize("bank_cls", [FullAdapterBank, DecomposedAdapterBank])
def test_one_generator_module_serves_every_layer_of_a_stage(bank_cls):
    slots = swin_slots()
    bank = bank_cls(slots, num_tasks=3)
    assert len(bank.generators) == 4  # one per stage width
    for i, s in enumerate(slots):
        for j, t in enumerate(slots):
            same = bank.generator_of(i) is bank.generator_of(j)
            assert same == (s.dim == t.dim)
    # parameter identity: the stage's weights are the same tensors for both blocks and both positions
    stage2 = [i for i, s in enumerate(slots) if s.dim == 16]
    assert len({id(p) for i in stage2 for p in bank.generator_of(i).parameters()}) == \
        len(list(bank.generator_of(stage2[0]).parameters()))
    # one projector for the whole bank, with a distinct learned embedding per layer and per position
    emb = bank.projector.layer_embedding.weight
    assert emb.shape[0] == 8 and torch.cdist(emb, emb).add(torch.eye(8)).min() > 0
    assert bank.projector.position_embedding.weight.shape[0] == 2


@pytest.mark.parametrize("bank_cls", [FullAdapterBank, DecomposedAdapterBank])
def test_changing_one_layer_embedding_changes_only_that_layers_adapters(bank_cls):
    slots = swin_slots()
    bank = bank_cls(slots, num_tasks=2)
    _randomise(bank)
    with torch.no_grad():
        before = bank([0, 1])
        bank.projector.layer_embedding.weight[3] += 1.0  # block 3 = stage 2, second block
        after = bank([0, 1])
    for t in range(2):
        for i, s in enumerate(slots):
            changed = any(not torch.equal(a, b) for a, b in zip(before[t][i], after[t][i]) if a is not None)
            assert changed == (s.layer == 3), (t, s)
    # and different layers of one stage get different adapters from the same generator
    assert not torch.allclose(after[0][4].w_down, after[0][6].w_down)


def test_hyperformer_generates_the_layer_norm_after_each_adapter():
    slots = swin_slots()
    bank = FullAdapterBank(slots, num_tasks=2)
    w = bank(0)
    assert all(x.norm_weight.shape == (s.dim,) and x.norm_bias.shape == (s.dim,) for x, s in zip(w, slots))
    assert FullAdapterBank(slots, num_tasks=2, layer_norm=False)(0)[0].norm_weight is None
    _randomise(bank)
    h = torch.randn(5, 8)
    x = bank(1)[0]
    out = apply_adapter(h, x) - h  # the adapter's contribution is normalised, then scaled by the generated norm
    u = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(h, x.w_down, x.b_down)),
                                   x.w_up, x.b_up)
    ref = (u - u.mean(-1, keepdim=True)) / (u.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(out, ref * x.norm_weight + x.norm_bias, atol=1e-5)


def test_sharing_readings_block_and_slot():
    slots = swin_slots()
    assert len(FullAdapterBank(slots, num_tasks=2, share="block").generators) == 8
    assert len(DecomposedAdapterBank(slots, num_tasks=2, share="slot").generators) == 16
    with pytest.raises(ValueError, match="sharing"):
        FullAdapterBank(slots, num_tasks=2, share="task")


def test_lite_templates_are_shared_by_every_layer_and_scaling_kernels_are_per_layer():
    slots = swin_slots()
    bank = KroneckerAdapterBank(slots, num_tasks=3, rank=2)
    _randomise(bank)
    for p in list(bank.scale_down) + list(bank.scale_up):
        torch.nn.init.normal_(p)
    assert len(bank.scale_down) == len(slots)  # one scaling kernel per slot (per layer and position)
    assert len({id(p) for p in bank.scale_down}) == len(slots)
    # one generator, conditioned on the task only: one template per task, the same for every slot
    assert not hasattr(bank.projector, "layer_embedding")
    with torch.no_grad():
        weights = bank([0, 1, 2])
        t = bank.templates(torch.tensor([0, 1, 2]))
    for task in range(3):
        assert len(weights[task]) == len(bank.ks)
        for i, w in enumerate(weights[task]):
            assert torch.allclose(w.w_down, torch.kron(bank.scale_down[i], t.w_down[task]), atol=1e-6)
            assert torch.allclose(w.w_up, torch.kron(bank.scale_up[i], t.w_up[task]), atol=1e-6)
    # the template differs by task; a layer's scaling kernel changes that layer's adapter only, for every task
    assert not torch.allclose(t.w_down[0], t.w_down[1])
    with torch.no_grad():
        bank.scale_down[5] += 1.0
        after = bank([0, 1, 2])
    for task in range(3):
        for i in range(len(slots)):
            assert torch.equal(after[task][i].w_down, weights[task][i].w_down) == (i != 5)


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


def test_kron_scale_matches_definition_with_leading_task_dims():
    s, t = torch.randn(2, 2), torch.randn(4, 3, 5)
    out = kron_scale(s, t)
    assert out.shape == (4, 6, 10)
    assert all(torch.allclose(out[i], torch.kron(s, t[i])) for i in range(4))
    v, b = torch.randn(3), torch.randn(4, 5)
    assert torch.allclose(kron_scale(v, b)[2], torch.kron(v, b[2]))


def test_decomposed_weights_have_rank_at_most_rho_and_full_ones_do_not():
    slots = [AdapterSlot(32, 16)]
    dec = DecomposedAdapterBank(slots, num_tasks=2, rank=3)
    full = FullAdapterBank(slots, num_tasks=2)
    for bank in (dec, full):
        for p in bank.generators.parameters():
            torch.nn.init.normal_(p)
    assert torch.linalg.matrix_rank(dec(0)[0].w_down) <= 3
    assert torch.linalg.matrix_rank(full(0)[0].w_down) == 16
    # the decomposition's point: rank*(rows+cols) outputs instead of rows*cols
    gen = dec.generator_of(0)
    assert gen.down.left.out_features + gen.down.right.out_features == 3 * (32 + 16)
    assert full.generator_of(0).w_down.out_features == 32 * 16


def test_hypernet_weights_are_generated_once_per_forward_for_all_tasks_and_layers():
    for method in ("hyperformer", "polyhistor", "polyhistor_lite"):
        net = build_network(make_tiny_swin(), method, list(PASCAL_OUTPUTS), decoder_embed_dim=16).train()
        bank = net.encoder.bank
        bank.calls = 0
        out = net(torch.randn(3, 3, 32, 32))  # batch of 3, 4 tasks, 16 slots: one generation
        sum(o.mean() for o in out.values()).backward()
        assert net.encoder.stacked and bank.calls == 1, method
        assert all(p.grad is not None for p in bank.projector.parameters())


@pytest.mark.parametrize("bank_cls", [FullAdapterBank, DecomposedAdapterBank, KroneckerAdapterBank])
@pytest.mark.parametrize("rank", [2, 8])
def test_generated_adapters_start_like_a_plain_adapter(bank_cls, rank):
    """W_down has the plain adapter's init std (0.02), b_down is zero, and the adapter is the identity.
    (Polyhistor-Lite: its templates have that std; the identity scaling kernels place them block-diagonally.)"""
    torch.manual_seed(0)
    slots = [AdapterSlot(32, 16, 0, 0), AdapterSlot(64, 32, 1, 1), AdapterSlot(128, 64, 2, 0)]
    kwargs = {} if bank_cls is FullAdapterBank else {"rank": rank}
    tasks = list(range(8))
    bank = bank_cls(slots, num_tasks=len(tasks), **kwargs)
    stds = []
    with torch.no_grad():
        if bank_cls is KroneckerAdapterBank:
            stds = [float(w.std()) for w in bank.templates(torch.tensor(tasks)).w_down]
        for ws in bank(tasks):
            for w, s in zip(ws, slots):
                if bank_cls is not KroneckerAdapterBank:
                    stds.append(float(w.w_down.std()))
                assert not w.b_down.any()
                h = torch.randn(3, s.dim)
                assert torch.equal(apply_adapter(h, w), h)
    mean_std = sum(stds) / len(stds)
    assert ADAPTER_DOWN_STD * 0.7 < mean_std < ADAPTER_DOWN_STD * 1.3, mean_std


@pytest.mark.parametrize("bank_cls", [FullAdapterBank, DecomposedAdapterBank, KroneckerAdapterBank])
def test_per_slot_generation_applied_to_task_chunks_equals_one_adapter_per_task(bank_cls):
    """``per_slot`` gives every slot's weights with a leading task dimension (what a stacked pass uses, no per-task
    slicing); applied to a batch of task chunks it equals each task's own adapter on its chunk, values and gradients
    (HyperFormer's generated layer norm included), and ``bank(tasks)`` is the same weights per task."""
    slots = swin_slots()
    kwargs = {"rank": 2} if bank_cls is not FullAdapterBank else {}
    bank = bank_cls(slots, num_tasks=3, z=8, embed_dim=8, hidden_dim=16, **kwargs)
    _randomise(bank)
    bank.double()  # float64: the comparison is of the computation, not of float32 rounding orders
    tasks = [2, 0, 1]
    g = torch.Generator().manual_seed(3)
    for slot in (0, len(slots) - 1):
        h = torch.randn(2, 5, slots[slot].dim, generator=g, dtype=torch.float64).repeat(3, 1, 1)  # the same samples for each task
        bank.zero_grad()
        stacked = apply_task_adapters(h, bank.per_slot(tasks)[slot])
        stacked.sin().sum().backward()
        grads = [p.grad.clone() for p in bank.parameters() if p.grad is not None]
        bank.zero_grad()
        per_task = bank(tasks)
        assert len(per_task) == 3 and per_task[0][slot].w_down.dim() == 2
        looped = torch.cat([apply_adapter(c, per_task[i][slot]) for i, c in enumerate(h.chunk(3))])
        looped.sin().sum().backward()
        torch.testing.assert_close(stacked, looped, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(stacked[:2], stacked[2:4], atol=1e-4)  # same input, the tasks' adapters differ
        assert grads and len(grads) == len([p for p in bank.parameters() if p.grad is not None])
        for a, b in zip(grads, [p.grad for p in bank.parameters() if p.grad is not None]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    with pytest.raises(RuntimeError, match="does not split into 3 task chunks"):
        apply_task_adapters(torch.randn(4, 5, slots[0].dim, dtype=torch.float64), bank.per_slot(tasks)[0])
