"""The ShapesWorld PASCAL_MT writer's world options (shape kinds, object scale) and their stamp."""

import numpy as np
from PIL import Image

from common.data.synth.pascal_mt import (
    SHAPE_SLOTS,
    render_sample,
    requested_options,
    write_pascal_mt,
    written_options,
)

SHAPES = ["circle", "square", "star"]


def test_shapes_and_object_scale_are_drawn_and_stamped(tmp_path):
    root = tmp_path / "pmt"
    write_pascal_mt(root, num_train=12, num_val=2, size=48, shapes=SHAPES, object_scale=1.5, progress=False)
    classes = set()
    for f in (root / "semseg" / "pascal-context").glob("*.png"):
        classes |= set(np.unique(np.array(Image.open(f))).tolist())
    allowed = {0, 15} | {SHAPE_SLOTS[s] for s in SHAPES}
    assert classes <= allowed and len(classes & {SHAPE_SLOTS[s] for s in SHAPES}) >= 2
    stamp = written_options(root)
    assert stamp["shapes"] == SHAPES and stamp["object_scale"] == 1.5
    assert stamp == requested_options(num_train=12, num_val=2, size=48, shapes=SHAPES, object_scale=1.5)
    assert stamp != requested_options(num_train=12, num_val=2, size=48)


def test_defaults_keep_the_earlier_stamp_and_scenes():
    # folders written before the options existed carry no such keys and must still match the default request
    assert set(requested_options()) == {"num_train", "num_val", "seed", "size", "person_prob", "num_objects"}
    a = render_sample(0, "train", 3, 64)
    b = render_sample(0, "train", 3, 64, shapes=None, object_scale=1.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.semantic, b.semantic)


def test_object_scale_grows_the_same_shapes():
    def shape_pixels(scale: float) -> int:
        total = 0
        for i in range(8):
            scene = render_sample(1, "train", i, 96, person_prob=0.0, object_scale=scale)
            total += int(sum(inst.area for inst in scene.instances if inst.isthing))
        return total

    assert shape_pixels(1.5) > 1.8 * shape_pixels(1.0)
