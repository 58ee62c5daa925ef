"""ShapesWorld scene specs (what is where, which motion each thing makes), their random sampling and their captions.
Part of :mod:`common.data.synth.world` (import from there)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from common.data.synth.vocabulary import (
    COLOURS,
    HELD_OUT_COMBOS,
    MOTION_GROW,
    MOTION_PHRASES,
    MOTIONS,
    ROTATION_INVARIANT_SHAPES,
    SHAPES,
    STUFF,
    check_names,
    motion_extent,
)

# --------------------------------------------------------------------------------------------------------------------
# Specs and rendered scenes
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ObjectSpec:
    """One shape: kind, colour, centre (fractions of width / height at t=0), diameter (fraction of the short side),
    angle (degrees, anticlockwise) and the motion it makes over a video."""

    shape: str
    colour: str
    x: float
    y: float
    size: float
    angle: float = 0.0
    motion: str = "static"


@dataclass
class PersonSpec:
    """The stick-figure person: centre (fractions at t=0), height (fraction of the short side), clothes colour, motion."""

    x: float
    y: float
    size: float
    colour: str
    motion: str = "static"


@dataclass
class SceneSpec:
    """A full scene: 1-3 stuff regions (top to bottom), the shapes (drawn in order), an optional person (drawn last,
    in front), and the seed of every random detail of the rendering (textures, region borders, shading jitter)."""

    stuff: tuple[str, ...]
    objects: list[ObjectSpec]
    person: PersonSpec | None
    seed: int


@dataclass
class InstanceInfo:
    """One segment of :attr:`Scene.instance`.

    Ids are stable across the frames of a video: object ``i`` has id ``i + 1``, the person ``len(objects) + 1``, and
    the stuff classes follow in order of first appearance. Segments with no visible pixel are left out.
    ``bbox`` is (x, y, w, h) in pixels; ``colour`` is None for stuff.
    """

    id: int
    category: str
    isthing: bool
    colour: str | None
    bbox: tuple[int, int, int, int]
    area: int


@dataclass
class Scene:
    """A rendered scene. Every map is aligned with ``image`` (H, W).

    ``instance`` gives every pixel an id (things and stuff), so 0 never appears in a full render.
    ``saliency`` is 1 exactly on the pixels of thing classes (shapes and the person).
    """

    image: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    instances: list[InstanceInfo]
    parts: np.ndarray
    has_person: bool
    height: np.ndarray
    normals: np.ndarray
    saliency: np.ndarray
    caption: str
    t: float = 0.0
    spec: SceneSpec | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------------


def _place(rng: np.random.Generator, half_w: float, half_h: float, motion: str) -> tuple[float, float]:
    """A start centre such that the thing (half extents in image fractions at scale 1) stays in frame all video."""
    dx0, dx1, dy0, dy1, scale = motion_extent(motion)
    hw, hh = half_w * scale, half_h * scale
    lo_x, hi_x = hw - dx0, 1.0 - hw - dx1
    lo_y, hi_y = hh - dy0, 1.0 - hh - dy1
    x = rng.uniform(lo_x, hi_x) if hi_x > lo_x else 0.5 - (dx0 + dx1) / 2
    y = rng.uniform(lo_y, hi_y) if hi_y > lo_y else 0.5 - (dy0 + dy1) / 2
    return float(x), float(y)


def sample_scene(
    seed: int | np.random.Generator,
    *,
    num_objects: tuple[int, int] = (1, 3),
    person_prob: float = 0.3,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] | None = None,
    exclude_combos: Collection[tuple[str, str]] = HELD_OUT_COMBOS,
    motions: Sequence[str] | None = None,
    object_scale: float = 1.0,
) -> SceneSpec:
    """Draw a random scene.

    Args:
        seed: an int (the scene is a pure function of it) or a numpy Generator (advanced by the call).
        num_objects: inclusive range of the number of shapes (may be 0 when a person is drawn).
        person_prob: probability that the scene has a person.
        shapes: the shape kinds to draw from.
        colours: the colour names to draw from (None = all of :data:`COLOURS`).
        exclude_combos: (colour, shape) pairs never drawn (default: :data:`HELD_OUT_COMBOS`; pass ``()`` to allow all).
        motions: motions to draw from for each thing (None = all static). Rotations are not given to circles / rings
            when another motion is allowed.
        object_scale: multiplies every shape's size (1.0: the default sizes; the random draws do not change, so a
            seed gives the same scene with its shapes scaled).

    Returns:
        a :class:`SceneSpec` whose ``seed`` drives the textures of the rendering.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    shapes = tuple(shapes)
    colours = tuple(COLOURS) if colours is None else tuple(colours)
    motions = ("static",) if motions is None else tuple(motions)
    check_names("shape", shapes, SHAPES)
    check_names("colour", colours, COLOURS)
    check_names("motion", motions, MOTIONS)
    if not shapes or not colours or not motions:
        raise ValueError("ShapesWorld.sample_scene: shapes, colours and motions must not be empty")
    lo, hi = int(num_objects[0]), int(num_objects[1])
    if lo < 0 or hi < lo:
        raise ValueError(f"ShapesWorld.sample_scene: num_objects must be (lo, hi) with 0 <= lo <= hi, got {num_objects}")
    excluded = set(exclude_combos)
    pairs = [(c, s) for s in shapes for c in colours if (c, s) not in excluded]
    if hi > 0 and not pairs:
        raise ValueError(
            "ShapesWorld.sample_scene: every (colour, shape) pair is excluded; widen `shapes`/`colours` "
            "or pass a smaller `exclude_combos`"
        )

    scene_seed = int(rng.integers(0, 2**31 - 1))

    # stuff: 1-3 distinct regions, sky (if any) on top
    n_stuff = int(rng.integers(1, 4))
    stuff = [STUFF[i] for i in rng.permutation(len(STUFF))[:n_stuff]]
    if "sky" in stuff:
        stuff.remove("sky")
        stuff.insert(0, "sky")

    person = None
    occupied: list[tuple[float, float, float]] = []  # (x, y, radius) at t=0
    if rng.random() < person_prob:
        motion = str(motions[int(rng.integers(len(motions)))])
        size = float(rng.uniform(0.55, 0.8))
        if motion == "grow":
            size = min(size, 0.9 / MOTION_GROW)
        x, y = _place(rng, 0.25 * size, 0.5 * size, motion)
        person = PersonSpec(x=x, y=y, size=size, colour=str(colours[int(rng.integers(len(colours)))]), motion=motion)
        occupied.append((x, y, 0.3 * size))
    n_obj = int(rng.integers(lo, hi + 1)) if hi > 0 else 0
    if n_obj == 0 and person is None and hi > 0:
        n_obj = max(1, lo)
    objects: list[ObjectSpec] = []
    for _ in range(n_obj):
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        allowed = motions
        if shape in ROTATION_INVARIANT_SHAPES:
            allowed = tuple(m for m in motions if not m.startswith("rotate")) or motions
        motion = str(allowed[int(rng.integers(len(allowed)))])
        base = 0.42 if n_obj + (person is not None) <= 1 else 0.32
        size = float(rng.uniform(0.75, 1.15) * base) * float(object_scale)
        if motion == "grow":
            size = min(size, 0.75 / MOTION_GROW)
        best = None
        for _try in range(20):  # rejection sampling against overlaps at t=0
            x, y = _place(rng, size / 2, size / 2, motion)
            clash = max((r + size / 2 - math.hypot(x - ox, y - oy) for ox, oy, r in occupied), default=-1.0)
            if best is None or clash < best[0]:
                best = (clash, x, y)
            if clash <= -0.02:
                break
        _, x, y = best
        angle = float(rng.uniform(-25.0, 25.0))
        objects.append(ObjectSpec(shape=shape, colour=colour, x=x, y=y, size=size, angle=angle, motion=motion))
        occupied.append((x, y, size / 2))
    return SceneSpec(stuff=tuple(stuff), objects=objects, person=person, seed=scene_seed)


# --------------------------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------------------------

_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "sh", "ch", "x")) else "s")


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def make_caption(spec: SceneSpec, *, motion: bool = False) -> str:
    """A natural caption: ``"a person in red, a red star and two blue circles on grass under sky"``.

    With ``motion=True`` the motion of each moving thing is named: ``"a red star moving left to right on grass"``.
    """
    items: list[tuple[str, str]] = []  # (noun phrase key, motion phrase)
    if spec.person is not None:
        items.append((f"person in {spec.person.colour}", MOTION_PHRASES[spec.person.motion] if motion else ""))
    for o in spec.objects:
        items.append((f"{o.colour} {o.shape}", MOTION_PHRASES[o.motion] if motion else ""))
    counts = Counter(items)
    phrases: list[str] = []
    seen: set[tuple[str, str]] = set()
    for key in items:
        if key in seen:
            continue
        seen.add(key)
        noun, mphrase = key
        n = counts[key]
        if n == 1:
            text = ("an " if noun[0] in "aeiou" else "a ") + noun
        else:
            word = _NUMBER_WORDS.get(n, str(n))
            if noun.startswith("person in "):
                text = f"{word} people in {noun[len('person in '):]}"
            else:
                colour, shape = noun.split(" ", 1)
                text = f"{word} {colour} {_plural(shape)}"
        if mphrase:
            text += " " + mphrase
        phrases.append(text)
    things = _join(phrases) if phrases else "nothing"
    stuff = list(spec.stuff)
    if not stuff:
        return things
    ground, above = stuff[-1], stuff[:-1][::-1]
    where = f" on {ground}"
    if above:
        where += " under " + _join(above)
    return things + where
