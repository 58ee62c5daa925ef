"""Named insertion points of a backbone, and one way to attach PEFT modules at them.

:func:`insertion_points` lists where a module can act, block by block, in forward order:

============================================  ==================  ===============================================
block (library class)                         point kinds         what the point wraps
============================================  ==================  ===============================================
timm ``SwinTransformerBlock``, timm ViT       ``attn``, ``mlp``   the attention sub-layer (its output after the
``Block``, open_clip                                              projection, before the residual add; open_clip:
``ResidualAttentionBlock``                                        after ``ls_1``, Identity in CLIP) and the MLP
                                                                  sub-layer; ``qkv``: the fused qkv Linear of
                                                                  timm blocks (LoRA)
timm ResNet ``Bottleneck``                    ``conv3x3``,        ``conv2`` up to ``act2``/``aa``: in =
                                              ``block``           relu(bn1(conv1(x))), out = aa(relu(bn2(conv2)))
timm ResNet ``BasicBlock``                    ``conv3x3``,        ``conv1`` (strided) up to ``act1``/``aa``;
                                              ``conv3x3_2``,      ``conv2`` up to ``bn2`` (before the residual
                                              ``block``           add)
timm ``ConvNeXtBlock``                        ``conv_dw``,        the 7x7 depthwise conv (before the norm)
                                              ``block``
timm ``SwinTransformerBlock`` (also)          ``attn_grid``,      the attention sub-layer on the block's (B, H, W,
                                              ``block``           C) grid: in = norm1(x) (before shift and window
                                                                  partition), out = the attention branch after its
                                                                  drop-path, before the residual add (a parallel
                                                                  branch lands in the residual stream before the
                                                                  MLP, as Conv-Adapter's Swin placement); ``block``
timm ResNetV2 ``PreActBottleneck`` (BiT)      ``conv3x3``,        ``conv2``: in = norm2(conv1(.)) (GroupNorm+ReLU),
                                              ``block``           out = conv2's output (before norm3)
============================================  ==================  ===============================================

``block`` is the whole residual block: its input and its output. A point is named ``<block path>.<kind>``, e.g.
``layers.2.blocks.3.mlp``, ``layer1.0.conv3x3``, ``stages.1.blocks.0.block``, and tells the attached module
``in_dim`` (channels of the tensor entering the point), ``out_dim`` (leaving it), ``stride`` (spatial ratio in /
out) and ``layout`` (``"nlc"``: channels last, any leading dims, as Swin windows ``(nW*B, N, C)``; ``"nhwc"``:
channels last on the spatial grid ``(B, H, W, C)``, Swin's ``attn_grid`` and ``block``; ``"nchw"``).

:func:`inject` attaches one module per selected point, in one of four modes:

* ``"sequential"`` (alias ``"post"``): ``out -> f(out)`` (Houlsby adapters, which carry their own skip);
* ``"parallel"``: ``out -> out + f(in)`` (LoRA on a Linear; Conv-Adapter's parallel placements; ``f`` maps
  ``in_dim`` to ``out_dim`` at ``stride``);
* ``"pre"``: ``in -> f(in)`` before the point.

Several injections at one point compose in the order they were made (a ``parallel`` branch injected after a
``pre`` module reads the ``pre`` module's output).

Everything is forward hooks on the backbone's own sub-modules: its module tree and state-dict keys stay those of
the pretrained model (a checkpoint of the frozen backbone still loads), and the attached modules live in the
returned :class:`Injected` (an ``nn.ModuleDict``) that the caller registers where it likes, so the optimiser, the
parameter accounting and the state dict see them under stable names. Hooks are small callable objects (not
closures), so ``copy.deepcopy`` and pickling of a model holding both map them onto the copied modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

import torch
from timm.models.convnext import ConvNeXtBlock
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.resnetv2 import PreActBottleneck
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block as ViTBlock
from torch import nn

Mode = Literal["sequential", "post", "parallel", "pre"]
MODES: tuple[str, ...] = ("sequential", "post", "parallel", "pre")


@dataclass(frozen=True)
class Tap:
    """A tensor in the forward pass: the first input (``"input"``) or the output (``"output"``) of ``module``."""

    module: nn.Module = field(repr=False, compare=False)
    side: Literal["input", "output"]
    path: str  # dotted name of the module in the backbone, for messages


@dataclass(frozen=True)
class InsertionPoint:
    """A named place of a backbone where a module can act (see the module docstring).

    ``entry`` is where the point's input is read (``pre`` replaces it, ``parallel`` feeds it to the module);
    ``exit`` is the output the module's result replaces (``sequential``) or is added to (``parallel``).
    """

    name: str
    kind: str
    block: str  # dotted path of the block in the backbone
    in_dim: int
    out_dim: int
    stride: int
    layout: Literal["nlc", "nhwc", "nchw"]
    entry: Tap
    exit: Tap

    @property
    def dim(self) -> int:
        """The width of the point's output (= input width except at channel-changing points)."""
        return self.out_dim


# ---------------------------------------------------------------------------------------------- point discovery
def _stride(module: nn.Module) -> int:
    """Spatial stride of a conv / pooling module (1 for Identity and unknown modules)."""
    s = getattr(module, "stride", 1)
    return int(s[0] if isinstance(s, tuple | list) else s)


def _tap(model_paths: dict[nn.Module, str], module: nn.Module, side: Literal["input", "output"]) -> Tap:
    return Tap(module, side, model_paths.get(module, type(module).__name__))


def _is_open_clip_block(m: nn.Module) -> bool:
    return (type(m).__name__ == "ResidualAttentionBlock" and isinstance(getattr(m, "attn", None), nn.MultiheadAttention)
            and all(hasattr(m, a) for a in ("ln_1", "ls_1", "mlp")))


def _block_points(path: str, m: nn.Module, paths: dict[nn.Module, str]) -> list[InsertionPoint] | None:
    """The points of one block, or None if ``m`` is not a block this module knows."""

    def point(kind: str, in_dim: int, out_dim: int, stride: int, layout: str, entry: Tap, exit_: Tap):
        return InsertionPoint(f"{path}.{kind}" if path else kind, kind, path, in_dim, out_dim, stride, layout, entry,
                              exit_)

    def io(mod: nn.Module) -> tuple[Tap, Tap]:
        return _tap(paths, mod, "input"), _tap(paths, mod, "output")

    if isinstance(m, SwinTransformerBlock | ViTBlock):
        d = m.norm1.normalized_shape[0]
        pts = [point("attn", d, d, 1, "nlc", *io(m.attn))]
        qkv = getattr(m.attn, "qkv", None)
        if isinstance(qkv, nn.Linear):
            pts.append(point("qkv", qkv.in_features, qkv.out_features, 1, "nlc", *io(qkv)))
        if isinstance(m, SwinTransformerBlock):
            pts.append(point("attn_grid", d, d, 1, "nhwc", _tap(paths, m.norm1, "output"),
                             _tap(paths, m.drop_path1, "output")))
            return [*pts, point("mlp", d, d, 1, "nlc", *io(m.mlp)), point("block", d, d, 1, "nhwc", *io(m))]
        return [*pts, point("mlp", d, d, 1, "nlc", *io(m.mlp))]
    if _is_open_clip_block(m):
        d = m.ln_1.normalized_shape[0]
        # the attention's input is ln_1's output (open_clip passes it as q, k and v); its output is read at ls_1
        # (Identity in CLIP): common/models/clip_vit.py runs the attention's weights without calling m.attn
        return [point("attn", d, d, 1, "nlc", _tap(paths, m.ln_1, "output"), _tap(paths, m.ls_1, "output")),
                point("mlp", d, d, 1, "nlc", *io(m.mlp))]
    if isinstance(m, Bottleneck):
        stride = _stride(m.conv2) * _stride(m.aa)
        width = m.conv2.in_channels
        return [point("conv3x3", width, m.conv2.out_channels, stride, "nchw", _tap(paths, m.conv2, "input"),
                      _tap(paths, m.aa, "output")),
                point("block", m.conv1.in_channels, m.conv3.out_channels, stride, "nchw", *io(m))]
    if isinstance(m, BasicBlock):
        stride = _stride(m.conv1) * _stride(m.aa)
        return [point("conv3x3", m.conv1.in_channels, m.conv1.out_channels, stride, "nchw",
                      _tap(paths, m.conv1, "input"), _tap(paths, m.aa, "output")),
                point("conv3x3_2", m.conv2.in_channels, m.conv2.out_channels, _stride(m.conv2), "nchw",
                      _tap(paths, m.conv2, "input"), _tap(paths, m.bn2, "output")),
                point("block", m.conv1.in_channels, m.conv2.out_channels, stride, "nchw", *io(m))]
    if isinstance(m, PreActBottleneck):
        return [point("conv3x3", m.conv2.in_channels, m.conv2.out_channels, _stride(m.conv2), "nchw", *io(m.conv2)),
                point("block", m.conv1.in_channels, m.conv3.out_channels, _stride(m.conv2), "nchw", *io(m))]
    if isinstance(m, ConvNeXtBlock):
        c = m.conv_dw
        return [point("conv_dw", c.in_channels, c.out_channels, _stride(c), "nchw", *io(c)),
                point("block", c.in_channels, c.out_channels, _stride(c), "nchw", *io(m))]
    return None


def insertion_points(model: nn.Module, where: str | Sequence[str] | None = None) -> list[InsertionPoint]:
    """The insertion points of ``model`` in forward order (block by block), optionally only those ``where`` selects.

    ``where``: one pattern or several; a pattern selects a point when it is the point's kind (``"mlp"``) or an
    ``fnmatch`` pattern of its name (``"layers.3.*.attn"``, ``"layer[34].*.block"``). Every pattern must select
    something (a typo is an error, not a silently smaller PEFT model).
    """
    paths = {m: n for n, m in model.named_modules()}
    points: list[InsertionPoint] = []
    for path, m in model.named_modules():
        found = _block_points(path, m, paths)
        if found:
            points.extend(found)
    if not points:
        raise TypeError(
            f"{type(model).__name__} has no block common/peft/inject.py knows (timm SwinTransformerBlock, timm ViT "
            "Block, open_clip ResidualAttentionBlock, timm ResNet Bottleneck/BasicBlock, timm ResNetV2 PreActBottleneck, "
            "timm ConvNeXtBlock); build "
            "the backbone with timm / open_clip, or add its block to _block_points in common/peft/inject.py")
    if where is None:
        return points
    patterns = [where] if isinstance(where, str) else list(where)
    unmatched = [p for p in patterns if not any(_selects(p, pt) for pt in points)]
    if unmatched:
        kinds = sorted({pt.kind for pt in points})
        raise ValueError(f"insertion point pattern(s) {unmatched} select nothing in {type(model).__name__}; its kinds "
                         f"are {kinds}, names look like {points[0].name!r} (common/peft/inject.py)")
    return [pt for pt in points if any(_selects(p, pt) for p in patterns)]


def _selects(pattern: str, point: InsertionPoint) -> bool:
    return pattern == point.kind or fnmatchcase(point.name, pattern)


# ---------------------------------------------------------------------------------------------- hooks
def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def _with_first(value: Any, tensor: torch.Tensor) -> Any:
    return (tensor, *value[1:]) if isinstance(value, tuple) else tensor


class ResidualHook:
    """Forward hook, sequential placement: ``out -> module(out)``; the module carries its own skip connection."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, _mod: nn.Module, _inputs: tuple[Any, ...], output: Any) -> Any:
        return _with_first(output, self.module(_first(output)))


class AdditiveHook:
    """Forward hook, parallel placement on one module: ``out -> out + module(input)`` (LoRA on a Linear)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, _mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        return _with_first(output, _first(output) + self.module(inputs[0]))


class _Stash:
    """Carries a point's input from its entry hook to its exit hook (parallel points spanning several modules)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None


class CaptureHook:
    """Entry hook of a parallel point: remembers the tensor at the entry (pre-hook on an input, hook on an output)."""

    def __init__(self, stash: _Stash, side: str, name: str) -> None:
        self.stash, self.side, self.name = stash, side, name

    def __call__(self, _mod: nn.Module, inputs: tuple[Any, ...], output: Any = None) -> None:
        if self.stash.value is not None:
            self.stash.value = None
            raise RuntimeError(
                f"parallel insertion point {self.name!r}: its input was read twice without its output being computed "
                "in between: the forward that ran skips the point's exit module, so the parallel branch would be "
                "silently dropped (common/peft/inject.py)")
        self.stash.value = inputs[0] if self.side == "input" else _first(output)


class StashedAdditiveHook:
    """Exit hook of a parallel point spanning modules: ``out -> out + module(stashed input)``."""

    def __init__(self, module: nn.Module, stash: _Stash, name: str) -> None:
        self.module, self.stash, self.name = module, stash, name

    def __call__(self, _mod: nn.Module, _inputs: tuple[Any, ...], output: Any) -> Any:
        x, self.stash.value = self.stash.value, None
        if x is None:
            raise RuntimeError(f"parallel insertion point {self.name!r}: its output was computed without its input "
                               "passing the entry first (a forward that skips a sub-module?) (common/peft/inject.py)")
        return _with_first(output, _first(output) + self.module(x))


class PreHook:
    """``pre`` placement: ``in -> module(in)``, as a forward pre-hook (entry = an input) or a forward hook (an output)."""

    def __init__(self, module: nn.Module, side: str) -> None:
        self.module, self.side = module, side

    def __call__(self, _mod: nn.Module, inputs: tuple[Any, ...], output: Any = None) -> Any:
        if self.side == "input":
            return (self.module(inputs[0]), *inputs[1:])
        return _with_first(output, self.module(_first(output)))


# ---------------------------------------------------------------------------------------------- inject / remove
def _register(tap: Tap, hook: Callable[..., Any], attached: list[tuple[nn.Module, Any]]) -> None:
    if tap.side == "input":
        tap.module.register_forward_pre_hook(hook)
    else:
        tap.module.register_forward_hook(hook)
    attached.append((tap.module, hook))


def _hooks_for(point: InsertionPoint, module: nn.Module, mode: str) -> list[tuple[Tap, Callable[..., Any]]]:
    if mode in ("sequential", "post"):
        return [(point.exit, ResidualHook(module))]
    if mode == "pre":
        return [(point.entry, PreHook(module, point.entry.side))]
    if point.entry.module is point.exit.module and point.entry.side == "input":
        return [(point.exit, AdditiveHook(module))]
    stash = _Stash()
    return [(point.entry, CaptureHook(stash, point.entry.side, point.name)),
            (point.exit, StashedAdditiveHook(module, stash, point.name))]


class Injected(nn.ModuleDict):
    """The modules :func:`inject` attached, by key; :attr:`points` says where each one acts.

    Register it in the model that owns the backbone (``self.peft["adapters"] = inject(...)``) so its parameters are
    trained and saved; :meth:`remove` detaches the hooks (the modules stay here).
    """

    def __init__(self) -> None:
        super().__init__()
        self.points: dict[str, InsertionPoint] = {}
        self.mode: str = "sequential"
        self._attached: list[tuple[nn.Module, Any]] = []

    def remove(self) -> None:
        """Detach every hook this injection registered; the backbone computes as before the injection."""
        for module, hook in self._attached:
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for hid in [k for k, h in hooks.items() if h is hook]:
                    del hooks[hid]
        self._attached.clear()


def default_key(point: InsertionPoint) -> str:
    """``layers.2.blocks.3.mlp`` -> ``layers_2_blocks_3_mlp`` (module names cannot contain dots)."""
    return point.name.replace(".", "_")


def inject(
    model: nn.Module,
    make: Callable[[InsertionPoint], nn.Module | None],
    where: str | Sequence[str],
    mode: Mode = "sequential",
    key: Callable[[InsertionPoint], str] = default_key,
) -> Injected:
    """Attach ``make(point)`` at every point of ``model`` that ``where`` selects (see :func:`insertion_points`).

    ``make`` is called once per point in forward order (so parameter creation, hence RNG use, follows the
    backbone's order) and may return None to skip a point. ``mode`` is ``"sequential"``/``"post"`` (``out ->
    f(out)``), ``"parallel"`` (``out -> out + f(in)``) or ``"pre"`` (``in -> f(in)``). Returns the attached
    modules keyed by ``key(point)``; the caller registers them (the backbone's state-dict keys do not change).
    """
    if mode not in MODES:
        raise ValueError(f"inject: mode must be one of {MODES}, got {mode!r} (common/peft/inject.py)")
    injected = Injected()
    injected.mode = mode
    for point in insertion_points(model, where):
        module = make(point)
        if module is None:
            continue
        k = key(point)
        if k in injected:
            raise ValueError(f"inject: two points map to the key {k!r}; pass a `key` that tells them apart")
        injected[k] = module
        injected.points[k] = point
        for tap, hook in _hooks_for(point, module, mode):
            _register(tap, hook, injected._attached)
    return injected


class ChannelsLast(nn.Module):
    """Runs a channels-last module (an adapter of Linear layers) on an NCHW map: ``permute -> module -> permute``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


__all__ = ["MODES", "AdditiveHook", "ChannelsLast", "InsertionPoint", "Injected", "ResidualHook", "Tap",
           "default_key", "inject", "insertion_points"]
