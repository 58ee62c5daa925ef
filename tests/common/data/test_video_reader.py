"""Video readers: decord and PyAV agree frame for frame on ShapesWorld videos; lazy opening; every bad-input case."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from common.data.synth import world
from common.data.synth.video_writers import write_video
from common.data.video import VideoDecodeError, available_backends, open_video, read_clip

BACKENDS = ["decord", "pyav"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A moving-shape clip as H.264 mp4 and VP9 webm (17 frames, 48x64), plus the bad files."""
    root = tmp_path_factory.mktemp("videos")
    spec = world.sample_scene(3, num_objects=(2, 2), person_prob=0.0, motions=["left to right", "up"])
    frames = [s.image for s in world.render_video(spec, 17, (48, 64))]
    out = {"mp4": root / "clip.mp4", "webm": root / "clip.webm"}
    write_video(out["mp4"], frames, 10, "h264")
    write_video(out["webm"], frames, 10, "vp9")
    np.save(root / "source.npy", np.stack(frames))
    out["source"] = root / "source.npy"
    # bad inputs
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = out["mp4"].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: header gone
    import av

    # a faststart mp4 (header first) cut in half: the header promises frames the file no longer has
    fs = root / "faststart.mp4"
    with av.open(str(fs), "w", format="mp4", options={"movflags": "+faststart"}) as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(1)
        for _ in range(30):  # noisy frames: big packets, so half the bytes is about half the frames
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    data = fs.read_bytes()
    (root / "truncated_faststart.mp4").write_bytes(data[: len(data) // 2])
    out.update({k: root / f"{k}.mp4" for k in ("empty", "garbage", "truncated", "truncated_faststart")})
    out["missing"] = root / "does_not_exist.mp4"
    return out


def test_backends_available() -> None:
    assert {"decord", "pyav"} <= set(available_backends())


@pytest.mark.parametrize("kind", ["mp4", "webm"])
def test_backends_return_identical_frames(videos: dict[str, Path], kind: str) -> None:
    idx = [0, 16, 5, 5, 9, 1]  # unsorted, repeated, first and last
    out = {}
    for backend in BACKENDS:
        with open_video(videos[kind], backend) as r:
            assert r.num_frames == 17
            assert r.fps == pytest.approx(10.0)
            out[backend] = r.get_frames(idx)
    assert out["decord"].shape == (6, 48, 64, 3) and out["decord"].dtype == np.uint8
    np.testing.assert_array_equal(out["decord"], out["pyav"])
    # repeated indices give the same frame, different indices differ (the shapes move)
    np.testing.assert_array_equal(out["pyav"][2], out["pyav"][3])
    assert not np.array_equal(out["pyav"][0], out["pyav"][1])
    # decoded frame i is rendered frame i (no off-by-one), close in luma (4:2:0 chroma loses colour detail)
    source = np.load(videos["source"]).astype(np.float32)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    decoded = out["pyav"].astype(np.float32) @ luma
    err = np.abs(decoded[:, None] - (source @ luma)[None]).mean(axis=(2, 3))  # (6 decoded, 17 rendered)
    np.testing.assert_array_equal(err.argmin(axis=1), idx)
    assert err[np.arange(6), idx].max() < 4.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_reader_opens_lazily_and_pickles_without_decoder(videos: dict[str, Path], backend: str) -> None:
    r = open_video(videos["missing"], backend)  # a missing file is fine until first use
    assert not r.is_open
    r = open_video(videos["mp4"], backend)
    assert not r.is_open
    assert r.num_frames == 17
    assert r.is_open
    clone = pickle.loads(pickle.dumps(r))
    assert not clone.is_open
    np.testing.assert_array_equal(clone.get_frames([3]), r.get_frames([3]))
    r.close()
    assert not r.is_open


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name,reasons",
    [
        ("missing", {"missing"}),
        ("empty", {"empty"}),
        ("garbage", {"undecodable"}),
        ("truncated", {"undecodable"}),
        ("truncated_faststart", {"undecodable", "truncated"}),
    ],
)
def test_bad_videos_raise_video_decode_error(videos: dict[str, Path], backend: str, name: str, reasons: set) -> None:
    with pytest.raises(VideoDecodeError) as info:
        read_clip(videos[name], lambda n: np.arange(n), backend)  # every frame: reaches the end of the file
    assert info.value.reason in reasons
    assert str(videos[name]) in str(info.value)
    err = pickle.loads(pickle.dumps(info.value))  # crosses DataLoader worker boundaries intact
    assert (err.path, err.reason) == (info.value.path, info.value.reason)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_past_the_end_is_refused(videos: dict[str, Path], backend: str) -> None:
    with open_video(videos["mp4"], backend) as r, pytest.raises(ValueError, match="past the last frame"):
        r.get_frames([0, 17])


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown video backend"):
        open_video("x.mp4", "opencv")
