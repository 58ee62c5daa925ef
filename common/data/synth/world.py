"""ShapesWorld: a deterministic, seeded renderer of small scenes of coloured shapes, textures and a stick-figure person.

Pure, vectorised numpy: no torch, no PIL, no I/O. Every dataset writer in ``common.data.synth`` and the
pretraining of the tiny backbones build on the names defined here.

A scene is described by a :class:`SceneSpec` (what is where, which motion each thing makes, and the seed of the
textures) and rendered by :func:`render_scene` at any size and any time ``t`` in [0, 1] along the motions. The
rendering gives the RGB image and aligned per-pixel maps: semantic class, instance id, person part, height field,
surface normals and saliency, plus a caption.

Conventions
-----------
* Coordinates in a spec are fractions of the image: ``x`` to the right, ``y`` down the rows, both in [0, 1].
* ``size`` of a shape is its diameter (the extent of its local unit disc) as a fraction of the image's short side;
  ``size`` of a person is its height, head to feet, as a fraction of the short side.
* ``angle`` is in degrees, anticlockwise as seen by the viewer.
* The height field is in units of the image short side (so it does not depend on the resolution); the normals are
  computed from it in pixel units: x to the right, y down the rows, z towards the viewer; flat ground = (0, 0, 1).
* Same spec + same size + same ``t`` -> byte-identical arrays.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

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
_SHIFT = 0.3  # fraction of the image width / height
_TURN = 90.0  # degrees
_GROW = 1.6  # final scale of "grow"
_SHRINK = 0.6  # final scale of "shrink"


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


def _check_names(kind: str, names: Collection[str], known: Collection[str]) -> None:
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"ShapesWorld: unknown {kind} {bad}; known {kind}s are {sorted(known)}")


def _motion_extent(motion: str) -> tuple[float, float, float, float, float]:
    """(dx_min, dx_max, dy_min, dy_max, max_scale) of the centre displacement and scale over t in [0, 1]."""
    dx = {"left to right": (0.0, _SHIFT), "right to left": (-_SHIFT, 0.0)}.get(motion, (0.0, 0.0))
    dy = {"up": (-_SHIFT, 0.0), "down": (0.0, _SHIFT)}.get(motion, (0.0, 0.0))
    scale = _GROW if motion == "grow" else 1.0
    return dx[0], dx[1], dy[0], dy[1], scale


def _place(rng: np.random.Generator, half_w: float, half_h: float, motion: str) -> tuple[float, float]:
    """A start centre such that the thing (half extents in image fractions at scale 1) stays in frame all video."""
    dx0, dx1, dy0, dy1, scale = _motion_extent(motion)
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

    Returns:
        a :class:`SceneSpec` whose ``seed`` drives the textures of the rendering.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    shapes = tuple(shapes)
    colours = tuple(COLOURS) if colours is None else tuple(colours)
    motions = ("static",) if motions is None else tuple(motions)
    _check_names("shape", shapes, SHAPES)
    _check_names("colour", colours, COLOURS)
    _check_names("motion", motions, MOTIONS)
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
            size = min(size, 0.9 / _GROW)
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
        size = float(rng.uniform(0.75, 1.15) * base)
        if motion == "grow":
            size = min(size, 0.75 / _GROW)
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


# --------------------------------------------------------------------------------------------------------------------
# Rendering helpers (all vectorised over the pixel grid)
# --------------------------------------------------------------------------------------------------------------------

_LIGHT = np.array([-0.45, -0.55, 1.0], dtype=np.float64)
_LIGHT /= np.linalg.norm(_LIGHT)
_SKIN = (235, 190, 150)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in pixels: (X, Y), each (H, W) float64."""
    ys = np.arange(h, dtype=np.float64) + 0.5
    xs = np.arange(w, dtype=np.float64) + 0.5
    return np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))


def _motion_at(motion: str, t: float) -> tuple[float, float, float, float]:
    """(dx, dy, dangle, scale) of a motion at time t."""
    dx = dy = dang = 0.0
    scale = 1.0
    if motion == "left to right":
        dx = _SHIFT * t
    elif motion == "right to left":
        dx = -_SHIFT * t
    elif motion == "up":
        dy = -_SHIFT * t
    elif motion == "down":
        dy = _SHIFT * t
    elif motion == "rotate clockwise":
        dang = -_TURN * t
    elif motion == "rotate anticlockwise":
        dang = _TURN * t
    elif motion == "grow":
        scale = 1.0 + (_GROW - 1.0) * t
    elif motion == "shrink":
        scale = 1.0 + (_SHRINK - 1.0) * t
    elif motion != "static":
        raise ValueError(f"ShapesWorld: unknown motion {motion!r}; known motions are {list(MOTIONS)}")
    return dx, dy, dang, scale


def _regular_polygon(u: np.ndarray, v: np.ndarray, n: int, rot: float) -> tuple[np.ndarray, np.ndarray]:
    """Regular n-gon of circumradius 1 (a vertex at angle ``rot``): mask and pyramid profile (1 at the centre)."""
    apothem = math.cos(math.pi / n)
    worst = np.full(u.shape, -np.inf)
    for k in range(n):
        a = rot + math.pi / n + 2 * math.pi * k / n  # outward normal of edge k
        worst = np.maximum(worst, u * math.cos(a) + v * math.sin(a))
    inner = apothem - worst
    return inner > 0, np.clip(inner / apothem, 0.0, 1.0)


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """A straight-edged star with a point upwards: mask and pyramid profile."""
    r = np.hypot(u, v)
    phi = np.arctan2(v, u) - math.pi / 2  # 0 at the top point
    sector = 2 * math.pi / points
    phi = np.abs(np.mod(phi + sector / 2, sector) - sector / 2)  # fold to [0, sector/2]
    ax, ay = 1.0, 0.0
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    ex, ey = bx - ax, by - ay
    dx, dy = np.cos(phi), np.sin(phi)
    rb = (ax * ey - ay * ex) / (dx * ey - dy * ex)  # boundary radius along the ray
    return r < rb, np.clip(1.0 - r / rb, 0.0, 1.0)


def _shape_field(shape: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask and height profile (0..1) of a shape in local unit coordinates (u right, v up)."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r < 1.0, np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    if shape == "square":
        m = np.maximum(np.abs(u), np.abs(v)) < 0.74
        return m, np.full(u.shape, 0.55)
    if shape == "diamond":
        m = np.abs(u) / 0.8 + np.abs(v) < 1.0
        return m, np.full(u.shape, 0.55)
    if shape == "triangle":
        mask, prof = _regular_polygon(u, v + 0.15, 3, math.pi / 2)
        return mask, prof
    if shape == "hexagon":
        return _regular_polygon(u, v, 6, 0.0)
    if shape == "star":
        return _star(u, v)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        m = ((au < 0.3) & (av < 0.95)) | ((av < 0.3) & (au < 0.95))
        return m, np.full(u.shape, 0.55)
    if shape == "heart":
        x, y = u * 1.18, v * 1.18 + 0.05
        f = (x * x + y * y - 1.0) ** 3 - x * x * y**3
        return f < 0.0, 0.25 + 0.75 * np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    if shape == "crescent":
        bite = np.hypot(u - 0.42, v - 0.18) < 0.78
        return (r < 1.0) & ~bite, np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    if shape == "ring":
        rc, rw = 0.75, 0.25
        q = (r - rc) / rw
        return np.abs(q) < 1.0, np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0))
    raise ValueError(f"ShapesWorld: unknown shape {shape!r}; known shapes are {list(SHAPES)}")


def _segment_distance(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    ax, ay = a
    ex, ey = b[0] - ax, b[1] - ay
    ll = ex * ex + ey * ey
    s = np.clip(((x - ax) * ex + (y - ay) * ey) / ll, 0.0, 1.0) if ll > 0 else np.zeros_like(x)
    return np.hypot(x - ax - s * ex, y - ay - s * ey)


# stick figure in units of its height, origin at its centre, y down; (part id, a, b, radius)
_LIMB = 0.042
_FIGURE: tuple[tuple[int, tuple[float, float], tuple[float, float], float], ...] = tuple(
    item
    for side in (-1.0, 1.0)
    for item in (
        (6, (side * 0.09, 0.25), (side * 0.13, 0.44), _LIMB),  # lower leg
        (6, (side * 0.13, 0.445), (side * 0.21, 0.455), _LIMB * 0.8),  # foot
        (5, (side * 0.05, 0.06), (side * 0.09, 0.25), _LIMB * 1.1),  # upper leg
    )
) + ((2, (0.0, -0.22), (0.0, 0.04), 0.08),) + tuple(  # torso
    item
    for side in (-1.0, 1.0)
    for item in (
        (3, (side * 0.06, -0.21), (side * 0.19, -0.08), _LIMB),  # upper arm
        (4, (side * 0.19, -0.08), (side * 0.29, 0.05), _LIMB * 0.9),  # lower arm
        (4, (side * 0.30, 0.065), (side * 0.30, 0.065), 0.05),  # hand
    )
) + ((1, (0.0, -0.37), (0.0, -0.37), 0.115),)  # head


def _noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, freq: tuple[float, float], k: int = 6) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a sum of ``k`` random plane waves with frequencies (cycles per short side) in
    ``freq``."""
    out = np.zeros(x.shape)
    for _ in range(k):
        f = rng.uniform(*freq)
        a = rng.uniform(0, 2 * math.pi)
        p = rng.uniform(0, 2 * math.pi)
        out += np.sin(2 * math.pi * f * (x * math.cos(a) + y * math.sin(a)) + p)
    return out / math.sqrt(k / 2)


def _texture(name: str, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    """(H, W, 3) float colours of a stuff texture; x, y in short-side units, ``px`` = one pixel in those units."""
    speckle = rng.standard_normal(x.shape)
    if name == "sky":
        base = np.array([120.0, 180.0, 240.0])
        img = base + (y[..., None] - 0.5) * np.array([50.0, 40.0, 10.0])
        cloud = np.clip((_noise(rng, x, y, (1.0, 3.0)) - 0.4) * 1.2, 0.0, 0.8)[..., None]
        return img * (1 - cloud) + 250.0 * cloud
    if name == "grass":
        base = np.array([95.0, 135.0, 45.0])
        wob = 0.7 * np.sin(2 * math.pi * (3.0 * y + rng.uniform(0, 1)))
        blades = np.sin(2 * math.pi * (22.0 * x + wob) + rng.uniform(0, 6.3))
        shade = 1.0 + 0.17 * blades + 0.06 * speckle + 0.06 * _noise(rng, x, y, (1.0, 3.0))
        return base * shade[..., None]
    if name == "water":
        base = np.array([35.0, 95.0, 165.0])
        waves = np.sin(2 * math.pi * (12.0 * y + 0.25 * np.sin(2 * math.pi * 2.5 * x + rng.uniform(0, 6.3))))
        crest = np.clip(waves - 0.55, 0.0, 1.0) / 0.45
        img = base * (1.0 + 0.05 * speckle)[..., None]
        return img * (1 - 0.6 * crest[..., None]) + 230.0 * 0.6 * crest[..., None]
    if name == "wall":
        brick = np.array([165.0, 75.0, 55.0])
        mortar = np.array([205.0, 200.0, 185.0])
        rows = y * 7.0 + rng.uniform(0, 1)
        cols = x * 3.5 + 0.5 * (np.floor(rows) % 2) + rng.uniform(0, 1)
        thick_r = max(0.08, 1.0 * px * 7.0)
        thick_c = max(0.04, 1.0 * px * 3.5)
        is_mortar = (np.mod(rows, 1.0) < thick_r) | (np.mod(cols, 1.0) < thick_c)
        tone = 1.0 + 0.08 * np.sin(np.floor(rows) * 12.9898 + np.floor(cols) * 78.233) + 0.05 * speckle
        img = brick * tone[..., None]
        return np.where(is_mortar[..., None], mortar, img)
    if name == "sand":
        base = np.array([222.0, 196.0, 140.0])
        ripple = np.sin(2 * math.pi * (8.0 * (x + 0.6 * y) + 0.4 * _noise(rng, x, y, (0.5, 1.5), 3)))
        shade = 1.0 + 0.06 * ripple + 0.09 * speckle
        return base * shade[..., None]
    if name == "floor":
        wood = np.array([150.0, 100.0, 55.0])
        planks = y * 6.0 + rng.uniform(0, 1)
        seam = np.mod(planks, 1.0) < max(0.07, px * 6.0)
        grain = np.sin(2 * math.pi * (30.0 * y + 1.5 * np.sin(2 * math.pi * 1.3 * x + 3.0 * np.floor(planks))))
        tone = 1.0 + 0.07 * grain + 0.1 * np.sin(np.floor(planks) * 3.7) + 0.04 * speckle
        img = wood * tone[..., None]
        return np.where(seam[..., None], wood * 0.45, img)
    raise ValueError(f"ShapesWorld: unknown stuff {name!r}; known stuff classes are {list(STUFF)}")


def _normals(height: np.ndarray, short: int, ground: np.ndarray | None = None) -> np.ndarray:
    """Unit normals of a height field given in short-side units (x right, y down, z to the viewer).

    Pixels in ``ground`` (the flat stuff regions) get exactly (0, 0, 1), even next to a thing's edge.
    """
    hp = height.astype(np.float64) * short  # to pixels
    if hp.shape[0] > 1:
        gy = np.gradient(hp, axis=0)
    else:
        gy = np.zeros_like(hp)
    if hp.shape[1] > 1:
        gx = np.gradient(hp, axis=1)
    else:
        gx = np.zeros_like(hp)
    n = np.stack([-gx, -gy, np.ones_like(hp)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    if ground is not None:
        n[ground] = (0.0, 0.0, 1.0)
    return n.astype(np.float32)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


def render_scene(spec: SceneSpec, size: int | tuple[int, int] = 64, t: float = 0.0) -> Scene:
    """Render ``spec`` at ``size`` ((H, W) or square) and time ``t`` in [0, 1] along each thing's motion."""
    h, w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"ShapesWorld.render_scene: size must be positive, got {size}")
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"ShapesWorld.render_scene: t must be in [0, 1], got {t}")
    t = float(t)
    if not spec.stuff:
        raise ValueError("ShapesWorld.render_scene: a scene needs at least one stuff region")
    _check_names("stuff class", spec.stuff, STUFF)
    short = min(h, w)
    rng = np.random.default_rng(spec.seed)
    X, Y = _grid(h, w)
    xs, ys = X / short, Y / short  # short-side units, for textures
    yf = Y / h  # fraction of the height, for region borders

    image = np.zeros((h, w, 3), dtype=np.float64)
    semantic = np.zeros((h, w), dtype=np.int16)
    instance = np.zeros((h, w), dtype=np.int32)
    parts = np.zeros((h, w), dtype=np.uint8)
    height = np.zeros((h, w), dtype=np.float64)
    thing = np.zeros((h, w), dtype=bool)
    shade_gain = np.ones((h, w), dtype=np.float64)  # per-thing brightness jitter
    outline = np.zeros((h, w), dtype=bool)

    # --- stuff regions, top to bottom, with wavy borders
    n = len(spec.stuff)
    region = np.zeros((h, w), dtype=np.int64)
    for k in range(1, n):
        base = k / n + rng.uniform(-0.06, 0.06)
        amp = rng.uniform(0.0, 0.03)
        border = base + amp * np.sin(2 * math.pi * rng.uniform(0.5, 2.0) * (X / w) + rng.uniform(0, 6.3))
        region += (yf >= border).astype(np.int64)
    n_obj = len(spec.objects)
    stuff_ids: dict[str, int] = {}
    next_id = n_obj + 1 + (spec.person is not None)
    for name in spec.stuff:
        if name not in stuff_ids:
            stuff_ids[name] = next_id
            next_id += 1
    for k, name in enumerate(spec.stuff):
        tex = _texture(name, rng, xs, ys, 1.0 / short)
        m = region == k
        image[m] = tex[m]
        semantic[m] = CATEGORY_IDS[name]
        instance[m] = stuff_ids[name]

    # per-thing jitter is drawn for every thing in order, whatever t is (frames of a video stay consistent)
    gains = rng.uniform(0.9, 1.08, size=n_obj + 1)

    # --- shapes, drawn in order
    for i, o in enumerate(spec.objects):
        if o.colour not in COLOURS:
            raise ValueError(f"ShapesWorld: unknown colour {o.colour!r}; known colours are {list(COLOURS)}")
        dx, dy, dang, scale = _motion_at(o.motion, t)
        cx, cy = (o.x + dx) * w, (o.y + dy) * h
        radius = max(o.size * scale * short / 2.0, 1e-6)
        a = math.radians(o.angle + dang)
        pu, pv = (X - cx) / radius, -(Y - cy) / radius  # v up
        u = pu * math.cos(a) + pv * math.sin(a)
        v = -pu * math.sin(a) + pv * math.cos(a)
        mask, prof = _shape_field(o.shape, u, v)
        if not mask.any():
            continue
        image[mask] = COLOURS[o.colour]
        semantic[mask] = CATEGORY_IDS[o.shape]
        instance[mask] = i + 1
        height[mask] = (prof[mask] * 0.5 + 0.05) * o.size * scale  # 0.05 * size: even a flat edge stands up
        thing |= mask
        parts[mask] = 0
        shade_gain[mask] = gains[i]
        outline = (outline & ~mask) | _edge(mask)

    # --- the person, in front
    p = spec.person
    if p is not None:
        if p.colour not in COLOURS:
            raise ValueError(f"ShapesWorld: unknown colour {p.colour!r}; known colours are {list(COLOURS)}")
        dx, dy, dang, scale = _motion_at(p.motion, t)
        cx, cy = (p.x + dx) * w, (p.y + dy) * h
        tall = max(p.size * scale * short, 1e-6)
        a = math.radians(dang)
        ca, sa = math.cos(a), math.sin(a)
        # to figure coordinates (units of its height, y down): rotate the offset by -angle (anticlockwise as seen)
        ox, oy = (X - cx) / tall, (Y - cy) / tall
        fx = ox * ca - oy * sa
        fy = ox * sa + oy * ca
        p_mask = np.zeros((h, w), dtype=bool)
        p_part = np.zeros((h, w), dtype=np.uint8)
        p_height = np.zeros((h, w), dtype=np.float64)
        for part_id, pa, pb, rad in _FIGURE:
            d = _segment_distance(fx, fy, pa, pb)
            m = d < rad
            if not m.any():
                continue
            p_mask |= m
            p_part[m] = part_id
            bump = np.sqrt(np.clip(rad * rad - d * d, 0.0, None)) + 0.01
            p_height = np.where(m, np.maximum(p_height, bump), p_height)
        if p_mask.any():
            clothes = np.array(COLOURS[p.colour], dtype=np.float64)
            limb = clothes * 0.8 + 25.0
            colour_of = {1: np.array(_SKIN, dtype=np.float64), 2: clothes, 3: limb, 4: limb, 5: clothes * 0.7, 6: clothes * 0.7}
            for part_id, col in colour_of.items():
                image[p_part == part_id] = col
            semantic[p_mask] = PERSON_CATEGORY_ID
            instance[p_mask] = n_obj + 1
            parts[p_mask] = p_part[p_mask]
            height[p_mask] = p_height[p_mask] * p.size * scale
            thing |= p_mask
            shade_gain[p_mask] = gains[n_obj]
            outline = (outline & ~p_mask) | (_edge(p_mask) & (p_part != 1))

    # --- lighting from the normals (so the image shows the geometry), outlines, quantisation
    normals = _normals(height, short, ~thing)
    lambert = (normals.astype(np.float64) @ _LIGHT) / _LIGHT[2]  # 1.0 on flat ground
    light = np.clip(0.3 + 0.7 * lambert, 0.25, 1.2) * shade_gain
    image = image * light[..., None]
    image[outline] *= 0.55
    image_u8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    # --- instances
    instances: list[InstanceInfo] = []
    for i, o in enumerate(spec.objects):
        m = instance == i + 1
        if m.any():
            instances.append(InstanceInfo(i + 1, o.shape, True, o.colour, _bbox(m), int(m.sum())))
    if p is not None:
        m = instance == n_obj + 1
        if m.any():
            instances.append(InstanceInfo(n_obj + 1, "person", True, p.colour, _bbox(m), int(m.sum())))
    for name, sid in stuff_ids.items():
        m = instance == sid
        if m.any():
            instances.append(InstanceInfo(sid, name, False, None, _bbox(m), int(m.sum())))

    return Scene(
        image=image_u8,
        semantic=semantic,
        instance=instance,
        instances=instances,
        parts=parts,
        has_person=bool((parts > 0).any()),
        height=height.astype(np.float32),
        normals=normals,
        saliency=thing.astype(np.uint8),
        caption=make_caption(spec),
        t=t,
        spec=spec,
    )


def render_video(spec: SceneSpec, num_frames: int, size: int | tuple[int, int] = 64) -> list[Scene]:
    """Render ``num_frames`` frames evenly spaced over t in [0, 1] (one frame: t = 0)."""
    if num_frames < 1:
        raise ValueError(f"ShapesWorld.render_video: num_frames must be >= 1, got {num_frames}")
    if num_frames == 1:
        return [render_scene(spec, size, 0.0)]
    return [render_scene(spec, size, k / (num_frames - 1)) for k in range(num_frames)]


__all__ = [
    "BASE_SHAPES",
    "CATEGORIES",
    "CATEGORY_IDS",
    "COLOURS",
    "HELD_OUT_COMBOS",
    "MOTIONS",
    "MOTION_PHRASES",
    "NOVEL_SHAPES",
    "PART_NAMES",
    "PERSON_CATEGORY_ID",
    "ROTATION_INVARIANT_SHAPES",
    "SHAPES",
    "STUFF",
    "Category",
    "InstanceInfo",
    "ObjectSpec",
    "PersonSpec",
    "Scene",
    "SceneSpec",
    "make_caption",
    "render_scene",
    "render_video",
    "sample_scene",
]
