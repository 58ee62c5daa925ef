"""Panoptic predictions as files a person opens: the COCO panoptic PNG + segments JSON, and an overlay picture.

* :func:`panoptic_colours`: one colour per segment (its class's colour from :func:`common.figures.label_palette`,
  things of one class shifted a little per instance so that neighbours stay apart);
* :func:`overlay`: the input beside each id map (blended colours, segment outlines, the class name at each
  segment's centre), panels scaled up to at least ``min_height`` pixels so that a 64 px ShapesWorld image reads;
* :func:`write_panoptic_files`: ``<name>_panoptic.png`` (COCO format: id = R + 256 G + 256^2 B, 0 = VOID,
  :func:`common.metrics.panoptic_format.id2rgb`), ``<name>_segments.json`` and ``<name>_overlay.png``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.figures import label_palette
from common.metrics.panoptic_format import id2rgb

__all__ = ["overlay", "panoptic_colours", "segments_json", "write_panoptic_files"]


def panoptic_colours(segments: Sequence[Mapping[str, Any]]) -> dict[int, tuple[int, int, int]]:
    """``{segment id: RGB}``: the class's palette colour (class index + 1, so class 0 is not black); the n-th
    thing segment of a class brightened by ``24 n`` per channel (wrapping)."""
    pal = label_palette(1024)
    seen: dict[int, int] = {}
    out: dict[int, tuple[int, int, int]] = {}
    for s in segments:
        c = int(s["category_id"])
        n = seen.get(c, 0)
        seen[c] = n + 1
        rgb = pal[(c + 1) % len(pal)].astype(np.int64)
        if s.get("isthing", True) and n:
            rgb = (rgb + 24 * n) % 256
        out[int(s["id"])] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    return out


def _panel(image: np.ndarray, ids: np.ndarray, segments: Sequence[Mapping[str, Any]], names: Sequence[str],
           scale: int, alpha: float) -> Any:
    from PIL import Image, ImageDraw

    colours = panoptic_colours(segments)
    colour_map = np.zeros((*ids.shape, 3), dtype=np.uint8)
    for sid, rgb in colours.items():
        colour_map[ids == sid] = rgb
    labelled = ids > 0
    blended = image.astype(np.float32)
    blended[labelled] = (1 - alpha) * blended[labelled] + alpha * colour_map[labelled]
    big_ids = np.kron(ids, np.ones((scale, scale), dtype=ids.dtype)) if scale > 1 else ids
    pic = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), "RGB")
    if scale > 1:
        pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    arr = np.array(pic)
    edge = np.zeros(big_ids.shape, dtype=bool)  # segment outlines, one pixel wide
    edge[:-1] |= big_ids[:-1] != big_ids[1:]
    edge[:, :-1] |= big_ids[:, :-1] != big_ids[:, 1:]
    arr[edge] = 255
    pic = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(pic)
    for s in segments:
        ys, xs = np.nonzero(big_ids == int(s["id"]))
        if len(xs) == 0:
            continue
        c = int(s["category_id"])
        text = names[c] if 0 <= c < len(names) else str(c)
        x, y = float(xs.mean()), float(ys.mean())
        box = draw.textbbox((0, 0), text)
        draw.text((x - (box[2] - box[0]) / 2, y - (box[3] - box[1]) / 2), text, fill=(255, 255, 255),
                  stroke_width=2, stroke_fill=(0, 0, 0))
    return pic


def overlay(image: np.ndarray, panels: Mapping[str, tuple[np.ndarray, Sequence[Mapping[str, Any]]]],
            names: Sequence[str], *, alpha: float = 0.55, min_height: int = 256, gap: int = 6) -> Any:
    """The input ``(H, W, 3)`` uint8 beside each ``{title: (id map (H, W), segments_info)}``; segment category ids
    index ``names``. Returns a PIL image."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    scale = max(1, -(-min_height // h))
    base = Image.fromarray(np.ascontiguousarray(image), "RGB")
    if scale > 1:
        base = base.resize((w * scale, h * scale), Image.BILINEAR)
    pics = [("input", base)]
    for title, (ids, segments) in panels.items():
        ids = np.asarray(ids)
        if ids.shape != (h, w):
            raise ValueError(f"panel {title!r}: id map {ids.shape} differs from the image's {(h, w)}")
        pics.append((title, _panel(image, ids, segments, names, scale, alpha)))
    pw, ph = w * scale, h * scale
    strip = Image.new("RGB", (len(pics) * pw + (len(pics) - 1) * gap, ph + 16), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, (title, pic) in enumerate(pics):
        strip.paste(pic, (k * (pw + gap), 16))
        draw.text((k * (pw + gap) + 2, 2), title, fill=(0, 0, 0))
    return strip


def segments_json(file_name: str, segments: Sequence[Mapping[str, Any]], ids: np.ndarray, names: Sequence[str]
                  ) -> dict[str, Any]:
    """One COCO panoptic annotation: ``{"file_name", "segments_info": [{"id", "category_id", "category_name",
    "isthing", "iscrowd", "area", "bbox"}]}`` (``category_id``: the class index into ``names``)."""
    info = []
    for s in segments:
        m = ids == int(s["id"])
        ys, xs = np.nonzero(m)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)] if len(xs) \
            else [0, 0, 0, 0]
        c = int(s["category_id"])
        info.append({"id": int(s["id"]), "category_id": c, "category_name": names[c] if 0 <= c < len(names) else "",
                     "isthing": int(bool(s.get("isthing", True))), "iscrowd": 0, "area": int(m.sum()), "bbox": bbox})
    return {"file_name": file_name, "segments_info": info}


def write_panoptic_files(out_dir: Path, name: str, image: np.ndarray, ids: torch.Tensor | np.ndarray,
                         segments: Sequence[Mapping[str, Any]], names: Sequence[str], source: str | None = None
                         ) -> dict[str, str]:
    """Write ``<name>_panoptic.png`` (COCO rgb2id format), ``<name>_segments.json`` and ``<name>_overlay.png`` into
    ``out_dir``; returns ``{"input", "panoptic", "segments", "overlay", "num_segments"}`` (file names)."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    png, seg, ovl = f"{name}_panoptic.png", f"{name}_segments.json", f"{name}_overlay.png"
    Image.fromarray(id2rgb(ids.astype(np.int64)), "RGB").save(out_dir / png)
    doc = segments_json(png, segments, ids, names)
    doc.update(input=source or name, categories=[{"id": i, "name": n} for i, n in enumerate(names)])
    (out_dir / seg).write_text(json.dumps(doc, indent=1))
    overlay(image, {"prediction": (ids, segments)}, names).save(out_dir / ovl)
    return {"input": source or name, "panoptic": png, "segments": seg, "overlay": ovl,
            "num_segments": str(len(segments))}
