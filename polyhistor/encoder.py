"""A timm Swin shared by several dense tasks, with the PEFT method of one row of the Polyhistor table.

:class:`MultiTaskSwin` wraps a (pretrained) timm ``SwinTransformer``; ``forward(images, task)`` gives the four stage
maps (NCHW, strides 4/8/16/32) as that task sees them. Methods with task-specific encoder parameters (adapters,
BitFit, prompts, LoRA, hyper-adapters) compute the encoder once per task; task-agnostic ones (decoders only, full
fine-tuning, VL-Adapter's single shared adapter) once for all tasks (:attr:`MultiTaskSwin.task_agnostic`).

Where the per-task parameters act on each sample alone (adapters, LoRA, Compacter with its per-task layer norms,
VPT's prompts, the hypernetwork rows, Conv-Adapter), the per-task passes run as one pass over the batch repeated
once per task, each task's parameters applied to its copy (:attr:`MultiTaskSwin.stacked`,
``PeftConfig.stack_tasks``): the same features and gradients as one pass per task (tested), with one batch of T x B
instead of T batches of B -- measured 1.25-1.3x faster per step on CPU at the tiny scale. The patch embedding is
computed once and repeated when no task-specific parameter acts in it. BitFit keeps one pass per task: its per-task
relative-position bias tables act inside timm's window attention.

Insertion points ("slots"): the ``attn`` and ``mlp`` points of :mod:`common.peft.inject` -- the output of a
block's window attention (after its projection, before the residual add) and of its MLP, Houlsby's two sequential
adapter positions; ``PeftConfig.adapter_positions`` picks them. LoRA acts in parallel at the ``qkv`` points.
The Conv-Adapter row (beyond the paper) puts one Conv-Adapter per task in parallel at each block's ``attn_grid``
point: read from norm1(x) on the (B, H, W, C) grid, added to the residual stream with the attention branch (the
official Swin placement of Conv-Adapter's Convolution Parallel variant; the kernel is
:class:`common.peft.conv_bottleneck.ConvBottleneck`).
PEFT modules live in :attr:`MultiTaskSwin.peft` (keys ``s<stage>_b<block>_<point>``); the Swin's own modules and
state-dict keys are untouched (forward hooks), except BitFit / norm tuning, which parametrize the tuned tensors
(see common/peft/bitfit.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from common.peft.accounting import freeze, unfreeze
from common.peft.adapter import BottleneckAdapter, TaskRouted, bottleneck_size
from common.peft.bitfit import add_task_deltas, add_task_norm_deltas, default_bias_predicate
from common.peft.compacter import CompacterAdapter, phm_rules
from common.peft.context import TaskContext
from common.peft.conv_bottleneck import ConvBottleneck as ConvAdapter
from common.peft.inject import InsertionPoint, inject, insertion_points
from common.peft.lora import LoRADelta, qkv_slices
from common.peft.swin import SwinBlockInfo, stage_dims, swin_blocks, swin_stage_features
from common.peft.vpt import SwinPrompts
from polyhistor.hypernet import (
    AdapterSlot,
    DecomposedAdapterBank,
    FullAdapterBank,
    KroneckerAdapterBank,
    apply_task_adapters,
)
from polyhistor.methods import METHODS, method_spec

POSITIONS = ("attn", "mlp")


@dataclass
class PeftConfig:
    """Shapes of the PEFT methods. Defaults are the readings that reproduce the paper's parameter counts on
    Swin-T (see polyhistor/README.md, "Parameter budgets"); configs may override any of them.

    Attributes:
        adapter_reduction: adapter hidden width = block width / this (Adapter, VL-Adapter, Compacter, hyper rows).
        adapter_positions: sub-layers followed by an adapter: ``attn`` and/or ``mlp`` (Compacter++ forces mlp).
        activation: adapter non-linearity.
        lora_rank / lora_alpha / lora_targets: LoRA on the fused qkv projection (q and v, as in the LoRA paper).
        vpt_tokens / vpt_dropout: prompts per task (per block for VPT-deep).
        bitfit_relative_position_bias: BitFit also tunes Swin's relative-position bias tables (they are biases).
        compacter_n / compacter_rank / compacter_tune_norms: PHM dimension, rank of the B_i factors, and whether
            the layer norms are tuned per task (the official Compacter configs do).
        hyper_embed_dim / hyper_hidden_dim / hyper_z: task (+ layer + position) embeddings -> hidden -> projected
            width z fed to the generators (HyperFormer, Polyhistor, Polyhistor-Lite); z = 64 is HyperFormer's.
        hyper_sharing: which slots share one generator in the HyperFormer and Polyhistor rows: ``stage`` (one per
            Swin stage width, the default), ``block`` (one per block) or ``slot`` (one per insertion point).
        hyper_layer_norm: HyperFormer's generated layer norm after each adapter (``conditional_layer_norm``).
        polyhistor_rank / lite_rank: rank of the decomposed hypernetworks' factors (polyhistor_rank 27 gives the
            paper's 8.96M with stage sharing, see the README).
        conv_adapter_gamma / conv_adapter_kernel / conv_adapter_alpha_init: the Conv-Adapter row's compression
            gamma (width = C / gamma), kernel size k of its grouped convolution and the initial channel scale alpha;
            8, 7 and 1.0 are the official code's Swin defaults (alpha 1: the adapter does not start as the zero map;
            0 starts the row as the frozen Swin).
        stack_tasks: run the task-specific encoder passes as one stacked batch where the method allows (same
            result, faster; see the module docstring). Not a shape: it changes no parameter.
    """

    adapter_reduction: float = 4.0
    adapter_positions: list[str] = field(default_factory=lambda: ["attn", "mlp"])
    activation: str = "gelu"
    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])
    vpt_tokens: int = 50
    vpt_dropout: float = 0.0
    bitfit_relative_position_bias: bool = True
    compacter_n: int = 4
    compacter_rank: int = 1
    compacter_tune_norms: bool = True
    hyper_embed_dim: int = 64
    hyper_hidden_dim: int = 128
    hyper_z: int = 64
    hyper_sharing: str = "stage"
    hyper_layer_norm: bool = True
    polyhistor_rank: int = 27
    lite_rank: int = 8
    conv_adapter_gamma: int = 8
    conv_adapter_kernel: int = 7
    conv_adapter_alpha_init: float = 1.0
    stack_tasks: bool = True


class GeneratedAdapter(nn.Module):
    """Slot ``slot``'s generated adapter (no parameters of its own): the weights are read from the context's cache,
    where :meth:`MultiTaskSwin.forward` puts what the hypernetwork generated for this pass (every slot, a leading
    task dimension in the order of the pass's tasks, i.e. of the stacked chunks)."""

    def __init__(self, ctx: TaskContext, slot: int, activation: str) -> None:
        super().__init__()
        self.ctx, self.slot, self.activation = ctx, slot, activation

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        weights = self.ctx.cache.get("adapter_weights")
        if weights is None:
            raise RuntimeError("hyper-adapters run without generated weights; call MultiTaskSwin.forward "
                               "(polyhistor/encoder.py), which generates them once per pass")
        return apply_task_adapters(out, weights[self.slot], self.activation)


def _check_positions(positions: list[str]) -> list[str]:
    bad = [p for p in positions if p not in POSITIONS]
    if bad:
        raise ValueError(f"adapter position must be one of {POSITIONS}, got {bad[0]!r}")
    return positions


class MultiTaskSwin(nn.Module):
    """Frozen (or fine-tuned) timm Swin + the encoder-side PEFT of ``method`` for ``tasks``."""

    def __init__(self, swin: nn.Module, tasks: list[str], method: str, peft: PeftConfig | None = None) -> None:
        super().__init__()
        self.spec = method_spec(method)
        self.method = method
        self.cfg = peft or PeftConfig()
        self.swin = swin
        self.tasks = list(tasks)
        self.ctx = TaskContext(self.tasks)
        self.peft = nn.ModuleDict()
        self.blocks: list[SwinBlockInfo] = swin_blocks(swin)
        self._block_info = {b.name: b for b in self.blocks}
        self.dims = stage_dims(swin)
        self.task_agnostic = self.spec.task_agnostic
        row_wise = self.spec.encoder in ("adapter", "lora", "hyper", "conv_adapter", "compacter", "vpt")
        #: the per-task passes run as one stacked batch (see the module docstring)
        self.stacked = bool(self.cfg.stack_tasks and row_wise and not self.task_agnostic)
        if self.spec.full_finetune:
            unfreeze(swin)
        else:
            freeze(swin)
        getattr(self, f"_setup_{self.spec.encoder}")()

    # ------------------------------------------------------------------ setup per method family
    def _setup_none(self) -> None:
        pass

    def _points(self, positions: list[str] | None = None) -> list[InsertionPoint]:
        """The Swin's ``attn`` / ``mlp`` insertion points named by ``positions``, in forward order."""
        return insertion_points(self.swin, _check_positions(list(positions or self.cfg.adapter_positions)))

    def _slot_key(self, point: InsertionPoint) -> str:
        """``layers.2.blocks.5.mlp`` -> ``s2_b5_mlp`` (the parameter names of the published checkpoints' rows)."""
        info = self._block_info[point.block]
        return f"s{info.stage}_b{info.index}_{point.kind}"

    def _inject_routed(self, name: str, make, where: list[str], mode: str = "sequential",
                       shared: bool = False) -> None:
        """``make(point)`` per task (or once, shared) at every point ``where`` selects, routed by the active task."""
        def routed(point: InsertionPoint) -> TaskRouted:
            return TaskRouted(make(point) if shared else {t: make(point) for t in self.tasks}, self.ctx)

        self.peft[name] = inject(self.swin, routed, where, mode=mode, key=self._slot_key)

    def _bottleneck(self, dim: int) -> int:
        return bottleneck_size(dim, self.cfg.adapter_reduction)

    def _setup_adapter(self) -> None:
        self._inject_routed(
            "adapters", lambda p: BottleneckAdapter(p.dim, self._bottleneck(p.dim), self.cfg.activation),
            _check_positions(list(self.cfg.adapter_positions)), shared=self.spec.shared_adapters)

    def _setup_compacter(self) -> None:
        n = self.cfg.compacter_n
        self.peft["phm_rules"] = nn.ParameterDict({t: phm_rules(n) for t in self.tasks})
        positions = ["mlp"] if self.method == "compacter_pp" else list(self.cfg.adapter_positions)

        def make(point: InsertionPoint, task: str) -> CompacterAdapter:
            b = self._bottleneck(point.dim)
            b = max(n, b - b % n)
            return CompacterAdapter(point.dim, b, self.peft["phm_rules"][task], self.cfg.compacter_rank,
                                    self.cfg.activation)

        self.peft["compacter"] = inject(
            self.swin, lambda p: TaskRouted({t: make(p, t) for t in self.tasks}, self.ctx),
            _check_positions(positions), key=self._slot_key)
        if self.cfg.compacter_tune_norms:
            add_task_norm_deltas(self.swin, self.ctx)

    def _setup_bitfit(self) -> None:
        add_task_deltas(self.swin, self.ctx, default_bias_predicate(self.cfg.bitfit_relative_position_bias))

    def _setup_lora(self) -> None:
        def make(point: InsertionPoint) -> LoRADelta:
            slices = qkv_slices(point.in_dim, self.cfg.lora_targets)
            return LoRADelta(point.in_dim, point.out_dim, self.cfg.lora_rank, self.cfg.lora_alpha, slices)

        self._inject_routed("lora", make, ["qkv"], mode="parallel")

    def _setup_vpt(self) -> None:
        self.peft["prompts"] = SwinPrompts(self.swin, self.cfg.vpt_tokens, self.ctx, deep=self.method == "vpt_deep",
                                           dropout=self.cfg.vpt_dropout)

    def _setup_conv_adapter(self) -> None:
        """Per-task Conv-Adapters (Convolution Parallel) beside every block's attention, on the (B, H, W, C) grid:
        ``x + attn(norm1(x)) + alpha * conv1x1(act(grouped_conv_kxk(norm1(x))))``. Only the adapters train (no
        norms: the official code also tunes every norm, which a multi-task row would need per task)."""
        c = self.cfg

        def make(point: InsertionPoint) -> ConvAdapter:
            return ConvAdapter(point.in_dim, point.out_dim, c.conv_adapter_gamma, c.conv_adapter_kernel,
                               stride=point.stride, activation=c.activation, layout="nhwc", init="torch",
                               alpha_init=c.conv_adapter_alpha_init)

        self._inject_routed("conv_adapters", make, ["attn_grid"], mode="parallel")

    def _setup_hyper(self) -> None:
        points = self._points()
        shapes = [AdapterSlot(p.dim, self._bottleneck(p.dim), self._block_info[p.block].layer, POSITIONS.index(p.kind))
                  for p in points]
        c = self.cfg
        common = dict(num_tasks=len(self.tasks), z=c.hyper_z, embed_dim=c.hyper_embed_dim, hidden_dim=c.hyper_hidden_dim)
        if self.method == "hyperformer":
            bank: nn.Module = FullAdapterBank(shapes, share=c.hyper_sharing, layer_norm=c.hyper_layer_norm, **common)
        elif self.method == "polyhistor":
            bank = DecomposedAdapterBank(shapes, rank=c.polyhistor_rank, share=c.hyper_sharing, **common)
        else:
            bank = KroneckerAdapterBank(shapes, rank=c.lite_rank, **common)
        self.peft["hypernet"] = bank
        slot = {p.name: i for i, p in enumerate(points)}
        self.peft["generated"] = inject(
            self.swin, lambda p: GeneratedAdapter(self.ctx, slot[p.name], c.activation), [p.name for p in points],
            key=self._slot_key)

    @property
    def bank(self) -> nn.Module | None:
        """The hypernetwork bank of the hyper rows (None otherwise)."""
        return self.peft["hypernet"] if "hypernet" in self.peft else None

    def generator_parameters(self) -> list[nn.Parameter]:
        """The hypernetworks' generator weights: the linear maps from the task conditioning to adapter weights
        (not the task projector, not Polyhistor-Lite's directly learned scaling kernels). Empty for other rows."""
        bank = self.bank
        if bank is None:
            return []
        return [p for n, p in bank.named_parameters() if not n.startswith(("projector.", "scale_"))]

    @property
    def prompts(self) -> SwinPrompts | None:
        """The VPT prompts of the VPT rows (None otherwise)."""
        return self.peft["prompts"] if "prompts" in self.peft else None

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, task: str | None = None) -> list[torch.Tensor]:
        """The 4 stage maps for ``task`` (any task, or None, when the method is task-agnostic)."""
        task = task or self.tasks[0]
        with self.ctx.use(task):
            if self.bank is not None:
                self.ctx.cache["adapter_weights"] = self.bank.per_slot([self.ctx.index])  # once per forward
            if self.prompts is not None:
                return self.prompts.stage_features(self.swin, images)
            return swin_stage_features(self.swin, images)

    def forward_tasks(self, images: torch.Tensor, tasks: list[str] | None = None) -> dict[str, list[torch.Tensor]]:
        """Stage maps per task; computed once and shared when the method is task-agnostic."""
        tasks = list(tasks or self.tasks)
        if self.task_agnostic:
            feats = self.forward(images, tasks[0])
            return {t: feats for t in tasks}
        if self.stacked and len(tasks) > 1:
            return self.forward_stacked(images, tasks)
        return {t: self.forward(images, t) for t in tasks}

    def forward_stacked(self, images: torch.Tensor, tasks: list[str]) -> dict[str, list[torch.Tensor]]:
        """Stage maps per task from one pass over ``images`` repeated once per task (row-wise methods only)."""
        if not self.stacked:
            raise RuntimeError(f"method {self.method!r} (PeftConfig.stack_tasks={self.cfg.stack_tasks}) cannot run "
                               "tasks stacked; use forward_tasks (polyhistor/encoder.py)")
        n = len(tasks)
        with self.ctx.use_stacked(tasks):
            if self.bank is not None:  # every task's and layer's weights in one generation per forward
                self.ctx.cache["adapter_weights"] = self.bank.per_slot([self.tasks.index(t) for t in tasks])
            if self.prompts is not None:
                feats = self.prompts.stage_features(self.swin, images, repeat=n)
            elif any(p.requires_grad for p in self.swin.patch_embed.parameters()):  # tuned norms reach into it
                feats = swin_stage_features(self.swin, images.repeat(n, 1, 1, 1))
            else:  # nothing task-specific before the first block: one patch embedding for every task
                feats = swin_stage_features(self.swin, images, repeat=n)
        chunks = [f.chunk(n, dim=0) for f in feats]
        return {t: [c[i] for c in chunks] for i, t in enumerate(tasks)}


__all__ = ["MultiTaskSwin", "PeftConfig", "POSITIONS", "METHODS"]
