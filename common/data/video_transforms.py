"""Clip-consistent video transforms: the published video recipes (ViFi-CLIP's, ST-Adapter's), chosen in config.

A transform takes a clip as uint8 ``(T, H, W, 3)`` (what :mod:`common.data.video` returns) and returns float32
``(T, 3, S, S)``, normalised. Every random choice (crop box, scale, flip, colour factors, RandAugment ops) is
drawn **once per clip** from the ``numpy.random.Generator`` passed in and applied to all frames alike, so motion
between frames is never an artefact of augmentation. Test views: :meth:`VideoTransform.eval_views` gives 1 centre
crop or 3 crops along the long side, ``(num_crops, T, 3, S, S)``.

Recipes (:meth:`VideoTransform.preset`; named by what they do; ``size`` 224 in the papers, 32-64 px in the tiny
presets):

``multiscale_crop`` (ViFi-CLIP / X-CLIP, [code]): resize short side to ``int(256/224 * size)``; MultiScaleCrop with scales
  (1, .875, .75, .66) of the short side, width/height scale levels at most 1 apart, one of 5 fixed positions
  (corners + centre), resized to ``size x size``; hflip 0.5; ColorJitter(brightness .4, contrast .4, saturation
  .2, hue .1) with p 0.8; grayscale p 0.2; ImageNet mean/std (the code's 0-255 constants divided by 255 give the
  same numbers). Test: short side ``int(256/224*size)`` + centre crop; 3 crops after short side ``size``. The
  released code re-draws the ColorJitter factors for every frame (``color_jitter_per_frame=True`` reproduces
  that); the default here is one draw per clip.
``short_side_jitter`` (ST-Adapter on K400, [code]): short side jittered uniformly in ``[size, 1.15 size]`` (224-258),
  random ``size`` crop, hflip 0.5, CLIP mean/std, bicubic. Test: short side ``size`` + centre or 3 crops.
``randaugment_noflip`` (ST-Adapter on SSv2, [code]): RandAugment ``rand-m7-n4-mstd0.5-inc1`` (timm, the same ops for all
  frames) on the decoded frames, then RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3); **no flip**
  (SSv2 has left/right classes); CLIP mean/std, bicubic. Test as K400.

Kernel-style module: torch/torchvision/PIL only, no I/O, no Lightning.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

__all__ = ["NORMALIZATION", "VideoTransform", "RECIPES"]

#: mean/std on [0, 1] images
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


@dataclass
class VideoTransform:
    """A configurable clip transform; see the module docstring for the recipes.

    Args:
        size: output side S (square).
        train_crop: ``multiscale`` (ViFi-CLIP), ``short_side_jitter`` (ST-Adapter K400) or ``random_resized``
            (ST-Adapter SSv2).
        resize_short: short side before ``multiscale`` cropping (default ``int(256/224 * size)``).
        scales: MultiScaleCrop scales of the short side.
        max_wh_scale_gap: MultiScaleCrop's largest gap between the width and height scale levels.
        jitter_range: short-side jitter as multiples of ``size`` (``[1.0, 1.15]`` = 224-258 at 224).
        rrc_scale, rrc_ratio: RandomResizedCrop area fraction and aspect ratio ranges.
        hflip: flip probability (0 for SSv2).
        color_jitter: probability of ColorJitter; ``jitter_strength`` = (brightness, contrast, saturation, hue).
        color_jitter_per_frame: draw jitter factors per frame as the ViFi-CLIP release does (not clip-consistent).
        grayscale: probability of converting the clip to grayscale (3 channels).
        rand_augment: a timm RandAugment string (``rand-m7-n4-mstd0.5-inc1``) or None.
        normalize: ``clip`` or ``imagenet`` statistics.
        interpolation: ``bilinear`` or ``bicubic``.
        eval_resize: short side before the single centre crop at test (default: ``resize_short`` for multiscale,
            else ``size``); three-crop testing always resizes the short side to ``size``.
    """

    size: int = 224
    train_crop: Literal["multiscale", "short_side_jitter", "random_resized"] = "multiscale"
    resize_short: int | None = None
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_wh_scale_gap: int = 1
    jitter_range: tuple[float, float] = (1.0, 1.15)
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.0
    jitter_strength: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_per_frame: bool = False
    grayscale: float = 0.0
    rand_augment: str | None = None
    normalize: Literal["clip", "imagenet"] = "clip"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    eval_resize: int | None = None

    def __post_init__(self) -> None:
        if self.train_crop not in ("multiscale", "short_side_jitter", "random_resized"):
            raise ValueError(f"train_crop must be multiscale, short_side_jitter or random_resized, got {self.train_crop!r}")
        if self.normalize not in NORMALIZATION:
            raise ValueError(f"normalize must be one of {sorted(NORMALIZATION)}, got {self.normalize!r}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be bilinear or bicubic, got {self.interpolation!r}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        self.scales = tuple(float(s) for s in self.scales)
        self.jitter_range = (float(self.jitter_range[0]), float(self.jitter_range[1]))
        if self.resize_short is None:
            self.resize_short = int(256 / 224 * self.size)
        if self.eval_resize is None:
            self.eval_resize = self.resize_short if self.train_crop == "multiscale" else self.size
        if self.rand_augment and not self.rand_augment.startswith("rand"):
            raise ValueError(f"rand_augment must be a timm 'rand-...' string, got {self.rand_augment!r}")

    # -- presets -----------------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, recipe: str, size: int = 224, **overrides: Any) -> VideoTransform:
        """One of :data:`RECIPES` at ``size``, with any field overridden."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown transform recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        kwargs = {**RECIPES[recipe], "size": size, **overrides}
        return cls(**kwargs)

    def describe(self) -> dict[str, Any]:
        """The fields as a plain dict (for logging)."""
        return asdict(self)

    def with_size(self, size: int) -> VideoTransform:
        return replace(self, size=size, resize_short=None, eval_resize=None)

    # -- public API --------------------------------------------------------------------------------------------
    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Training view: uint8 ``(T, H, W, 3)`` -> float32 ``(T, 3, size, size)``."""
        x = _to_tchw(frames)
        if self.rand_augment:
            x = self._rand_augment(x, rng)
        if self.train_crop == "multiscale":
            x = self._resize_short(x, self.resize_short)
            x = self._multiscale_crop(x, rng)
        elif self.train_crop == "short_side_jitter":
            lo, hi = round(self.size * self.jitter_range[0]), round(self.size * self.jitter_range[1])
            x = self._resize_short(x, int(round(rng.uniform(lo, hi))))
            x = self._random_crop(x, rng)
        else:
            x = self._random_resized_crop(x, rng)
        if self.hflip > 0 and rng.random() < self.hflip:
            x = TF.hflip(x)
        if self.color_jitter > 0 and rng.random() < self.color_jitter:
            if self.color_jitter_per_frame:
                x = torch.cat([self._jitter(x[i : i + 1], rng) for i in range(x.shape[0])])
            else:
                x = self._jitter(x, rng)
        if self.grayscale > 0 and rng.random() < self.grayscale:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        return self._normalize(x)

    def eval_views(self, frames: np.ndarray | torch.Tensor, num_crops: int = 1) -> torch.Tensor:
        """Deterministic test views: uint8 ``(T, H, W, 3)`` -> ``(num_crops, T, 3, size, size)`` (1 or 3 crops)."""
        x = _to_tchw(frames)
        if num_crops == 1:
            x = self._resize_short(x, self.eval_resize)
            h, w = x.shape[-2:]
            top, left = (h - self.size) // 2, (w - self.size) // 2
            crops = [x[..., top : top + self.size, left : left + self.size]]
        elif num_crops == 3:
            x = self._resize_short(x, self.size)
            h, w = x.shape[-2:]
            margin = max(h, w) - self.size
            crops = []
            for start in (0, margin // 2, margin):
                if h > w:
                    crops.append(x[..., start : start + self.size, :])
                else:
                    crops.append(x[..., :, start : start + self.size])
            crops = [c[..., : self.size, : self.size] for c in crops]
        else:
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        return torch.stack([self._normalize(c) for c in crops])

    # -- pieces ------------------------------------------------------------------------------------------------
    def _resize(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if (h, w) == tuple(x.shape[-2:]):
            return x
        return TF.resize(x, [h, w], interpolation=_INTERP[self.interpolation], antialias=True)

    def _resize_short(self, x: torch.Tensor, short: int) -> torch.Tensor:
        """Resize so the short side is ``short`` (long side floored, as mmcv and SlowFast do)."""
        h, w = x.shape[-2:]
        if h <= w:
            return self._resize(x, short, max(short, int(w * short / h)))
        return self._resize(x, max(short, int(h * short / w)), short)

    def _multiscale_crop(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        top, left, ch, cw = self.multiscale_box(x.shape[-2], x.shape[-1], rng)
        return self._resize(x[..., top : top + ch, left : left + cw], self.size, self.size)

    def multiscale_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """MultiScaleCrop's box ``(top, left, height, width)`` on an ``h x w`` frame (mmaction2's rules)."""
        base = min(h, w)
        sizes = [int(base * s) for s in self.scales]
        candidates = [
            [cw, ch]
            for i, ch in enumerate(sizes)
            for j, cw in enumerate(sizes)
            if abs(i - j) <= self.max_wh_scale_gap
        ]
        crop = list(candidates[int(rng.integers(len(candidates)))])
        for k in range(2):  # within 3 px of the input size: snap to it (mmaction2)
            if abs(crop[k] - self.size) < 3:
                crop[k] = self.size
        cw, ch = min(crop[0], w), min(crop[1], h)
        ws, hs = (w - cw) // 4, (h - ch) // 4
        offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
        left, top = offsets[int(rng.integers(len(offsets)))]
        return top, left, ch, cw

    def _random_crop(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < self.size or w < self.size:
            x = self._resize_short(x, self.size)
            h, w = x.shape[-2:]
        top = int(rng.integers(h - self.size + 1))
        left = int(rng.integers(w - self.size + 1))
        return x[..., top : top + self.size, left : left + self.size]

    def _random_resized_crop(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        area = h * w
        log_ratio = (np.log(self.rrc_ratio[0]), np.log(self.rrc_ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.rrc_scale)
            ratio = float(np.exp(rng.uniform(*log_ratio)))
            cw = int(round(np.sqrt(target * ratio)))
            ch = int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(rng.integers(h - ch + 1))
                left = int(rng.integers(w - cw + 1))
                break
        else:  # fall back to a centre crop at the allowed aspect ratio (as torchvision)
            in_ratio = w / h
            if in_ratio < self.rrc_ratio[0]:
                cw, ch = w, int(round(w / self.rrc_ratio[0]))
            elif in_ratio > self.rrc_ratio[1]:
                ch, cw = h, int(round(h * self.rrc_ratio[1]))
            else:
                cw, ch = w, h
            top, left = (h - ch) // 2, (w - cw) // 2
        return self._resize(x[..., top : top + ch, left : left + cw], self.size, self.size)

    def _jitter(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        b, c, s, hue = self.jitter_strength
        factors = {
            0: rng.uniform(max(0.0, 1 - b), 1 + b) if b > 0 else None,
            1: rng.uniform(max(0.0, 1 - c), 1 + c) if c > 0 else None,
            2: rng.uniform(max(0.0, 1 - s), 1 + s) if s > 0 else None,
            3: rng.uniform(-hue, hue) if hue > 0 else None,
        }
        for op in rng.permutation(4):
            f = factors[int(op)]
            if f is None:
                continue
            if op == 0:
                x = TF.adjust_brightness(x, float(f))
            elif op == 1:
                x = TF.adjust_contrast(x, float(f))
            elif op == 2:
                x = TF.adjust_saturation(x, float(f))
            else:
                x = TF.adjust_hue(x, float(f))
        return x

    def _rand_augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """timm RandAugment with one draw of ops and magnitudes for the whole clip.

        timm draws from the global ``random`` and ``numpy.random`` states; both are seeded from ``rng`` and
        re-seeded identically before every frame, then restored, so frames get the same ops and the caller's
        global random state is untouched.
        """
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        h, w = x.shape[-2:]
        hparams = {"translate_const": int(min(h, w) * 0.45), "interpolation": Image.BICUBIC
                   if self.interpolation == "bicubic" else Image.BILINEAR}
        ra = rand_augment_transform(self.rand_augment, hparams)  # translate_const follows the frame size
        seed = int(rng.integers(2**31 - 1))
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            out = []
            for frame in x.permute(0, 2, 3, 1).numpy():
                random.seed(seed)
                np.random.seed(seed)
                out.append(np.asarray(ra(Image.fromarray(frame))))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = NORMALIZATION[self.normalize]
        x = x.float().div_(255.0)
        return TF.normalize(x, list(mean), list(std))


def _to_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {tuple(t.shape)} {t.dtype}")
    return t.permute(0, 3, 1, 2).contiguous()


#: field values of each recipe (``size`` is set by the caller); the module docstring says whose each is
RECIPES: dict[str, dict[str, Any]] = {
    "multiscale_crop": dict(
        train_crop="multiscale", scales=(1.0, 0.875, 0.75, 0.66), hflip=0.5, color_jitter=0.8, grayscale=0.2,
        normalize="imagenet", interpolation="bilinear",
    ),
    "short_side_jitter": dict(
        train_crop="short_side_jitter", jitter_range=(1.0, 1.15), hflip=0.5, normalize="clip",
        interpolation="bicubic",
    ),
    "randaugment_noflip": dict(
        train_crop="random_resized", rrc_scale=(0.08, 1.0), hflip=0.0, rand_augment="rand-m7-n4-mstd0.5-inc1",
        normalize="clip", interpolation="bicubic",
    ),
}
