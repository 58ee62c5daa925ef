"""ShapesWorld vocabulary: the shapes, colours, stuff classes, person parts and motions, the panoptic categories, and
what a motion does over time (:func:`motion_at`). Part of :mod:`common.data.synth.world` (import from there)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------------

#: shape kinds (thing classes), all renderable
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "diamond",
    "cross",
    "heart",
    "crescent",
    "ring",
)

#: named colours (RGB, 0-255), chosen to be far apart and distinct from the stuff textures
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (30, 205, 75),
    "blue": (35, 75, 230),
    "yellow": (245, 225, 30),
    "orange": (250, 135, 20),
    "purple": (145, 55, 200),
    "pink": (255, 125, 200),
    "cyan": (30, 220, 230),
    "white": (250, 250, 250),
    "black": (25, 25, 25),
}

#: textured background ("stuff") region classes
STUFF: tuple[str, ...] = ("sky", "grass", "water", "wall", "sand", "floor")

#: person part names; the index is the part id in :attr:`Scene.parts` (0 = background / not a person)
PART_NAMES: tuple[str, ...] = (
    "background",
    "head",
    "torso",
    "upper arm",
    "lower arm and hand",
    "upper leg",
    "lower leg and foot",
)

#: motions a shape or the person can make over a video (t from 0 to 1)
MOTIONS: tuple[str, ...] = (
    "left to right",
    "right to left",
    "up",
    "down",
    "rotate clockwise",
    "rotate anticlockwise",
    "grow",
    "shrink",
    "static",
)

#: shape names held out of the *downstream* training sets for open-vocabulary / zero-shot class checks. They are
#: part of :data:`SHAPES` (the pretrained tiny CLIP has seen their names, as a web-scale CLIP has seen most words);
#: a writer making an open-vocabulary split trains on :data:`BASE_SHAPES` and evaluates on all of :data:`SHAPES`.
NOVEL_SHAPES: tuple[str, ...] = ("heart", "crescent")

#: shapes that are not novel
BASE_SHAPES: tuple[str, ...] = tuple(s for s in SHAPES if s not in NOVEL_SHAPES)

#: (colour, shape) pairs that never appear in a pretraining caption: the zero-shot compositional check
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("blue", "triangle"),
        ("green", "circle"),
        ("yellow", "square"),
        ("purple", "hexagon"),
    }
)

#: shapes whose rotation is invisible; :func:`sample_scene` does not give them a rotation motion
ROTATION_INVARIANT_SHAPES: tuple[str, ...] = ("circle", "ring")

#: how each motion reads in a caption (static says nothing)
MOTION_PHRASES: dict[str, str] = {
    "left to right": "moving left to right",
    "right to left": "moving right to left",
    "up": "moving up",
    "down": "moving down",
    "rotate clockwise": "rotating clockwise",
    "rotate anticlockwise": "rotating anticlockwise",
    "grow": "growing",
    "shrink": "shrinking",
    "static": "",
}

# motion magnitudes over t in [0, 1]
MOTION_SHIFT = 0.3  # fraction of the image width / height
MOTION_TURN = 90.0  # degrees
MOTION_GROW = 1.6  # final scale of "grow"
MOTION_SHRINK = 0.6  # final scale of "shrink"


@dataclass(frozen=True)
class Category:
    """One semantic class: its index in :data:`CATEGORIES`, its name, and whether it is a countable thing."""

    id: int
    name: str
    isthing: bool


#: stuff classes, then thing classes (the shapes, then "person"); the semantic map indexes this tuple
CATEGORIES: tuple[Category, ...] = tuple(
    Category(i, name, isthing)
    for i, (name, isthing) in enumerate(
        [(s, False) for s in STUFF] + [(s, True) for s in SHAPES] + [("person", True)]
    )
)

#: category name -> id
CATEGORY_IDS: dict[str, int] = {c.name: c.id for c in CATEGORIES}

#: id of the "person" category
PERSON_CATEGORY_ID: int = CATEGORY_IDS["person"]



# --------------------------------------------------------------------------------------------------------------------
# Names and motions
# --------------------------------------------------------------------------------------------------------------------


def check_names(kind: str, names: Collection[str], known: Collection[str]) -> None:
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"ShapesWorld: unknown {kind} {bad}; known {kind}s are {sorted(known)}")


def motion_extent(motion: str) -> tuple[float, float, float, float, float]:
    """(dx_min, dx_max, dy_min, dy_max, max_scale) of the centre displacement and scale over t in [0, 1]."""
    dx = {"left to right": (0.0, MOTION_SHIFT), "right to left": (-MOTION_SHIFT, 0.0)}.get(motion, (0.0, 0.0))
    dy = {"up": (-MOTION_SHIFT, 0.0), "down": (0.0, MOTION_SHIFT)}.get(motion, (0.0, 0.0))
    scale = MOTION_GROW if motion == "grow" else 1.0
    return dx[0], dx[1], dy[0], dy[1], scale


def motion_at(motion: str, t: float) -> tuple[float, float, float, float]:
    """(dx, dy, dangle, scale) of a motion at time t."""
    dx = dy = dang = 0.0
    scale = 1.0
    if motion == "left to right":
        dx = MOTION_SHIFT * t
    elif motion == "right to left":
        dx = -MOTION_SHIFT * t
    elif motion == "up":
        dy = -MOTION_SHIFT * t
    elif motion == "down":
        dy = MOTION_SHIFT * t
    elif motion == "rotate clockwise":
        dang = -MOTION_TURN * t
    elif motion == "rotate anticlockwise":
        dang = MOTION_TURN * t
    elif motion == "grow":
        scale = 1.0 + (MOTION_GROW - 1.0) * t
    elif motion == "shrink":
        scale = 1.0 + (MOTION_SHRINK - 1.0) * t
    elif motion != "static":
        raise ValueError(f"ShapesWorld: unknown motion {motion!r}; known motions are {list(MOTIONS)}")
    return dx, dy, dang, scale
