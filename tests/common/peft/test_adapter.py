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
