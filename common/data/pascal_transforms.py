"""PASCAL-Context multi-task: the benchmark's joint augmentation of an image and its dense labels.

Random horizontal flip, random scale in [0.75, 1.25] with a random rotation in [-20, 20] degrees about the centre,
then a fixed resize, ImageNet normalisation; evaluation does the fixed resize only. All of it is one sampling grid
applied to the image (bicubic), the label maps (nearest, padding 255) and the normals (bilinear, re-normalised,
padding invalid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from common.data.base import SkipCollate
from common.data.pascal_readers import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from common.ops import channel_norm

__all__ = ["MultiTaskTransform", "size_hw"]


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """An int (square) or (H, W) -> (H, W)."""
    if isinstance(size, int):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (H, W), got {size}")
    return size  # type: ignore[return-value]


class MultiTaskTransform:
    """The benchmark's augmentation applied consistently to an image and its dense labels.

    One sampling grid maps the output (``size``) to the input: a horizontal flip (probability ``hflip_prob``),
    then a scale ``s ~ U(scale_range)`` and an anticlockwise rotation ``a ~ U(-max_rotation, max_rotation)``
    degrees about the image centre (``s > 1`` zooms in), then the fixed resize to ``size``. With ``train=False``
    only the resize happens.

    Input: a dict of numpy arrays (``image`` (H, W, 3) uint8; ``semseg`` / ``human_parts`` / ``sal`` (H, W) uint8;
    ``normals`` (H, W, 3) float32 with ``normals_mask`` (H, W) bool). Output: tensors (``image`` (3, h, w) float,
    ImageNet-normalised; label maps (h, w) long with 255 outside the source; ``normals`` (3, h, w) unit vectors or
    0 and ``normals_mask`` (h, w) bool).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        train: bool = False,
        hflip_prob: float = 0.5,
        scale_range: Sequence[float] = (0.75, 1.25),
        max_rotation: float = 20.0,
        normalize: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = size_hw(size)
        self.train = bool(train)
        self.hflip_prob = float(hflip_prob)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {scale_range}")
        self.max_rotation = float(max_rotation)
        self.normalize = bool(normalize)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def sample_params(self, generator: torch.Generator | None = None) -> tuple[bool, float, float]:
        """(flip, scale, angle in degrees) for one sample; identity when not training."""
        if not self.train:
            return False, 1.0, 0.0
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        flip = u[0] < self.hflip_prob
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u[1]
        angle = (2.0 * u[2] - 1.0) * self.max_rotation
        return flip, scale, angle

    def grid(self, in_hw: tuple[int, int], flip: bool, scale: float, angle: float) -> torch.Tensor:
        """Sampling grid (1, h, w, 2) in the input's normalised coordinates (grid_sample, align_corners=False)."""
        h_out, w_out = self.size
        H, W = in_hw
        yo = (torch.arange(h_out, dtype=torch.float64) * 2 + 1) / h_out - 1
        xo = (torch.arange(w_out, dtype=torch.float64) * 2 + 1) / w_out - 1
        gy, gx = torch.meshgrid(yo, xo, indexing="ij")
        dx, dy = gx * (W / 2.0), gy * (H / 2.0)  # pixel offsets from the centre, before the resize
        a = math.radians(angle)
        c, s = math.cos(a), math.sin(a)
        # forward: d = scale * R q with R = [[c, s], [-s, c]] (anticlockwise on screen, y down); invert it
        qx = (c * dx - s * dy) / scale
        qy = (s * dx + c * dy) / scale
        xin, yin = qx / (W / 2.0), qy / (H / 2.0)
        if flip:
            xin = -xin
        return torch.stack([xin, yin], dim=-1).float()[None]

    @staticmethod
    def rotate_normals(normals: torch.Tensor, flip: bool, angle: float) -> torch.Tensor:
        """Transform normal vectors (3, H, W) like the image: flip negates x, then an anticlockwise rotation."""
        n = normals.clone()
        if flip:
            n[0] = -n[0]
        if angle != 0.0:
            a = math.radians(angle)
            c, s = math.cos(a), math.sin(a)
            x, y = n[0].clone(), n[1].clone()
            n[0] = c * x + s * y
            n[1] = -s * x + c * y
        return n

    def __call__(
        self, sample: dict[str, np.ndarray], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        flip, scale, angle = self.sample_params(generator)
        return self.apply(sample, flip, scale, angle)

    def apply(
        self, sample: dict[str, np.ndarray], flip: bool, scale: float, angle: float
    ) -> dict[str, torch.Tensor]:
        """Apply given augmentation parameters (deterministic; used by tests and by :meth:`__call__`)."""
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1).float()
        H, W = image.shape[-2:]
        identity = (not flip) and scale == 1.0 and angle == 0.0 and (H, W) == self.size
        grid = None if identity else self.grid((H, W), flip, scale, angle)
        out: dict[str, torch.Tensor] = {}

        if grid is None:
            img = image
        else:
            img = F.grid_sample(image[None], grid, mode="bicubic", padding_mode="zeros", align_corners=False)[
                0
            ]
            img = img.clamp(0.0, 255.0)
        img = img / 255.0
        if self.normalize:
            img = (img - self.mean) / self.std
        out["image"] = img

        label_keys = [k for k in ("semseg", "human_parts", "sal") if k in sample]
        if label_keys:
            labels = torch.stack(
                [torch.from_numpy(np.ascontiguousarray(sample[k])).long() for k in label_keys]
            )
            if grid is not None:
                src = torch.cat([labels.float(), torch.ones(1, H, W)], dim=0)
                warped = F.grid_sample(
                    src[None], grid, mode="nearest", padding_mode="zeros", align_corners=False
                )[0]
                inside = warped[-1] > 0.5
                labels = warped[:-1].round().long()
                labels[:, ~inside] = IGNORE_INDEX
            for i, k in enumerate(label_keys):
                out[k] = labels[i]
            if "human_parts" in out:
                hp = out["human_parts"]
                if not bool(((hp > 0) & (hp != IGNORE_INDEX)).any()):
                    out["human_parts"] = torch.full_like(hp, IGNORE_INDEX)

        if "normals" in sample:
            n = torch.from_numpy(np.ascontiguousarray(sample["normals"])).permute(2, 0, 1).float()
            mask = torch.from_numpy(np.ascontiguousarray(sample["normals_mask"])).bool()
            n = n * mask[None]
            if grid is not None:
                n = self.rotate_normals(n, flip, angle)
                n = F.grid_sample(n[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[
                    0
                ]
                m = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="zeros",
                                  align_corners=False)[0, 0] > 0.5  # fmt: skip
                norm = channel_norm(n, dim=0)
                mask = m & (norm > 1e-6)
                n = torch.where(mask[None], n / norm[None], torch.zeros_like(n))
            out["normals"] = n
            out["normals_mask"] = mask
        return out


def _empty_batch(tasks: Sequence[str], size: tuple[int, int]) -> dict[str, Any]:
    h, w = size
    batch: dict[str, Any] = {"image": torch.zeros(0, 3, h, w), "id": []}
    for t in tasks:
        if t == "normals":
            batch["normals"] = torch.zeros(0, 3, h, w)
            batch["normals_mask"] = torch.zeros(0, h, w, dtype=torch.bool)
        else:
            batch[t] = torch.zeros(0, h, w, dtype=torch.long)
    return batch


def pascal_collate(tasks: Sequence[str], size: tuple[int, int]) -> SkipCollate:
    """The skip-and-count collate of PASCAL-Context batches: a batch whose samples were all skipped has
    zero-length tensors of the expected shapes (``size`` = (H, W) of the transform)."""
    return SkipCollate(default_collate, partial(_empty_batch, tuple(tasks), tuple(size)))
