"""The ShapesWorld COCO-panoptic writer and COCOPanopticDataModule: format, class subsets, transforms, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from common.callbacks.data import SkipCounter
from common.data.base import DatasetLayoutError, SkippedSample, SkippedSampleWarning
from common.data.coco_panoptic import (
    COCOPanopticDataModule,
    COCOPanopticDataset,
    FixedSizeCrop,
    PanopticDataError,
    collate_panoptic,
    load_categories,
    panoptic_eval_transform,
    panoptic_train_transform,
)
from common.data.synth import world
from common.data.synth.__main__ import main as synth_main
from common.data.synth.coco_panoptic import write_coco_panoptic
from common.metrics.panoptic import load_panoptic_png, rgb2id

H, W = 40, 48


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes_panoptic")
    assert synth_main(["coco-panoptic", "--out", str(out), "--num-train", "6", "--num-val", "6", "--size", f"{H}x{W}",
                       "--seed", "1", "--crowd-prob", "0.5", "--no-progress"]) == 0
    return out


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------------------------------------------
def test_writer_layout_and_coco_conventions(root):
    for rel in ("train2017", "val2017", "annotations/panoptic_train2017", "annotations/panoptic_val2017"):
        assert (root / rel).is_dir() and len(list((root / rel).iterdir())) == 6
    doc = json.loads((root / "annotations/panoptic_val2017.json").read_text())
    assert set(doc) >= {"info", "licenses", "images", "annotations", "categories"}
    cats = doc["categories"]
    ids = [c["id"] for c in cats]
    assert ids != list(range(1, len(ids) + 1))  # not contiguous, as COCO
    assert all(set(c) == {"id", "name", "isthing", "color", "supercategory"} for c in cats)
    by_name = {c["name"]: c for c in cats}
    assert by_name["person"]["id"] == 1 and by_name["person"]["isthing"] == 1
    assert set(by_name) == set(world.SHAPES) | set(world.STUFF) | {"person"}
    assert all(by_name[s]["isthing"] == 0 for s in world.STUFF)
    assert len({tuple(c["color"]) for c in cats}) == len(cats)
    # the categories file marks the held-out novel classes
    full = json.loads((root / "annotations/panoptic_categories.json").read_text())
    assert {c["name"] for c in full if c["novel"]} == set(world.NOVEL_SHAPES)
    images = {im["id"]: im for im in doc["images"]}
    train_ids = {im["id"] for im in json.loads((root / "annotations/panoptic_train2017.json").read_text())["images"]}
    assert not train_ids & set(images)  # image ids unique across splits


def test_writer_segments_match_pngs(root):
    crowd, stuff_seen = 0, 0
    for split in ("train2017", "val2017"):
        doc = json.loads((root / f"annotations/panoptic_{split}.json").read_text())
        colour_of = {c["id"]: c["color"] for c in doc["categories"]}
        isthing = {c["id"]: c["isthing"] for c in doc["categories"]}
        images = {im["id"]: im for im in doc["images"]}
        for ann in doc["annotations"]:
            im = images[ann["image_id"]]
            assert Image.open(root / split / im["file_name"]).size == (W, H) == (im["width"], im["height"])
            pan = load_panoptic_png(root / f"annotations/panoptic_{split}" / ann["file_name"])
            listed = {s["id"] for s in ann["segments_info"]}
            assert set(np.unique(pan).tolist()) - {0} == listed
            stuff_cats = [s["category_id"] for s in ann["segments_info"] if not isthing[s["category_id"]]]
            assert len(stuff_cats) == len(set(stuff_cats))  # one segment per stuff class
            for s in ann["segments_info"]:
                m = pan == s["id"]
                ys, xs = np.nonzero(m)
                assert s["area"] == m.sum()
                assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                if not isthing[s["category_id"]]:  # stuff segment id = its category colour (panopticapi)
                    assert s["id"] == rgb2id(np.array([[colour_of[s["category_id"]]]], dtype=np.uint8))[0, 0]
                    stuff_seen += 1
                crowd += s["iscrowd"]
                if s["iscrowd"]:
                    assert isthing[s["category_id"]]
    assert crowd >= 1 and stuff_seen >= 12


def test_writer_is_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 5), (b, 5), (c, 6)):
        write_coco_panoptic(out, num_train=2, num_val=2, size=32, seed=seed, progress=False)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


# ---------------------------------------------------------------------------------------------------------------
# datamodule
# ---------------------------------------------------------------------------------------------------------------
def test_info_and_class_subsets(root):
    dm = COCOPanopticDataModule(str(root), train_classes="base", eval_classes="novel")
    info = dm.info
    assert info["num_classes"] == len(world.CATEGORIES)
    names = info["class_names"]
    assert names[0] == "person" and info["category_ids"] == sorted(info["category_ids"])
    assert [names[i] for i in info["novel_classes"]] == list(world.NOVEL_SHAPES)
    assert [names[i] for i in info["eval_classes"]] == list(world.NOVEL_SHAPES)
    assert set(info["train_classes"]) == set(range(len(names))) - set(info["novel_classes"])
    assert [info["is_thing"][names.index(s)] for s in world.STUFF] == [False] * len(world.STUFF)
    # explicit subsets and bad names
    dm = COCOPanopticDataModule(str(root), eval_classes=["sky", "person"])
    assert dm.info["eval_classes"] == [0, names.index("sky")]
    with pytest.raises(PanopticDataError, match="not categories"):
        _ = COCOPanopticDataModule(str(root), eval_classes=["dragon"]).info
    # novel classes by config when the categories carry no flags
    dm = COCOPanopticDataModule(str(root), categories_file=None, train_classes="base", novel_classes=["ring"])
    assert dm.info["novel_classes"] == [names.index("ring")]
    with pytest.raises(PanopticDataError, match="needs novel classes"):
        _ = COCOPanopticDataModule(str(root), categories_file=None, eval_classes="novel").info


def test_train_batches_lsj(root):
    torch.manual_seed(0)
    dm = COCOPanopticDataModule(str(root), train_classes="base", crop_size=32, batch_size=3)
    dm.setup("fit")
    base = set(dm.info["train_classes"])
    shapes = set()
    for batch in dm.train_dataloader():
        assert batch["images"].shape[1:] == (3, 32, 32) and batch["images"].dtype == torch.float32
        assert 0.0 <= batch["images"].min() and batch["images"].max() <= 1.0
        assert batch["skipped"] == 0 and len(batch["targets"]) == batch["images"].shape[0]
        for t in batch["targets"]:
            m = t["masks"]
            assert isinstance(m, tv_tensors.Mask) and m.dtype == torch.bool and m.shape[1:] == (32, 32)
            assert m.shape[0] == len(t["labels"]) == len(t["iscrowd"]) == len(t["segment_ids"])
            assert (m.sum(0) <= 1).all() and (m.flatten(1).sum(1) > 0).all()  # disjoint, none empty
            assert set(t["labels"].tolist()) <= base
            assert "panoptic" not in t
            shapes.add(tuple(t["orig_size"]))
    assert shapes == {(H, W)}


def test_fixed_size_crop_and_scale_jitter():
    ids = torch.arange(1, 41 * 31 + 1).view(31, 41)
    img = tv_tensors.Image(torch.full((3, 31, 41), 200, dtype=torch.uint8))
    # smaller than the crop: kept at the top-left, padded right/bottom (image 128, mask VOID)
    out_img, out_mask = FixedSizeCrop(48)(img, tv_tensors.Mask(ids))
    assert out_img.shape == (3, 48, 48) and out_mask.shape == (48, 48)
    assert torch.equal(out_mask[:31, :41], ids) and (out_mask[31:] == 0).all() and (out_mask[:, 41:] == 0).all()
    assert (out_img[:, 31:] == 128).all() and (out_img[:, :31, :41] == 200).all()
    # larger: a random window of the input
    out_img, out_mask = FixedSizeCrop(16)(img, tv_tensors.Mask(ids))
    top, left = divmod(int(out_mask[0, 0]) - 1, 41)
    assert torch.equal(out_mask, ids[top:top + 16, left:left + 16])
    # LSJ: output always the crop size; the resize scale varies over 0.1-2.0 of the crop size
    torch.manual_seed(0)
    tf = panoptic_train_transform(crop_size=32, scale_range=(0.1, 2.0), flip_prob=0.0)
    void_fractions = []
    for _ in range(20):
        a, b = tf(img, tv_tensors.Mask(ids))
        assert a.shape == (3, 32, 32) and b.shape == (32, 32)
        assert set(b.unique().tolist()) <= set(ids.flatten().tolist()) | {0}  # nearest: no invented ids
        void_fractions.append(float((b == 0).float().mean()))
    assert min(void_fractions) == 0.0 and max(void_fractions) > 0.5  # zoomed in and zoomed out


def test_eval_transform_short_side_and_max_size():
    img = tv_tensors.Image(torch.zeros((3, 40, 80), dtype=torch.uint8))
    assert panoptic_eval_transform(20)(img).shape[-2:] == (20, 40)
    assert panoptic_eval_transform(20, max_size=30)(img).shape[-2:] == (15, 30)
    with pytest.raises(ValueError, match="max_size"):
        panoptic_eval_transform(20, max_size=20)


def test_eval_batches_carry_pq_inputs(root):
    dm = COCOPanopticDataModule(str(root), eval_short_side=H, eval_batch_size=4)  # identity resize
    dm.setup("validate")
    n = 0
    for batch in dm.val_dataloader():
        for t in batch["targets"]:
            assert t["panoptic"].shape == (H, W) and t["panoptic"].dtype == torch.int64
            ids = [s["id"] for s in t["segments_info"]]
            assert set(t["panoptic"].unique().tolist()) - {0} == set(ids)
            for m, sid, lab in zip(t["masks"], t["segment_ids"], t["labels"]):
                assert torch.equal(m, t["panoptic"] == sid)
                assert lab == next(s["category_id"] for s in t["segments_info"] if s["id"] == sid)
            n += 1
    assert n == 6

    # resized evaluation: images and masks resized, the PQ map stays at the original resolution
    dm = COCOPanopticDataModule(str(root), eval_short_side=20, eval_max_size=40, eval_classes="novel")
    dm.setup("validate")
    novel = set(dm.info["novel_classes"])
    for t in [dm.val_set[i]["target"] for i in range(len(dm.val_set))]:
        assert t["masks"].shape[1:] == (20, 24) and t["panoptic"].shape == (H, W)
        assert {s["category_id"] for s in t["segments_info"]} <= novel
        assert set(t["panoptic"].unique().tolist()) - {0} == {s["id"] for s in t["segments_info"]}
        assert set(t["labels"].tolist()) <= novel


def test_collate_pads_and_keeps_lists():
    a = {"image": torch.ones(3, 10, 12), "target": {"labels": torch.tensor([1])}}
    b = {"image": torch.ones(3, 14, 8), "target": {"labels": torch.tensor([2, 3])}}
    out = collate_panoptic([a, None, b], size_divisibility=8)
    assert out["images"].shape == (2, 3, 16, 16) and out["skipped"] == 1 and out["skipped"].dtype == torch.long
    assert out["image_sizes"] == [(10, 12), (14, 8)]
    assert out["images"][0, :, :10, :12].eq(1).all() and out["images"][0, :, 10:].eq(0).all()
    assert [t["labels"].tolist() for t in out["targets"]] == [[1], [2, 3]]
    assert collate_panoptic([None])["images"].shape[0] == 0
    bad = SkippedSample(4, "x.jpg", "broken", "why")
    assert collate_panoptic([a, bad])["skipped_samples"] == [bad]


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def broken(root, tmp_path) -> Path:
    """A copy of the val split that each test breaks in one way."""
    out = tmp_path / "broken"
    shutil.copytree(root / "val2017", out / "val2017")
    shutil.copytree(root / "annotations/panoptic_val2017", out / "annotations/panoptic_val2017")
    shutil.copy(root / "annotations/panoptic_val2017.json", out / "annotations/panoptic_val2017.json")
    return out


def _edit_json(root: Path, fn) -> dict:
    path = root / "annotations/panoptic_val2017.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    return doc


def _dataset(root: Path, on_error: str) -> COCOPanopticDataset:
    cats = load_categories(root / "annotations/panoptic_val2017.json")
    return COCOPanopticDataset(root / "val2017", root / "annotations/panoptic_val2017.json",
                               root / "annotations/panoptic_val2017", cats, on_error=on_error, with_panoptic=True)


def test_png_id_missing_from_json(broken):
    doc = _edit_json(broken, lambda d: d["annotations"][2]["segments_info"].pop(0))
    ann = doc["annotations"][2]
    pan = load_panoptic_png(broken / "annotations/panoptic_val2017" / ann["file_name"])
    missing = set(pan.flatten().tolist()) - {0} - {s["id"] for s in ann["segments_info"]}
    ds = _dataset(broken, "raise")
    with pytest.raises(PanopticDataError, match=f"segment id {missing.pop()} is in the PNG") as err:
        ds[2]
    assert ann["file_name"].replace(".png", ".jpg") in str(err.value)
    # skip: a SkippedSample, the collate counts it, the callback's counter warns once naming the image
    ds = _dataset(broken, "skip")
    batch = collate_panoptic([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 1 and len(batch["targets"]) == 5
    counter = SkipCounter()
    with pytest.warns(SkippedSampleWarning, match=ann["file_name"].replace(".png", ".jpg")):
        counter.record_batch(batch)
    assert counter.by_reason == {"broken": 1}


def test_unknown_category(broken):
    def corrupt(d):
        d["annotations"][1]["segments_info"][0]["category_id"] = 999

    doc = _edit_json(broken, corrupt)
    seg_id = doc["annotations"][1]["segments_info"][0]["id"]
    with pytest.raises(PanopticDataError, match=f"segment {seg_id} has unknown category_id 999") as err:
        _dataset(broken, "raise")
    assert doc["images"][1]["file_name"] in str(err.value)
    with pytest.warns(UserWarning, match="unknown category_id 999"):
        ds = _dataset(broken, "skip")
    assert len(ds) == 5 and ds.num_skipped_at_init == 1


def test_image_png_size_mismatch(broken):
    doc = json.loads((broken / "annotations/panoptic_val2017.json").read_text())
    name = doc["images"][0]["file_name"]
    Image.open(broken / "val2017" / name).resize((W + 4, H)).save(broken / "val2017" / name)
    ds = _dataset(broken, "raise")
    with pytest.raises(PanopticDataError, match="differs from its panoptic PNG") as err:
        ds[0]
    assert name in str(err.value)
    skipped = _dataset(broken, "skip")[0]
    assert isinstance(skipped, SkippedSample) and "differs from its panoptic PNG" in skipped.detail


def test_missing_png_file(broken):
    doc = json.loads((broken / "annotations/panoptic_val2017.json").read_text())
    (broken / "annotations/panoptic_val2017" / doc["annotations"][3]["file_name"]).unlink()
    with pytest.raises(PanopticDataError, match="does not exist"):
        _dataset(broken, "raise")[3]


def test_missing_root_and_json_name_layout_and_synth_command(tmp_path, broken):
    dm = COCOPanopticDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetLayoutError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "nowhere" in msg and "annotations/panoptic_<split>.json" in msg
    assert "python -m common.data.synth coco-panoptic --out" in msg
    # the val split exists in `broken`, the train split does not
    dm = COCOPanopticDataModule(str(broken))
    assert dm.info["num_classes"] == len(world.CATEGORIES)  # categories from the val JSON
    with pytest.raises(DatasetLayoutError, match="panoptic_train2017.json does not exist"):
        dm.setup("fit")
    (broken / "annotations/panoptic_val2017.json").write_text("{not json")
    with pytest.raises(PanopticDataError, match="not valid JSON"):
        COCOPanopticDataModule(str(broken), categories_file=None).setup("validate")


def test_eval_loader_is_sequential_and_complete(root):
    dm = COCOPanopticDataModule(str(root), eval_batch_size=4, max_eval_samples=5)
    dm.setup("test")
    names = [t["file_name"] for b in dm.test_dataloader() for t in b["targets"]]
    doc = json.loads((root / "annotations/panoptic_val2017.json").read_text())
    assert names == [im["file_name"] for im in doc["images"][:5]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = dm.test_set[0]  # a clean sample raises no warning


def test_other_layouts_through_split_paths(root, tmp_path):
    # ADE20K converted by Mask2Former's script: images/validation, ade20k_panoptic_val.json, ade20k_panoptic_val/
    ade = tmp_path / "ADEChallengeData2016"
    shutil.copytree(root / "val2017", ade / "images/validation")
    shutil.copytree(root / "annotations/panoptic_val2017", ade / "ade20k_panoptic_val")
    shutil.copy(root / "annotations/panoptic_val2017.json", ade / "ade20k_panoptic_val.json")
    dm = COCOPanopticDataModule(
        str(ade), val_split="validation", categories_file=None,
        split_paths={"validation": {"images": "images/validation", "json": "ade20k_panoptic_val.json",
                                    "pngs": "ade20k_panoptic_val"}},
    )
    dm.setup("validate")
    assert len(dm.val_set) == 6 and dm.info["num_classes"] == len(world.CATEGORIES)
    assert sum(len(b["targets"]) for b in dm.val_dataloader()) == 6


def test_root_null_writes_the_stand_in_and_a_given_root_is_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CVINW_DATA", str(tmp_path / "data"))
    dm = COCOPanopticDataModule(None, synth_options={"num_train": 2, "num_val": 2, "size": 32, "progress": False})
    assert dm.info["num_classes"] == len(world.CATEGORIES)
    assert (tmp_path / "data" / "coco_panoptic" / "annotations" / "panoptic_val2017.json").is_file()
    typo = tmp_path / "cocco"
    with pytest.raises(DatasetLayoutError) as err:
        COCOPanopticDataModule(str(typo)).prepare_data()
    assert f"dataset root {typo} does not exist" in str(err.value)
    assert f"python -m common.data.synth coco-panoptic --out {typo}" in str(err.value)
    assert not typo.exists()
