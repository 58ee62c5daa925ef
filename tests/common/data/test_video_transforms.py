"""Clip-consistent video transforms: both papers' recipes, view shapes, crops, flips, normalisation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from common.data.video_transforms import NORMALIZATION, RECIPES, VideoTransform


def _clip(t: int = 6, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _left_right_clip(t: int = 4, h: int = 40, w: int = 56) -> np.ndarray:
    """Dark left half, bright right half (a flip swaps them)."""
    x = np.zeros((t, h, w, 3), dtype=np.uint8)
    x[:, :, w // 2 :] = 220
    return x


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_training_view_shape_and_clip_consistency(recipe: str) -> None:
    tf = VideoTransform.preset(recipe, size=32)
    out = tf(_clip(), np.random.default_rng(0))
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    # identical frames in -> identical frames out, whatever was drawn (crop, flip, jitter, RandAugment)
    same = np.repeat(_clip(1), 5, axis=0)
    for seed in range(15):
        y = tf(same, np.random.default_rng(seed))
        for i in range(1, 5):
            torch.testing.assert_close(y[i], y[0], rtol=0, atol=0)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_same_generator_seed_same_output_and_global_random_untouched(recipe: str) -> None:
    tf = VideoTransform.preset(recipe, size=32)
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    a = tf(_clip(), np.random.default_rng(7))
    after = (random.random(), np.random.rand())
    b = tf(_clip(), np.random.default_rng(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert before == after  # RandAugment re-seeds the global states but restores them
    assert not torch.equal(a, tf(_clip(), np.random.default_rng(8)))


def test_ssv2_recipe_never_flips_vificlip_flips_about_half() -> None:
    clip = _left_right_clip()
    ssv2 = VideoTransform.preset("randaugment_noflip", size=32, rand_augment=None, rrc_scale=(1.0, 1.0),
                                 rrc_ratio=(56 / 40, 56 / 40))
    flipped = 0
    for seed in range(60):
        y = ssv2(clip, np.random.default_rng(seed))
        flipped += int(y[0, :, :, :8].mean() > y[0, :, :, -8:].mean())
    assert flipped == 0
    vifi = VideoTransform.preset("multiscale_crop", size=32, color_jitter=0.0, grayscale=0.0, scales=(1.0,))
    flips = [bool(vifi(clip, np.random.default_rng(s))[0, :, :, :4].mean() > 0) for s in range(200)]
    assert 70 < sum(flips) < 130


def test_eval_views_center_and_three_crops() -> None:
    # horizontal ramp: column value = x, so crops are identifiable by their mean
    h, w = 32, 96
    ramp = np.broadcast_to(np.linspace(0, 255, w).astype(np.uint8)[None, None, :, None], (3, h, w, 3)).copy()
    tf = VideoTransform.preset("short_side_jitter", size=32)
    one = tf.eval_views(ramp, 1)
    three = tf.eval_views(ramp, 3)
    assert one.shape == (1, 3, 3, 32, 32) and three.shape == (3, 3, 3, 32, 32)
    means = [float(v.mean()) for v in three]
    assert means[0] < means[1] < means[2]  # left, centre, right
    torch.testing.assert_close(one[0], three[1])  # the single view is the centre crop
    # portrait video: the three crops go top, centre, bottom
    tall = np.ascontiguousarray(ramp.transpose(0, 2, 1, 3))
    v = tf.eval_views(tall, 3)
    assert [float(c.mean()) for c in v] == sorted(float(c.mean()) for c in v)


def test_vificlip_eval_resizes_short_side_to_256_over_224() -> None:
    tf = VideoTransform.preset("multiscale_crop", size=224)
    assert tf.resize_short == 256 and tf.eval_resize == 256
    assert VideoTransform.preset("short_side_jitter", size=224).eval_resize == 224
    assert VideoTransform.preset("multiscale_crop", size=56).resize_short == 64


def test_normalisation_constants() -> None:
    gray = np.full((2, 40, 40, 3), 128, dtype=np.uint8)
    for name in ("clip", "imagenet"):
        tf = VideoTransform(size=32, train_crop="multiscale", normalize=name, hflip=0.0)
        out = tf.eval_views(gray, 1)[0, 0]
        mean, std = NORMALIZATION[name]
        for c in range(3):
            assert float(out[c].mean()) == pytest.approx((128 / 255 - mean[c]) / std[c], abs=1e-5)
    # ViFi-CLIP's 0-255 constants are ImageNet's
    assert np.allclose(np.array([123.675, 116.28, 103.53]) / 255, NORMALIZATION["imagenet"][0])
    assert np.allclose(np.array([58.395, 57.12, 57.375]) / 255, NORMALIZATION["imagenet"][1])


def test_multiscale_crop_boxes_follow_the_scales() -> None:
    tf = VideoTransform.preset("multiscale_crop", size=32)
    rng = np.random.default_rng(0)
    boxes = {tf.multiscale_box(64, 80, rng) for _ in range(300)}
    levels = {int(64 * s): i for i, s in enumerate(tf.scales)}  # 64, 56, 48, 42
    sizes = {(h, w) for _, _, h, w in boxes}
    assert all(h in levels and w in levels and abs(levels[h] - levels[w]) <= 1 for h, w in sizes)
    assert len(sizes) == 10  # 4 + 2 * 3 (w, h) pairs at most one scale level apart
    for top, left, h, w in boxes:  # 5 fixed positions: corners and centre, on a quarter grid
        ws, hs = (80 - w) // 4, (64 - h) // 4
        assert (left, top) in {(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)}
    # a crop within 3 px of the input size snaps to it
    tf224 = VideoTransform.preset("multiscale_crop", size=224)
    assert {h for _, _, h, _ in (tf224.multiscale_box(256, 340, rng) for _ in range(200))} == {256, 224, 192, 168}


def test_color_jitter_per_frame_option_breaks_consistency() -> None:
    same = np.repeat(_clip(1), 4, axis=0)
    tf = VideoTransform.preset("multiscale_crop", size=32, color_jitter=1.0, color_jitter_per_frame=True, grayscale=0.0)
    y = tf(same, np.random.default_rng(0))
    assert not torch.equal(y[0], y[1])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown transform recipe"):
        VideoTransform.preset("nope")
    with pytest.raises(ValueError, match="num_crops"):
        VideoTransform(size=32).eval_views(_clip(), 2)
    with pytest.raises(ValueError, match="uint8"):
        VideoTransform(size=32)(np.zeros((2, 8, 8, 3), np.float32), np.random.default_rng(0))
