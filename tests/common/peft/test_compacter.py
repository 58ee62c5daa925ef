import torch

from common.peft.compacter import CompacterAdapter, PHMLinear, phm_rules, phm_weight


def test_phm_weight_is_the_sum_of_kronecker_products():
    n, rank = 4, 2
    rules = torch.randn(n, n, n)
    left, right = torch.randn(n, 3, rank), torch.randn(n, rank, 5)
    expected = sum(torch.kron(rules[i], left[i] @ right[i]) for i in range(n))
    assert torch.allclose(phm_weight(rules, left, right), expected, atol=1e-5)


def test_phm_layer_counts_and_identity_adapter():
    rules = phm_rules(4)
    layer = PHMLinear(16, 8, rules, rank=1)
    own = sum(p.numel() for n, p in layer.named_parameters() if n != "rules")
    assert own == (16 + 8) * 1 + 8  # rank (in + out) + bias
    assert layer(torch.randn(3, 16)).shape == (3, 8)
    adapter = CompacterAdapter(16, 4, rules)
    x = torch.randn(2, 16)
    assert torch.equal(adapter(x), x)
    # the rules are one tensor shared by every layer built from them
    assert adapter.down.rules is adapter.up.rules is rules


def test_forward_tasks_equals_each_tasks_adapter_on_its_chunk():
    """The stacked-pass path builds every task's PHM weights in one batched product (each task its own rules, as a
    multi-task Compacter row has); values and gradients equal each adapter on its chunk (float64)."""
    torch.manual_seed(0)
    adapters = [CompacterAdapter(16, 8, phm_rules(4), rank=2).double() for _ in range(3)]
    for a in adapters:
        for p in a.parameters():
            torch.nn.init.normal_(p, std=0.3)
    h = torch.randn(2, 5, 16, dtype=torch.float64).repeat(3, 1, 1)
    stacked = CompacterAdapter.forward_tasks(adapters, h)
    stacked.sin().sum().backward()
    grads = [p.grad.clone() for a in adapters for p in a.parameters()]
    for a in adapters:
        a.zero_grad()
    looped = torch.cat([a(c) for a, c in zip(adapters, h.chunk(3))])
    looped.sin().sum().backward()
    torch.testing.assert_close(stacked, looped, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(stacked[:2], stacked[2:4])  # same input, different tasks
    for g, p in zip(grads, [p for a in adapters for p in a.parameters()]):
        torch.testing.assert_close(g, p.grad, rtol=1e-9, atol=1e-12)
    batched = phm_weight(torch.stack([a.down.rules for a in adapters]), torch.stack([a.down.left for a in adapters]),
                         torch.stack([a.down.right for a in adapters]))
    for i, a in enumerate(adapters):
        torch.testing.assert_close(batched[i], phm_weight(a.down.rules, a.down.left, a.down.right))
