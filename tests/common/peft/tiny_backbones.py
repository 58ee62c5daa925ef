"""Tiny real backbones (timm / open_clip classes, random init, no download) for the PEFT tests: one per block type
that common/peft/inject.py knows."""

from __future__ import annotations

from collections.abc import Callable

import torch
from open_clip.transformer import VisionTransformer as OpenCLIPViT
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .conftest import make_tiny_swin


def _seeded(build: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return build().eval()

    return make


#: name -> builder(seed); widths are multiples of 4 (Compacter's PHM dimension) and 32 px inputs work everywhere
BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    # 64 px: the last stage keeps 2x2 tokens (at 32 px its one-token windows give q, k and the relative-position
    # bias no gradient)
    "swin": lambda seed=0: make_tiny_swin(seed, img_size=64),
    "vit": _seeded(lambda: VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                                             num_classes=0)),
    "open_clip_vit": _seeded(lambda: OpenCLIPViT(image_size=32, patch_size=8, width=16, layers=2, heads=2,
                                                 mlp_ratio=2.0, output_dim=8)),
    # zero_init_last=False: a zero last-BN gamma would cut every gradient through the residual branch
    "resnet_bottleneck": _seeded(lambda: ResNet(Bottleneck, (1, 1, 1, 1), num_classes=0, channels=(4, 8, 12, 16),
                                                stem_width=8, zero_init_last=False)),
    "resnet_basic": _seeded(lambda: ResNet(BasicBlock, (1, 1, 1, 1), num_classes=0, channels=(8, 12, 16, 20),
                                           stem_width=8, zero_init_last=False)),
    "convnext": _seeded(lambda: ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 12, 16, 20), num_classes=0,
                                         ls_init_value=1.0)),
}
TRANSFORMERS = ("swin", "vit", "open_clip_vit")
#: input side per backbone: the ViTs are built for 32 px; 64 px keeps 2x2 maps at stride 32
IMAGE_SIZE = {name: 32 if name in ("vit", "open_clip_vit") else 64 for name in BACKBONES}


def images(backbone: str, batch: int = 2) -> torch.Tensor:
    """A random batch of the size ``backbone`` takes."""
    return torch.randn(batch, 3, IMAGE_SIZE[backbone], IMAGE_SIZE[backbone])
