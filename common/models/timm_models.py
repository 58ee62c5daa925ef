"""One way to get a timm backbone: a tiny ShapesWorld one, any timm architecture + tag, or a local checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.models.cache import ensure_pretrained, read_manifest
from common.models.registry import SHAPES_MODELS, ShapesModel


class ConvStemPatchEmbed(torch.nn.Module):
    """A convolutional stem in place of a ViT/Swin patch embedding (Xiao et al. 2021, "Early convolutions help
    transformers see better"): 3x3 stride-2 conv + GELU + 3x3 conv + GELU, then ``proj`` (a stride-2 conv that
    finishes the patch size) and the usual norm; NHWC output like timm's ``PatchEmbed(output_fmt="NHWC")``.

    The tiny ShapesWorld Swin uses it: trained from scratch on a few thousand images, a 4x4 linear patch embedding
    learns shape far more slowly. Only for ``patch_size`` 4 (two stride-2 steps).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 64,
        patch_size: int | tuple[int, int] = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Any = None,
        strict_img_size: bool = True,
        output_fmt: str = "NHWC",
        **_: Any,
    ) -> None:
        super().__init__()
        from timm.layers import to_2tuple

        self.img_size, self.patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        if self.patch_size != (4, 4):
            raise ValueError(f"ConvStemPatchEmbed is a stride-4 stem; got patch_size={patch_size}")
        if output_fmt != "NHWC":
            raise ValueError(f"ConvStemPatchEmbed gives NHWC tokens; got output_fmt={output_fmt!r}")
        self.grid_size = (self.img_size[0] // 4, self.img_size[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        mid = max(8, embed_dim // 2)
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(in_chans, mid, 3, stride=2, padding=1),
            torch.nn.GELU(),
            torch.nn.Conv2d(mid, mid, 3, stride=1, padding=1),
            torch.nn.GELU(),
        )
        self.proj = torch.nn.Conv2d(mid, embed_dim, 2, stride=2)
        self.norm = norm_layer(embed_dim) if norm_layer else torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} != the model's {self.img_size}")
        return self.norm(self.proj(self.stem(x)).permute(0, 2, 3, 1))


#: named patch-embedding layers that a registry entry may ask for (``arch_kwargs["embed_layer"]``)
EMBED_LAYERS = {"conv_stem": ConvStemPatchEmbed}


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _file_overlay(path: Path, num_classes: int | None, spec: ShapesModel | None) -> dict[str, Any]:
    overlay: dict[str, Any] = {"file": str(path)}
    if num_classes is not None:
        overlay["num_classes"] = num_classes
    if spec is not None:
        overlay.update(
            input_size=(3, spec.image_size, spec.image_size),
            mean=spec.mean,
            std=spec.std,
            crop_pct=1.0,
            interpolation="bicubic",
        )
    return overlay


def build_timm(name: str, pretrained: str | bool | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build a timm model.

    Args:
        name: ``"shapes-swin-tiny"``, ``"shapes-resnet-tiny"``, ``"shapes-convnext-tiny"`` (tiny timm architectures
            of this project) or any timm model name (``timm.list_models()``).
        pretrained: where the weights come from:
            ``None``/``False`` - random initialisation;
            the ShapesWorld name itself (e.g. ``"shapes-swin-tiny"``) or ``True`` for a ShapesWorld model - the
            weights cached in ``outputs/pretrained/`` (pretrained on first use, with a progress bar);
            for other timm models ``True``/``"timm"`` (the default tag) or a tag such as ``"in1k"`` /
            ``"fb_in22k_ft_in1k"`` - downloaded by timm (needs internet);
            a local checkpoint path - loaded with ``weights_only=True`` (through timm, so a classifier of another size
            is dropped and ``features_only`` works).
        **kwargs: passed to ``timm.create_model`` (``num_classes``, ``features_only``, ``out_indices``, ``img_size``,
            ``drop_path_rate``, ...). For the tiny models they come on top of the tiny architecture.

    Returns:
        the timm model; ``model.pretrained_cfg`` carries the input size / mean / std it expects.
    """
    import timm

    spec = SHAPES_MODELS.get(name)
    if spec is not None and spec.kind != "timm":
        raise ValueError(f"{name!r} is a CLIP; load it with common.models.load_clip({name!r}, ...)")
    if spec is None and not timm.is_model(name.split(".")[0]):
        tiny = sorted(k for k, m in SHAPES_MODELS.items() if m.kind == "timm")
        raise ValueError(
            f"unknown timm architecture {name!r}: use one of this project's {tiny} or a timm model name "
            "(timm.list_models(), e.g. 'swin_tiny_patch4_window7_224')"
        )
    arch = spec.timm_arch if spec is not None else name
    arch_kwargs = dict(spec.arch_kwargs) if spec is not None else {}
    arch_kwargs.update(kwargs)
    if isinstance(arch_kwargs.get("embed_layer"), str):
        arch_kwargs["embed_layer"] = EMBED_LAYERS[arch_kwargs["embed_layer"]]

    if pretrained is None or pretrained is False or pretrained == "":
        overlay = None
        if spec is not None:
            overlay = {k: v for k, v in _file_overlay(Path(), None, spec).items() if k != "file"}
        return timm.create_model(arch, pretrained=False, pretrained_cfg_overlay=overlay, **arch_kwargs)

    if spec is not None:
        if pretrained is True or pretrained == name:
            path = ensure_pretrained(name)
            manifest = read_manifest(name) or {}
            head = manifest.get("head", {}).get("num_classes")
            overlay = _file_overlay(path, head, spec)
        elif isinstance(pretrained, str) and (_looks_like_path(pretrained) or Path(pretrained).is_file()):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"timm checkpoint {path} not found (pretrained={pretrained!r})")
            overlay = _file_overlay(path, _head_size(path), spec)
        else:
            raise ValueError(
                f"pretrained={pretrained!r} does not fit {name!r}: use {name!r} (ShapesWorld weights), "
                "a local checkpoint path, or None for random weights"
            )
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **arch_kwargs)

    # any timm architecture
    if isinstance(pretrained, str) and (_looks_like_path(pretrained) or Path(pretrained).is_file()):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"timm checkpoint {path} not found (pretrained={pretrained!r})")
        return timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay=_file_overlay(path, _head_size(path), None), **arch_kwargs
        )
    if pretrained is True or pretrained == "timm":
        return timm.create_model(arch, pretrained=True, **arch_kwargs)
    if "." in arch:
        raise ValueError(f"give the tag either in the name or in pretrained, not both ({name!r}, {pretrained!r})")
    full = f"{arch}.{pretrained}"
    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
    if pretrained not in tags:
        raise ValueError(
            f"unknown pretrained tag {pretrained!r} for timm model {arch!r}; known tags: {tags or 'none'}; "
            "or give a local checkpoint path, True for the default tag, or None for random weights"
        )
    return timm.create_model(full, pretrained=True, **arch_kwargs)


def _head_size(path: Path) -> int | None:
    """Number of classes of the classifier stored in a checkpoint (so timm can drop it if the sizes differ)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    for key in ("head.fc.weight", "fc.weight", "head.weight", "classifier.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None
