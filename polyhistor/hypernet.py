"""Hypernetworks that write adapter weights: HyperFormer's, Polyhistor's decomposed ones, and Polyhistor-Lite's
template + layer-wise scaling kernels.

An adapter "slot" is one insertion point (a Swin block's attention or MLP output) with width ``dim`` and hidden
width ``bottleneck``. Each bank below maps a task conditioning vector to :class:`AdapterWeights` for every slot.

* :class:`FullAdapterBank` (HyperFormer, Karimi Mahabadi et al. 2021): one hypernetwork per slot, a linear map from
  the projected task embedding (width ``z``) to the whole adapter: ``Linear(z, bottleneck*dim)`` per matrix plus
  bias generators. Its size grows with ``dim**2``, which is what makes it huge on the wide late Swin stages.
* :class:`DecomposedAdapterBank` (Polyhistor, Sec. 4.1 "Decomposed HyperNetworks"): each matrix is generated as two
  low-rank factors, ``W = L R^T`` with ``L``: (rows x rank) and ``R``: (cols x rank), by a *pair* of hypernetworks,
  so a slot's generator emits ``rank * (rows + cols)`` numbers instead of ``rows * cols``.
* :class:`KroneckerAdapterBank` (Polyhistor-Lite, Sec. 4.2-4.3): one decomposed hypernetwork, shared by all slots
  (conditioned on task + slot embedding), writes *template kernels* sized for the first stage; each slot owns a
  small *layer-wise scaling kernel* ``S_l`` ((dim_l/dim_1) x (dim_l/dim_1), task-shared) and uses
  ``W_l = S_l (x) T`` (Kronecker product), which has exactly the slot's shape.

Initialisation (Polyhistor publishes no code and no init; this is our reading): every bank's generated adapter starts with the
statistics of the plain Adapter row's init (``common.peft.adapter.BottleneckAdapter``): ``W_down`` entries with
standard deviation ``ADAPTER_DOWN_STD`` (0.02), ``b_down``, ``W_up`` and ``b_up`` at zero, so a fresh hyper-adapter
is the identity and the rows differ by how they parametrise the adapters, not by their starting scale. The task
conditioning is LayerNorm-ed (unit-variance entries, width ``z``), so a full generator gets weight std
``0.02 / sqrt(z)``; a low-rank pair gets factors of std ``sqrt(0.02 / sqrt(rank))`` (each generator
``that / sqrt(z)``) so that ``L R^T`` has std 0.02, and the up pair zeroes its ``R`` generator only (its ``L`` keeps
the factor scale, so gradients reach ``R`` from the first step). Before this, every generator had std 0.01, so a
rank-2 ``W_down`` started 4x smaller than the plain adapter's and HyperFormer's 3x larger. The generators also train
at a reduced learning rate (``PolyhistorModule(generator_lr_scale=...)``, why there).

The weights are produced for one task in one call; the caller computes them once per task per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

#: std of a plain adapter's down projection at init (common.peft.adapter.BottleneckAdapter); the banks match it
ADAPTER_DOWN_STD = 0.02


def full_generator_std(z: int, target: float = ADAPTER_DOWN_STD) -> float:
    """Weight std of a linear generator (unit-variance conditioning of width ``z``) whose outputs have std ``target``."""
    return target / math.sqrt(z)


def factor_generator_std(z: int, rank: int, target: float = ADAPTER_DOWN_STD) -> float:
    """Weight std of each generator of a low-rank pair so that ``L R^T`` (rank ``rank``) has entries of std ``target``."""
    return math.sqrt(target / math.sqrt(rank)) / math.sqrt(z)


@dataclass(frozen=True)
class AdapterSlot:
    """One adapter insertion point: width of the features and of the adapter's hidden layer."""

    dim: int
    bottleneck: int


class AdapterWeights(NamedTuple):
    """Weights of one bottleneck adapter, in ``F.linear`` layout."""

    w_down: torch.Tensor  # (bottleneck, dim)
    b_down: torch.Tensor  # (bottleneck,)
    w_up: torch.Tensor  # (dim, bottleneck)
    b_up: torch.Tensor  # (dim,)


def _generator(z: int, out: int, std: float, zero: bool = False) -> nn.Linear:
    lin = nn.Linear(z, out)
    if zero:
        nn.init.zeros_(lin.weight)
    else:
        nn.init.normal_(lin.weight, std=std)
    nn.init.zeros_(lin.bias)
    return lin


class TaskProjector(nn.Module):
    """HyperFormer's task conditioning: learned task (and optional slot) embeddings -> MLP -> LayerNorm.

    ``forward(task_index, slot_ids=None)`` gives one ``z``-wide vector, or one per slot id when the projector
    was built with ``num_slots`` (then the slot embedding is concatenated to the task embedding first).
    """

    def __init__(self, num_tasks: int, embed_dim: int = 64, hidden_dim: int = 128, out_dim: int = 32,
                 num_slots: int = 0) -> None:
        super().__init__()
        self.task_embedding = nn.Embedding(num_tasks, embed_dim)
        nn.init.normal_(self.task_embedding.weight, std=1.0)
        self.slot_embedding = nn.Embedding(num_slots, embed_dim) if num_slots else None
        if self.slot_embedding is not None:
            nn.init.normal_(self.slot_embedding.weight, std=1.0)
        in_dim = embed_dim * (2 if num_slots else 1)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def forward(self, task_index: int, slot_ids: torch.Tensor | None = None) -> torch.Tensor:
        dev = self.task_embedding.weight.device
        t = self.task_embedding(torch.tensor([task_index], device=dev))
        if self.slot_embedding is None:
            return self.norm(self.mlp(t))[0]
        if slot_ids is None:
            slot_ids = torch.arange(self.slot_embedding.num_embeddings, device=dev)
        e = torch.cat([t.expand(len(slot_ids), -1), self.slot_embedding(slot_ids)], dim=-1)
        return self.norm(self.mlp(e))


class FullAdapterGenerator(nn.Module):
    """HyperFormer's per-slot hypernetwork: ``z -> (W_down, b_down, W_up, b_up)`` by one linear map each."""

    def __init__(self, z: int, slot: AdapterSlot, std: float | None = None) -> None:
        super().__init__()
        self.slot = slot
        d, b = slot.dim, slot.bottleneck
        std = full_generator_std(z) if std is None else std
        self.w_down = _generator(z, b * d, std)
        self.b_down = _generator(z, b, std, zero=True)
        self.w_up = _generator(z, d * b, std, zero=True)
        self.b_up = _generator(z, d, std, zero=True)

    def forward(self, cond: torch.Tensor) -> AdapterWeights:
        d, b = self.slot.dim, self.slot.bottleneck
        return AdapterWeights(self.w_down(cond).view(b, d), self.b_down(cond), self.w_up(cond).view(d, b),
                              self.b_up(cond))


class LowRankGenerator(nn.Module):
    """A pair of hypernetworks emitting ``L`` (rows x rank) and ``R`` (cols x rank); the matrix is ``L R^T``."""

    def __init__(self, z: int, rows: int, cols: int, rank: int, std: float | None = None, zero: bool = False) -> None:
        super().__init__()
        self.rows, self.cols, self.rank = rows, cols, rank
        std = factor_generator_std(z, rank) if std is None else std
        self.left = _generator(z, rows * rank, std)
        self.right = _generator(z, cols * rank, std, zero=zero)

    def factors(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L`` (..., rows, rank) and ``R`` (..., cols, rank) for conditioning ``cond`` (..., z)."""
        lead = cond.shape[:-1]
        return (self.left(cond).view(*lead, self.rows, self.rank), self.right(cond).view(*lead, self.cols, self.rank))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        left, right = self.factors(cond)
        return left @ right.transpose(-1, -2)


class DecomposedAdapterGenerator(nn.Module):
    """Polyhistor's per-slot decomposed hypernetworks: low-rank ``W_down``, ``W_up`` and full biases."""

    def __init__(self, z: int, slot: AdapterSlot, rank: int, std: float | None = None) -> None:
        super().__init__()
        self.slot = slot
        d, b = slot.dim, slot.bottleneck
        self.down = LowRankGenerator(z, b, d, rank, std)
        self.up = LowRankGenerator(z, d, b, rank, std, zero=True)
        self.b_down = _generator(z, b, 0.0, zero=True)
        self.b_up = _generator(z, d, 0.0, zero=True)

    def forward(self, cond: torch.Tensor) -> AdapterWeights:
        return AdapterWeights(self.down(cond), self.b_down(cond), self.up(cond), self.b_up(cond))


class _PerSlotBank(nn.Module):
    """Task projector + one generator per slot; ``forward(task_index)`` -> weights of every slot."""

    def __init__(self, num_tasks: int, generators: Sequence[nn.Module], embed_dim: int, hidden_dim: int, z: int):
        super().__init__()
        self.projector = TaskProjector(num_tasks, embed_dim, hidden_dim, z)
        self.generators = nn.ModuleList(generators)
        self.calls = 0  # number of forward calls (tests check: once per task per step)

    def forward(self, task_index: int) -> list[AdapterWeights]:
        self.calls += 1
        cond = self.projector(task_index)
        return [g(cond) for g in self.generators]


class FullAdapterBank(_PerSlotBank):
    """HyperFormer: a full-matrix hypernetwork per slot, shared by all tasks."""

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, z: int = 32, embed_dim: int = 64,
                 hidden_dim: int = 128, std: float | None = None) -> None:
        super().__init__(num_tasks, [FullAdapterGenerator(z, s, std) for s in slots], embed_dim, hidden_dim, z)


class DecomposedAdapterBank(_PerSlotBank):
    """Polyhistor: a pair of low-rank hypernetworks per adapter matrix and slot, shared by all tasks."""

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, rank: int = 8, z: int = 32,
                 embed_dim: int = 64, hidden_dim: int = 128, std: float | None = None) -> None:
        super().__init__(num_tasks, [DecomposedAdapterGenerator(z, s, rank, std) for s in slots], embed_dim,
                         hidden_dim, z)


def kron_scale(scale: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Layer-wise scaling: ``scale (x) template``; (k, k) (x) (p, q) -> (k p, k q); vectors: (k) (x) (p) -> (k p)."""
    return torch.kron(scale, template)


def scaling_factor(dim: int, base_dim: int) -> int:
    """k such that ``dim == k * base_dim`` (2**(s-1) for Swin stage s); a clear error otherwise."""
    if dim % base_dim:
        raise ValueError(f"layer-wise scaling needs every adapter width to be a multiple of the template's "
                         f"({base_dim}); got {dim}")
    return dim // base_dim


class KroneckerAdapterBank(nn.Module):
    """Polyhistor-Lite: shared decomposed hypernetwork -> template kernels; per-slot scaling kernels (Kronecker).

    Templates are sized for the narrowest slot (``template``); slot l with width ``k_l * template.dim`` uses
    ``W = S_l (x) T`` for both adapter matrices, where ``S_l`` is (k_l x k_l), and ``b = s_l (x) t`` for the
    biases with ``s_l`` of length k_l. Scaling kernels start as the identity (matrices) and ones (vectors), so
    a slot at init applies the template block-diagonally; the up template starts at zero (identity adapter).
    """

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, rank: int = 8, z: int = 32,
                 embed_dim: int = 64, hidden_dim: int = 128, std: float | None = None) -> None:
        super().__init__()
        if not slots:
            raise ValueError("KroneckerAdapterBank needs at least one slot")
        base = min(slots, key=lambda s: s.dim)
        self.template = AdapterSlot(base.dim, base.bottleneck)
        self.slots = list(slots)
        self.ks = []
        for s in slots:
            k = scaling_factor(s.dim, base.dim)
            if s.bottleneck != k * base.bottleneck:
                raise ValueError(f"slot {s}: bottleneck must scale like the width (expected {k * base.bottleneck})")
            self.ks.append(k)
        self.projector = TaskProjector(num_tasks, embed_dim, hidden_dim, z, num_slots=len(slots))
        d, b = base.dim, base.bottleneck
        self.down = LowRankGenerator(z, b, d, rank, std)
        self.up = LowRankGenerator(z, d, b, rank, std, zero=True)
        self.b_down = _generator(z, b, 0.0, zero=True)
        self.b_up = _generator(z, d, 0.0, zero=True)
        self.scale_down = nn.ParameterList([nn.Parameter(torch.eye(k)) for k in self.ks])
        self.scale_up = nn.ParameterList([nn.Parameter(torch.eye(k)) for k in self.ks])
        self.scale_b_down = nn.ParameterList([nn.Parameter(torch.ones(k)) for k in self.ks])
        self.scale_b_up = nn.ParameterList([nn.Parameter(torch.ones(k)) for k in self.ks])
        self.calls = 0

    def forward(self, task_index: int) -> list[AdapterWeights]:
        self.calls += 1
        cond = self.projector(task_index)  # (num_slots, z): one template per (task, slot)
        t_down, t_up = self.down(cond), self.up(cond)
        t_b_down, t_b_up = self.b_down(cond), self.b_up(cond)
        out = []
        for i in range(len(self.slots)):
            out.append(AdapterWeights(
                kron_scale(self.scale_down[i], t_down[i]), kron_scale(self.scale_b_down[i], t_b_down[i]),
                kron_scale(self.scale_up[i], t_up[i]), kron_scale(self.scale_b_up[i], t_b_up[i])))
        return out
