"""ShapesWorld VTAB-like tasks in the VTAB-1k list layout (as NOAH distributes it) plus few-shot lists, `vtab-like`.

``python -m common.data.synth vtab-like --out DIR [--tasks ... --num-train N --num-val N --num-test N --size PX
--seed S]`` writes, for every task, one folder::

    DIR/<task>/data/images/{train,val,test}/<index>.jpg    the rendered images (64 px by default)
    DIR/<task>/train800.txt                                 "data/images/train/000000.jpg <label>" lines, paths
    DIR/<task>/val200.txt                                   relative to the task folder (NOAH's VTAB-1k layout;
    DIR/<task>/train800val200.txt                           the names are the benchmark's, the counts are
    DIR/<task>/test.txt                                     --num-train / --num-val / --num-test)
    DIR/<task>/classes.txt                                  one class name per line (NOAH ships none)
    DIR/<task>/annotations/train_meta.list.num_shot_{K}.seed_{S}   few-shot lists ("train/000000.jpg <label>",
    DIR/<task>/annotations/val_meta.list                           relative to data/images, the layout of the
    DIR/<task>/annotations/test_meta.list                          few-shot benchmark), K = 1, 2, 4, 8, 16, S = 0-2
    DIR/shapesworld.json                                    the writer's arguments

The tasks, all rendered by :func:`common.data.synth.world.render_scene` on one textured background:

* ``shape``: which of the 10 shapes (one object). Natural-image-like: appearance is the label.
* ``colour``: which of the 10 colours (one object of any shape).
* ``count``: how many shapes, 1-6 (CLEVR-count-like).
* ``position``: in which of 4 vertical bands the one shape sits, left to right (dSprites-location-like: a
  horizontal flip changes the label, so the datamodule does not flip it).
* ``orientation``: to which of 8 directions (45 degree bins) a heart points (dSprites-orientation-like: a flip
  mirrors the angle, so no flip either).

Every split is class-balanced (image ``i`` has label ``i mod C``), so a few-shot list with K <= num_train / C
always finds K images per class; the few-shot K images of a class are drawn from the train split by a generator
seeded with (seed, K, S). Output is a pure function of the arguments: same arguments, byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.data.synth import world
from common.paths import data_dir

__all__ = ["TASKS", "NO_FLIP_TASKS", "FEWSHOT_SHOTS", "FEWSHOT_SEEDS", "class_names", "render_example",
           "write_vtab_like", "written_options", "requested_options", "cli_commands", "STAMP_NAME"]

TASKS: tuple[str, ...] = ("shape", "colour", "count", "position", "orientation")
#: tasks whose label a horizontal flip changes (the datamodule's default ``hflip`` is off for them)
NO_FLIP_TASKS: tuple[str, ...] = ("position", "orientation")
FEWSHOT_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16)
FEWSHOT_SEEDS: tuple[int, ...] = (0, 1, 2)
STAMP_NAME = "shapesworld.json"
_COUNT_WORDS = ("one", "two", "three", "four", "five", "six")
_BANDS = ("far left", "left", "right", "far right")
_DIRECTIONS = ("up", "up left", "left", "down left", "down", "down right", "right", "up right")
_SPLITS = ("train", "val", "test")


def class_names(task: str) -> list[str]:
    """The class names of a task (index = label)."""
    if task == "shape":
        return list(world.SHAPES)
    if task == "colour":
        return list(world.COLOURS)
    if task == "count":
        return [f"{w} shape{'s' if i else ''}" for i, w in enumerate(_COUNT_WORDS)]
    if task == "position":
        return [f"a shape on the {b}" for b in _BANDS]
    if task == "orientation":
        return [f"a heart pointing {d}" for d in _DIRECTIONS]
    raise ValueError(f"ShapesWorld VTAB-like: unknown task {task!r}; known tasks are {list(TASKS)}")


def _seed(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), TASKS.index(task), _SPLITS.index(split), int(index)])


def render_example(task: str, label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One (H, W, 3) uint8 image of ``task`` with class ``label`` (a pure function of the generator's state)."""
    stuff = (world.STUFF[int(rng.integers(len(world.STUFF)))],)
    colours = list(world.COLOURS)
    shapes = list(world.SHAPES)

    def obj(shape: str | None = None, colour: str | None = None, x: float | None = None, y: float | None = None,
            s: float | None = None, angle: float | None = None) -> world.ObjectSpec:
        s = float(rng.uniform(0.32, 0.45)) if s is None else s
        return world.ObjectSpec(
            shape=shape or shapes[int(rng.integers(len(shapes)))],
            colour=colour or colours[int(rng.integers(len(colours)))],
            x=float(rng.uniform(s / 2 + 0.02, 1 - s / 2 - 0.02)) if x is None else x,
            y=float(rng.uniform(s / 2 + 0.02, 1 - s / 2 - 0.02)) if y is None else y,
            size=s, angle=float(rng.uniform(-25, 25)) if angle is None else angle)

    if task == "shape":
        objects = [obj(shape=shapes[label])]
    elif task == "colour":
        objects = [obj(colour=colours[label])]
    elif task == "count":
        n, s = label + 1, 0.2
        cells = rng.permutation(9)[:n]  # a 3x3 grid of cells, jittered, so the shapes never merge
        objects = [obj(s=s, x=float((c % 3 + 0.5) / 3 + rng.uniform(-0.05, 0.05)),
                       y=float((c // 3 + 0.5) / 3 + rng.uniform(-0.05, 0.05))) for c in cells]
    elif task == "position":
        s = 0.22
        x = float((label + rng.uniform(0.15, 0.85)) / len(_BANDS))
        objects = [obj(s=s, x=min(max(x, s / 2), 1 - s / 2))]
    elif task == "orientation":
        angle = label * 360.0 / len(_DIRECTIONS) + float(rng.uniform(-12, 12))
        objects = [obj(shape="heart", s=0.55, x=float(rng.uniform(0.4, 0.6)), y=float(rng.uniform(0.4, 0.6)),
                       angle=angle)]
    else:
        class_names(task)  # the error naming the known tasks
        raise AssertionError
    spec = world.SceneSpec(stuff=stuff, objects=objects, person=None, seed=int(rng.integers(0, 2**31 - 1)))
    return world.render_scene(spec, (size, size)).image


def _options(tasks: Sequence[str], num_train: int, num_val: int, num_test: int, size: int, seed: int,
             shots: Sequence[int], fewshot_seeds: Sequence[int]) -> dict[str, Any]:
    return {"tasks": list(tasks), "num_train": int(num_train), "num_val": int(num_val), "num_test": int(num_test),
            "size": int(size), "seed": int(seed), "shots": [int(k) for k in shots],
            "fewshot_seeds": [int(s) for s in fewshot_seeds]}


def write_vtab_like(
    out: str | Path | None = None,
    tasks: Sequence[str] = TASKS,
    num_train: int = 160,
    num_val: int = 40,
    num_test: int = 200,
    size: int = 64,
    seed: int = 0,
    shots: Sequence[int] = FEWSHOT_SHOTS,
    fewshot_seeds: Sequence[int] = FEWSHOT_SEEDS,
    progress: bool = False,
) -> Path:
    """Write the VTAB-like tasks under ``out`` (default ``outputs/data/vtab-like``); returns the root.

    ``num_train`` / ``num_val`` / ``num_test``: images per split of each task (the benchmark's 800 / 200 / test;
    small by default for the tiny presets). Few-shot lists for every K in ``shots`` that the train split can give
    (K <= num_train / classes) and every seed in ``fewshot_seeds``.
    """
    from rich.progress import track

    root = Path(out).expanduser() if out is not None else data_dir() / "vtab-like"
    for task in tasks:
        class_names(task)
    if min(num_train, num_val, num_test) < 1:
        raise ValueError("ShapesWorld VTAB-like: num_train, num_val and num_test must be >= 1")
    for task in tasks:
        tdir = root / task
        names = class_names(task)
        n_cls = len(names)
        (tdir / "annotations").mkdir(parents=True, exist_ok=True)
        (tdir / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        lines: dict[str, list[tuple[str, int]]] = {}
        for split, n in (("train", num_train), ("val", num_val), ("test", num_test)):
            (tdir / "data" / "images" / split).mkdir(parents=True, exist_ok=True)
            rows = []
            for i in track(range(n), description=f"VTAB-like {task} {split}", disable=not progress,
                           transient=True):
                label = i % n_cls
                img = render_example(task, label, _seed(seed, task, split, i), size)
                rel = f"{split}/{i:06d}.jpg"
                Image.fromarray(img).save(tdir / "data" / "images" / rel, quality=95, subsampling=0)
                rows.append((rel, label))
            lines[split] = rows

        def write(path: Path, rows: list[tuple[str, int]], prefix: str) -> None:
            path.write_text("".join(f"{prefix}{rel} {label}\n" for rel, label in rows))

        write(tdir / "train800.txt", lines["train"], "data/images/")
        write(tdir / "val200.txt", lines["val"], "data/images/")
        write(tdir / "train800val200.txt", lines["train"] + lines["val"], "data/images/")
        write(tdir / "test.txt", lines["test"], "data/images/")
        write(tdir / "annotations" / "val_meta.list", lines["val"], "")
        write(tdir / "annotations" / "test_meta.list", lines["test"], "")
        by_class = [[r for r in lines["train"] if r[1] == c] for c in range(n_cls)]
        for k in shots:
            if k > min(len(b) for b in by_class):
                continue
            for s in fewshot_seeds:
                rng = np.random.default_rng([int(seed), TASKS.index(task), int(k), int(s), 7])
                pick = [b[j] for b in by_class for j in sorted(rng.permutation(len(b))[:k])]
                write(tdir / "annotations" / f"train_meta.list.num_shot_{k}.seed_{s}", pick, "")
    (root / STAMP_NAME).write_text(json.dumps(
        _options(tasks, num_train, num_val, num_test, size, seed, shots, fewshot_seeds), indent=1,
        sort_keys=True) + "\n")
    return root


def written_options(root: str | Path) -> dict[str, Any] | None:
    """The arguments a ShapesWorld VTAB-like folder was written with (None: no stamp, e.g. the real benchmark)."""
    path = Path(root) / STAMP_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def requested_options(**kwargs: Any) -> dict[str, Any]:
    """The stamp :func:`write_vtab_like` would write for these keyword arguments (defaults filled in)."""
    import inspect

    params = inspect.signature(write_vtab_like).parameters
    args = {k: p.default for k, p in params.items() if k not in ("out", "progress")}
    unknown = set(kwargs) - set(args) - {"progress"}
    if unknown:
        raise TypeError(f"unknown ShapesWorld VTAB-like option(s) {sorted(unknown)}; valid: {sorted(args)}")
    args.update({k: v for k, v in kwargs.items() if k != "progress"})
    return _options(**args)


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="dataset root (default: outputs/data/vtab-like)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="tasks to write")
    p.add_argument("--num-train", type=int, default=160, help="train800 images per task (default 160)")
    p.add_argument("--num-val", type=int, default=40, help="val200 images per task (default 40)")
    p.add_argument("--num-test", type=int, default=200, help="test images per task (default 200)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def _run(args: argparse.Namespace) -> int:
    root = write_vtab_like(args.out, tasks=args.tasks, num_train=args.num_train, num_val=args.num_val,
                           num_test=args.num_test, size=args.size, seed=args.seed, progress=args.progress)
    print(f"wrote ShapesWorld VTAB-like tasks {', '.join(args.tasks)} to {root} ({args.num_train} train / "
          f"{args.num_val} val / {args.num_test} test images each, few-shot lists K = 1-16, seeds 0-2)")
    return 0


def cli_commands() -> dict[str, tuple[str, Any, Any]]:
    """The commands this module adds to ``python -m common.data.synth``."""
    return {"vtab-like": (
        "write ShapesWorld VTAB-like classification tasks (shape, colour, count, position, orientation) in the "
        "VTAB-1k list layout (train800/val200/train800val200/test) with few-shot lists", _add_arguments, _run)}
