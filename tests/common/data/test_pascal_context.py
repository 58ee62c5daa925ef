"""PASCAL-Context multi-task: ShapesWorld writer -> reader round trip, joint augmentation, bad input, datamodule."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from common.callbacks.data import SkipCounter
from common.data import pascal_context as pc
from common.data.base import DatasetLayoutError, SkippedSampleWarning
from common.data.pascal_context import (
    NORMALS_VALID_CONTEXT_IDS,
    MultiTaskTransform,
    PascalContextMT,
    PascalContextMTDataModule,
    PascalLayoutError,
    SampleError,
)
from common.data.synth import pascal_mt
from common.data.synth.__main__ import main as synth_main

SEED, SIZE, PERSON_PROB, N_TRAIN, N_VAL = 3, (40, 48), 0.6, 6, 5


@pytest.fixture(scope="session")
def pascal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ShapesWorld PASCAL_MT set written through the CLI (non-square images)."""
    root = tmp_path_factory.mktemp("pascal") / "pascal-context"
    rc = synth_main(
        ["pascal-context", "--out", str(root), "--num-train", str(N_TRAIN), "--num-val", str(N_VAL),
         "--seed", str(SEED), "--size", str(SIZE[0]), str(SIZE[1]), "--person-prob", str(PERSON_PROB),
         "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    return root


@pytest.fixture()
def broken_root(pascal_root: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(pascal_root, dst)
    return dst


def _scene(split: str, index: int):
    return pascal_mt.render_sample(SEED, split, index, SIZE, PERSON_PROB)


# ----------------------------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------------------------


def test_writer_layout_and_split_lists(pascal_root: Path) -> None:
    train = (pascal_root / "ImageSets/Context/train.txt").read_text().split()
    val = (pascal_root / "ImageSets/Context/val.txt").read_text().split()
    assert len(train) == N_TRAIN and len(val) == N_VAL and not set(train) & set(val)
    for im_id in train + val:
        for rel in (
            f"JPEGImages/{im_id}.jpg", f"semseg/pascal-context/{im_id}.png", f"human_parts/{im_id}.mat",
            f"normals_distill/{im_id}.png", f"pascal-context/trainval/{im_id}.mat", f"sal_distill/{im_id}.png",
        ):  # fmt: skip
            assert (pascal_root / rel).is_file(), rel
    with Image.open(pascal_root / "JPEGImages" / f"{val[0]}.jpg") as im:
        assert im.size == (SIZE[1], SIZE[0])  # PIL gives (W, H)


def test_writer_constants_agree_with_reader() -> None:
    assert pascal_mt.VOC_TO_CONTEXT_ID == pc.VOC_TO_CONTEXT_ID
    assert pascal_mt.PERSON_CLASS == pc.PERSON_CLASS
    assert pascal_mt.NUM_SEMSEG_CLASSES == len(pc.VOC_CLASS_NAMES)
    names = pascal_mt.semseg_class_names()
    assert names[0] == "background" and names[pc.PERSON_CLASS] == "person"
    assert len(set(pascal_mt.SHAPE_SLOTS.values())) == len(pascal_mt.SHAPE_SLOTS)  # one class per shape
    assert pc.PERSON_CLASS not in pascal_mt.SHAPE_SLOTS.values()


def test_human_parts_mat_reads_the_upstream_way(pascal_root: Path) -> None:
    """Positional access as the lineage's loader does it: anno[0][0][1][0] -> objects; [1] class_ind,
    [2] mask, [3] parts -> [0][p][0][0] part name, [0][p][1] mask."""
    seen_person = False
    for i in range(N_VAL):
        im_id = pascal_mt.image_id("val", i)
        scene = _scene("val", i)
        objects = scipy.io.loadmat(str(pascal_root / "human_parts" / f"{im_id}.mat"))["anno"][0][0][1][0]
        assert len(objects) == sum(inst.isthing for inst in scene.instances)
        for obj in objects:
            cls = int(obj[1][0][0])
            assert obj[2].shape == SIZE
            if cls == 15:
                seen_person = True
                assert len(obj[3]) != 0  # has parts
                names = [str(obj[3][0][p][0][0]) for p in range(len(obj[3][0]))]
                assert set(names) <= set(pc.PERSON_PART_GROUPS)
                assert {"head", "torso"} <= set(names)
                painted = np.zeros(SIZE, dtype=np.uint8)
                for p in range(len(obj[3][0])):
                    painted[obj[3][0][p][1].astype(bool)] = pc.PERSON_PART_GROUPS[names[p]]
                np.testing.assert_array_equal(painted, scene.parts)
            else:
                assert len(obj[3]) == 0 and cls in pascal_mt.SHAPE_SLOTS.values()
    assert seen_person, "fixture should contain at least one person (raise PERSON_PROB or N_VAL)"


def test_writer_is_deterministic_and_seeded(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    a = pascal_mt.write_pascal_mt(tmp_path / "a", 2, 1, seed=7, size=24, progress=False)
    pascal_mt.write_pascal_mt(tmp_path / "b", 2, 1, seed=7, size=24, progress=False)
    pascal_mt.write_pascal_mt(tmp_path / "c", 2, 1, seed=8, size=24, progress=False)
    da, db, dc = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert da == db
    assert da.keys() == dc.keys() and da != dc
    assert a["num_train"] == 2 and a["class_names"][15] == "person"


# ----------------------------------------------------------------------------------------------------------------
# Writer -> reader round trip, every task
# ----------------------------------------------------------------------------------------------------------------


def test_round_trip_every_task(pascal_root: Path) -> None:
    ds = PascalContextMT(pascal_root, "val", on_error="raise")
    assert ds.ids == [pascal_mt.image_id("val", i) for i in range(N_VAL)]
    sem_lut, ctx_lut = pascal_mt.semseg_lut(), pascal_mt.context_lut()
    valid_ids = np.array(sorted(NORMALS_VALID_CONTEXT_IDS))
    for i in range(N_VAL):
        scene = _scene("val", i)
        raw = ds.load_raw(i)
        # image (JPEG, so close but not exact)
        assert raw["image"].shape == (*SIZE, 3)
        assert np.abs(raw["image"].astype(float) - scene.image.astype(float)).mean() < 5.0
        # semseg: the 21-class mapping of the semantic map
        np.testing.assert_array_equal(raw["semseg"], sem_lut[scene.semantic])
        # human parts: the renderer's groups, or all-ignore without a person
        if scene.has_person:
            np.testing.assert_array_equal(raw["human_parts"], scene.parts)
        else:
            assert (raw["human_parts"] == 255).all()
        # saliency
        np.testing.assert_array_equal(raw["sal"], scene.saliency)
        # normals: valid on NYU-compatible classes, equal up to 8-bit quantisation
        expect_valid = np.isin(ctx_lut[scene.semantic].astype(np.int64), valid_ids)
        np.testing.assert_array_equal(raw["normals_mask"], expect_valid)
        n = raw["normals"][expect_valid]
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
        cos = np.clip((n * scene.normals[expect_valid]).sum(-1), -1, 1)
        assert np.degrees(np.arccos(cos)).max() < 1.0
        assert (raw["normals"][~expect_valid] == 0).all()


def test_cache_in_memory_serves_the_same_samples_without_files(broken_root: Path) -> None:
    """With ``cache_in_memory`` the second epoch reads no file and returns what the uncached dataset returns."""
    transform = MultiTaskTransform(SIZE, train=False)
    plain = PascalContextMT(broken_root, "val", transform=transform, on_error="raise")
    cached = PascalContextMT(broken_root, "val", transform=transform, on_error="raise", cache_in_memory=True)
    expected = [plain[i] for i in range(len(plain))]
    raws = [plain.load_raw(i) for i in range(len(plain))]
    first = [cached[i] for i in range(len(cached))]
    for folder in ("JPEGImages", "semseg", "human_parts", "sal_distill", "normals_distill"):
        shutil.rmtree(broken_root / folder)
    with pytest.raises(SampleError):
        plain.load_raw(0)  # the files are really gone
    second = [cached[i] for i in range(len(cached))]
    for e, a, b in zip(expected, first, second, strict=True):
        assert e.keys() == a.keys() == b.keys()
        for k in e:
            if isinstance(e[k], torch.Tensor):
                assert torch.equal(e[k], a[k]) and torch.equal(e[k], b[k]), k
    # augmentation runs per epoch on the cached arrays and must not change them in place
    cached.transform = MultiTaskTransform(SIZE, train=True)
    for _ in range(2):
        _ = [cached[i] for i in range(len(cached))]
    for i, raw in enumerate(raws):
        for k, v in raw.items():
            np.testing.assert_array_equal(cached._cache[i][k], v)


def test_round_trip_covers_valid_and_invalid_normals(pascal_root: Path) -> None:
    ds = PascalContextMT(pascal_root, "train", tasks=["normals"])
    masks = np.stack([ds.load_raw(i)["normals_mask"] for i in range(len(ds))])
    assert 0.05 < masks.mean() < 0.95  # both kinds of pixels exist, so the mask is really tested


# ----------------------------------------------------------------------------------------------------------------
# Joint augmentation
# ----------------------------------------------------------------------------------------------------------------


def _toy_sample(h: int = 8, w: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    n[..., 2] = np.abs(n[..., 2]) + 0.1
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return {
        "image": rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8),
        "semseg": rng.integers(0, 21, size=(h, w), dtype=np.uint8),
        "human_parts": rng.integers(0, 7, size=(h, w), dtype=np.uint8),
        "sal": rng.integers(0, 2, size=(h, w), dtype=np.uint8),
        "normals": n,
        "normals_mask": np.ones((h, w), dtype=bool),
    }


def test_hflip_flips_everything_and_negates_normal_x() -> None:
    s = _toy_sample()
    t = MultiTaskTransform(8, train=True, normalize=False)
    out = t.apply(s, flip=True, scale=1.0, angle=0.0)
    np.testing.assert_allclose(out["image"].numpy() * 255, s["image"][:, ::-1].transpose(2, 0, 1), atol=1e-3)
    for k in ("semseg", "human_parts", "sal"):
        np.testing.assert_array_equal(out[k].numpy(), s[k][:, ::-1])
    flipped = s["normals"][:, ::-1].transpose(2, 0, 1)
    np.testing.assert_allclose(out["normals"][0].numpy(), -flipped[0], atol=1e-5)  # x changes sign
    np.testing.assert_allclose(out["normals"][1:].numpy(), flipped[1:], atol=1e-5)
    assert out["normals_mask"].all()


def test_rotation_moves_pixels_and_turns_normals() -> None:
    s = _toy_sample()
    t = MultiTaskTransform(8, train=True, normalize=False)
    out = t.apply(s, flip=False, scale=1.0, angle=90.0)  # anticlockwise on screen
    rot = lambda a: np.rot90(a, k=1, axes=(0, 1))  # noqa: E731  (np.rot90 turns anticlockwise as displayed)
    for k in ("semseg", "human_parts", "sal"):
        np.testing.assert_array_equal(out[k].numpy(), rot(s[k]))
    nx, ny, nz = (rot(s["normals"][..., c]) for c in range(3))
    # a vector pointing right (x) must point up (-y) after the turn: (x, y) -> (y, -x)
    np.testing.assert_allclose(out["normals"][0].numpy(), ny, atol=1e-4)
    np.testing.assert_allclose(out["normals"][1].numpy(), -nx, atol=1e-4)
    np.testing.assert_allclose(out["normals"][2].numpy(), nz, atol=1e-4)


def test_zoom_out_pads_labels_with_ignore_and_normals_with_invalid() -> None:
    s = _toy_sample(16, 16)
    s["human_parts"][:] = 3
    out = MultiTaskTransform(16, train=True).apply(s, flip=False, scale=0.75, angle=10.0)
    for k in ("semseg", "human_parts", "sal"):
        assert out[k][0, 0] == 255 and out[k][8, 8] != 255
    assert not out["normals_mask"][0, 0] and out["normals_mask"][8, 8]
    assert (out["normals"][:, ~out["normals_mask"]] == 0).all()
    norms = out["normals"][:, out["normals_mask"]].norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # re-normalised after interpolation


def test_parts_become_ignore_when_the_person_leaves_the_frame() -> None:
    s = _toy_sample(16, 16)
    s["human_parts"][:] = 0
    s["human_parts"][0, 0] = 2  # one part pixel in the corner, cut off by a zoom-in
    out = MultiTaskTransform(16, train=True).apply(s, flip=False, scale=1.25, angle=0.0)
    assert (out["human_parts"] == 255).all()


def test_fixed_resize_and_random_params() -> None:
    s = _toy_sample(8, 12)
    out = MultiTaskTransform((6, 10)).apply(s, False, 1.0, 0.0)
    assert (
        out["image"].shape == (3, 6, 10)
        and out["semseg"].shape == (6, 10)
        and out["normals"].shape == (3, 6, 10)
    )
    t = MultiTaskTransform(8, train=True, scale_range=(0.75, 1.25), max_rotation=20.0)
    g = torch.Generator().manual_seed(0)
    params = [t.sample_params(g) for _ in range(200)]
    flips, scales, angles = zip(*params, strict=True)
    assert 0.3 < np.mean(flips) < 0.7
    assert 0.75 <= min(scales) and max(scales) <= 1.25 and max(scales) - min(scales) > 0.4
    assert -20 <= min(angles) and max(angles) <= 20 and max(angles) - min(angles) > 30
    assert MultiTaskTransform(8, train=False).sample_params(g) == (False, 1.0, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Datamodule
# ----------------------------------------------------------------------------------------------------------------


def test_datamodule_batches_and_info(pascal_root: Path) -> None:
    dm = PascalContextMTDataModule(str(pascal_root), tasks=["semseg", "normals"], image_size=32, batch_size=4)
    info = dm.info
    assert info["tasks"] == ["semseg", "normals"]
    assert info["num_classes"] == {"semseg": 21, "normals": 3}
    assert info["class_names"]["semseg"] == list(pascal_mt.semseg_class_names())
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "semseg", "normals", "normals_mask", "id", "skipped", "skipped_samples"}
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["semseg"].shape == (4, 32, 32) and batch["semseg"].dtype == torch.long
    assert batch["normals"].shape == (4, 3, 32, 32) and batch["normals_mask"].shape == (4, 32, 32)
    assert int(batch["skipped"]) == 0
    assert abs(float(batch["image"].mean())) < 2.0  # ImageNet-normalised, not 0..255
    v1 = next(iter(dm.val_dataloader()))
    v2 = next(iter(dm.val_dataloader()))
    assert v1["id"] == v2["id"] and torch.equal(v1["semseg"], v2["semseg"])  # no augmentation at eval
    full = PascalContextMTDataModule(str(pascal_root)).info
    assert full["num_classes"] == {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}
    assert (
        full["class_names"]["human_parts"][0] == "background" and len(full["class_names"]["human_parts"]) == 7
    )


def test_real_layout_without_class_names_uses_voc(broken_root: Path) -> None:
    (broken_root / "class_names.txt").unlink()
    assert PascalContextMTDataModule(str(broken_root)).info["class_names"]["semseg"] == list(
        pc.VOC_CLASS_NAMES
    )


def test_root_null_writes_the_stand_in_at_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVINW_DATA", str(tmp_path / "data"))
    assert PascalContextMTDataModule(None).root == tmp_path / "data" / "pascal-context"  # the writer's defaults
    opts = {"num_train": 2, "num_val": 2, "size": 24, "progress": False}
    root = pascal_mt.stand_in_root(opts)
    assert root.parent == tmp_path / "data" and re.fullmatch(r"pascal-context-[0-9a-f]{8}", root.name)
    dm = PascalContextMTDataModule(None, tasks=["sal"], batch_size=2, synth_options=opts)
    assert dm.root == root and dm.synth_if_missing  # on by default
    assert dm.info["tasks"] == ["sal"] and not root.exists()  # info alone writes nothing
    dm.prepare_data()
    assert (root / "ImageSets" / "Context" / "val.txt").is_file()
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["sal"].shape == (2, 64, 64)


def test_a_typo_in_a_given_root_is_an_error_not_a_synthetic_dataset(tmp_path: Path) -> None:
    typo = tmp_path / "PASCAL_TM"
    dm = PascalContextMTDataModule(str(typo), synth_if_missing=True, tasks=["sal"])
    for touch in (lambda: dm.info, dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(DatasetLayoutError) as err:
            touch()
        msg = str(err.value)
        assert f"dataset root {typo} does not exist" in msg and "never written" in msg
        assert f"python -m common.data.synth pascal-context --out {typo}" in msg
    assert not typo.exists()


def test_generate_if_missing_is_the_deprecated_name_of_synth_if_missing(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match="generate_if_missing is deprecated, say synth_if_missing"):
        dm = PascalContextMTDataModule(str(tmp_path / "x"), generate_if_missing=False)
    assert dm.synth_if_missing is False


def test_other_synth_options_get_their_own_folder_and_a_foreign_stamp_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worlds (e.g. a preset changed its synth_options) live side by side, neither touched by the other; a
    default folder whose stamp records other options (written by hand) names the stamp and the fix, loses nothing."""
    monkeypatch.setenv("CVINW_DATA", str(tmp_path))
    opts = {"num_train": 2, "num_val": 1, "size": 24, "progress": False}
    root = pascal_mt.stand_in_root(opts)
    PascalContextMTDataModule(None, synth_options=opts).prepare_data()
    assert pascal_mt.written_options(root) == pascal_mt.requested_options(**opts)
    assert pascal_mt.written_options(root)["size"] == [24, 24]
    before = sorted(p.name for p in (root / "JPEGImages").iterdir())
    PascalContextMTDataModule(None, synth_options=opts).prepare_data()  # same: fine
    other_opts = {**opts, "num_train": 5}
    other = PascalContextMTDataModule(None, synth_options=other_opts)
    assert other.root != root
    other.prepare_data()  # its own folder
    assert pascal_mt.written_options(other.root)["num_train"] == 5
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == before
    shutil.copy(root / pascal_mt.STAMP_NAME, other.root / pascal_mt.STAMP_NAME)  # a foreign stamp
    with pytest.raises(PascalLayoutError, match=r"shapesworld\.json.*num_train: 2 here, 5 asked.*delete"):
        other.prepare_data()
    with pytest.raises(TypeError, match="unknown ShapesWorld PASCAL_MT option"):
        pascal_mt.requested_options(num_trian=3)
    (other.root / pascal_mt.STAMP_NAME).unlink()  # a folder without a stamp (older writer, real data) is used as is
    other.prepare_data()


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------


def test_missing_root_names_layout_and_command(tmp_path: Path) -> None:
    with pytest.raises(PascalLayoutError, match=r"pascal-context --out"):
        PascalContextMT(tmp_path / "nope", "train")


def test_missing_task_folder(broken_root: Path) -> None:
    shutil.rmtree(broken_root / "sal_distill")
    with pytest.raises(PascalLayoutError, match="sal_distill"):
        PascalContextMT(broken_root, "train", tasks=["semseg", "sal"])
    assert len(PascalContextMT(broken_root, "train", tasks=["semseg"])) == N_TRAIN  # not needed, no error


def test_missing_split_file(broken_root: Path) -> None:
    (broken_root / "ImageSets/Context/val.txt").unlink()
    with pytest.raises(PascalLayoutError, match=r"ImageSets/Context/val\.txt"):
        PascalContextMT(broken_root, "val")


def test_image_without_label_raises_or_skips(broken_root: Path) -> None:
    victim = pascal_mt.image_id("train", 2)
    (broken_root / "semseg" / "pascal-context" / f"{victim}.png").unlink()
    with pytest.raises(PascalLayoutError, match=rf"{victim}\.png"):
        PascalContextMT(broken_root, "train", on_error="raise")
    with pytest.warns(UserWarning, match=victim):
        ds = PascalContextMT(broken_root, "train", on_error="skip")
    assert len(ds) == N_TRAIN - 1 and victim not in ds.ids
    dm = PascalContextMTDataModule(str(broken_root), on_error="skip")
    with pytest.warns(UserWarning):
        dm.setup("fit")
    assert dm.num_skipped == 1


def test_label_of_wrong_size_raises_or_skips(broken_root: Path) -> None:
    victim = pascal_mt.image_id("val", 1)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(broken_root / "sal_distill" / f"{victim}.png")
    ds = PascalContextMT(broken_root, "val", tasks=["sal"], on_error="raise")
    with pytest.raises(SampleError, match=rf"sal_distill/{victim}\.png.*10x10"):
        ds[1]
    dm = PascalContextMTDataModule(str(broken_root), tasks=["sal"], on_error="skip", eval_batch_size=N_VAL)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert int(batch["skipped"]) == 1
    assert len(batch["id"]) == N_VAL - 1 and victim not in batch["id"]
    counter = SkipCounter()  # the main-process counter of the SkippedSamples callback: warns once per file
    with pytest.warns(SkippedSampleWarning, match=rf"{victim}.*10x10"):
        counter.record_batch(batch)
    assert counter.total == 1 and counter.by_reason == {"broken": 1}
    assert dm.num_skipped == 0  # nothing was missing at setup


def test_corrupt_parts_file_is_named(broken_root: Path) -> None:
    victim = pascal_mt.image_id("val", 0)
    (broken_root / "human_parts" / f"{victim}.mat").write_bytes(b"not a mat file")
    ds = PascalContextMT(broken_root, "val", tasks=["human_parts"], on_error="raise")
    with pytest.raises(SampleError, match=rf"human_parts/{victim}\.mat"):
        ds[0]


def test_bad_task_name() -> None:
    with pytest.raises(ValueError, match="subset of"):
        PascalContextMTDataModule(tasks=["semseg", "depth"])


def test_all_skipped_batch_keeps_shapes() -> None:
    collate = pc.pascal_collate(["semseg", "normals"], (8, 8))
    batch = collate([None, None])
    assert int(batch["skipped"]) == 2
    assert batch["image"].shape == (0, 3, 8, 8) and batch["normals_mask"].shape == (0, 8, 8)
    assert batch["semseg"].shape == (0, 8, 8) and batch["skipped_samples"][0].reason == "broken"


def test_split_mostly_missing_fails_at_setup(broken_root: Path) -> None:
    """More than max_missing_fraction of a split's images missing is a layout error, not a run on nothing."""
    for i in range(N_VAL - 1):  # 4 of 5 val images lose their semseg PNG
        (broken_root / "semseg" / "pascal-context" / f"{pascal_mt.image_id('val', i)}.png").unlink()
    dm = PascalContextMTDataModule(str(broken_root), tasks=["semseg"])
    with pytest.warns(SkippedSampleWarning), pytest.raises(DatasetLayoutError) as err:
        dm.setup("validate")
    msg = str(err.value)
    assert "4 of the 5 samples listed for the val split" in msg and "4 missing" in msg
    assert f"{pascal_mt.image_id('val', 0)}" in msg and "python -m common.data.synth pascal-context --out" in msg
    with pytest.warns(SkippedSampleWarning):
        PascalContextMTDataModule(str(broken_root), tasks=["semseg"], max_missing_fraction=0.9).setup("validate")


def test_angles_helper_sanity() -> None:
    # the rotation used by the transform is a proper rotation (length preserving, det +1)
    n = torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1)
    r = MultiTaskTransform.rotate_normals(n, flip=False, angle=30.0)
    assert torch.isclose(r.norm(), torch.tensor(1.0))
    assert math.isclose(float(r[0]), 0.6 * math.cos(math.radians(30)), abs_tol=1e-6)
    assert math.isclose(float(r[1]), -0.6 * math.sin(math.radians(30)), abs_tol=1e-6)
