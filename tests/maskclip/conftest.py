"""Tiny random open_clip ViTs for the MaskCLIP tests (no weights, no network)."""

from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer


def tiny_vit(layers: int = 6, seed: int = 0, **kwargs: object) -> VisionTransformer:
    """32 x 32 images, 8 px patches (a 4 x 4 grid), width 32, 4 heads."""
    torch.manual_seed(seed)
    opts = {"image_size": 32, "patch_size": 8, "width": 32, "layers": layers, "heads": 4, "mlp_ratio": 2.0,
            "output_dim": 16, **kwargs}
    return VisionTransformer(**opts).eval()  # type: ignore[arg-type]
