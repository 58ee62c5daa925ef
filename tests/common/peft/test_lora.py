import torch

from common.peft.inject import AdditiveHook
from common.peft.lora import LoRADelta, qkv_slices


def test_lora_is_zero_at_init_and_updates_only_its_slices():
    dim = 6
    qkv = torch.nn.Linear(dim, 3 * dim)
    delta = LoRADelta(dim, 3 * dim, rank=2, out_slices=qkv_slices(dim, ["q", "v"]))
    x = torch.randn(5, dim)
    before = qkv(x)
    qkv.register_forward_hook(AdditiveHook(delta))
    assert torch.equal(qkv(x), before)
    for b in delta.lora_B:
        torch.nn.init.normal_(b)
    after = qkv(x)
    assert not torch.allclose(after[:, :dim], before[:, :dim])  # q moved
    assert torch.equal(after[:, dim:2 * dim], before[:, dim:2 * dim])  # k untouched
    assert not torch.allclose(after[:, 2 * dim:], before[:, 2 * dim:])  # v moved
    # rank r on q and v: r(in + out) per slice
    assert sum(p.numel() for p in delta.parameters()) == 2 * 2 * (dim + dim)


def test_lora_matches_explicit_low_rank_product():
    delta = LoRADelta(4, 3, rank=2, alpha=4.0)
    torch.nn.init.normal_(delta.lora_B[0])
    x = torch.randn(7, 4)
    expected = 2.0 * x @ (delta.lora_B[0] @ delta.lora_A[0]).t()
    assert torch.allclose(delta(x), expected, atol=1e-6)
