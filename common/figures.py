"""Pictures a person would rather look at than read, and their upload to the run's MLflow store (rank 0 only).

Confusion matrices (:func:`confusion_figure`, :func:`log_figure`), and dense predictions as files a user opens
(:func:`dense_prediction_images`: label maps as palette PNGs, one-channel maps as grey, normals as RGB;
:func:`overlay_picture`: the input beside each prediction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["confusion_figure", "log_figure", "label_palette", "dense_prediction_images", "overlay_picture"]


def confusion_figure(matrix: torch.Tensor, class_names: list[str], title: str) -> Any:
    """A row-normalised confusion matrix (rows: true class) as a matplotlib figure (cells annotated up to 20
    classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.double()
    m = (m / m.sum(1, keepdim=True).clamp_min(1)).cpu().numpy()
    k = len(m)
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * k, 2 + 0.4 * k), dpi=100)
    ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
    ticks = list(range(k))
    names = class_names if len(class_names) == k else [str(i) for i in ticks]
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j] >= 0.005:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def log_figure(trainer: pl.Trainer, fig: Any, artifact_file: str) -> bool:
    """Upload ``fig`` to every MLflow logger of ``trainer`` (rank 0) and close it; False when none took it.

    An artifact-store problem is reported and swallowed: a picture must never end a run.
    """
    import matplotlib.pyplot as plt
    from lightning.pytorch.loggers import MLFlowLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)] if trainer.is_global_zero else []
    try:
        for lg in loggers:
            lg.experiment.log_figure(lg.run_id, fig, artifact_file)
    except Exception as err:  # noqa: BLE001 - see docstring
        rank_zero_info(f"[figures] could not upload {artifact_file}: {err}")
        return False
    finally:
        plt.close(fig)
    return bool(loggers)


def label_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, ``(n, 3)`` uint8: class 0 black, 1 dark red, 2 dark green, ... (the bits of the
    class index spread over the high bits of R, G and B)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    return pal


def dense_prediction_images(preds: Mapping[str, torch.Tensor], size: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-task outputs ``(C, h, w)`` -> PIL images at ``size`` (H, W; outputs resized bilinearly first):

    * ``normals`` (3 channels): RGB, ``v = 255 (n / |n| + 1) / 2`` (the encoding of PASCAL_MT's normals PNGs);
    * one channel (saliency, any binary map): the sigmoid probability as grey (mode ``L``);
    * more channels (semantic segmentation, human parts): the arg-max label map as a palette PNG (mode ``P``, the
      pixel values are the class indices, coloured by :func:`label_palette`).
    """
    from PIL import Image

    palette = label_palette().reshape(-1).tolist()
    out: dict[str, Any] = {}
    for task, logits in preds.items():
        x = logits.detach().float().cpu()[None]
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
        x = x[0]
        if task == "normals" and x.shape[0] == 3:
            n = x / x.norm(dim=0, keepdim=True).clamp_min(1e-12)
            rgb = ((n + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            out[task] = Image.fromarray(rgb, "RGB")
        elif x.shape[0] == 1:
            grey = (x[0].sigmoid() * 255).round().clamp(0, 255).byte().numpy()
            out[task] = Image.fromarray(grey, "L")
        else:
            img = Image.fromarray(x.argmax(0).byte().numpy(), "P")
            img.putpalette(palette)
            out[task] = img
    return out


def overlay_picture(image: np.ndarray, pictures: Mapping[str, Any], alpha: float = 0.5, max_height: int = 512,
                    gap: int = 4) -> Any:
    """The input ``(H, W, 3)`` uint8 and each prediction side by side, each panel titled: label maps (palette
    images) blended over the input with ``alpha``, grey and RGB maps as they are; panels scaled to at most
    ``max_height`` pixels high."""
    from PIL import Image, ImageDraw

    base = Image.fromarray(np.ascontiguousarray(image), "RGB")
    panels = [("input", base)]
    for task, pic in pictures.items():
        pic = pic.resize(base.size, Image.NEAREST) if pic.size != base.size else pic
        panels.append((task, Image.blend(base, pic.convert("RGB"), alpha) if pic.mode == "P" else pic.convert("RGB")))
    scale = min(1.0, max_height / base.height)
    w, h = max(1, round(base.width * scale)), max(1, round(base.height * scale))
    strip = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * gap, h), (255, 255, 255))
    for k, (title, panel) in enumerate(panels):
        panel = panel.resize((w, h), Image.BILINEAR) if scale < 1 else panel.copy()
        ImageDraw.Draw(panel).text((3, 2), title, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
        strip.paste(panel, (k * (w + gap), 0))  # the title drawn on its own panel: clipped there
    return strip
