"""ShapesWorld video datasets in the real on-disk formats of Kinetics-400 and Something-Something-v2.

``python -m common.data.synth kinetics400 --out DIR``: appearance-defined classes, one per (colour, shape) pair
("red circle", "green square", ...), each video one shape of its class making a random motion (plus, sometimes, a
person) over random textured backgrounds. H.264 yuv420p mp4 through PyAV; the official CSV
(``annotations/{train,val}.csv``: label,youtube_id,time_start,time_end,split), ``path label`` lists
(``train.txt``/``val.txt``) and an ``id,name`` class CSV (``labels.csv``); videos at
``{split}/{youtube_id}_{start:06d}_{end:06d}.mp4``. Colour and shape are both needed (classes form a grid).

``python -m common.data.synth ssv2 --out DIR``: motion- and direction-defined classes in opposite pairs (left/right,
up/down, clockwise/anticlockwise, towards/away from the camera), with SSv2-style templates ("Moving [something]
from left to right"); the object's shape and colour are random, so only the motion tells the class (and a
horizontal flip turns one class into its pair). VP9 yuv420p webm through PyAV; the official
``labels/{labels,train,validation}.json``, ``{id}.webm`` in ``20bn-something-something-v2/``, plus
``train.txt``/``val.txt`` lists and ``labels.csv``.

Output is deterministic: the same arguments give byte-identical files (encoders and muxers in bit-exact mode).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.synth import world

__all__ = ["SSV2_CLASSES", "kinetics_classes", "write_kinetics400", "write_ssv2", "write_video", "cli_commands"]

#: (motion, SSv2-style template) in opposite pairs
SSV2_CLASSES: tuple[tuple[str, str], ...] = (
    ("left to right", "Moving [something] from left to right"),
    ("right to left", "Moving [something] from right to left"),
    ("up", "Moving [something] up"),
    ("down", "Moving [something] down"),
    ("rotate clockwise", "Rotating [something] clockwise"),
    ("rotate anticlockwise", "Rotating [something] anticlockwise"),
    ("grow", "Approaching [something] with your camera"),
    ("shrink", "Moving away from [something] with your camera"),
)

_YT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def kinetics_classes(num_classes: int, colours: Sequence[str] | None = None,
                     shapes: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The first ``num_classes`` (colour, shape) classes of a colour x shape grid (both needed to tell them apart),
    over ``colours`` and ``shapes`` in that order (default: every colour, :data:`~common.data.synth.world.BASE_SHAPES`;
    give others for a class set disjoint from the default one, e.g. a cross-dataset zero-shot target)."""
    shapes = list(world.BASE_SHAPES if shapes is None else shapes)
    colours = list(world.COLOURS if colours is None else colours)
    unknown = [c for c in colours if c not in world.COLOURS] + [x for x in shapes if x not in world.SHAPES]
    if unknown:
        raise ValueError(f"unknown colours/shapes {unknown}; known colours {list(world.COLOURS)}, shapes "
                         f"{list(world.SHAPES)}")
    if not 2 <= num_classes <= len(shapes) * len(colours):
        raise ValueError(f"num_classes must be in 2..{len(shapes) * len(colours)}, got {num_classes}")
    n_shapes = min(len(shapes), math.ceil(math.sqrt(num_classes)))
    n_colours = math.ceil(num_classes / n_shapes)
    grid = [(c, s) for c in colours[:n_colours] for s in shapes[:n_shapes]]
    return grid[:num_classes]


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int, codec: str) -> None:
    """Encode uint8 RGB frames to ``path``: ``h264`` (mp4, libx264 crf 18) or ``vp9`` (webm, libvpx-vp9 crf 20)."""
    import av

    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {w}x{h}")
    if codec == "h264":
        fmt, lib, opts = "mp4", "libx264", {"crf": "18", "preset": "veryfast"}
    elif codec == "vp9":
        fmt, lib, opts = "webm", "libvpx-vp9", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    else:
        raise ValueError(f"codec must be h264 or vp9, got {codec!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(lib, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = opts
        stream.codec_context.thread_count = 1
        try:
            stream.codec_context.open()
        except av.error.ArgumentError as err:
            raise RuntimeError(
                f"{lib} refused to open ({err}). If decord was imported before PyAV in this process, its bundled "
                "libvpx shadows PyAV's: import av (or common.data.video) before decord."
            ) from err
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _frame_size(size: int, width: int | None) -> tuple[int, int]:
    w = width if width else int(round(size * 4 / 3))
    w += w % 2
    if size % 2 or size < 16:
        raise ValueError(f"--size must be even and >= 16, got {size}")
    return size, w


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _progress(description: str, enabled: bool):  # noqa: ANN202 - rich's Progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_kinetics400(
    out: str | Path,
    num_classes: int = 12,
    num_per_class: int = 24,
    val_per_class: int = 8,
    frames: int = 16,
    size: int = 64,
    width: int | None = None,
    fps: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    colours: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
) -> Path:
    """Write the Kinetics-400-format ShapesWorld dataset (see the module docstring); returns ``out``.

    ``colours`` / ``shapes``: the grid the classes come from (:func:`kinetics_classes`); e.g. colours and shapes
    the default set never uses give a held-out class set for cross-dataset zero-shot."""
    out = Path(out)
    classes = kinetics_classes(num_classes, colours, shapes)
    _prepare_out(out, overwrite)
    names = [f"{c} {s}" for c, s in classes]
    order = sorted(range(num_classes), key=lambda i: names[i])  # official class index = sorted label names
    class_id = {names[i]: k for k, i in enumerate(order)}
    h, w = _frame_size(size, width)
    jobs = [(split, ci, k) for split, n in (("train", num_per_class), ("val", val_per_class))
            for ci in range(num_classes) for k in range(n)]
    used: set[str] = set()
    rows: dict[str, list[list[Any]]] = {"train": [], "val": []}
    lists: dict[str, list[str]] = {"train": [], "val": []}
    with _progress("kinetics400", progress) as bar:
        task = bar.add_task("videos", total=len(jobs))
        for split, ci, k in jobs:
            rng = np.random.default_rng(_seed(seed, 400, ci, k, int(split == "val")))
            yid = "".join(_YT_ALPHABET[i] for i in rng.integers(len(_YT_ALPHABET), size=11))
            while yid in used:
                yid = "".join(_YT_ALPHABET[i] for i in rng.integers(len(_YT_ALPHABET), size=11))
            used.add(yid)
            start = int(rng.integers(0, 300))
            end = start + 10
            colour, shape = classes[ci]
            spec = world.sample_scene(rng, num_objects=(1, 1), person_prob=0.2, shapes=[shape], colours=[colour],
                                      exclude_combos=(), motions=world.MOTIONS)
            video = [s.image for s in world.render_video(spec, frames, (h, w))]
            rel = f"{split}/{yid}_{start:06d}_{end:06d}.mp4"
            write_video(out / rel, video, fps, "h264")
            rows[split].append([names[ci], yid, start, end, split])
            lists[split].append(f"{rel} {class_id[names[ci]]}")
            bar.advance(task)
    for split in ("train", "val"):
        _write_csv(out / "annotations" / f"{split}.csv", ["label", "youtube_id", "time_start", "time_end", "split"],
                   rows[split])
        (out / f"{split}.txt").write_text("\n".join(lists[split]) + "\n", encoding="utf-8")
    _write_csv(out / "labels.csv", ["id", "name"], [[class_id[n], n] for n in sorted(names)])
    return out


def write_ssv2(
    out: str | Path,
    num_per_class: int = 24,
    val_per_class: int = 8,
    frames: int = 16,
    size: int = 64,
    width: int | None = None,
    fps: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the Something-Something-v2-format ShapesWorld dataset (see the module docstring); returns ``out``."""
    out = Path(out)
    _prepare_out(out, overwrite)
    labels = {template: _template_label(template) for _, template in SSV2_CLASSES}
    ids = {labels[t]: i for i, t in enumerate(sorted(labels, key=lambda t: labels[t]))}
    h, w = _frame_size(size, width)
    jobs = [(split, ci, k) for split, n in (("train", num_per_class), ("val", val_per_class))
            for ci in range(len(SSV2_CLASSES)) for k in range(n)]
    video_ids = np.random.default_rng(_seed(seed, 174)).permutation(len(jobs) * 7)[: len(jobs)] + 1
    entries: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    lists: dict[str, list[str]] = {"train": [], "val": []}
    shapes_any = list(world.SHAPES)
    shapes_rot = [s for s in world.SHAPES if s not in world.ROTATION_INVARIANT_SHAPES]
    with _progress("ssv2", progress) as bar:
        task = bar.add_task("videos", total=len(jobs))
        for (split, ci, k), vid in zip(jobs, video_ids):
            motion, template = SSV2_CLASSES[ci]
            rng = np.random.default_rng(_seed(seed, 174, ci, k, int(split == "val")))
            spec = world.sample_scene(rng, num_objects=(1, 1), person_prob=0.0,
                                      shapes=shapes_rot if motion.startswith("rotate") else shapes_any,
                                      exclude_combos=(), motions=[motion])
            obj = spec.objects[0]
            thing = f"{obj.colour} {obj.shape}"
            video = [s.image for s in world.render_video(spec, frames, (h, w))]
            write_video(out / "20bn-something-something-v2" / f"{vid}.webm", video, fps, "vp9")
            entries[split].append({
                "id": str(int(vid)),
                "label": template.replace("[something]", thing).lower(),
                "template": template,
                "placeholders": [thing],
            })
            lists[split].append(f"{int(vid)}.webm {ids[labels[template]]}")
            bar.advance(task)
    ann = out / "labels"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "labels.json").write_text(json.dumps({n: str(i) for n, i in sorted(ids.items(), key=lambda x: x[1])},
                                                indent=1) + "\n", encoding="utf-8")
    (ann / "train.json").write_text(json.dumps(entries["train"], indent=1) + "\n", encoding="utf-8")
    (ann / "validation.json").write_text(json.dumps(entries["val"], indent=1) + "\n", encoding="utf-8")
    for split in ("train", "val"):
        (out / f"{split}.txt").write_text("\n".join(lists[split]) + "\n", encoding="utf-8")
    _write_csv(out / "labels.csv", ["id", "name"], [[i, n] for n, i in sorted(ids.items(), key=lambda x: x[1])])
    return out


def _template_label(template: str) -> str:
    return template.replace("[", "").replace("]", "")


# -- command line ----------------------------------------------------------------------------------------------------
def _common_args(p: argparse.ArgumentParser, name: str) -> None:
    from common.paths import data_dir

    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: outputs/data/{name})")
    p.add_argument("--num-per-class", type=int, default=24, help="training videos per class (default 24)")
    p.add_argument("--val-per-class", type=int, default=8, help="validation videos per class (default 8)")
    p.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--size", type=int, default=64, help="frame height in pixels, even (default 64)")
    p.add_argument("--width", type=int, default=None, help="frame width (default: 4/3 of the height, even)")
    p.add_argument("--fps", type=int, default=8, help="frame rate written in the container (default 8)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same seed -> same bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(_default_out=data_dir() / name)


def _add_k400(p: argparse.ArgumentParser) -> None:
    _common_args(p, "kinetics400")
    p.add_argument("--num-classes", type=int, default=12, help="(colour, shape) classes (default 12: 3 x 4 grid)")
    p.add_argument("--colours", default=None,
                   help="comma-separated colours of the class grid, in order (default: all, red first)")
    p.add_argument("--shapes", default=None,
                   help="comma-separated shapes of the class grid (default: the base shapes, circle first); other "
                        "colours and shapes than the default set's give a held-out class set")


def _run_k400(args: argparse.Namespace) -> int:
    out = write_kinetics400(args.out or args._default_out, num_classes=args.num_classes,
                            num_per_class=args.num_per_class, val_per_class=args.val_per_class, frames=args.frames,
                            size=args.size, width=args.width, fps=args.fps, seed=args.seed,
                            overwrite=args.overwrite, colours=_names(args.colours), shapes=_names(args.shapes))
    print(f"wrote Kinetics-400-format ShapesWorld videos to {out}")
    return 0


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _add_ssv2(p: argparse.ArgumentParser) -> None:
    _common_args(p, "ssv2")


def _run_ssv2(args: argparse.Namespace) -> int:
    out = write_ssv2(args.out or args._default_out, num_per_class=args.num_per_class,
                     val_per_class=args.val_per_class, frames=args.frames, size=args.size, width=args.width,
                     fps=args.fps, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote Something-Something-v2-format ShapesWorld videos to {out}")
    return 0


def cli_commands() -> dict[str, tuple[str, Any, Any]]:
    """The commands this module adds to ``python -m common.data.synth``."""
    return {
        "kinetics400": (
            "write ShapesWorld videos as Kinetics-400 (mp4 H.264; official CSV, path-label lists, id,name classes; "
            "classes defined by colour and shape)",
            _add_k400,
            _run_k400,
        ),
        "ssv2": (
            "write ShapesWorld videos as Something-Something-v2 (webm VP9; official labels/train/validation JSON; "
            "classes defined by motion and direction, in left/right pairs)",
            _add_ssv2,
            _run_ssv2,
        ),
    }
