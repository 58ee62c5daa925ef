"""ShapesWorld renderer: determinism, consistency of the per-pixel maps, motions, captions."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.synth import world as W


def _scenes(n: int = 12, size: int | tuple[int, int] = 48, **kw) -> list[W.Scene]:
    return [W.render_scene(W.sample_scene(s, person_prob=0.5, **kw), size) for s in range(n)]


def test_vocabulary_sizes_and_categories() -> None:
    assert len(W.SHAPES) >= 8 and len(W.COLOURS) >= 8 and len(W.STUFF) >= 5
    assert W.PART_NAMES[0] == "background" and len(W.PART_NAMES) == 7
    assert set(W.NOVEL_SHAPES) <= set(W.SHAPES)
    assert all(s in W.SHAPES and c in W.COLOURS for c, s in W.HELD_OUT_COMBOS)
    names = [c.name for c in W.CATEGORIES]
    assert names == list(W.STUFF) + list(W.SHAPES) + ["person"]
    assert [c.id for c in W.CATEGORIES] == list(range(len(W.CATEGORIES)))
    assert [c.isthing for c in W.CATEGORIES] == [False] * len(W.STUFF) + [True] * (len(W.SHAPES) + 1)
    # colours are well apart (learnable)
    rgb = np.array(list(W.COLOURS.values()), dtype=float)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert dist.min() > 60


def test_same_seed_is_byte_identical_and_seeds_differ() -> None:
    a = W.render_scene(W.sample_scene(7, person_prob=1.0, motions=W.MOTIONS), 40, t=0.3)
    b = W.render_scene(W.sample_scene(7, person_prob=1.0, motions=W.MOTIONS), 40, t=0.3)
    for name in ("image", "semantic", "instance", "parts", "height", "normals", "saliency"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.caption == b.caption and a.instances == b.instances
    # a generator gives the same stream of scenes too
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [W.sample_scene(g1) for _ in range(3)] == [W.sample_scene(g2) for _ in range(3)]
    images = {W.render_scene(W.sample_scene(s), 32).image.tobytes() for s in range(20)}
    assert len(images) == 20


def test_maps_are_consistent() -> None:
    thing_ids = np.array([c.isthing for c in W.CATEGORIES])
    for sc in _scenes(16, (40, 56)):
        h, w = 40, 56
        assert sc.image.shape == (h, w, 3) and sc.image.dtype == np.uint8
        assert sc.semantic.dtype == np.int16 and sc.instance.dtype == np.int32 and sc.parts.dtype == np.uint8
        assert sc.height.dtype == np.float32 and sc.normals.shape == (h, w, 3) and sc.normals.dtype == np.float32
        assert 0 <= sc.semantic.min() and sc.semantic.max() < len(W.CATEGORIES)
        # saliency == thing pixels
        assert np.array_equal(sc.saliency.astype(bool), thing_ids[sc.semantic])
        # parts exactly on person pixels
        person = sc.semantic == W.PERSON_CATEGORY_ID
        assert np.array_equal(sc.parts > 0, person)
        assert sc.has_person == bool(person.any())
        if sc.has_person:
            assert {1, 2, 3, 4, 5, 6} <= set(np.unique(sc.parts).tolist())
        # normals unit length, flat where the height field is flat
        assert np.allclose(np.linalg.norm(sc.normals, axis=-1), 1.0, atol=1e-5)
        flat = ~sc.saliency.astype(bool)
        assert np.allclose(sc.normals[flat], [0, 0, 1], atol=1e-6)
        if sc.saliency.any():  # things have relief
            assert (sc.normals[~flat][:, 2] < 0.999).any()
        assert (sc.height[sc.saliency.astype(bool)] > 0).all() and (sc.height[~sc.saliency.astype(bool)] == 0).all()
        # instance ids match the InstanceInfo list
        ids = {i.id for i in sc.instances}
        assert set(np.unique(sc.instance).tolist()) == ids and 0 not in ids
        for info in sc.instances:
            m = sc.instance == info.id
            assert info.area == int(m.sum())
            cats = np.unique(sc.semantic[m])
            assert cats.tolist() == [W.CATEGORY_IDS[info.category]]
            assert info.isthing == W.CATEGORIES[int(cats[0])].isthing
            x, y, bw, bh = info.bbox
            ys, xs = np.nonzero(m)
            assert (x, y, bw, bh) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert (info.colour is None) == (not info.isthing)


def test_image_shows_object_colours_and_caption_names_them() -> None:
    spec = W.SceneSpec(
        stuff=("sky", "grass"),
        objects=[W.ObjectSpec("star", "red", 0.3, 0.6, 0.4), W.ObjectSpec("circle", "blue", 0.72, 0.35, 0.35)],
        person=None,
        seed=0,
    )
    sc = W.render_scene(spec, 64)
    assert sc.caption == "a red star and a blue circle on grass under sky"
    for info in sc.instances[:2]:
        mean = sc.image[sc.instance == info.id].astype(float).mean(0)
        target = np.array(W.COLOURS[info.colour], dtype=float)
        others = [np.linalg.norm(mean - np.array(c)) for n, c in W.COLOURS.items() if n != info.colour]
        assert np.linalg.norm(mean - target) < min(others)
    # star: pyramid (peak in the middle); circle: dome (peak in the middle, lower at the rim)
    circle = sc.instance == 2
    ys, xs = np.nonzero(circle)
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    assert sc.height[cy, cx] == pytest.approx(sc.height[circle].max(), rel=0.05)
    assert sc.height[circle].min() < 0.5 * sc.height[circle].max()


def test_shapes_are_distinct_masks() -> None:
    masks = {}
    for s in W.SHAPES:
        spec = W.SceneSpec(stuff=("wall",), objects=[W.ObjectSpec(s, "white", 0.5, 0.5, 0.8)], person=None, seed=1)
        masks[s] = W.render_scene(spec, 48).instance == 1
        assert masks[s].sum() > 0.1 * 48 * 48, s
    for a in W.SHAPES:
        for b in W.SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


@pytest.mark.parametrize(
    "motion,check",
    [
        ("left to right", lambda a, b: b[0] > a[0] + 5),
        ("right to left", lambda a, b: b[0] < a[0] - 5),
        ("up", lambda a, b: b[1] < a[1] - 5),
        ("down", lambda a, b: b[1] > a[1] + 5),
        ("grow", lambda a, b: b[2] > 1.8 * a[2]),
        ("shrink", lambda a, b: b[2] < 0.6 * a[2]),
        ("static", lambda a, b: a == b),
    ],
)
def test_motions_move_things(motion, check) -> None:
    spec = W.SceneSpec(
        stuff=("sand",),
        objects=[W.ObjectSpec("triangle", "blue", 0.35, 0.4, 0.3, motion=motion)],
        person=W.PersonSpec(0.6, 0.55, 0.6, "orange", motion=motion),
        seed=4,
    )
    frames = W.render_video(spec, 5, 64)
    assert len(frames) == 5 and frames[0].t == 0.0 and frames[-1].t == 1.0
    for ident in (1, 2):
        stats = []
        for f in (frames[0], frames[-1]):
            ys, xs = np.nonzero(f.instance == ident)
            stats.append((xs.mean(), ys.mean(), len(xs)))
        assert check(*stats), (motion, ident, stats)
    # the stuff texture does not change over time
    bg = (frames[0].saliency == 0) & (frames[-1].saliency == 0)
    assert np.array_equal(frames[0].image[bg], frames[-1].image[bg])


def test_rotation_direction_is_visible() -> None:
    """Anticlockwise (as seen): the top point of a triangle moves to the left."""
    for motion, sign in (("rotate anticlockwise", -1), ("rotate clockwise", 1)):
        spec = W.SceneSpec(("wall",), [W.ObjectSpec("triangle", "yellow", 0.5, 0.5, 0.7, motion=motion)], None, 2)
        a, b = W.render_scene(spec, 64, 0.0), W.render_scene(spec, 64, 0.25)
        ya, xa = np.nonzero(a.instance == 1)
        yb, xb = np.nonzero(b.instance == 1)
        tip_a = xa[ya == ya.min()].mean()
        tip_b = xb[yb == yb.min()].mean()
        assert sign * (tip_b - tip_a) > 3, (motion, tip_a, tip_b)


def test_sampling_respects_its_arguments() -> None:
    seen = set()
    for s in range(300):
        spec = W.sample_scene(s, num_objects=(2, 2), person_prob=0.0, motions=("rotate clockwise", "up"))
        assert spec.person is None and len(spec.objects) == 2 and 1 <= len(spec.stuff) <= 3
        assert "sky" not in spec.stuff[1:]
        for o in spec.objects:
            seen.add((o.colour, o.shape))
            if o.shape in W.ROTATION_INVARIANT_SHAPES:
                assert o.motion == "up"
    assert not seen & W.HELD_OUT_COMBOS
    only = W.sample_scene(1, shapes=["star"], colours=["red", "blue"], exclude_combos=())
    assert {o.shape for o in only.objects} == {"star"}
    with pytest.raises(ValueError, match="unknown shape"):
        W.sample_scene(0, shapes=["blob"])
    with pytest.raises(ValueError, match="excluded"):
        W.sample_scene(0, shapes=["star"], colours=["red"], exclude_combos={("red", "star")})
    with pytest.raises(ValueError, match="t must be"):
        W.render_scene(only, 32, t=1.5)


def test_motion_captions() -> None:
    spec = W.SceneSpec(
        ("water",),
        [W.ObjectSpec("star", "red", 0.3, 0.3, 0.2, motion="up"), W.ObjectSpec("star", "red", 0.6, 0.6, 0.2, motion="up")],
        W.PersonSpec(0.5, 0.5, 0.5, "white", motion="left to right"),
        0,
    )
    assert W.make_caption(spec) == "a person in white and two red stars on water"
    assert W.make_caption(spec, motion=True) == "a person in white moving left to right and two red stars moving up on water"

