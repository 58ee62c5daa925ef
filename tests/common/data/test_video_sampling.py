"""Frame samplers: exact indices on known frame counts (TSN train/test, uniform, dense, multi-view)."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.sampling import DenseSampler, SegmentSampler, build_sampler


def test_tsn_test_takes_segment_centres() -> None:
    # 80 frames, 8 segments of 10: centres at 5, 15, ..., 75
    s = SegmentSampler(8, "tsn")
    np.testing.assert_array_equal(s.test_indices(80), [[5, 15, 25, 35, 45, 55, 65, 75]])
    # 30 frames, 4 segments of 7.5: int(7.5 i + 3.75)
    np.testing.assert_array_equal(s.__class__(4).test_indices(30), [[3, 11, 18, 26]])


def test_tsn_train_one_random_frame_per_segment() -> None:
    s = SegmentSampler(8, "tsn")
    rng = np.random.default_rng(0)
    seen = np.zeros((8, 10), dtype=bool)
    for _ in range(400):
        idx = s.train_indices(80, rng)
        assert idx.shape == (8,) and idx.dtype == np.int64
        seg = idx // 10
        np.testing.assert_array_equal(seg, np.arange(8))  # exactly one frame in each segment
        seen[seg, idx % 10] = True
    assert seen.all()  # every offset in every segment occurs


def test_tsn_short_video_repeats_frames_evenly() -> None:
    s = SegmentSampler(8, "tsn")
    # mmaction2: around(i * 4/8) (half to even), clipped to the last frame
    np.testing.assert_array_equal(s.train_indices(4, np.random.default_rng(0)), [0, 0, 1, 2, 2, 2, 3, 3])
    assert s.test_indices(4).max() <= 3 and s.test_indices(1).tolist() == [[0] * 8]


def test_tsn_multi_clip_test_shifts_inside_segments() -> None:
    s = SegmentSampler(4, "tsn")
    # 40 frames, segments of 10; 2 clips pick 1/4 and 3/4 of each segment
    np.testing.assert_array_equal(s.test_indices(40, 2), [[2, 12, 22, 32], [7, 17, 27, 37]])
    # one clip is the centre
    np.testing.assert_array_equal(s.test_indices(40, 1), [[5, 15, 25, 35]])


def test_uniform_segments_match_slowfast_convention() -> None:
    s = SegmentSampler(4, "uniform")
    # n=41: seg=(41-1)/4=10 -> bounds [0,10],[10,20],[20,30],[30,40]; centres (s+e)//2
    np.testing.assert_array_equal(s.test_indices(41), [[5, 15, 25, 35]])
    rng = np.random.default_rng(1)
    draws = np.stack([s.train_indices(41, rng) for _ in range(300)])
    for i in range(4):  # inclusive bounds: both ends are reachable
        assert draws[:, i].min() == 10 * i and draws[:, i].max() == 10 * (i + 1)


def test_dense_train_window_inside_video() -> None:
    s = DenseSampler(clip_len=8, frame_interval=16)
    assert s.span == 113
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        idx = s.train_indices(300, rng)
        np.testing.assert_array_equal(np.diff(idx), 16)
        assert 0 <= idx[0] and idx[-1] <= 299
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) <= 300 - 112 - 1 and len(starts) > 100


def test_dense_short_video_repeats_last_frame() -> None:
    s = DenseSampler(clip_len=8, frame_interval=4)
    np.testing.assert_array_equal(s.train_indices(10, np.random.default_rng(0)), [0, 4, 8, 9, 9, 9, 9, 9])
    np.testing.assert_array_equal(s.test_indices(10), [[0, 4, 8, 9, 9, 9, 9, 9]])


def test_dense_test_clips_evenly_spaced() -> None:
    s = DenseSampler(clip_len=4, frame_interval=2)  # span 7
    # 1 clip: centred, slide = 100 - 7 = 93, start 46
    np.testing.assert_array_equal(s.test_indices(100), [[46, 48, 50, 52]])
    # 3 clips: starts round(93/2 * i) = 0, 46 (46.5 rounds to even), 93
    np.testing.assert_array_equal(
        s.test_indices(100, 3), [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]
    )


@pytest.mark.parametrize("sampler", [SegmentSampler(8, "tsn"), SegmentSampler(8, "uniform"), DenseSampler(8, 3)])
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 23, 64, 301])
def test_indices_always_in_range(sampler, n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        idx = sampler.train_indices(n, rng)
        assert idx.shape == (8,) and 0 <= idx.min() and idx.max() < n
    for clips in (1, 2, 4):
        idx = sampler.test_indices(n, clips)
        assert idx.shape == (clips, 8) and 0 <= idx.min() and idx.max() < n
        assert (np.diff(idx, axis=1) >= 0).all()  # time runs forward in every clip


def test_build_sampler_and_errors() -> None:
    assert build_sampler("segment", 16, segment_style="uniform") == SegmentSampler(16, "uniform")
    assert build_sampler("dense", 8, 4) == DenseSampler(8, 4)
    with pytest.raises(ValueError, match="sampling must be"):
        build_sampler("random", 8)
    with pytest.raises(ValueError, match="0 frames"):
        SegmentSampler(8).test_indices(0)
