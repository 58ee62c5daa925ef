"""ShapesWorld: a deterministic, seeded renderer of small scenes of coloured shapes, textures and a stick-figure person.

Pure, vectorised numpy: no torch, no PIL, no I/O. Every dataset writer in ``common.data.synth`` and the
pretraining of the tiny backbones build on the names defined here. This module is the public face; the code lives by
concern in ``vocabulary.py`` (names, categories, motions), ``scenes.py`` (specs, sampling, captions), ``raster.py``
(pixel-grid helpers) and ``render.py`` (:func:`render_scene`, :func:`render_video`).

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

from common.data.synth.render import render_scene, render_video
from common.data.synth.scenes import (
    InstanceInfo,
    ObjectSpec,
    PersonSpec,
    Scene,
    SceneSpec,
    make_caption,
    sample_scene,
)
from common.data.synth.vocabulary import (
    BASE_SHAPES,
    CATEGORIES,
    CATEGORY_IDS,
    COLOURS,
    HELD_OUT_COMBOS,
    MOTION_PHRASES,
    MOTIONS,
    NOVEL_SHAPES,
    PART_NAMES,
    PERSON_CATEGORY_ID,
    ROTATION_INVARIANT_SHAPES,
    SHAPES,
    STUFF,
    Category,
)

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
