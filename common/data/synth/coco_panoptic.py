"""ShapesWorld scenes written in the COCO panoptic format: ``python -m common.data.synth coco-panoptic --out DIR``.

Layout (exactly COCO 2017's)::

    DIR/train2017/000000000001.jpg ...                 RGB images
    DIR/val2017/000000500001.jpg ...
    DIR/annotations/panoptic_train2017.json            {info, licenses, images, annotations, categories}
    DIR/annotations/panoptic_train2017/000000000001.png  RGB PNG, segment id = R + 256 G + 256^2 B, 0 = VOID
    DIR/annotations/panoptic_val2017.json
    DIR/annotations/panoptic_val2017/...
    DIR/annotations/panoptic_categories.json           the categories (as panopticapi's panoptic_coco_categories.json)
                                                        plus "novel": 1 on the held-out open-vocabulary classes

Conventions followed from COCO / panopticapi:

* categories: things first (``person`` is id 1, then the shapes), stuff after id 91; ids are NOT contiguous; each
  carries ``isthing``, ``color`` and ``supercategory``;
* segment ids are colours: a stuff segment takes its category's colour, a thing segment its category's colour
  or, when that is taken in the image, a jittered copy (panopticapi's ``IdGenerator``);
* one segment per stuff class per image; ``segments_info`` items are ``{id, category_id, area, bbox [x, y, w, h],
  iscrowd}``; a few images hold an ``iscrowd = 1`` group (a cluster of small shapes of one kind annotated as one
  segment); thing instances smaller than ``min_area`` pixels are left VOID (COCO leaves tiny/unlabelled regions 0).

The held-out novel classes are :data:`world.NOVEL_SHAPES`: they appear in both splits (as novel objects appear
unlabelled in COCO training images), and a datamodule trains on the base classes and evaluates on all or the novel.
Same arguments -> byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.data.synth import world
from common.metrics.panoptic import id2rgb, rgb2id
from common.paths import data_dir

#: (split folder, first image id): image ids are unique across splits, as in COCO
SPLITS: dict[str, int] = {"train2017": 1, "val2017": 500001}

#: supercategory of each stuff class (COCO-like groupings)
_STUFF_SUPER: dict[str, str] = {
    "sky": "sky", "grass": "plant", "water": "water", "wall": "wall", "sand": "ground", "floor": "floor",
}


@dataclass(frozen=True)
class PanopticCategoryDef:
    """A written category: COCO id, name, isthing, colour, supercategory, novel flag, and its world name."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]
    supercategory: str
    novel: bool

    def to_json(self, with_novel: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "supercategory": self.supercategory, "color": list(self.color), "isthing": int(self.isthing),
            "id": self.id, "name": self.name,
        }
        if with_novel:
            d["novel"] = int(self.novel)
        return d


def _distinct_colour(k: int, n: int, thing: bool) -> tuple[int, int, int]:
    """Well-separated colours (golden-ratio hues), never black (id 0 is VOID)."""
    hue = (k * 0.61803398875 + (0.0 if thing else 0.31)) % 1.0
    sat, val = (0.75, 0.9) if thing else (0.45, 0.7)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)) or 1, int(round(g * 255)), int(round(b * 255))


def panoptic_categories() -> list[PanopticCategoryDef]:
    """The ShapesWorld classes as COCO panoptic categories (things: person + shapes; stuff: background regions)."""
    things = ["person"] + list(world.SHAPES)
    stuff = list(world.STUFF)
    cats = []
    for k, name in enumerate(things):
        cid = 1 + k + k // 4  # 1 2 3 4 6 7 8 9 11 ...: gaps as in COCO's thing ids
        sup = "person" if name == "person" else "shape"
        cats.append(PanopticCategoryDef(cid, name, True, _distinct_colour(k, len(things), True), sup,
                                        name in world.NOVEL_SHAPES))
    for k, name in enumerate(stuff):
        cid = 92 + 3 * k  # stuff after 91, spaced
        cats.append(PanopticCategoryDef(cid, name, False, _distinct_colour(k, len(stuff), False),
                                        _STUFF_SUPER.get(name, "stuff"), False))
    return cats


def _rgb2id(c: Sequence[int]) -> int:
    """The segment id of one colour (the project's one :func:`common.metrics.panoptic.rgb2id`)."""
    return int(rgb2id(np.asarray(c, dtype=np.uint8).reshape(1, 1, 3))[0, 0])


class _IdGenerator:
    """Segment colours/ids after panopticapi's IdGenerator: stuff = category colour, things jittered when taken."""

    def __init__(self, categories: dict[str, PanopticCategoryDef], rng: np.random.Generator) -> None:
        self.categories = categories
        self.rng = rng
        # every category colour is reserved so a jittered thing can never take a stuff segment's id
        self.taken = {tuple(c.color) for c in categories.values()}
        self.used: set[tuple[int, int, int]] = set()

    def get(self, name: str) -> int:
        cat = self.categories[name]
        colour = tuple(cat.color)
        if not cat.isthing or colour not in self.used:
            self.used.add(colour)
            return _rgb2id(colour)
        while True:
            jit = tuple(int(np.clip(v + self.rng.integers(-30, 31), 0, 255)) for v in colour)
            if jit not in self.taken and jit not in self.used and _rgb2id(jit) != 0:
                self.used.add(jit)
                return _rgb2id(jit)


def _crowd_group(rng: np.random.Generator, shapes: Sequence[str]) -> list[world.ObjectSpec]:
    """A tight cluster of 4-6 small shapes of one kind (annotated as ONE iscrowd segment)."""
    shape = str(shapes[int(rng.integers(len(shapes)))])
    colours = list(world.COLOURS)
    cx, cy = float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.3, 0.75))
    group = []
    for _ in range(int(rng.integers(4, 7))):
        group.append(world.ObjectSpec(
            shape=shape, colour=colours[int(rng.integers(len(colours)))],
            x=float(np.clip(cx + rng.normal(0, 0.07), 0.05, 0.95)), y=float(np.clip(cy + rng.normal(0, 0.07), 0.05, 0.95)),
            size=float(rng.uniform(0.08, 0.13)), angle=float(rng.uniform(-25, 25)),
        ))
    return group


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def render_panoptic_sample(
    seed: np.random.SeedSequence | int,
    size: tuple[int, int],
    categories: dict[str, PanopticCategoryDef],
    *,
    crowd_prob: float = 0.15,
    min_area: int = 4,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One scene -> (RGB image (H, W, 3) uint8, panoptic PNG colours (H, W, 3) uint8, segments_info)."""
    rng = np.random.default_rng(seed)
    spec = world.sample_scene(rng, num_objects=(1, 3), person_prob=0.3, exclude_combos=())
    n_regular = len(spec.objects)
    crowd = rng.random() < crowd_prob
    if crowd:
        spec.objects.extend(_crowd_group(rng, world.SHAPES))
    scene = world.render_scene(spec, size)
    ids = _IdGenerator(categories, rng)
    pan = np.zeros(scene.instance.shape, dtype=np.int64)
    segments: list[dict[str, Any]] = []

    def add(mask: np.ndarray, name: str, iscrowd: int) -> None:
        area = int(mask.sum())
        if area == 0:
            return
        sid = ids.get(name)
        pan[mask] = sid
        segments.append({"id": sid, "category_id": categories[name].id, "area": area, "bbox": _bbox(mask),
                         "iscrowd": iscrowd})

    by_id = {inst.id: inst for inst in scene.instances}
    crowd_ids = set(range(n_regular + 1, len(spec.objects) + 1)) if crowd else set()
    # the person's instance id is len(objects) + 1 (after the crowd members when there is a crowd group)
    for inst in scene.instances:
        if not inst.isthing:
            add(scene.instance == inst.id, inst.category, 0)
    for inst in scene.instances:
        if inst.isthing and inst.id not in crowd_ids:
            m = scene.instance == inst.id
            if inst.area >= min_area:
                add(m, inst.category, 0)  # else left VOID
    if crowd_ids:
        m = np.isin(scene.instance, [i for i in crowd_ids if i in by_id])
        name = spec.objects[n_regular].shape
        add(m, name, 1)
    colours = id2rgb(pan)
    return scene.image, colours, segments


def _parse_size(text: str | int | Sequence[int]) -> tuple[int, int]:
    if isinstance(text, int):
        return text, text
    if isinstance(text, str):
        parts = text.lower().replace(",", "x").split("x")
        vals = [int(p) for p in parts if p.strip()]
    else:
        vals = [int(v) for v in text]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 8:
        raise ValueError(f"size must be N or HxW with sides >= 8, got {text!r}")
    return vals[0], vals[1]


def write_coco_panoptic(
    out: str | Path,
    num_train: int = 64,
    num_val: int = 16,
    size: int | str | Sequence[int] = 64,
    seed: int = 0,
    *,
    crowd_prob: float = 0.15,
    min_area: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a ShapesWorld COCO-panoptic dataset under ``out``; returns a summary (counts per split, paths)."""
    out = Path(out)
    h, w = _parse_size(size)
    cats = panoptic_categories()
    by_name = {c.name: c for c in cats}
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    with open(ann_dir / "panoptic_categories.json", "w") as f:
        json.dump([c.to_json(with_novel=True) for c in cats], f, indent=1)
    jobs = [(split, n) for split, n in (("train2017", num_train), ("val2017", num_val))]
    total = sum(n for _, n in jobs)
    summary: dict[str, Any] = {"root": str(out), "size": [h, w], "splits": {}}
    bar = _progress(progress)
    with bar if bar is not None else nullcontext():
        task = bar.add_task("coco-panoptic", total=total) if bar is not None else None
        for split_idx, (split, n) in enumerate(jobs):
            img_dir, png_dir = out / split, ann_dir / f"panoptic_{split}"
            img_dir.mkdir(parents=True, exist_ok=True)
            png_dir.mkdir(parents=True, exist_ok=True)
            images, annotations = [], []
            counts = {"segments": 0, "crowd": 0, "things": 0, "stuff": 0}
            for i in range(n):
                image_id = SPLITS[split] + i
                ss = np.random.SeedSequence([int(seed), split_idx, i])
                img, pan, segs = render_panoptic_sample(ss, (h, w), by_name, crowd_prob=crowd_prob, min_area=min_area)
                stem = f"{image_id:012d}"
                Image.fromarray(img).save(img_dir / f"{stem}.jpg", quality=95)
                Image.fromarray(pan).save(png_dir / f"{stem}.png")
                images.append({"id": image_id, "file_name": f"{stem}.jpg", "width": w, "height": h})
                annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segs})
                thing_ids = {c.id for c in cats if c.isthing}
                counts["segments"] += len(segs)
                counts["crowd"] += sum(s["iscrowd"] for s in segs)
                counts["things"] += sum(s["category_id"] in thing_ids for s in segs)
                counts["stuff"] += sum(s["category_id"] not in thing_ids for s in segs)
                if bar is not None:
                    bar.advance(task)
            doc = {
                "info": {"description": "ShapesWorld panoptic: the cvinw synthetic stand-in for COCO panoptic",
                         "version": "1.0", "year": 2024, "contributor": "cvinw common.data.synth.coco_panoptic",
                         "seed": int(seed)},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": [c.to_json() for c in cats],
            }
            with open(ann_dir / f"panoptic_{split}.json", "w") as f:
                json.dump(doc, f)
            summary["splits"][split] = {"images": n, **counts}
    return summary


def _progress(enabled: bool) -> Any:
    """A rich progress bar, or None."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(data_dir() / "coco_panoptic"), help="output root (default: outputs/data/coco_panoptic)")
    p.add_argument("--num-train", type=int, default=64, help="training images (default 64)")
    p.add_argument("--num-val", type=int, default=16, help="validation images (default 16)")
    p.add_argument("--size", default="64", help="image size: N or HxW (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--crowd-prob", type=float, default=0.15, help="fraction of images with an iscrowd group")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    s = write_coco_panoptic(args.out, args.num_train, args.num_val, args.size, args.seed,
                            crowd_prob=args.crowd_prob, progress=not args.no_progress)
    for split, c in s["splits"].items():
        print(f"{split}: {c['images']} images, {c['segments']} segments ({c['things']} things, {c['stuff']} stuff, "
              f"{c['crowd']} crowd)")
    print(f"wrote {s['root']} (COCO panoptic layout; categories with novel flags in annotations/panoptic_categories.json)")
    return 0


def cli_commands() -> dict[str, tuple[str, Any, Any]]:
    """The ``coco-panoptic`` command of ``python -m common.data.synth``."""
    return {"coco-panoptic": ("write ShapesWorld scenes in the COCO panoptic format", _add_arguments, _run)}


__all__ = ["PanopticCategoryDef", "panoptic_categories", "render_panoptic_sample", "write_coco_panoptic", "cli_commands"]
