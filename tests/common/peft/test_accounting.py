import torch
from torch import nn

from common.peft.accounting import (
    count_parameters,
    freeze,
    parameter_breakdown,
    set_trainable,
    trainable_parameter_names,
    unfreeze,
)


def _shared_model() -> nn.Module:
    lin = nn.Linear(4, 3)  # 15 parameters
    m = nn.Module()
    m.a = lin
    m.b = lin  # the same module twice: counted once
    m.c = nn.Linear(3, 2)  # 8 parameters
    m.register_buffer("stat", torch.zeros(100))  # buffers never count
    return m


def test_shared_tensors_count_once_and_buffers_never():
    m = _shared_model()
    assert count_parameters(m) == 15 + 8
    freeze(m)
    assert count_parameters(m, trainable_only=True) == 0
    unfreeze(m.c)
    assert count_parameters(m, trainable_only=True) == 8
    assert trainable_parameter_names(m) == {"c.weight", "c.bias"}


def test_set_trainable_selects_exactly_and_breakdown_groups():
    m = _shared_model()
    chosen = set_trainable(m, lambda name, p: name.endswith("bias"))
    assert set(chosen) == {"a.bias", "c.bias"}
    assert count_parameters(m, trainable_only=True) == 3 + 2
    assert parameter_breakdown(m) == {"a": (3, 15), "c": (2, 8)}
