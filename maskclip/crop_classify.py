"""The baseline MaskCLIP is measured against: crop-and-classify, one CLIP pass per proposal.

Each proposal (``sigmoid(logits) >= 0.5`` at the image's resolution) masks the image (pixels outside set to 0 in the
CLIP-normalised image, i.e. CLIP's mean colour), the masked image is cropped to the proposal's bounding box and
resized to CLIP's input size, and CLIP's image embedding of the crop (L2-normalised) is scored against the class-name
text embeddings like the mask tokens. An empty proposal is classified from the whole image (it gets a score like any
other and is dropped by the panoptic assembly, whose masks it has none of).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.models import clip_vit

__all__ = ["crop_and_classify_embeddings", "masked_crops"]


def masked_crops(image: torch.Tensor, mask_logits: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """One CLIP-normalised image ``(3, H, W)`` and its proposals ``(Q, h, w)`` (resized bilinearly to ``H x W``)
    -> ``(Q, 3, size, size)`` masked crops (bilinear resize of the bounding box)."""
    h, w = image.shape[-2:]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if mask_logits.shape[-2:] != (h, w):
        mask_logits = F.interpolate(mask_logits[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
    inside = mask_logits.sigmoid() >= 0.5
    crops = []
    for m in inside:
        if m.any():
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            crop = (image * m)[:, r0:r1, c0:c1]
        else:
            crop = image
        crops.append(F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False)[0])
    return torch.stack(crops)


@torch.no_grad()
def crop_and_classify_embeddings(visual: nn.Module, images: torch.Tensor, mask_logits: torch.Tensor, *,
                                 chunk: int = 32) -> torch.Tensor:
    """``(B, 3, H, W)`` CLIP-normalised images and ``(B, Q, h, w)`` proposals -> ``(B, Q, E)`` L2-normalised CLIP
    embeddings of the masked crops (``B x Q`` CLIP passes, ``chunk`` crops at a time)."""
    size = tuple(int(s) for s in visual.image_size) if hasattr(visual, "image_size") else images.shape[-2:]
    out = []
    for image, masks in zip(images, mask_logits):
        crops = masked_crops(image, masks, size)
        emb = torch.cat([clip_vit.forward(visual, crops[i:i + chunk]) for i in range(0, len(crops), chunk)])
        out.append(F.normalize(emb, dim=-1))
    return torch.stack(out)
