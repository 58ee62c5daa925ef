"""Hypernetworks that write adapter weights: HyperFormer's, Polyhistor's decomposed ones, and Polyhistor-Lite's
template + layer-wise scaling kernels.

An adapter "slot" is one insertion point (a Swin block's attention or MLP output) with width ``dim``, hidden width
``bottleneck``, the global index of its block (``layer``) and its position in the block (``position``: 0 attention,
1 MLP). A bank maps task indices to :class:`AdapterWeights` for every slot, for all the asked tasks in one call
(the caller generates once per forward pass, not per sample or per window).

* Conditioning (:class:`SlotProjector`, HyperFormer's ``unique_hyper_net``): a learned task embedding, a layer
  embedding and a position embedding (HyperFormer's "block type": feed-forward vs self-attention) are concatenated,
  passed through an MLP (3E -> hidden -> z) and LayerNorm-ed. One projector serves every slot; a slot's
  conditioning differs from its neighbours' only through its layer and position embeddings.
* :class:`FullAdapterBank` (HyperFormer++, Karimi Mahabadi et al. 2021): one generator per *sharing group*, a
  linear map from the conditioning to the whole adapter (``Linear(z, bottleneck*dim)`` per matrix plus bias
  generators) and to the weight and bias of a layer norm after the adapter (the official code's
  ``conditional_layer_norm`` with ``add_layer_norm_after_adapter``). A generator's output size is fixed, so one
  generator can only serve slots of one shape: the group is a Swin stage (``share="stage"``, the default: one
  generator per stage width, shared by every block and both positions of that stage).
* :class:`DecomposedAdapterBank` (Polyhistor, Sec. 4.1 "Decomposed HyperNetworks"): the same sharing and
  conditioning, each matrix generated as two low-rank factors, ``W = L R^T`` with ``L``: (rows x rank) and ``R``:
  (cols x rank), by a *pair* of linear hypernetworks: ``rank * (rows + cols)`` outputs instead of ``rows * cols``.
* :class:`KroneckerAdapterBank` (Polyhistor-Lite, Sec. 4.2-4.3): one decomposed hypernetwork, conditioned on the
  task alone, writes one pair of *template kernels* per task, sized for the narrowest slot and shared by every
  layer; each slot owns small *layer-wise scaling kernels* ``S_l`` ((dim_l/dim_1) x (dim_l/dim_1), shared by the
  tasks) and uses ``W_l = S_l (x) T`` (Kronecker product), which has exactly the slot's shape. The templates carry
  the task, the scaling kernels the layer; this is the one design where a generator serves all four stages.

``share`` (``"stage"`` | ``"block"`` | ``"slot"``) groups the slots of the two full-size banks: ``block`` gives
every Swin block its own generator (shared by its two positions), ``slot`` every insertion point (HyperFormer's
per-layer base model). polyhistor/README.md ("Parameter budgets") counts each reading against the paper.

Initialisation (Polyhistor publishes no code and no init; this is our reading): every bank's generated adapter starts
as the identity with the statistics of the plain Adapter row's init (``common.peft.adapter.BottleneckAdapter``):
``W_down`` entries with standard deviation ``ADAPTER_DOWN_STD`` (0.02), ``b_down`` at zero, and a zero output: ``W_up``
and ``b_up`` at zero, or, with HyperFormer's generated layer norm, ``W_up`` like ``W_down`` and the norm's weight
and bias at zero (a zero ``W_up`` under a layer norm would get no usable gradient: the norm of a zero vector). The
conditioning has unit-variance entries (LayerNorm, width ``z``), so a full generator gets weight std
``0.02 / sqrt(z)``; a low-rank pair gets factors of std ``sqrt(0.02 / sqrt(rank))`` (each generator ``that /
sqrt(z)``) so that ``L R^T`` has std 0.02, and the up pair zeroes its ``R`` generator only (its ``L`` keeps the
factor scale, so gradients reach ``R`` from the first step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from common.peft.adapter import activation_fn, task_bottleneck_branches

#: std of a plain adapter's down projection at init (common.peft.adapter.BottleneckAdapter); the banks match it
ADAPTER_DOWN_STD = 0.02
#: how the full-size banks group slots under one generator
SHARING = ("stage", "block", "slot")
NORM_EPS = 1e-6  # HyperFormer's layer-norm epsilon


def full_generator_std(z: int, target: float = ADAPTER_DOWN_STD) -> float:
    """Weight std of a linear generator (unit-variance conditioning of width ``z``) whose outputs have std ``target``."""
    return target / math.sqrt(z)


def factor_generator_std(z: int, rank: int, target: float = ADAPTER_DOWN_STD) -> float:
    """Weight std of each generator of a low-rank pair so that ``L R^T`` (rank ``rank``) has entries of std ``target``."""
    return math.sqrt(target / math.sqrt(rank)) / math.sqrt(z)


@dataclass(frozen=True)
class AdapterSlot:
    """One adapter insertion point: feature width, adapter hidden width, block index and position in the block."""

    dim: int
    bottleneck: int
    layer: int = 0
    position: int = 0


class AdapterWeights(NamedTuple):
    """Weights of one bottleneck adapter, in ``F.linear`` layout (leading task dims allowed), and optionally the
    generated layer norm applied to the adapter's output before the residual add (HyperFormer)."""

    w_down: torch.Tensor  # (bottleneck, dim)
    b_down: torch.Tensor  # (bottleneck,)
    w_up: torch.Tensor  # (dim, bottleneck)
    b_up: torch.Tensor  # (dim,)
    norm_weight: torch.Tensor | None = None  # (dim,)
    norm_bias: torch.Tensor | None = None  # (dim,)

    def select(self, i: int) -> AdapterWeights:
        """The weights at index ``i`` of the leading dimension (one task of a batched generation)."""
        return AdapterWeights(*(None if t is None else t[i] for t in self))


def apply_adapter(h: torch.Tensor, w: AdapterWeights, activation: str = "gelu") -> torch.Tensor:
    """``h + [LN](W_up act(W_down h + b_down) + b_up)`` with generated weights ``w`` (one task)."""
    out = F.linear(activation_fn(activation)(F.linear(h, w.w_down, w.b_down)), w.w_up, w.b_up)
    if w.norm_weight is not None:
        out = F.layer_norm(out, (out.shape[-1],), w.norm_weight, w.norm_bias, NORM_EPS)
    return h + out


def apply_task_adapters(h: torch.Tensor, w: AdapterWeights, activation: str = "gelu") -> torch.Tensor:
    """:func:`apply_adapter` for T tasks at once: ``w`` holds each tensor with a leading task dimension (T, ...),
    ``h`` is T equal chunks along its first dimension (a stacked pass; T = 1: one task), chunk ``t`` gets task
    ``t``'s adapter. Batched matrix products over the tasks: no per-task slicing of the generated tensors, whose
    backward would otherwise write each slice into a zero tensor of the whole generation."""
    out = task_bottleneck_branches(h, w.w_down, w.b_down, w.w_up, w.b_up, activation)
    if w.norm_weight is not None:  # per task, with its affine map inside the norm: saves no normalised copy
        out = torch.stack([F.layer_norm(o, (h.shape[-1],), nw, nb, NORM_EPS)
                           for o, nw, nb in zip(out.unbind(0), w.norm_weight.unbind(0), w.norm_bias.unbind(0))])
    return h + out.view(h.shape)


def _generator(z: int, out: int, std: float, zero: bool = False) -> nn.Linear:
    lin = nn.Linear(z, out)
    if zero:
        nn.init.zeros_(lin.weight)
    else:
        nn.init.normal_(lin.weight, std=std)
    nn.init.zeros_(lin.bias)
    return lin


def _embedding(n: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.normal_(emb.weight, std=1.0)
    return emb


class TaskProjector(nn.Module):
    """Task conditioning only: a learned task embedding -> MLP -> LayerNorm; ``forward(tasks)`` -> (T, z)."""

    def __init__(self, num_tasks: int, embed_dim: int = 64, hidden_dim: int = 128, out_dim: int = 64) -> None:
        super().__init__()
        self.task_embedding = _embedding(num_tasks, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.norm = nn.LayerNorm(out_dim, eps=NORM_EPS)
        self.out_dim = out_dim

    def forward(self, tasks: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mlp(self.task_embedding(tasks)))


class SlotProjector(nn.Module):
    """HyperFormer's ``unique_hyper_net`` conditioning: [task; layer; position] embeddings -> MLP -> LayerNorm.

    ``forward(tasks, layers, positions)`` gives (T, S, z): one vector per task and slot, all in one pass.
    """

    def __init__(self, num_tasks: int, num_layers: int, num_positions: int, embed_dim: int = 64,
                 hidden_dim: int = 128, out_dim: int = 64) -> None:
        super().__init__()
        self.task_embedding = _embedding(num_tasks, embed_dim)
        self.layer_embedding = _embedding(num_layers, embed_dim)
        self.position_embedding = _embedding(num_positions, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(3 * embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.norm = nn.LayerNorm(out_dim, eps=NORM_EPS)
        self.out_dim = out_dim

    def forward(self, tasks: torch.Tensor, layers: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        t, s = len(tasks), len(layers)
        slot = torch.cat([self.layer_embedding(layers), self.position_embedding(positions)], dim=-1)  # (S, 2E)
        e = torch.cat([self.task_embedding(tasks)[:, None].expand(t, s, -1), slot[None].expand(t, s, -1)], dim=-1)
        return self.norm(self.mlp(e))


class FullAdapterGenerator(nn.Module):
    """HyperFormer's generator for slots of one shape: ``c -> (W_down, b_down, W_up, b_up[, LN weight, LN bias])``,
    one linear map each; ``c`` may carry leading (task, slot) dimensions."""

    def __init__(self, z: int, dim: int, bottleneck: int, layer_norm: bool = True, std: float | None = None) -> None:
        super().__init__()
        self.dim, self.bottleneck = dim, bottleneck
        d, b = dim, bottleneck
        std = full_generator_std(z) if std is None else std
        self.w_down = _generator(z, b * d, std)
        self.b_down = _generator(z, b, std, zero=True)
        self.w_up = _generator(z, d * b, std, zero=not layer_norm)
        self.b_up = _generator(z, d, std, zero=True)
        self.norm_weight = _generator(z, d, std, zero=True) if layer_norm else None
        self.norm_bias = _generator(z, d, std, zero=True) if layer_norm else None

    def forward(self, cond: torch.Tensor) -> AdapterWeights:
        d, b, lead = self.dim, self.bottleneck, cond.shape[:-1]
        norm = (None, None) if self.norm_weight is None else (self.norm_weight(cond), self.norm_bias(cond))
        return AdapterWeights(self.w_down(cond).view(*lead, b, d), self.b_down(cond),
                              self.w_up(cond).view(*lead, d, b), self.b_up(cond), *norm)


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
    """Polyhistor's decomposed hypernetworks for slots of one shape: low-rank ``W_down``, ``W_up``, full biases."""

    def __init__(self, z: int, dim: int, bottleneck: int, rank: int, std: float | None = None) -> None:
        super().__init__()
        self.dim, self.bottleneck = dim, bottleneck
        self.down = LowRankGenerator(z, bottleneck, dim, rank, std)
        self.up = LowRankGenerator(z, dim, bottleneck, rank, std, zero=True)
        self.b_down = _generator(z, bottleneck, 0.0, zero=True)
        self.b_up = _generator(z, dim, 0.0, zero=True)

    def forward(self, cond: torch.Tensor) -> AdapterWeights:
        return AdapterWeights(self.down(cond), self.b_down(cond), self.up(cond), self.b_up(cond))


def sharing_groups(slots: Sequence[AdapterSlot], share: str) -> list[str]:
    """The generator each slot uses: one per stage width (``stage``), per block (``block``) or per slot (``slot``)."""
    if share not in SHARING:
        raise ValueError(f"hypernetwork sharing must be one of {SHARING}, got {share!r}")
    if share == "stage":
        return [f"d{s.dim}_b{s.bottleneck}" for s in slots]
    if share == "block":
        return [f"l{s.layer}" for s in slots]
    return [f"l{s.layer}_p{s.position}" for s in slots]


def _task_tensor(tasks: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(tasks), dtype=torch.long, device=device)


class _SharedGeneratorBank(nn.Module):
    """Slot projector + one generator per sharing group, all tasks and slots generated in one call.

    ``forward(tasks)`` with a list of task indices gives, per task, the :class:`AdapterWeights` of every slot; with
    one int, the slots' weights of that task.
    """

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, make, share: str, embed_dim: int,
                 hidden_dim: int, z: int) -> None:
        super().__init__()
        if not slots:
            raise ValueError("a hypernetwork bank needs at least one slot")
        self.slots = list(slots)
        self.share = share
        self.groups = sharing_groups(self.slots, share)
        self.projector = SlotProjector(num_tasks, max(s.layer for s in slots) + 1,
                                       max(s.position for s in slots) + 1, embed_dim, hidden_dim, z)
        self.generators = nn.ModuleDict()
        for s, g in zip(self.slots, self.groups):
            if g not in self.generators:
                self.generators[g] = make(s)
            elif (self.generators[g].dim, self.generators[g].bottleneck) != (s.dim, s.bottleneck):
                raise ValueError(f"slots sharing generator {g!r} must have one shape; got {s}")
        self.register_buffer("layers", torch.tensor([s.layer for s in slots]), persistent=False)
        self.register_buffer("positions", torch.tensor([s.position for s in slots]), persistent=False)
        self._members = {g: [i for i, h in enumerate(self.groups) if h == g] for g in self.generators}
        self.calls = 0  # number of forward calls (tests check: once per forward pass)

    def generator_of(self, slot: int) -> nn.Module:
        """The generator module that writes slot ``slot``'s adapter."""
        return self.generators[self.groups[slot]]

    def per_slot(self, tasks: Sequence[int]) -> list[AdapterWeights]:
        """Every slot's weights for ``tasks`` in one generation, each tensor with a leading task dimension (T, ...)."""
        self.calls += 1
        ids = _task_tensor(tasks, self.layers.device)
        cond = self.projector(ids, self.layers, self.positions)  # (T, S, z)
        out: list[AdapterWeights | None] = [None] * len(self.slots)
        for g, members in self._members.items():
            w = self.generators[g](cond[:, members])  # every task and slot of the group in one call
            parts = [None if x is None else x.unbind(1) for x in w]  # one backward node per tensor, not per slot
            for j, slot in enumerate(members):
                out[slot] = AdapterWeights(*(None if p is None else p[j] for p in parts))
        return out

    def forward(self, tasks: int | Sequence[int]) -> list[AdapterWeights] | list[list[AdapterWeights]]:
        return _per_task(self.per_slot([tasks] if isinstance(tasks, int) else list(tasks)), isinstance(tasks, int))


def _per_task(per_slot: list[AdapterWeights], single: bool) -> list[AdapterWeights] | list[list[AdapterWeights]]:
    """Per-slot weights with a leading task dimension -> per task, the list of its slots' weights (one task: that
    list)."""
    out = [[w.select(t) for w in per_slot] for t in range(per_slot[0].w_down.shape[0])]
    return out[0] if single else out


class FullAdapterBank(_SharedGeneratorBank):
    """HyperFormer++: full-matrix generators (and the generated layer norm after each adapter), shared by the tasks
    and by every slot of a sharing group (default: a Swin stage)."""

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, z: int = 64, embed_dim: int = 64,
                 hidden_dim: int = 128, share: str = "stage", layer_norm: bool = True,
                 std: float | None = None) -> None:
        super().__init__(slots, num_tasks, lambda s: FullAdapterGenerator(z, s.dim, s.bottleneck, layer_norm, std),
                         share, embed_dim, hidden_dim, z)


class DecomposedAdapterBank(_SharedGeneratorBank):
    """Polyhistor: decomposed (low-rank pair) generators, shared by the tasks and by every slot of a sharing group."""

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, rank: int = 8, z: int = 64,
                 embed_dim: int = 64, hidden_dim: int = 128, share: str = "stage", std: float | None = None) -> None:
        super().__init__(slots, num_tasks, lambda s: DecomposedAdapterGenerator(z, s.dim, s.bottleneck, rank, std),
                         share, embed_dim, hidden_dim, z)


def kron_scale(scale: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Layer-wise scaling ``scale (x) template`` over leading task dims of ``template``:
    (k, k) (x) (..., p, q) -> (..., k p, k q); vectors: (k) (x) (..., p) -> (..., k p)."""
    if scale.dim() == 1:
        return (scale[:, None] * template[..., None, :]).flatten(-2)
    k, p, q = scale.shape[0], template.shape[-2], template.shape[-1]
    out = scale[:, None, :, None] * template[..., None, :, None, :]  # (..., k, p, k, q)
    return out.reshape(*template.shape[:-2], k * p, k * q)


def scaling_factor(dim: int, base_dim: int) -> int:
    """k such that ``dim == k * base_dim`` (2**(s-1) for Swin stage s); a clear error otherwise."""
    if dim % base_dim:
        raise ValueError(f"layer-wise scaling needs every adapter width to be a multiple of the template's "
                         f"({base_dim}); got {dim}")
    return dim // base_dim


class KroneckerAdapterBank(nn.Module):
    """Polyhistor-Lite: a decomposed hypernetwork writes one template pair per task (shared by all slots); per-slot
    scaling kernels (shared by the tasks) scale it to each slot's width by a Kronecker product.

    Templates are sized for the narrowest slot; slot l with width ``k_l * template_dim`` uses ``W = S_l (x) T`` for
    both adapter matrices, where ``S_l`` is (k_l x k_l), and ``b = s_l (x) t`` for the biases with ``s_l`` of
    length k_l. Scaling kernels start as the identity (matrices) and ones (vectors), so a slot at init applies the
    template block-diagonally; the up template starts at zero (identity adapter).
    """

    def __init__(self, slots: Sequence[AdapterSlot], num_tasks: int, rank: int = 8, z: int = 64,
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
        self.projector = TaskProjector(num_tasks, embed_dim, hidden_dim, z)
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

    def templates(self, tasks: torch.Tensor) -> AdapterWeights:
        """The template kernels of ``tasks`` (T,): one (down, b_down, up, b_up) per task, shared by every slot."""
        cond = self.projector(tasks)  # (T, z)
        return AdapterWeights(self.down(cond), self.b_down(cond), self.up(cond), self.b_up(cond))

    def per_slot(self, tasks: Sequence[int]) -> list[AdapterWeights]:
        """Every slot's weights for ``tasks`` in one generation, each tensor with a leading task dimension (T, ...)."""
        self.calls += 1
        ids = _task_tensor(tasks, self.scale_down[0].device)
        t = self.templates(ids)
        return [AdapterWeights(kron_scale(self.scale_down[i], t.w_down), kron_scale(self.scale_b_down[i], t.b_down),
                               kron_scale(self.scale_up[i], t.w_up), kron_scale(self.scale_b_up[i], t.b_up))
                for i in range(len(self.slots))]

    def forward(self, tasks: int | Sequence[int]) -> list[AdapterWeights] | list[list[AdapterWeights]]:
        return _per_task(self.per_slot([tasks] if isinstance(tasks, int) else list(tasks)), isinstance(tasks, int))
