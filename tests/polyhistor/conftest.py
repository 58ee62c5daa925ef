"""A tiny timm Swin for the PEFT tests (dims 8/16/32/64, 2 blocks per stage, 32 px input)."""

from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer


def make_tiny_swin(seed: int = 0, img_size: int = 32) -> SwinTransformer:
    torch.manual_seed(seed)
    return SwinTransformer(img_size=img_size, patch_size=4, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                           window_size=4, num_classes=0).eval()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is 10x faster than several on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny_swin() -> SwinTransformer:
    return make_tiny_swin()
