import pytest
import torch

from common.peft.accounting import count_parameters, freeze
from common.peft.bitfit import add_task_deltas, add_task_norm_deltas, default_bias_predicate
from common.peft.context import TaskContext
from common.peft.swin import swin_stage_features


def test_bitfit_per_task_biases_train_alone_and_leave_originals_untouched(tiny_swin):
    swin = tiny_swin
    freeze(swin)
    n_bias = sum(p.numel() for n, p in swin.named_parameters() if n.endswith("bias"))
    n_rpb = sum(p.numel() for n, p in swin.named_parameters() if n.endswith("relative_position_bias_table"))
    originals = {n: p.detach().clone() for n, p in swin.named_parameters()}
    ctx = TaskContext(["a", "b"])
    add_task_deltas(swin, ctx, default_bias_predicate(include_relative_position_bias=True))
    assert count_parameters(swin, trainable_only=True) == 2 * (n_bias + n_rpb)
    trainable = [n for n, p in swin.named_parameters() if p.requires_grad]
    assert all(".deltas." in n for n in trainable)

    x = torch.randn(2, 3, 32, 32)
    with ctx.use("a"):
        base = swin_stage_features(swin, x)
    opt = torch.optim.SGD([p for p in swin.parameters() if p.requires_grad], lr=0.5)
    with ctx.use("a"):
        loss = sum(f.square().mean() for f in swin_stage_features(swin, x))
    loss.backward()
    opt.step()
    with ctx.use("a"):
        moved = swin_stage_features(swin, x)
    with ctx.use("b"):
        other = swin_stage_features(swin, x)
    assert not torch.allclose(moved[-1], base[-1])
    assert all(torch.allclose(o, b, atol=1e-6) for o, b in zip(other, base))  # task b unaffected
    for n, p in swin.named_parameters():
        if n.endswith(".original") or "parametrizations" not in n:
            key = n.replace("parametrizations.", "").replace(".original", "")
            assert torch.equal(p, originals[key]), n


def test_norm_deltas_cover_weight_and_bias(tiny_swin):
    freeze(tiny_swin)
    n_norm = sum(p.numel() for m in tiny_swin.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters())
    ctx = TaskContext(["a", "b", "c"])
    add_task_norm_deltas(tiny_swin, ctx)
    assert count_parameters(tiny_swin, trainable_only=True) == 3 * n_norm


def test_selector_matching_nothing_is_an_error(tiny_swin):
    with pytest.raises(ValueError, match="matched no tensor"):
        add_task_deltas(tiny_swin, TaskContext(["a"]), lambda m, t: False)
