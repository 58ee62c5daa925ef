"""The tiny ShapesWorld backbones: their architectures, input conventions and pretraining recipes.

Each entry is a real open_clip / timm architecture at tiny widths; the project pretrains it on ShapesWorld
(``python -m common.data.synth pretrain``) and caches the weights under ``outputs/pretrained/<name>/``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

#: folder of the open_clip model configs that this project registers (``<name>.json``)
CLIP_CONFIG_DIR = Path(__file__).resolve().parent / "configs"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainRecipe:
    """How a tiny backbone is pretrained at budget 1.0 (steps and pool size scale with the budget)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    seed: int = 0
    #: CLIP only: fraction of each batch drawn as pairs sharing the first thing's colour (hard negatives)
    hard_negative_frac: float = 0.0
    #: CLIP only: probability that an image is paired with its caption without the background ("a red star")
    short_caption_frac: float = 0.5
    #: timm only: weights of the label groups' losses (things, colours, stuff); more on things pushes toward shape
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: timm only: rotate each batch by a random multiple of 90 degrees (the labels do not depend on orientation)
    rotate: bool = True


@dataclass(frozen=True)
class ShapesModel:
    """A tiny backbone pretrained on ShapesWorld.

    ``kind`` says which library builds it. For ``timm``, ``timm_arch`` is the registered timm architecture and
    ``arch_kwargs`` shrink it; for ``clip``, the open_clip config is ``configs/<name>.json``.
    ``head`` is the size of the classifier used in pretraining (timm models): the ShapesWorld multi-label targets.
    """

    name: str
    kind: Literal["clip", "timm"]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    recipe: TrainRecipe
    timm_arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def arch_config(self) -> dict[str, Any]:
        """Everything that defines the architecture (a cached checkpoint is valid only for the same config)."""
        if self.kind == "clip":
            cfg = json.loads((CLIP_CONFIG_DIR / f"{self.name}.json").read_text())
            return {"open_clip_config": cfg}
        return {"timm_arch": self.timm_arch, "arch_kwargs": self.arch_kwargs}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch"] = self.arch_config()
        return d


SHAPES_MODELS: dict[str, ShapesModel] = {
    m.name: m
    for m in (
        ShapesModel(
            name="shapes-clip-tiny",
            kind="clip",
            image_size=64,
            mean=OPENAI_MEAN,
            std=OPENAI_STD,
            # 2,400 steps (was 600): zero-shot shape accuracy 33% -> 66% on seen, 26% -> 52% on held-out combos;
            # at 600 steps the CLIP named colours, not shapes, and MaskCLIP / ViFi-CLIP tables sat near noise
            recipe=TrainRecipe(
                steps=2400, batch_size=64, lr=2e-3, weight_decay=0.1, hard_negative_frac=0.5, short_caption_frac=0.9
            ),
            description="open_clip CLIP: ViT (64 px, patch 8, width 64, 4 layers) + text transformer (width 64, 3 layers, context 32), contrastive on ShapesWorld captions",
        ),
        ShapesModel(
            name="shapes-swin-tiny",
            kind="timm",
            image_size=64,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            recipe=TrainRecipe(steps=1500, batch_size=32, lr=1e-3),
            timm_arch="swin_tiny_patch4_window7_224",
            arch_kwargs={
                "img_size": 64,
                "patch_size": 4,
                "window_size": 4,
                "embed_dim": 32,
                "depths": (2, 2, 2, 2),
                "num_heads": (1, 2, 4, 8),
                "drop_path_rate": 0.0,
                "embed_layer": "conv_stem",
            },
            description="timm Swin, 4 stages (32-64-128-256), window 4, 64 px, convolutional stem (stride 4)",
        ),
        ShapesModel(
            name="shapes-resnet-tiny",
            kind="timm",
            image_size=64,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            recipe=TrainRecipe(steps=1000, batch_size=32, lr=1e-2, loss_weights=(3.0, 1.0, 1.0), rotate=False),
            timm_arch="resnet18",
            arch_kwargs={"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128), "stem_width": 16},
            description="timm ResNet (BasicBlock, 1-1-1-1, 16-32-64-128), 64 px",
        ),
        ShapesModel(
            name="shapes-convnext-tiny",
            kind="timm",
            image_size=64,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            recipe=TrainRecipe(steps=800, batch_size=32, lr=4e-3, loss_weights=(5.0, 1.0, 0.5), rotate=False),
            timm_arch="convnext_atto",
            arch_kwargs={
                "depths": (1, 1, 2, 1),
                "dims": (24, 48, 96, 192),
                "kernel_sizes": 3,
                "stem_type": "overlap_act",
                "conv_mlp": True,
                "norm_layer": "batchnorm2d",
                "ls_init_value": 1.0,
            },
            description="timm ConvNeXt (1-1-2-1, 24-48-96-192), 64 px, 3x3 depthwise kernels, convolutional stem "
            "(two 3x3 stride-2 convs), BatchNorm, layer scale 1",
        ),
    )
}


def get_shapes_model(name: str) -> ShapesModel:
    """The registry entry of a tiny ShapesWorld backbone, or a clear error listing the known names."""
    try:
        return SHAPES_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown ShapesWorld backbone {name!r}; known: {sorted(SHAPES_MODELS)} "
            "(defined in common/models/registry.py)"
        ) from None
