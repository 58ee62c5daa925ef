"""The crop-and-classify baseline (maskclip/crop_classify.py) on a known mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskclip.crop_classify import crop_and_classify_embeddings, masked_crops

from .conftest import tiny_vit


def test_crop_of_a_known_mask_and_its_embedding() -> None:
    image = torch.randn(3, 32, 32)
    masks = torch.full((2, 32, 32), -10.0)
    masks[0, 4:12, 8:24] = 10.0                                   # an 8 x 16 box
    masks[0, 4, 8] = -10.0                                        # one corner pixel outside: masked, box unchanged
    crops = masked_crops(image, masks, 32)                        # proposal 1 empty: the whole image
    box = image[:, 4:12, 8:24].clone()
    box[:, 0, 0] = 0.0
    torch.testing.assert_close(crops[0], F.interpolate(box[None], size=(32, 32), mode="bilinear",
                                                       align_corners=False)[0])
    torch.testing.assert_close(crops[1], image)
    visual = tiny_vit(layers=2)
    emb = crop_and_classify_embeddings(visual, image[None], masks[None], chunk=1)
    assert emb.shape == (1, 2, 16)
    torch.testing.assert_close(emb[0], F.normalize(visual(crops), dim=-1), atol=1e-5, rtol=0)
    changed = image.clone()
    changed[:, 20:, :] += 5.0                                     # outside the box of proposal 0
    again = crop_and_classify_embeddings(visual, changed[None], masks[None])
    torch.testing.assert_close(again[0, 0], emb[0, 0], atol=1e-6, rtol=0)
