"""Class embeddings from a CLIP text tower: the zero-shot classifier of CLIP, as a module.

:class:`CLIPTextClassifier` turns class names and prompt templates into one L2-normalised embedding per class (the
prompts of a class are encoded, normalised, averaged over the templates and normalised again, as CLIP's zero-shot
classifier does) and returns them with the exp'd logit scale. Bare class names are the template ``"{}"``.

The embeddings are cached while they cannot change: the text tower is frozen (none of its parameters requires grad),
or the module is in eval mode under ``torch.no_grad`` / ``torch.inference_mode`` (a validation loop of a model whose
text tower trains). The cache is keyed by the class names, the templates and every text-tower parameter (identity,
storage, dtype, device and in-place version counter), so swapping the class list (:meth:`set_class_names`), an
optimiser step, ``load_state_dict`` or ``.to()`` all invalidate it. When the text tower trains, the embeddings are
recomputed on every call and gradients flow through them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: the template of bare class names
BARE_NAME: tuple[str, ...] = ("{}",)


class ClassEmbeddings(NamedTuple):
    """What :class:`CLIPTextClassifier` returns."""

    #: (C, D) L2-normalised, one row per class in the order of ``class_names``
    embeddings: torch.Tensor
    #: the CLIP's temperature, exp'd (``logit_scale.exp()``; 100 for OpenAI's CLIPs)
    logit_scale: torch.Tensor


def text_tower_parameters(clip: nn.Module) -> list[nn.Parameter]:
    """The parameters of a CLIP's text tower: ``clip.text`` for open_clip's ``CustomTextCLIP``; for ``CLIP`` every
    parameter outside ``visual`` except ``logit_scale`` / ``logit_bias`` (token and positional embeddings, the
    transformer, ``ln_final``, ``text_projection``)."""
    text = getattr(clip, "text", None)
    if isinstance(text, nn.Module):
        return list(text.parameters())
    return [
        p
        for name, p in clip.named_parameters()
        if not name.startswith("visual.") and name not in ("logit_scale", "logit_bias")
    ]


class CLIPTextClassifier(nn.Module):
    """The class embeddings of a CLIP (open_clip, as :func:`common.models.load_clip` returns it) for a class list.

    Args:
        clip: a model with ``encode_text(tokens)`` and ``logit_scale``.
        tokenizer: ``tokenizer(list_of_str) -> LongTensor (N, context_length)`` (open_clip's).
        class_names: the classes, in label order; :meth:`set_class_names` swaps them (another dataset at test time,
            base-to-novel).
        templates: prompt templates with one ``{}`` for the class name, e.g. ``("a photo of a {}.",)``; the embeddings
            are averaged over them. Empty (or ``("{}",)``): the bare class names.
        batch_size: most prompts encoded at once.
        register_clip: ``True`` (default): ``clip`` is a submodule (its weights are in this module's ``state_dict``,
            ``.to()`` moves it). ``False``: only a reference is kept, for an owner that registers the CLIP itself
            (so its weights are not saved twice); the owner then moves it.

    ``forward()`` returns :class:`ClassEmbeddings` ``(embeddings (C, D), logit_scale)``; :meth:`logits` scores
    image features against them.
    """

    def __init__(
        self,
        clip: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        class_names: Sequence[str],
        templates: Sequence[str] = BARE_NAME,
        *,
        batch_size: int = 1024,
        register_clip: bool = True,
    ) -> None:
        super().__init__()
        if not hasattr(clip, "encode_text"):
            raise TypeError(f"CLIPTextClassifier needs a CLIP with encode_text(), got {type(clip).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if register_clip:
            self.clip = clip
        else:
            object.__setattr__(self, "clip", clip)  # a plain attribute: not a submodule
        self.tokenizer = tokenizer
        templates = tuple(templates) or BARE_NAME
        bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
        if bad:
            raise ValueError(f"each template needs exactly one '{{}}' for the class name, got {bad}")
        self.templates: tuple[str, ...] = templates
        self.batch_size = batch_size
        self.training = clip.training
        self._class_names: tuple[str, ...] = ()
        self._tokens: list[torch.Tensor] | None = None
        self._cache: tuple[Hashable, torch.Tensor] | None = None
        self.set_class_names(class_names)

    # ---------------------------------------------------------------------------------------------------- classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Classify into ``class_names`` from now on (drops the cached embeddings)."""
        if isinstance(class_names, str):
            raise TypeError("class_names must be a sequence of names, not one string")
        names = tuple(class_names)
        if not names:
            raise ValueError("class_names is empty")
        bad = [n for n in names if not isinstance(n, str) or not n.strip()]
        if bad:
            raise ValueError(f"class names must be non-empty strings, got {bad[:5]}")
        self._class_names = names
        self._tokens = None
        self._cache = None

    def prompts(self) -> list[list[str]]:
        """The prompts, one list (of all classes) per template."""
        return [[t.format(name) for name in self._class_names] for t in self.templates]

    # ----------------------------------------------------------------------------------------------------- state

    def text_parameters(self) -> list[nn.Parameter]:
        return text_tower_parameters(self.clip)

    def text_tower_frozen(self) -> bool:
        """No parameter of the text tower requires grad."""
        return not any(p.requires_grad for p in self.text_parameters())

    def _cacheable(self) -> bool:
        return self.text_tower_frozen() or (not self.training and not torch.is_grad_enabled())

    def _cache_key(self) -> Hashable:
        params = tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in self.text_parameters())
        return self._class_names, self.templates, params

    def _device(self) -> torch.device:
        for p in self.text_parameters():
            return p.device
        return torch.device("cpu")

    # ---------------------------------------------------------------------------------------------------- compute

    def _prompt_tokens(self) -> list[torch.Tensor]:
        if self._tokens is None:
            with torch.inference_mode(False):  # normal tensors, usable later by autograd
                self._tokens = [self.tokenizer(prompts) for prompts in self.prompts()]
        return self._tokens

    def encode(self) -> torch.Tensor:
        """(C, D) class embeddings computed now (no cache; differentiable when grad is enabled)."""
        device = self._device()
        per_template = []
        for tokens in self._prompt_tokens():
            feats = [
                self.clip.encode_text(tokens[i : i + self.batch_size].to(device))
                for i in range(0, len(tokens), self.batch_size)
            ]
            per_template.append(F.normalize(torch.cat(feats), dim=-1))
        return F.normalize(torch.stack(per_template).mean(0), dim=-1)

    def class_embeddings(self) -> torch.Tensor:
        """(C, D) L2-normalised class embeddings: cached while they cannot change (see the module docstring)."""
        if not self._cacheable():
            self._cache = None
            return self.encode()
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor even inside inference_mode
                self._cache = (key, self.encode())
        return self._cache[1]

    def logit_scale(self) -> torch.Tensor:
        """The CLIP's ``logit_scale.exp()`` (differentiable if the scale trains)."""
        return self.clip.logit_scale.exp()

    def forward(self) -> ClassEmbeddings:
        return ClassEmbeddings(self.class_embeddings(), self.logit_scale())

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` image features -> ``(..., C)`` logits: ``scale * normalize(features) @ embeddings.T``."""
        emb, scale = self()
        return scale * F.normalize(image_features, dim=-1) @ emb.t().to(image_features.dtype)
