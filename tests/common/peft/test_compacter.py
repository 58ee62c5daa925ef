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
