"""The image-classification transforms of the transfer benchmarks (see :mod:`common.data.image_classification`):
``vtab`` (NOAH's VTAB-1k pipeline: a square resize, no crop, flip on train unless the task forbids it) and ``fgvc``
(the official Conv-Adapter FGVC / few-shot pipeline: random-resized crop + flip on train, resize + centre crop on
eval), bicubic, ImageNet mean / std."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NO_FLIP_TASKS", "build_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: tasks trained without a horizontal flip: the official Conv-Adapter code's VTAB list (``datasets/build.py``) and
#: the ShapesWorld VTAB-like tasks whose label a flip changes
NO_FLIP_TASKS: tuple[str, ...] = ("clevr_dist", "clevr_count", "dsprites_loc", "dsprites_ori", "dmlab",
                                  "smallnorb_azi", "position", "orientation")


def build_transform(recipe: str, train: bool, image_size: int, hflip: bool, crop_ratio: float = 0.875,
                    rrc_scale: Sequence[float] = (0.22, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Callable[[Image.Image], torch.Tensor]:
    """The PIL -> normalised tensor pipeline of a recipe (``vtab`` or ``fgvc``; see the module docstring)."""
    bicubic = T.InterpolationMode.BICUBIC
    if recipe == "vtab":
        steps: list[Any] = [T.Resize((image_size, image_size), interpolation=bicubic)]
    elif recipe == "fgvc":
        if train:
            steps = [T.RandomResizedCrop(image_size, scale=tuple(rrc_scale), interpolation=bicubic)]
        else:
            size = int(image_size / crop_ratio)
            steps = [T.Resize((size, size), interpolation=bicubic), T.CenterCrop(image_size)]
    else:
        raise ValueError(f"recipe must be vtab or fgvc, got {recipe!r}")
    if train and hflip:
        steps.append(T.RandomHorizontalFlip(0.5))
    steps += [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
    return T.Compose(steps)
