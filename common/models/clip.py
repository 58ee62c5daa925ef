"""One way to get a CLIP: the tiny ShapesWorld one, any open_clip architecture + tag, or a local checkpoint."""

from __future__ import annotations

import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from common.models.cache import ensure_pretrained
from common.models.registry import CLIP_CONFIG_DIR, SHAPES_MODELS

log = logging.getLogger(__name__)

_REGISTERED = False


def register_clip_configs() -> None:
    """Make open_clip aware of this project's tiny model configs (``common/models/configs/*.json``)."""
    global _REGISTERED
    if not _REGISTERED:
        import open_clip

        open_clip.add_model_config(CLIP_CONFIG_DIR)
        _REGISTERED = True


@dataclass(frozen=True)
class PreprocessInfo:
    """What an image must look like before the model sees it: square ``image_size``, RGB in [0, 1] normalised by
    ``mean``/``std``, resized with ``interpolation``."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> normalised."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


class LoadedCLIP(NamedTuple):
    """``model, tokenizer, preprocess = load_clip(...)``."""

    model: torch.nn.Module
    tokenizer: Any
    preprocess: PreprocessInfo


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


#: keys that OpenAI's CLIP checkpoints carry besides the weights (model hyper-parameters saved as buffers of the
#: TorchScript model); open_clip's own checkpoints never have them
OPENAI_EXTRA_KEYS: tuple[str, ...] = ("input_resolution", "context_length", "vocab_size")


def tag_uses_quick_gelu(name: str, tag: str) -> bool:
    """Whether open_clip's pretrained weights ``tag`` of architecture ``name`` were trained with QuickGELU.

    True for every ``openai`` tag, and for the other tags whose open_clip pretrained config says so (``yfcc15m``,
    ``cc12m``, ``laion400m_e31/e32``, ``metaclip_*``, ``dfn2b``/``dfn5b``, ...). open_clip builds ``ViT-B-16`` with
    ``nn.GELU`` even for such a tag and only warns; :func:`load_clip` switches to QuickGELU when this is True.
    """
    import open_clip

    register_clip_configs()
    return tag == "openai" or bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (what OpenAI published its CLIP weights as, e.g. ``ViT-B-16.pt``):
    a zip file with a ``constants.pkl`` and a ``code/`` folder; reads only the zip directory."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = [n.split("/", 1)[-1] for n in z.namelist()]
    return "constants.pkl" in names and any(n.startswith("code/") for n in names)


class CLIPCheckpoint(NamedTuple):
    """A local CLIP checkpoint read by :func:`read_clip_checkpoint`: its weights and whether it is in OpenAI's format."""

    state_dict: dict[str, torch.Tensor]
    openai: bool


def read_clip_checkpoint(path: str | Path) -> CLIPCheckpoint:
    """Read a local CLIP checkpoint and recognise OpenAI's format.

    * a TorchScript archive (OpenAI's own ``.pt`` files) is OpenAI format; it is read with ``torch.jit.load``, which
      is not ``weights_only``-safe: load only archives you trust;
    * a state dict (``torch.save`` file, ``{"state_dict": ...}`` wrapper and ``module.`` prefixes allowed, or
      ``.safetensors``) is OpenAI format when it has OpenAI's extra keys :data:`OPENAI_EXTRA_KEYS` (the state dict
      of OpenAI's TorchScript model); those keys are dropped from the weights;
    * anything else (open_clip's and this project's checkpoints) is not OpenAI format.

    OpenAI's weight names are open_clip's for the ViT and ResNet CLIPs, so the weights alone cannot tell a re-saved
    OpenAI checkpoint from an open_clip one: for such a file pass ``quick_gelu=True`` to :func:`load_clip`.
    """
    path = Path(path)
    if is_torchscript_archive(path):
        with warnings.catch_warnings():
            # torch.jit.load is deprecated, and still the only reader of these archives
            warnings.simplefilter("ignore", FutureWarning)
            state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        openai = True
    else:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise RuntimeError(f"CLIP checkpoint {path} holds a {type(state).__name__}, not a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        openai = any(k in state for k in OPENAI_EXTRA_KEYS)
    for k in OPENAI_EXTRA_KEYS:
        state.pop(k, None)
    return CLIPCheckpoint(state, openai)


def load_clip(
    name: str,
    pretrained: str | None = None,
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
) -> LoadedCLIP:
    """Build a CLIP (open_clip) and its tokenizer.

    Args:
        name: the architecture: ``"shapes-clip-tiny"`` (this project's tiny config) or any open_clip model name
            (``open_clip.list_models()``, e.g. ``"ViT-B-16"``).
        pretrained: where the weights come from:
            ``None`` - random initialisation;
            ``"shapes-clip-tiny"`` - the ShapesWorld-pretrained weights from ``outputs/pretrained/`` (pretrained on
            first use, with a progress bar);
            an open_clip tag such as ``"openai"`` or ``"laion2b_s34b_b88k"`` - downloaded by open_clip (needs internet);
            a path to a local checkpoint: a state dict (loaded with ``weights_only=True``; ``.safetensors`` too) or
            OpenAI's TorchScript archive (see :func:`read_clip_checkpoint`).
        quick_gelu: the MLP activation. ``None`` (default) decides from the weights: QuickGELU
            (``x * sigmoid(1.702 x)``) for the weights trained with it - every ``openai`` tag and the other open_clip
            tags marked so (:func:`tag_uses_quick_gelu`), and local checkpoints in OpenAI's format (a TorchScript
            archive, or a state dict with OpenAI's extra keys); otherwise the architecture's own activation
            (``nn.GELU`` for ``ViT-B-16`` and for ``shapes-clip-tiny``; QuickGELU for the ``*-quickgelu`` names).
            ``True`` forces QuickGELU (an OpenAI checkpoint re-saved as a plain state dict); ``False`` keeps the
            architecture's activation whatever the weights.
        device: where to put the model.

    Returns:
        ``(model, tokenizer, preprocess)``: the open_clip ``CLIP`` in eval mode, its tokenizer, a :class:`PreprocessInfo`.
    """
    import open_clip

    register_clip_configs()
    known = open_clip.list_models()
    if name not in known and not name.startswith(("hf-hub:", "local-dir:")):
        tiny = sorted(k for k, m in SHAPES_MODELS.items() if m.kind == "clip")
        raise ValueError(
            f"unknown CLIP architecture {name!r}: use one of this project's {tiny} or an open_clip model name "
            "(open_clip.list_models(), e.g. 'ViT-B-16')"
        )
    weights: str | None = None
    if pretrained is None or pretrained == "":
        weights = None
    elif pretrained in SHAPES_MODELS:
        if SHAPES_MODELS[pretrained].kind != "clip" or pretrained != name:
            raise ValueError(
                f"pretrained={pretrained!r} holds weights for the architecture {pretrained!r}, not {name!r}; "
                f"use name={pretrained!r} with it"
            )
        weights = str(ensure_pretrained(pretrained))
    elif _looks_like_path(pretrained) or Path(pretrained).is_file():
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CLIP checkpoint {path} not found (pretrained={pretrained!r})")
        weights = str(path)
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(
                f"unknown pretrained tag {pretrained!r} for open_clip model {name!r}; known tags: {tags or 'none'}; "
                "or give a local checkpoint path, or None for random weights"
            )
        weights = pretrained  # open_clip downloads it (needs internet)

    if weights is not None and Path(weights).is_file():
        checkpoint = read_clip_checkpoint(weights)
        force = checkpoint.openai if quick_gelu is None else quick_gelu
        with _quiet_open_clip():  # the weights come next
            model = open_clip.create_model(name, pretrained=None, device=device, force_quick_gelu=force)
        # buffers the model does not save (open_clip's attn_mask) are in a traced/scripted model's state dict
        unsaved = {k for k, _ in model.named_buffers()} - set(model.state_dict())
        state = {k: v for k, v in checkpoint.state_dict.items() if k not in unsaved}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint {weights} does not fit CLIP architecture {name!r}: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
    elif weights is None:
        with _quiet_open_clip():
            model = open_clip.create_model(
                name, pretrained=None, device=device, force_quick_gelu=bool(quick_gelu)
            )
    else:
        force = tag_uses_quick_gelu(name, weights) if quick_gelu is None else quick_gelu
        model = open_clip.create_model(name, pretrained=weights, device=device, force_quick_gelu=force)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    info = PreprocessInfo(
        image_size=size,
        mean=tuple(float(x) for x in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(float(x) for x in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
    return LoadedCLIP(model, tokenizer, info)


class _quiet_open_clip:
    """Silence open_clip's 'No pretrained weights loaded' warning for a deliberate random init."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger()
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
