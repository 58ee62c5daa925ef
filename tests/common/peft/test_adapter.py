import pytest
import torch

from common.peft.adapter import (
    BottleneckAdapter,
    TaskRouted,
    bottleneck_adapter,
    bottleneck_size,
    task_adapters,
)
from common.peft.context import TaskContext


def test_adapter_is_identity_at_init_and_counts():
    a = BottleneckAdapter(16, 4)
    x = torch.randn(2, 5, 16)
    assert torch.equal(a(x), x)
    assert sum(p.numel() for p in a.parameters()) == 16 * 4 + 4 + 4 * 16 + 16


def test_functional_adapter_matches_module_after_training_moves_it():
    a = BottleneckAdapter(8, 2)
    torch.nn.init.normal_(a.up.weight)
    x = torch.randn(3, 8)
    expected = x + a.up(torch.nn.functional.gelu(a.down(x)))
    assert torch.allclose(a(x), expected, atol=1e-6)
    assert torch.allclose(bottleneck_adapter(x, a.down.weight, a.down.bias, a.up.weight, a.up.bias), expected,
                          atol=1e-6)


def test_task_routing_and_shared_mode():
    ctx = TaskContext(["a", "b"])
    routed = task_adapters(8, 2, ctx)
    torch.nn.init.normal_(routed.per_task["b"].up.weight)
    x = torch.randn(4, 8)
    with ctx.use("a"):
        assert torch.equal(routed(x), x)
    with ctx.use("b"):
        assert not torch.allclose(routed(x), x)
    shared = task_adapters(8, 2, ctx, shared=True)
    assert sum(p.numel() for p in shared.parameters()) * 2 == sum(p.numel() for p in routed.parameters())
    with pytest.raises(RuntimeError, match="No active task"):
        routed(x)


def test_routing_needs_every_task_and_sizes_are_checked():
    ctx = TaskContext(["a", "b"])
    with pytest.raises(ValueError, match="no module for task"):
        TaskRouted({"a": BottleneckAdapter(4, 1)}, ctx)
    assert bottleneck_size(96, 4) == 24
    with pytest.raises(ValueError):
        bottleneck_size(96, 0)
    with pytest.raises(KeyError):
        with ctx.use("c"):
            pass


def test_stacked_adapter_equals_each_adapter_on_its_chunk_with_and_without_norm():
    """n adapters in two batched matmuls give each chunk its own adapter (and the per-chunk layer norm)."""
    from common.peft.adapter import stacked_bottleneck_adapter

    torch.manual_seed(0)
    n, dim, b = 3, 8, 4
    mods = [BottleneckAdapter(dim, b, zero_init=False) for _ in range(n)]
    h = torch.randn(n * 2, 5, dim)
    w = [torch.stack([getattr(getattr(m, lay), k) for m in mods]) for lay in ("down", "up") for k in ("weight", "bias")]
    expected = torch.cat([m(c) for m, c in zip(mods, h.chunk(n))])
    assert torch.allclose(stacked_bottleneck_adapter(h, *w), expected, atol=1e-6)
    assert torch.allclose(BottleneckAdapter.stacked_forward(mods, h), expected, atol=1e-6)
    nw, nb = torch.randn(n, dim), torch.randn(n, dim)
    with_norm = torch.cat([c + torch.nn.functional.layer_norm(m(c) - c, (dim,), nw[i], nb[i], 1e-6)
                           for i, (m, c) in enumerate(zip(mods, h.chunk(n)))])
    assert torch.allclose(stacked_bottleneck_adapter(h, *w, norm=(nw, nb, 1e-6)), with_norm, atol=1e-5)
    with pytest.raises(RuntimeError, match="equal chunks"):
        stacked_bottleneck_adapter(h[:5], *w)


def test_task_routed_runs_stacked_adapters_batched_and_per_task_otherwise():
    """The batched path gives the same rows as one adapter per task; modules with different activations fall back."""
    torch.manual_seed(0)
    ctx = TaskContext(["a", "b"])
    routed = TaskRouted({"a": BottleneckAdapter(6, 2, zero_init=False),
                         "b": BottleneckAdapter(6, 2, "relu", zero_init=False)}, ctx)
    x = torch.randn(4, 6)
    with ctx.use("a"):
        ya = routed(x[:2])
    with ctx.use("b"):
        yb = routed(x[2:])
    with ctx.use_stacked(["a", "b"]):  # different activations: one by one
        assert torch.allclose(routed(x), torch.cat([ya, yb]), atol=1e-6)
    routed.per_task["b"] = BottleneckAdapter(6, 2, zero_init=False)
    with ctx.use("b"):
        yb = routed(x[2:])
    with ctx.use_stacked(["a", "b"]):
        assert torch.allclose(routed(x), torch.cat([ya, yb]), atol=1e-6)
