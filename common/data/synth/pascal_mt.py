"""ShapesWorld scenes written as PASCAL-Context multi-task (the PASCAL_MT layout), `pascal-context` command.

``python -m common.data.synth pascal-context --out DIR [--num-train N --num-val N --seed S --size PX]`` writes::

    DIR/JPEGImages/{id}.jpg                 the rendered image
    DIR/ImageSets/Context/{train,val}.txt   image ids
    DIR/semseg/pascal-context/{id}.png      21-class map (see the mapping below), grey-level PNG
    DIR/pascal-context/trainval/{id}.mat    ``LabelMap``: the same scene in PASCAL-Context's 459-class ids
    DIR/human_parts/{id}.mat                PASCAL-Part ``anno`` struct: ``imname`` and ``objects`` (one per visible
                                            thing: ``class``, ``class_ind``, ``mask``, ``parts``); the person has
                                            ``class_ind`` 15 and named parts (``part_name``, ``mask``)
    DIR/normals_distill/{id}.png            RGB, ``round((n + 1) / 2 * 255)`` of the rendered unit normals
    DIR/sal_distill/{id}.png                saliency 0 / 255 (shapes and the person)
    DIR/class_names.txt                     the 21 semseg class names below (the real archive has none)
    DIR/shapesworld.json                    the writer's arguments (num_train, num_val, seed, size, person_prob,
                                            num_objects; shapes and object_scale when not the default): a
                                            datamodule asked for other ones refuses this folder

Class mapping into the 21-class space (PASCAL-Context multi-task keeps VOC's 20 thing classes, every "stuff"
region is background):

* every stuff class (sky, grass, water, wall, sand, floor) -> 0 ``background``
* ``person`` -> 15 (VOC's person, so the human-part annotations use the real person class)
* the shapes, in :data:`~common.data.synth.world.SHAPES` order, take the VOC slots 2, 5, 7, 8, 9, 11, 12, 18, 20,
  1, 3, 4, ... (the slots whose PASCAL-Context class is NYU-compatible first, so that the first nine shapes get
  valid normals as the real data's chairs and tables do). With today's shapes: circle 2, square 5, triangle 7,
  star 8, hexagon 9, diamond 11, cross 12, heart 18, crescent 20, ring 1. Unused slots are named ``unused``.

``LabelMap`` ids: stuff by name (sky 360, grass 187, water 445, wall 440, sand 334, floor 158: wall and floor are
NYU-compatible, so normals are valid there; sky / grass / water / sand are not), things by the Context id of their
VOC slot (person 284).

Person parts: the renderer's six groups are written with PASCAL-Part names, split left / right by the side of the
person's vertical centre line (a person facing the viewer has their right on the image's left): ``head``,
``torso``, ``ruarm``/``luarm``, ``rlarm``/``llarm``, ``ruleg``/``luleg``, ``rlleg``/``llleg``.

Output is deterministic: the same arguments give byte-identical files (the .mat headers carry no timestamp).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from common.data.synth import world
from common.paths import data_dir

__all__ = [
    "SHAPE_SLOTS",
    "STUFF_CONTEXT_IDS",
    "semseg_class_names",
    "semseg_lut",
    "context_lut",
    "part_name_map",
    "image_id",
    "render_sample",
    "write_sample",
    "write_pascal_mt",
    "written_options",
    "requested_options",
    "STAMP_NAME",
    "cli_commands",
]

# Facts of the benchmark, repeated from common.data.pascal_context so that this writer does not import Lightning
# (tests check that the two agree).
NUM_SEMSEG_CLASSES = 21
PERSON_CLASS = 15
#: VOC class index (0..20) -> PASCAL-Context (459-class) id
VOC_TO_CONTEXT_ID: tuple[int, ...] = (
    0, 2, 23, 25, 31, 34, 45, 59, 65, 72, 98, 397, 113, 207, 258, 284, 308, 347, 368, 416, 427,
)  # fmt: skip

#: VOC slots for shapes: NYU-compatible Context classes first (bicycle, bottle, car, cat, chair, diningtable, dog,
#: sofa, tvmonitor), then the others; 15 (person) is never given to a shape
_SLOT_ORDER: tuple[int, ...] = (2, 5, 7, 8, 9, 11, 12, 18, 20, 1, 3, 4, 6, 10, 13, 14, 16, 17, 19)
if len(world.SHAPES) > len(_SLOT_ORDER):
    raise ImportError(
        f"ShapesWorld has {len(world.SHAPES)} shapes; the 21-class PASCAL space holds {len(_SLOT_ORDER)}"
    )

#: shape name -> semseg class (VOC slot)
SHAPE_SLOTS: dict[str, int] = dict(zip(world.SHAPES, _SLOT_ORDER, strict=False))

#: stuff name -> PASCAL-Context (459-class) id of the same name
STUFF_CONTEXT_IDS: dict[str, int] = {
    "sky": 360,
    "grass": 187,
    "water": 445,
    "wall": 440,
    "sand": 334,
    "floor": 158,
}

#: the file in which write_pascal_mt records its arguments
STAMP_NAME = "shapesworld.json"

_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by cvinw ShapesWorld (common.data.synth.pascal_mt)"

_PART_BASE = {1: "head", 2: "torso", 3: "uarm", 4: "larm", 5: "uleg", 6: "lleg"}


def semseg_class_names() -> tuple[str, ...]:
    """The 21 class names of the ShapesWorld semseg space (index = class id)."""
    names = ["unused"] * NUM_SEMSEG_CLASSES
    names[0] = "background"
    names[PERSON_CLASS] = "person"
    for shape, slot in SHAPE_SLOTS.items():
        names[slot] = shape
    return tuple(names)


def semseg_lut() -> np.ndarray:
    """ShapesWorld category id -> semseg class id (uint8 lookup table over :data:`world.CATEGORIES`)."""
    lut = np.zeros(len(world.CATEGORIES), dtype=np.uint8)
    for c in world.CATEGORIES:
        if c.name == "person":
            lut[c.id] = PERSON_CLASS
        elif c.isthing:
            lut[c.id] = SHAPE_SLOTS[c.name]
    return lut


def context_lut() -> np.ndarray:
    """ShapesWorld category id -> PASCAL-Context 459-class id (uint16 lookup table)."""
    lut = np.zeros(len(world.CATEGORIES), dtype=np.uint16)
    sem = semseg_lut()
    for c in world.CATEGORIES:
        if c.isthing:
            lut[c.id] = VOC_TO_CONTEXT_ID[int(sem[c.id])]
        elif c.name in STUFF_CONTEXT_IDS:
            lut[c.id] = STUFF_CONTEXT_IDS[c.name]
        else:
            raise ValueError(
                f"no PASCAL-Context id for ShapesWorld stuff class {c.name!r}; add it to STUFF_CONTEXT_IDS"
            )
    return lut


def part_name_map(part_group: int, on_image_left: bool) -> str:
    """PASCAL-Part name for a renderer part group; limbs get ``r`` on the image's left (the person's right)."""
    base = _PART_BASE[part_group]
    if part_group <= 2:
        return base
    return ("r" if on_image_left else "l") + base


def _mat_bytes(data: dict[str, Any]) -> bytes:
    """A MAT-5 file whose 116-byte text header is fixed (scipy writes a timestamp there)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, data, do_compression=True)
    raw = bytearray(buf.getvalue())
    raw[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(raw)


_PART_DT = [("part_name", "O"), ("mask", "O")]
_OBJ_DT = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
_ANNO_DT = [("imname", "O"), ("objects", "O")]


def human_parts_anno(scene: world.Scene, im_id: str) -> np.ndarray:
    """The PASCAL-Part ``anno`` struct (1x1 record array) of a rendered scene: one object per visible thing."""
    sem = semseg_lut()
    things = [inst for inst in scene.instances if inst.isthing]
    objects = np.zeros((1, len(things)), dtype=_OBJ_DT)
    for k, inst in enumerate(things):
        mask = (scene.instance == inst.id).astype(np.uint8)
        cls = int(sem[world.CATEGORY_IDS[inst.category]])
        parts: np.ndarray = np.zeros((0, 0))
        if inst.category == "person":
            cols = np.nonzero(mask)[1]
            centre = float(cols.mean()) if cols.size else 0.0
            entries: list[tuple[str, np.ndarray]] = []
            left = np.arange(mask.shape[1])[None, :] < centre
            for group in range(1, 7):
                g = (scene.parts == group) & mask.astype(bool)
                if not g.any():
                    continue
                if group <= 2:
                    entries.append((part_name_map(group, False), g.astype(np.uint8)))
                else:
                    for side in (True, False):
                        m = g & (left if side else ~left)
                        if m.any():
                            entries.append((part_name_map(group, side), m.astype(np.uint8)))
            parts = np.zeros((1, len(entries)), dtype=_PART_DT)
            for j, (name, m) in enumerate(entries):
                parts[0, j] = (name, m)
        objects[0, k] = (inst.category, np.array([[float(cls)]]), mask, parts)
    anno = np.zeros((1, 1), dtype=_ANNO_DT)
    anno[0, 0] = (im_id, objects)
    return anno


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) of an image size given as an int (square) or a pair."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _scene_seed(seed: int, split: str, index: int) -> int:
    split_key = {"train": 0, "val": 1}.get(split, 2)
    return int(np.random.SeedSequence([int(seed), split_key, int(index)]).generate_state(1)[0])


def image_id(split: str, index: int) -> str:
    # PASCAL-style ids (year_number); the year tells the split apart
    return f"{2008 if split == 'train' else 2010}_{index:06d}"


def render_sample(
    seed: int,
    split: str,
    index: int,
    size: int | Sequence[int] = 64,
    person_prob: float = 0.5,
    num_objects: Sequence[int] = (1, 3),
    shapes: Sequence[str] | None = None,
    object_scale: float = 1.0,
) -> world.Scene:
    """The ShapesWorld scene of image ``index`` of ``split`` (a pure function of the arguments); ``shapes``: the shape
    kinds drawn (None: all of :data:`world.SHAPES`); ``object_scale`` multiplies the shapes' sizes."""
    size_hw = _size_hw(size)
    spec = world.sample_scene(
        _scene_seed(seed, split, index),
        num_objects=tuple(num_objects),
        person_prob=person_prob,
        shapes=world.SHAPES if shapes is None else tuple(shapes),
        exclude_combos=(),
        object_scale=object_scale,
    )
    return world.render_scene(spec, size_hw)


def write_sample(out: Path, im_id: str, scene: world.Scene) -> None:
    """Write one rendered scene in every PASCAL_MT folder under ``out``."""
    Image.fromarray(scene.image).save(out / "JPEGImages" / f"{im_id}.jpg", quality=95, subsampling=0)
    sem = semseg_lut()[scene.semantic.astype(np.int64)]
    Image.fromarray(sem).save(out / "semseg" / "pascal-context" / f"{im_id}.png")
    labelmap = context_lut()[scene.semantic.astype(np.int64)]
    (out / "pascal-context" / "trainval" / f"{im_id}.mat").write_bytes(_mat_bytes({"LabelMap": labelmap}))
    anno = human_parts_anno(scene, im_id)
    (out / "human_parts" / f"{im_id}.mat").write_bytes(_mat_bytes({"anno": anno}))
    nrm = np.clip(np.rint((scene.normals.astype(np.float64) + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(nrm).save(out / "normals_distill" / f"{im_id}.png")
    Image.fromarray((scene.saliency > 0).astype(np.uint8) * 255).save(out / "sal_distill" / f"{im_id}.png")


def write_pascal_mt(
    out: str | Path | None = None,
    num_train: int = 200,
    num_val: int = 100,
    seed: int = 0,
    size: int | Sequence[int] = 64,
    person_prob: float = 0.5,
    num_objects: Sequence[int] = (1, 3),
    progress: bool = True,
    shapes: Sequence[str] | None = None,
    object_scale: float = 1.0,
) -> dict[str, Any]:
    """Render ShapesWorld scenes into the PASCAL_MT layout under ``out`` (default ``outputs/data/pascal-context``).

    Args:
        out: the dataset root to write (created; existing files of the same names are overwritten).
        num_train / num_val: number of images per split.
        seed: master seed; each image's scene is a pure function of (seed, split, index).
        size: image size, an int (square) or (H, W).
        person_prob: probability that a scene holds a person (human-part annotations).
        num_objects: inclusive range of the number of shapes per scene.
        progress: show a progress bar.
        shapes: the shape kinds drawn (None: all of ``world.SHAPES``); fewer kinds give fewer semseg classes in the
            data (the 21-class space and the class slots stay the same).
        object_scale: multiplies every shape's size (1.0: ShapesWorld's default sizes); larger semantic regions.

    Returns:
        a summary: ``root``, ``num_train``, ``num_val``, ``with_person`` (per split), ``class_names``.
    """
    from rich.progress import track

    root = Path(out).expanduser() if out is not None else data_dir() / "pascal-context"
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train / num_val must be >= 0, got {num_train} / {num_val}")
    size_hw = _size_hw(size)
    for folder in (
        "JPEGImages", "ImageSets/Context", "semseg/pascal-context", "pascal-context/trainval", "human_parts",
        "normals_distill", "sal_distill",
    ):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "root": str(root),
        "num_train": num_train,
        "num_val": num_val,
        "with_person": {},
    }
    for split, n in (("train", num_train), ("val", num_val)):
        ids = []
        people = 0
        for i in track(range(n), description=f"PASCAL-Context {split}", disable=not progress, transient=True):
            im_id = image_id(split, i)
            scene = render_sample(seed, split, i, size_hw, person_prob, num_objects, shapes, object_scale)
            write_sample(root, im_id, scene)
            people += int(scene.has_person)
            ids.append(im_id)
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        summary["with_person"][split] = people
    names = semseg_class_names()
    (root / "class_names.txt").write_text("".join(f"{n}\n" for n in names))
    summary["class_names"] = list(names)
    (root / STAMP_NAME).write_text(json.dumps(
        _options(num_train, num_val, seed, size_hw, person_prob, num_objects, shapes, object_scale), indent=1, sort_keys=True)
        + "\n")
    return summary


def _options(num_train: int, num_val: int, seed: int, size_hw: Sequence[int], person_prob: float,
             num_objects: Sequence[int], shapes: Sequence[str] | None = None, object_scale: float = 1.0
             ) -> dict[str, Any]:
    out = {"num_train": int(num_train), "num_val": int(num_val), "seed": int(seed),
           "size": [int(size_hw[0]), int(size_hw[1])], "person_prob": float(person_prob),
           "num_objects": [int(num_objects[0]), int(num_objects[1])]}
    # stamped only when not the default, so that folders written before these options keep their stamp
    if shapes is not None:
        out["shapes"] = [str(s) for s in shapes]
    if float(object_scale) != 1.0:
        out["object_scale"] = float(object_scale)
    return out


def written_options(root: str | Path) -> dict[str, Any] | None:
    """The arguments a ShapesWorld PASCAL_MT folder was written with (None: no stamp, e.g. the real dataset)."""
    path = Path(root) / STAMP_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def requested_options(**kwargs: Any) -> dict[str, Any]:
    """The stamp that :func:`write_pascal_mt` would write for these keyword arguments (defaults filled in)."""
    import inspect

    params = inspect.signature(write_pascal_mt).parameters
    args = {k: p.default for k, p in params.items() if k not in ("out", "progress")}
    unknown = set(kwargs) - set(args) - {"progress"}
    if unknown:
        raise TypeError(f"unknown ShapesWorld PASCAL_MT option(s) {sorted(unknown)}; valid: {sorted(args)}")
    args.update({k: v for k, v in kwargs.items() if k != "progress"})
    return _options(args["num_train"], args["num_val"], args["seed"], _size_hw(args["size"]), args["person_prob"],
                    args["num_objects"], args["shapes"], args["object_scale"])


def stand_in_root(synth_options: dict[str, Any] | None = None) -> Path:
    """The default folder of the ShapesWorld PASCAL_MT written with ``synth_options``: ``outputs/data/pascal-context``
    for the writer's defaults, ``outputs/data/pascal-context-<8 hex of the options stamp>`` otherwise, so that a
    preset with another world (e.g. Polyhistor's 96 px tiny world) never meets a folder written for another one."""
    import hashlib

    want = requested_options(**(synth_options or {}))
    if want == requested_options():
        return data_dir() / "pascal-context"
    digest = hashlib.sha256(json.dumps(want, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return data_dir() / f"pascal-context-{digest}"


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, default=None, help="dataset root (default: outputs/data/pascal-context)"
    )
    p.add_argument("--num-train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--num-val", type=int, default=100, help="validation images (default 100)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument(
        "--size", type=int, nargs="+", default=[64], metavar="PX", help="image size: S or H W (default 64)"
    )
    p.add_argument(
        "--person-prob", type=float, default=0.5, help="probability of a person per scene (default 0.5)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    if len(args.size) not in (1, 2):
        raise SystemExit("--size takes one value (square) or two (H W)")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    s = write_pascal_mt(
        args.out,
        args.num_train,
        args.num_val,
        args.seed,
        size,
        args.person_prob,
        progress=not args.no_progress,
    )
    print(
        f"wrote PASCAL-Context multi-task (ShapesWorld) to {s['root']}: {s['num_train']} train / {s['num_val']} val "
        f"images ({s['with_person']['train']} / {s['with_person']['val']} with a person)"
    )
    return 0


def cli_commands() -> dict[str, tuple[str, Any, Any]]:
    """The commands this module adds to ``python -m common.data.synth``."""
    return {
        "pascal-context": (
            "write ShapesWorld scenes as PASCAL-Context multi-task (PASCAL_MT layout: JPEGImages, ImageSets/Context, "
            "semseg, human_parts .mat, normals_distill, sal_distill)",
            _add_arguments,
            _run,
        )
    }
