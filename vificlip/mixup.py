"""Mixup / CutMix on video batches with label-smoothed soft targets (plain PyTorch).

The official recipe (X-CLIP's ``CutmixMixupBlending``, used by ViFi-CLIP): every training batch is blended with
itself in reverse order, by CutMix (``Beta(1, 1)``, one box over the frame area, the same box in every frame) with
probability ``switch_prob`` (0.5), else by Mixup (``Beta(0.8, 0.8)``). The targets are one-hot vectors with label
smoothing ``s`` (``1 - s + s/K`` on the class, ``s/K`` elsewhere), mixed with the same weight ``lam`` (for CutMix,
the fraction of the frame area kept after clipping the box to the frame).
"""

from __future__ import annotations

import math

import torch

__all__ = ["smooth_one_hot", "VideoMixup"]


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``(B,)`` labels -> ``(B, K)`` targets: ``1 - s + s/K`` on the label, ``s/K`` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


class VideoMixup:
    """Blend a video batch ``(B, T, C, H, W)`` and return ``(mixed video, soft targets (B, K))``.

    Args:
        num_classes: K.
        mixup_alpha / cutmix_alpha: Beta parameters (0 disables that one; both 0: only label smoothing).
        switch_prob: probability of CutMix when both are on.
        smoothing: label smoothing of the targets.
        generator: a torch generator for the switch and the box (default: the global RNG, seeded by
            ``seed_everything``); ``lam`` is drawn from the global RNG.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, smoothing: float = 0.1, generator: torch.Generator | None = None) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= switch_prob <= 1:
            raise ValueError("mixup/cutmix alphas must be >= 0 and switch_prob in [0, 1]")
        self.num_classes, self.smoothing = num_classes, smoothing
        self.mixup_alpha, self.cutmix_alpha, self.switch_prob = mixup_alpha, cutmix_alpha, switch_prob
        self.generator = generator

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _beta(self, alpha: float) -> float:
        return float(torch.distributions.Beta(alpha, alpha).sample())

    def cutmix_box(self, lam: float, height: int, width: int) -> tuple[int, int, int, int]:
        """A box ``(y0, y1, x0, x1)`` of area fraction ``1 - lam`` centred uniformly at random, clipped."""
        ratio = math.sqrt(1.0 - lam)
        ch, cw = int(height * ratio), int(width * ratio)
        cy = int(torch.randint(0, height, (), generator=self.generator))
        cx = int(torch.randint(0, width, (), generator=self.generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
        return y0, y1, x0, x1

    def __call__(self, video: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = smooth_one_hot(labels, self.num_classes, self.smoothing)
        if not self.enabled or video.shape[0] < 2:
            return video, target
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self._rand() < self.switch_prob)
        flipped = video.flip(0)
        if use_cutmix:
            lam = self._beta(self.cutmix_alpha)
            h, w = int(video.shape[-2]), int(video.shape[-1])
            y0, y1, x0, x1 = self.cutmix_box(lam, h, w)
            video = video.clone()
            video[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            lam = self._beta(self.mixup_alpha)
            video = video * lam + flipped * (1.0 - lam)
        return video, target * lam + target.flip(0) * (1.0 - lam)
