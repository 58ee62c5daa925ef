"""ShapesWorld rasterisation helpers, all vectorised over the pixel grid: pixel coordinates, shape fields and profiles,
the stick-figure person, textures, normals, boxes and edges. Part of :mod:`common.data.synth.world`."""

from __future__ import annotations

import math

import numpy as np

from common.data.synth.vocabulary import SHAPES, STUFF

# --------------------------------------------------------------------------------------------------------------------
# Rendering helpers (all vectorised over the pixel grid)
# --------------------------------------------------------------------------------------------------------------------

LIGHT = np.array([-0.45, -0.55, 1.0], dtype=np.float64)
LIGHT /= np.linalg.norm(LIGHT)
SKIN = (235, 190, 150)


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in pixels: (X, Y), each (H, W) float64."""
    ys = np.arange(h, dtype=np.float64) + 0.5
    xs = np.arange(w, dtype=np.float64) + 0.5
    return np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))


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


def shape_field(shape: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def segment_distance(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    ax, ay = a
    ex, ey = b[0] - ax, b[1] - ay
    ll = ex * ex + ey * ey
    s = np.clip(((x - ax) * ex + (y - ay) * ey) / ll, 0.0, 1.0) if ll > 0 else np.zeros_like(x)
    return np.hypot(x - ax - s * ex, y - ay - s * ey)


# stick figure in units of its height, origin at its centre, y down; (part id, a, b, radius)
LIMB = 0.042
FIGURE: tuple[tuple[int, tuple[float, float], tuple[float, float], float], ...] = tuple(
    item
    for side in (-1.0, 1.0)
    for item in (
        (6, (side * 0.09, 0.25), (side * 0.13, 0.44), LIMB),  # lower leg
        (6, (side * 0.13, 0.445), (side * 0.21, 0.455), LIMB * 0.8),  # foot
        (5, (side * 0.05, 0.06), (side * 0.09, 0.25), LIMB * 1.1),  # upper leg
    )
) + ((2, (0.0, -0.22), (0.0, 0.04), 0.08),) + tuple(  # torso
    item
    for side in (-1.0, 1.0)
    for item in (
        (3, (side * 0.06, -0.21), (side * 0.19, -0.08), LIMB),  # upper arm
        (4, (side * 0.19, -0.08), (side * 0.29, 0.05), LIMB * 0.9),  # lower arm
        (4, (side * 0.30, 0.065), (side * 0.30, 0.065), 0.05),  # hand
    )
) + ((1, (0.0, -0.37), (0.0, -0.37), 0.115),)  # head


def noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, freq: tuple[float, float], k: int = 6) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a sum of ``k`` random plane waves with frequencies (cycles per short side) in
    ``freq``."""
    out = np.zeros(x.shape)
    for _ in range(k):
        f = rng.uniform(*freq)
        a = rng.uniform(0, 2 * math.pi)
        p = rng.uniform(0, 2 * math.pi)
        out += np.sin(2 * math.pi * f * (x * math.cos(a) + y * math.sin(a)) + p)
    return out / math.sqrt(k / 2)


def texture(name: str, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    """(H, W, 3) float colours of a stuff texture; x, y in short-side units, ``px`` = one pixel in those units."""
    speckle = rng.standard_normal(x.shape)
    if name == "sky":
        base = np.array([120.0, 180.0, 240.0])
        img = base + (y[..., None] - 0.5) * np.array([50.0, 40.0, 10.0])
        cloud = np.clip((noise(rng, x, y, (1.0, 3.0)) - 0.4) * 1.2, 0.0, 0.8)[..., None]
        return img * (1 - cloud) + 250.0 * cloud
    if name == "grass":
        base = np.array([95.0, 135.0, 45.0])
        wob = 0.7 * np.sin(2 * math.pi * (3.0 * y + rng.uniform(0, 1)))
        blades = np.sin(2 * math.pi * (22.0 * x + wob) + rng.uniform(0, 6.3))
        shade = 1.0 + 0.17 * blades + 0.06 * speckle + 0.06 * noise(rng, x, y, (1.0, 3.0))
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
        ripple = np.sin(2 * math.pi * (8.0 * (x + 0.6 * y) + 0.4 * noise(rng, x, y, (0.5, 1.5), 3)))
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


def normals(height: np.ndarray, short: int, ground: np.ndarray | None = None) -> np.ndarray:
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


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner
