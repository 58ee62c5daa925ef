"""Transforms of COCO-format panoptic samples (torchvision.transforms.v2 on an Image and its id-map Mask).

Training: horizontal flip + large-scale jitter (``ScaleJitter``, scale 0.1-2.0 of the crop size) + fixed-size crop
(random crop where larger, pad right/bottom where smaller; Mask2Former's LSJ). Evaluation: resize the shorter side
with a maximum long side.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from common.data.base import SkipCollate, SkippedSample

__all__ = ["FixedSizeCrop", "panoptic_train_transform", "panoptic_eval_transform"]


class FixedSizeCrop(v2.Transform):
    """Random crop to ``size`` where the input is larger, then pad right/bottom where smaller (detectron2's
    FixedSizeCrop, used by Mask2Former's LSJ). Images are padded with ``image_fill``, masks with 0 (VOID)."""

    def __init__(self, size: int | tuple[int, int], image_fill: float = 128.0) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.image_fill = image_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        sized = [x for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask))]
        h, w = F.get_size(sized[0] if sized else flat_inputs[0])
        ch, cw = self.size
        top = int(torch.randint(0, h - ch + 1, ())) if h > ch else 0
        left = int(torch.randint(0, w - cw + 1, ())) if w > cw else 0
        return {"top": top, "left": left, "height": min(h, ch), "width": min(w, cw),
                "pad": [0, 0, max(cw - w, 0), max(ch - h, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(F.crop, inpt, top=params["top"], left=params["left"],
                                height=params["height"], width=params["width"])
        if any(params["pad"]):
            fill = 0 if isinstance(inpt, tv_tensors.Mask) else self.image_fill
            out = self._call_kernel(F.pad, out, padding=params["pad"], fill=fill)
        return out


def panoptic_train_transform(
    crop_size: int = 64, scale_range: tuple[float, float] = (0.1, 2.0), flip_prob: float = 0.5
) -> v2.Compose:
    """Large-scale jitter: flip, resize by a random scale of ``crop_size`` (aspect kept), fixed-size crop."""
    return v2.Compose([
        v2.RandomHorizontalFlip(flip_prob),
        v2.ScaleJitter(target_size=(crop_size, crop_size), scale_range=tuple(scale_range)),
        FixedSizeCrop(crop_size),
    ])


def panoptic_eval_transform(short_side: int = 64, max_size: int | None = None) -> v2.Transform:
    """Resize the shorter side to ``short_side`` keeping the aspect ratio, the long side capped at ``max_size``."""
    if max_size is not None and max_size <= short_side:
        raise ValueError(f"eval max_size ({max_size}) must be larger than the short side ({short_side})")
    return v2.Resize(short_side, max_size=max_size)


def _pad_batch(kept: list[dict[str, Any]], size_divisibility: int = 0) -> dict[str, Any]:
    sizes = [tuple(s["image"].shape[-2:]) for s in kept]
    if kept:
        h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if size_divisibility > 1:
            h = -(-h // size_divisibility) * size_divisibility
            w = -(-w // size_divisibility) * size_divisibility
        images = kept[0]["image"].new_zeros((len(kept), kept[0]["image"].shape[0], h, w))
        for i, s in enumerate(kept):
            images[i, :, : sizes[i][0], : sizes[i][1]] = s["image"]
    else:
        images = torch.zeros((0, 3, 0, 0))
    return {"images": images, "image_sizes": sizes, "targets": [s["target"] for s in kept]}


def collate_panoptic(samples: Sequence[dict[str, Any] | SkippedSample | None], size_divisibility: int = 0
                     ) -> dict[str, Any]:
    """Batch samples: images padded (bottom/right, zeros) to the largest size (rounded up to ``size_divisibility``)
    and stacked; targets kept as a list; skipped samples dropped and counted in ``skipped`` (with their records in
    ``skipped_samples``, :class:`common.data.base.SkipCollate`)."""
    return SkipCollate(functools.partial(_pad_batch, size_divisibility=size_divisibility))(samples)
