"""Tiny real timm backbones (random init, no download) of the four Conv-Adapter families, 64 px inputs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from timm.layers import GroupNormAct
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.resnetv2 import ResNetV2
from timm.models.swin_transformer import SwinTransformer
from torch import nn

GAMMA = 4  # every width below is a multiple of 4, so C // 4 groups of 4 channels split it


def _seeded(build: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return build().eval()

    return make


TINY: dict[str, Callable[[int], nn.Module]] = {
    "resnet_bottleneck": _seeded(lambda: ResNet(Bottleneck, (1, 1, 1, 1), num_classes=0, channels=(8, 8, 16, 16),
                                                stem_width=8, zero_init_last=False)),
    "resnet_basic": _seeded(lambda: ResNet(BasicBlock, (1, 1, 1, 1), num_classes=0, channels=(8, 12, 16, 20),
                                           stem_width=8, zero_init_last=False)),
    "bit": _seeded(lambda: ResNetV2(layers=(1, 1, 1, 1), channels=(32, 32, 64, 64), num_classes=0,
                                    stem_type="fixed", norm_layer=partial(GroupNormAct, num_groups=4))),
    "convnext": _seeded(lambda: ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 12, 16, 20), num_classes=0,
                                         ls_init_value=1.0)),
    "swin": _seeded(lambda: SwinTransformer(img_size=64, patch_size=4, embed_dim=8, depths=(2, 2, 2, 2),
                                            num_heads=(1, 2, 2, 4), window_size=4, num_classes=0)),
}


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
