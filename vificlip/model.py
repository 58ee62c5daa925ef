"""ViFi-CLIP: a CLIP fine-tuned on video, frames through the image tower, mean over time (plain PyTorch).

::

    frames (B, T, 3, H, W) -> image tower on the B*T frames in one batch -> (B, T, E) projected embeddings
    -> mean over T -> L2-normalise -> logits = exp(logit_scale) * v @ t.T

where ``t`` are the L2-normalised text embeddings of every class prompt (``"a photo of a {}."``; the bare class name
for vanilla zero-shot CLIP) from :class:`common.models.text_head.CLIPTextClassifier`. There is no temporal module
and no linear head: the classifier is the text tower, and ``logit_scale`` is CLIP's learnable scalar (no clamp).

What trains is the method (:data:`METHODS`), as in the official code (``trainers/vificlip.py``):

* ``vificlip``: both towers and ``logit_scale``. The official text encoder starts from the token embeddings of the
  prompts, computed once from CLIP's ``token_embedding`` and kept as a buffer, so the token-embedding table does not
  train (``train_token_embedding=False``, the default; ``True`` trains it as well);
* ``image_ft``: the image tower only (the text embeddings are computed once and cached);
* ``text_ft``: the text tower only (transformer, positional embedding, final norm, projection);
* ``zero_shot``: nothing (vanilla CLIP, bare class names);
* ``prompting``: bridge-and-prompt (:mod:`vificlip.prompts`): only the deep vision and text prompts train, on a
  frozen (ViFi-)CLIP.

No Lightning, no I/O beyond :func:`common.models.load_clip` and :func:`load_vificlip_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.models import clip_vit
from common.models.text_head import BARE_NAME, CLIPTextClassifier
from common.peft.accounting import count_parameters
from vificlip.prompts import DeepPrompts, PromptConfig, TextEncoder, prompt_template

__all__ = ["METHODS", "FT_TEMPLATE", "ViFiCLIP", "build_vificlip", "temporal_mean_logits", "load_vificlip_weights"]

METHODS: tuple[str, ...] = ("vificlip", "image_ft", "text_ft", "zero_shot", "prompting")
#: the prompt of the fine-tuned models (official ``CTX_INIT "a photo of a"`` + ``" {class}."``)
FT_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)


def temporal_mean_logits(frame_features: torch.Tensor, num_frames: int, class_embeddings: torch.Tensor,
                         logit_scale: torch.Tensor) -> torch.Tensor:
    """``(B*T, E)`` per-frame embeddings -> ``(B, C)`` logits: mean over the T frames of a clip, L2-normalise, scaled
    cosine against ``(C, E)`` class embeddings (already normalised) with the exp'd ``logit_scale``."""
    video = frame_features.reshape(-1, num_frames, frame_features.shape[-1]).mean(dim=1)
    video = F.normalize(video, dim=-1)
    return logit_scale * video @ class_embeddings.t().to(video.dtype)


def _text_names(clip: nn.Module) -> list[str]:
    return [n for n, _ in clip.named_parameters() if not n.startswith("visual.") and n not in ("logit_scale",
                                                                                                "logit_bias")]


class ViFiCLIP(nn.Module):
    """A CLIP as a video classifier over a class list (see the module docstring).

    Args:
        clip: an open_clip ``CLIP`` (``load_clip(...).model``) with a ViT image tower.
        tokenizer: its tokenizer.
        class_names: the classes, in label order (:meth:`set_class_names` swaps them).
        method: one of :data:`METHODS`.
        templates: prompt templates; default ``"a photo of a {}."`` (bare names for ``zero_shot``; the ``X``
            placeholders of the learnt context for ``prompting``).
        prompts: the prompt sizes (``prompting`` only; default 16 + 16 tokens, depth 9).
        train_token_embedding: also train the token-embedding table (``vificlip`` / ``text_ft``; the official code
            does not).
        grad_checkpointing: recompute the blocks of both towers in the backward pass.
        short_text_context: run the text pass on the shortest context that holds the longest prompt instead of 77
            tokens (exact: causal attention, end-of-text pooling; see :class:`vificlip.prompts.TextEncoder`).
    """

    def __init__(self, clip: nn.Module, tokenizer, class_names: Sequence[str], method: str = "vificlip",
                 templates: Sequence[str] | None = None, prompts: PromptConfig | None = None,
                 train_token_embedding: bool = False, grad_checkpointing: bool = False,
                 short_text_context: bool = True) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"vificlip: unknown method {method!r}; choose one of {METHODS}")
        clip_vit.check_vit(clip.visual, where="vificlip/model.py")
        self.method = method
        self.clip = clip
        self.grad_checkpointing = grad_checkpointing
        self.prompts: DeepPrompts | None = None
        if method == "prompting":
            cfg = prompts or PromptConfig()
            self.prompts = DeepPrompts(cfg, int(clip.visual.class_embedding.shape[-1]),
                                       int(clip.token_embedding.weight.shape[-1]),
                                       len(clip.visual.transformer.resblocks), len(clip.transformer.resblocks))
            if templates is not None:
                raise ValueError("vificlip: method 'prompting' builds its own prompt 'X .. X {}.'; leave templates "
                                 "unset")
            templates = (prompt_template(cfg.n_text),)
        elif templates is None:
            templates = BARE_NAME if method == "zero_shot" else FT_TEMPLATE
        self.text_encoder = TextEncoder(clip, self.prompts, short_text_context, grad_checkpointing)
        self.text_head = CLIPTextClassifier(self.text_encoder, tokenizer, class_names, templates,
                                            register_clip=False)
        self.set_trainable(train_token_embedding)

    # -- what trains -----------------------------------------------------------------------------------------------
    def set_trainable(self, train_token_embedding: bool = False) -> None:
        """``requires_grad`` per method (see the module docstring)."""
        self.clip.requires_grad_(False)
        text = set(_text_names(self.clip))
        if not train_token_embedding:
            text.discard("token_embedding.weight")
        for name, p in self.clip.named_parameters():
            if self.method == "vificlip":
                p.requires_grad_(name.startswith("visual.") or name in text or name == "logit_scale")
            elif self.method == "image_ft":
                p.requires_grad_(name.startswith("visual."))
            elif self.method == "text_ft":
                p.requires_grad_(name in text)
        if self.prompts is not None:
            self.prompts.requires_grad_(True)

    # -- classes ---------------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return self.text_head.class_names

    def set_class_names(self, class_names: Sequence[str]) -> None:
        self.text_head.set_class_names(class_names)

    # -- forward ---------------------------------------------------------------------------------------------------
    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> ``(B*T, E)`` projected frame embeddings (all frames in one batch)."""
        if video.ndim != 5:
            raise ValueError(f"expected a video batch (B, T, 3, H, W), got shape {tuple(video.shape)}")
        ckpt = self.grad_checkpointing and self.training
        if self.prompts is not None:
            return self.prompts.encode_frames(self.clip.visual, video, grad_checkpointing=ckpt)
        return clip_vit.forward(self.clip.visual, video, grad_checkpointing=ckpt)

    def forward(self, video: torch.Tensor, class_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> ``(B, C)`` logits (fp32). ``class_embeddings``: ``(C, E)`` normalised embeddings
        computed earlier by ``text_head`` (one text pass shared by the micro-batches of an optimiser step); default:
        computed now."""
        frames = self.encode_frames(video)
        if class_embeddings is None:
            emb, scale = self.text_head()
        else:
            emb, scale = class_embeddings, self.text_head.logit_scale()
        return temporal_mean_logits(frames.float(), int(video.shape[1]), emb.float(), scale.float())

    # -- accounting ------------------------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part, and the model's total."""
        vis = count_parameters(self.clip.visual, trainable_only=True)
        text = sum(p.numel() for n, p in self.clip.named_parameters()
                   if p.requires_grad and n in set(_text_names(self.clip)))
        return {"image": vis, "text": text,
                "logit_scale": int(self.clip.logit_scale.numel()) if self.clip.logit_scale.requires_grad else 0,
                "prompts": 0 if self.prompts is None else count_parameters(self.prompts, trainable_only=True),
                "trainable": count_parameters(self, trainable_only=True), "total": count_parameters(self)}


def load_vificlip_weights(clip: nn.Module, path: str | Path) -> None:
    """Load CLIP weights from a ViFi-CLIP checkpoint into ``clip``: a Lightning checkpoint of
    :class:`vificlip.module.ViFiCLIPModule` (keys ``model.clip.*``) or a plain CLIP state dict."""
    from common.checkpoints import check_checkpoint

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"vificlip: init_from checkpoint {path} not found")
    check_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    prefix = "model.clip."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    unsaved = {k for k, _ in clip.named_buffers()} - set(clip.state_dict())
    state = {k: v for k, v in state.items() if k not in unsaved}
    missing, unexpected = clip.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"vificlip: {path} does not fit this CLIP: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}")


def build_vificlip(arch: str = "ViT-B-16", pretrained: str | None = "openai", class_names: Sequence[str] = ("a",),
                   method: str = "vificlip", templates: Sequence[str] | None = None,
                   prompts: PromptConfig | None = None, init_from: str | None = None,
                   train_token_embedding: bool = False, grad_checkpointing: bool = False,
                   short_text_context: bool = True, device: str | torch.device = "cpu") -> ViFiCLIP:
    """A :class:`ViFiCLIP` from an open_clip architecture + weights (``device="meta"``: built without allocating,
    for counting; nothing is downloaded with ``pretrained=None``). ``init_from``: a ViFi-CLIP checkpoint loaded over
    the CLIP weights (the starting point of bridge-and-prompt)."""
    from common.models import load_clip

    if str(device) == "meta":
        with torch.device("meta"):
            clip, tokenizer, _ = load_clip(arch, pretrained, device="meta")
            return ViFiCLIP(clip, tokenizer, class_names, method, templates, prompts, train_token_embedding,
                            grad_checkpointing, short_text_context)
    clip, tokenizer, _ = load_clip(arch, pretrained, device=device)
    if init_from:
        load_vificlip_weights(clip, init_from)
    return ViFiCLIP(clip, tokenizer, class_names, method, templates, prompts, train_token_embedding,
                    grad_checkpointing, short_text_context)
