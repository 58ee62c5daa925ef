"""ShapesWorld rendering: a :class:`~common.data.synth.scenes.SceneSpec` to an image and its aligned per-pixel maps
(:func:`render_scene`), or to a video (:func:`render_video`). Part of :mod:`common.data.synth.world`."""

from __future__ import annotations

import math

import numpy as np

from common.data.synth import raster as R
from common.data.synth.scenes import InstanceInfo, Scene, SceneSpec, make_caption
from common.data.synth.vocabulary import (
    CATEGORY_IDS,
    COLOURS,
    PERSON_CATEGORY_ID,
    STUFF,
    check_names,
    motion_at,
)

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
    check_names("stuff class", spec.stuff, STUFF)
    short = min(h, w)
    rng = np.random.default_rng(spec.seed)
    X, Y = R.grid(h, w)
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
        tex = R.texture(name, rng, xs, ys, 1.0 / short)
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
        dx, dy, dang, scale = motion_at(o.motion, t)
        cx, cy = (o.x + dx) * w, (o.y + dy) * h
        radius = max(o.size * scale * short / 2.0, 1e-6)
        a = math.radians(o.angle + dang)
        pu, pv = (X - cx) / radius, -(Y - cy) / radius  # v up
        u = pu * math.cos(a) + pv * math.sin(a)
        v = -pu * math.sin(a) + pv * math.cos(a)
        mask, prof = R.shape_field(o.shape, u, v)
        if not mask.any():
            continue
        image[mask] = COLOURS[o.colour]
        semantic[mask] = CATEGORY_IDS[o.shape]
        instance[mask] = i + 1
        height[mask] = (prof[mask] * 0.5 + 0.05) * o.size * scale  # 0.05 * size: even a flat edge stands up
        thing |= mask
        parts[mask] = 0
        shade_gain[mask] = gains[i]
        outline = (outline & ~mask) | R.edge(mask)

    # --- the person, in front
    p = spec.person
    if p is not None:
        if p.colour not in COLOURS:
            raise ValueError(f"ShapesWorld: unknown colour {p.colour!r}; known colours are {list(COLOURS)}")
        dx, dy, dang, scale = motion_at(p.motion, t)
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
        for part_id, pa, pb, rad in R.FIGURE:
            d = R.segment_distance(fx, fy, pa, pb)
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
            colour_of = {1: np.array(R.SKIN, dtype=np.float64), 2: clothes, 3: limb, 4: limb, 5: clothes * 0.7, 6: clothes * 0.7}
            for part_id, col in colour_of.items():
                image[p_part == part_id] = col
            semantic[p_mask] = PERSON_CATEGORY_ID
            instance[p_mask] = n_obj + 1
            parts[p_mask] = p_part[p_mask]
            height[p_mask] = p_height[p_mask] * p.size * scale
            thing |= p_mask
            shade_gain[p_mask] = gains[n_obj]
            outline = (outline & ~p_mask) | (R.edge(p_mask) & (p_part != 1))

    # --- lighting from the normals (so the image shows the geometry), outlines, quantisation
    normals = R.normals(height, short, ~thing)
    lambert = (normals.astype(np.float64) @ R.LIGHT) / R.LIGHT[2]  # 1.0 on flat ground
    light = np.clip(0.3 + 0.7 * lambert, 0.25, 1.2) * shade_gain
    image = image * light[..., None]
    image[outline] *= 0.55
    image_u8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    # --- instances
    instances: list[InstanceInfo] = []
    for i, o in enumerate(spec.objects):
        m = instance == i + 1
        if m.any():
            instances.append(InstanceInfo(i + 1, o.shape, True, o.colour, R.bbox(m), int(m.sum())))
    if p is not None:
        m = instance == n_obj + 1
        if m.any():
            instances.append(InstanceInfo(n_obj + 1, "person", True, p.colour, R.bbox(m), int(m.sum())))
    for name, sid in stuff_ids.items():
        m = instance == sid
        if m.any():
            instances.append(InstanceInfo(sid, name, False, None, R.bbox(m), int(m.sum())))

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
