"""Visual Prompt Tuning (Jia et al. 2022) for timm Swin, following VPT's own Swin variant.

Swin attends inside local windows, so VPT-Swin prepends the same P prompt tokens to *every* window: prompts take
part in each window's attention (zero relative-position bias, never masked), and their outputs are averaged over
the windows. At a patch-merging layer the prompts are concatenated four times (as four "neighbours") and go
through the merging norm and reduction, so they widen with the stage.

* shallow: P prompts of width C_1 enter once, before stage 1, and travel through the whole network.
* deep: every block gets its own fresh P prompts of its width (P * sum of block widths parameters).

Prompts are initialised uniform(-v, v), v = sqrt(6 / (3 * patch_area + C_1)), as in VPT. The backbone's weights
and its hooks (adapters on ``mlp`` etc.) are used as they are; only the attention call is re-implemented.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse
from torch import nn

from common.peft.context import TaskContext
from common.peft.swin import check_swin, swin_blocks


def prompted_window_attention(
    attn: nn.Module, x: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``WindowAttention`` over ``[prompts; window tokens]``.

    x: (nW*B, N, C) windows (batch-major, as timm's window_partition lays them out); prompts: (nW*B, P, C).
    Returns the window tokens' and the prompts' outputs.
    """
    bw, n, c = x.shape
    p = prompts.shape[1]
    seq = torch.cat([prompts, x], dim=1)
    qkv = attn.qkv(seq).reshape(bw, n + p, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = F.pad(attn._get_rel_pos_bias(), (p, 0, p, 0))  # (1, nH, P+N, P+N), zeros for prompt rows/cols
    if mask is not None:
        nw = mask.shape[0]
        m = F.pad(mask, (p, 0, p, 0)).view(1, nw, 1, n + p, n + p)
        bias = (bias.unsqueeze(1) + m).expand(bw // nw, -1, -1, -1, -1).reshape(bw, attn.num_heads, n + p, n + p)
    # explicit softmax attention, as timm's own non-fused path: on the CPU it beat scaled_dot_product_attention at
    # these window sizes (VPT-deep tiny step 143 vs 154 ms in float32, 117 vs 238 ms under bf16 autocast, 2026-12-07)
    logits = (q * attn.scale) @ k.transpose(-2, -1) + bias
    out = attn.attn_drop(logits.softmax(dim=-1)) @ v
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(bw, n + p, -1)))
    return out[:, p:], out[:, :p]


def prompted_block(block: nn.Module, x: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm Swin block with prompts; x: (B, H, W, C), prompts: (B, P, C) -> same shapes."""
    b, h, w, c = x.shape
    p = prompts.shape[1]
    shortcut, p_shortcut = x, prompts
    xn, pn = block.norm1(x), block.norm1(prompts)
    sh, sw = block.shift_size
    has_shift = sh > 0 or sw > 0
    if has_shift:
        xn = torch.roll(xn, shifts=(-sh, -sw), dims=(1, 2))
    wh, ww = block.window_size
    pad_h, pad_w = (wh - h % wh) % wh, (ww - w % ww) % ww
    xn = F.pad(xn, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = xn.shape[1], xn.shape[2]
    windows = window_partition(xn, block.window_size).view(-1, wh * ww, c)
    nw = windows.shape[0] // b
    mask = block.get_attn_mask(xn) if getattr(block, "dynamic_mask", False) else block.attn_mask
    p_windows = pn.repeat_interleave(nw, dim=0)
    attn_w, attn_p = prompted_window_attention(block.attn, windows, p_windows, mask)
    y = window_reverse(attn_w.view(-1, wh, ww, c), block.window_size, hp, wp)[:, :h, :w, :]
    if has_shift:
        y = torch.roll(y, shifts=(sh, sw), dims=(1, 2))
    x = shortcut + block.drop_path1(y)
    prompts = p_shortcut + block.drop_path1(attn_p.view(b, nw, p, c).mean(1))
    x = x.reshape(b, -1, c)
    x = x + block.drop_path2(block.mlp(block.norm2(x)))
    prompts = prompts + block.drop_path2(block.mlp(block.norm2(prompts)))
    return x.reshape(b, h, w, c), prompts


def merge_prompts(downsample: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """VPT-Swin's prompt path through PatchMerging: 4x concatenation, then the merging norm and reduction."""
    if isinstance(downsample, nn.Identity):
        return prompts
    return downsample.reduction(downsample.norm(torch.cat([prompts] * 4, dim=-1)))


class SwinPrompts(nn.Module):
    """Per-task VPT prompts for a timm Swin and the prompted forward that uses them."""

    def __init__(self, swin: nn.Module, num_tokens: int, ctx: TaskContext, deep: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_swin(swin)
        if num_tokens < 1:
            raise ValueError(f"VPT needs num_tokens >= 1, got {num_tokens}")
        self.ctx, self.deep, self.num_tokens = ctx, deep, num_tokens
        blocks = swin_blocks(swin)
        c1 = blocks[0].dim
        patch = swin.patch_embed.proj.kernel_size
        val = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + c1))
        widths = [bl.dim for bl in blocks] if deep else [c1]
        self.prompts = nn.ModuleDict()
        for t in ctx.tasks:
            plist = nn.ParameterList([nn.Parameter(torch.empty(num_tokens, d).uniform_(-val, val)) for d in widths])
            self.prompts[t] = plist
        self.dropout = nn.Dropout(dropout)

    def _batch_prompts(self, plists: list[nn.ParameterList], index: int, b: int) -> torch.Tensor:
        """Prompt set ``index`` of each task, each repeated for its ``b`` samples, concatenated in task order."""
        return torch.cat([self.dropout(pl[index]).unsqueeze(0).expand(b, -1, -1) for pl in plists])

    def stage_features(self, swin: nn.Module, x: torch.Tensor, final_norm: bool = True, repeat: int = 1
                       ) -> list[torch.Tensor]:
        """The 4 stage maps (NCHW) of ``swin`` with the active task's prompts.

        Stacked (the context runs tasks stacked, ``repeat`` = their number): the patch embedding of ``x`` is
        repeated once per task and chunk ``i`` gets task ``i``'s prompts; every other step of the prompted forward
        acts on each sample alone, so this equals one pass per task."""
        tasks = list(self.ctx.stacked) if self.ctx.stacked is not None else [self.ctx.task]
        if len(tasks) != repeat:
            raise RuntimeError(f"VPT: {len(tasks)} active task(s) {tasks} but the patch embedding is repeated {repeat} "
                               "times; stacked passes repeat it once per task (common/peft/vpt.py)")
        plists = [self.prompts[t] for t in tasks]
        h = swin.patch_embed(x)
        b = h.shape[0]
        if repeat > 1:
            h = h.repeat(repeat, *([1] * (h.ndim - 1)))
        prompts = self._batch_prompts(plists, 0, b)
        feats, layer = [], 0
        for s, stage in enumerate(swin.layers):
            h = stage.downsample(h)
            if not self.deep:
                prompts = merge_prompts(stage.downsample, prompts)
            for block in stage.blocks:
                if self.deep:
                    prompts = self._batch_prompts(plists, layer, b)
                h, prompts = prompted_block(block, h, prompts)
                layer += 1
            out = swin.norm(h) if final_norm and s == len(swin.layers) - 1 else h
            feats.append(out.permute(0, 3, 1, 2).contiguous())
        return feats
