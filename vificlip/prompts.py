"""Bridge-and-prompt: independent deep vision-language prompts (IVLP) on a frozen ViFi-CLIP (plain PyTorch).

The paper's second stage keeps the video-fine-tuned CLIP frozen and learns prompt tokens in both towers:

* vision: ``n_vision`` tokens appended **after the patch tokens** (after the positional embedding, before
  ``ln_pre``); before every block ``1 .. depth_vision - 1`` they are **replaced** by that block's own learnt tokens;
  from block ``depth_vision`` on, the tokens the previous block produced simply flow on;
* text: ``n_text`` tokens right **after the start-of-text token**: the prompt is ``"X X ... X {class}."`` and the
  embeddings of the ``X`` placeholders are the learnt context (before the positional embedding is added); before
  every block ``1 .. depth_text - 1`` positions ``1 .. n_text`` are replaced by that block's tokens.

So there are ``depth`` prompt sets per tower (the input one and ``depth - 1`` deep ones), all initialised
``N(0, 0.02)``: ``n_vision * width_vision * depth_vision + n_text * width_text * depth_text`` parameters (16 tokens,
depth 9 at ViT-B/16: 16*768*9 + 16*512*9 = 184,320; 10 tokens, depth 12: 153,600).

The vision pass goes through :mod:`common.models.clip_vit` (pre-attention hooks), the text pass through
:mod:`common.models.clip_text` (pre-block hooks). No Lightning, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from common.models import clip_text, clip_vit

__all__ = ["PromptConfig", "DeepPrompts", "TextEncoder", "prompt_template"]


@dataclass(frozen=True)
class PromptConfig:
    """How many prompt tokens per tower and down to which depth they are replaced."""

    n_vision: int = 16
    n_text: int = 16
    depth_vision: int = 9
    depth_text: int = 9
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if min(self.n_vision, self.n_text) < 0 or min(self.depth_vision, self.depth_text) < 0:
            raise ValueError(f"prompt counts and depths must be >= 0, got {self}")
        if (self.n_vision == 0) != (self.depth_vision == 0) or (self.n_text == 0) != (self.depth_text == 0):
            raise ValueError(f"a tower with prompt tokens needs depth >= 1 (and depth 0 needs 0 tokens): {self}")


def prompt_template(n_text: int) -> str:
    """The text template whose ``X`` placeholders the learnt context replaces: ``"X X ... X {}."``."""
    return " ".join(["X"] * n_text) + " {}." if n_text else "{}."


class DeepPrompts(nn.Module):
    """The learnable tokens: ``vision`` ``(depth_vision, n_vision, width_vision)``, ``text`` ``(depth_text, n_text,
    width_text)``. Row ``i`` is the set used at block ``i`` (row 0: the input tokens)."""

    def __init__(self, config: PromptConfig, width_vision: int, width_text: int, depth_vit: int,
                 depth_text_tower: int) -> None:
        super().__init__()
        if config.depth_vision > depth_vit or config.depth_text > depth_text_tower:
            raise ValueError(f"prompt depths ({config.depth_vision}, {config.depth_text}) exceed the towers' "
                             f"({depth_vit}, {depth_text_tower}) blocks")
        self.config = config
        self.vision = nn.Parameter(torch.empty(config.depth_vision, config.n_vision, width_vision))
        self.text = nn.Parameter(torch.empty(config.depth_text, config.n_text, width_text))
        nn.init.normal_(self.vision, std=config.init_std)
        nn.init.normal_(self.text, std=config.init_std)

    # -- vision --------------------------------------------------------------------------------------------------
    def encode_frames(self, visual: nn.Module, frames: torch.Tensor, grad_checkpointing: bool = False) -> torch.Tensor:
        """Frames ``(B, T, 3, H, W)`` (or images) -> ``(B*T, E)`` projected embeddings with the vision prompts."""
        n = self.config.n_vision
        if frames.ndim == 5:
            num_frames, frames = int(frames.shape[1]), frames.flatten(0, 1)
        else:
            num_frames = 1
        x = visual.conv1(frames.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        grid = (int(frames.shape[-2]) // int(visual.conv1.kernel_size[0]),
                int(frames.shape[-1]) // int(visual.conv1.kernel_size[1]))
        if n:
            x = torch.cat([x, self.vision[0].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = visual.ln_pre(x)
        layout = clip_vit.TokenLayout(num_frames=num_frames, grid=grid, num_prefix_tokens=1)

        def replace(i: int):
            def hook(tokens: torch.Tensor, _layout: clip_vit.TokenLayout) -> torch.Tensor:
                new = self.vision[i].to(tokens.dtype).expand(tokens.shape[0], -1, -1)
                return torch.cat([tokens[:, :-n], new], dim=1)
            return hook

        hooks = {i: replace(i) for i in range(1, self.config.depth_vision)} if n else {}
        x = clip_vit.run_blocks(visual, x, layout, pre_attn=hooks, grad_checkpointing=grad_checkpointing)
        return clip_vit.head(visual, x)

    # -- text ----------------------------------------------------------------------------------------------------
    def encode_text(self, clip: nn.Module, tokens: torch.Tensor, grad_checkpointing: bool = False) -> torch.Tensor:
        """Token ids of ``"X .. X {class}."`` prompts ``(N, L)`` -> ``(N, E)``, placeholders replaced by the context."""
        n = self.config.n_text
        emb = clip.token_embedding(tokens)
        if n:
            ctx = self.text[0].to(emb.dtype).expand(emb.shape[0], -1, -1)
            emb = torch.cat([emb[:, :1], ctx, emb[:, 1 + n:]], dim=1)

        def replace(i: int):
            def hook(x: torch.Tensor) -> torch.Tensor:
                new = self.text[i].to(x.dtype).expand(x.shape[0], -1, -1)
                return torch.cat([x[:, :1], new, x[:, 1 + n:]], dim=1)
            return hook

        hooks = {i: replace(i) for i in range(1, self.config.depth_text)} if n else {}
        return clip_text.forward(clip, tokens, token_embeddings=emb, pre_block=hooks,
                                 grad_checkpointing=grad_checkpointing)


class TextEncoder(nn.Module):
    """What :class:`common.models.text_head.CLIPTextClassifier` needs (``encode_text``, ``logit_scale``, a ``text``
    module holding the parameters its cache watches) for a CLIP text tower, with deep prompts or without.

    ``short_context``: run the text pass on the shortest context that holds the longest prompt of the batch
    (:func:`common.models.clip_text.shortest_context`) instead of the full 77 tokens: with causal attention and
    end-of-text pooling the embeddings are the same, and the pass is several times cheaper for short prompts.

    Holds references to the CLIP and the prompts (the owner registers both)."""

    def __init__(self, clip: nn.Module, prompts: DeepPrompts | None = None, short_context: bool = True,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        clip_text.check_text_tower(clip, where="vificlip/prompts.py")
        object.__setattr__(self, "_clip", clip)
        object.__setattr__(self, "_prompts", prompts)
        # the parameters the class-embedding cache must watch: the text tower's (and the text prompts)
        watched = [p for n, p in clip.named_parameters()
                   if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")]
        self.text = _ParamView(watched + ([] if prompts is None else [prompts.text]))
        self.short_context = short_context
        self.grad_checkpointing = grad_checkpointing

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._clip.logit_scale

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.short_context:
            tokens = clip_text.shortest_context(self._clip, tokens)
        ckpt = self.grad_checkpointing and self._clip.training
        if self._prompts is None:
            return clip_text.forward(self._clip, tokens, grad_checkpointing=ckpt)
        return self._prompts.encode_text(self._clip, tokens, grad_checkpointing=ckpt)


class _ParamView(nn.Module):
    """A module whose ``parameters()`` are the given tensors, without registering them (no state-dict entries)."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        object.__setattr__(self, "_params", params)

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return iter(self._params)
