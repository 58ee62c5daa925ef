"""The image-classification datamodule reads every format the ShapesWorld VTAB-like writer writes (VTAB-1k lists,
few-shot lists), a hand-made CUB-200-2011 layout and a class-per-folder tree, with the right labels and counts; bad
data is an error naming the file and line, or a counted skip; the writer is deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from common.data.base import DatasetLayoutError, SkippedSampleWarning
from common.data.image_classification import ImageClassificationDataModule as DM
from common.data.image_classification import detect_format
from common.data.synth.__main__ import main as synth_main
from common.data.synth.vtab import FEWSHOT_SEEDS, FEWSHOT_SHOTS, TASKS, class_names, write_vtab_like

N_TRAIN, N_VAL, N_TEST = 16, 8, 8  # 16 train images: two per class of the 8-class orientation task


@pytest.fixture(scope="module")
def vtab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vtab") / "vtab-like"
    assert synth_main(["vtab-like", "--out", str(root), "--tasks", "shape", "orientation", "--num-train", str(N_TRAIN),
                       "--num-val", str(N_VAL), "--num-test", str(N_TEST), "--size", "32"]) == 0
    return root


def _labels(dm: DM, split: str) -> list[int]:
    return dm.dataset(split).labels  # type: ignore[attr-defined]


def test_vtab_lists_read_with_labels_counts_and_class_names(vtab):
    dm = DM(root=str(vtab), task="shape", image_size=32, batch_size=4)
    assert dm.format == "vtab" and dm.recipe == "vtab" and dm.hflip
    assert dm.info == {"num_classes": 10, "class_names": class_names("shape")}
    dm.setup("fit")
    dm.setup("test")
    assert _labels(dm, "train") == [i % 10 for i in range(N_TRAIN)]
    assert len(dm.dataset("val")) == N_VAL and len(dm.dataset("test")) == N_TEST
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].dtype == torch.long and int(batch["skipped"]) == 0
    final = DM(root=str(vtab), task="shape", train_file="train800val200.txt", val_file="test.txt", image_size=32)
    final.setup("fit")
    assert len(final.dataset("train")) == N_TRAIN + N_VAL and len(final.dataset("val")) == N_TEST


def test_fewshot_lists_read_every_k_and_seed(vtab):
    lists = sorted(p.name for p in (vtab / "orientation" / "annotations").glob("train_meta.list.*"))
    assert lists == sorted(f"train_meta.list.num_shot_{k}.seed_{s}" for k in (1, 2) for s in FEWSHOT_SEEDS)
    picked = {}
    for k in (1, 2):
        for s in FEWSHOT_SEEDS:
            dm = DM(root=str(vtab), task="orientation", format="fewshot", shots=k, fewshot_seed=s, image_size=32)
            assert dm.recipe == "fgvc" and not dm.hflip and dm.info["num_classes"] == 8
            dm.setup("fit")
            labels = _labels(dm, "train")
            assert sorted(labels) == sorted(list(range(8)) * k)  # K per class
            assert len(dm.dataset("val")) == N_VAL
            picked[k, s] = tuple(p for p, _ in dm.dataset("train").samples)
            for path, label in dm.dataset("train").samples:  # the few-shot image is the VTAB train image
                assert f"data/images/train/{path.rsplit('/', 1)[1]} {label}" in (vtab / "orientation" /
                                                                                   "train800.txt").read_text()
    assert len({picked[1, s] for s in FEWSHOT_SEEDS}) > 1  # seeds differ
    assert detect_format(vtab / "orientation") == "vtab"


def test_default_writer_sizes_give_every_k(tmp_path):
    root = write_vtab_like(tmp_path / "v", tasks=("colour",), num_train=160, num_val=1, num_test=1, size=16)
    got = {p.name for p in (root / "colour" / "annotations").glob("train_meta.list.*")}
    assert got == {f"train_meta.list.num_shot_{k}.seed_{s}" for k in FEWSHOT_SHOTS for s in FEWSHOT_SEEDS}
    assert set(TASKS) >= {"shape", "colour", "count", "position", "orientation"}


def test_writer_is_deterministic(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a = write_vtab_like(tmp_path / "a", tasks=("count", "position"), num_train=8, num_val=4, num_test=4, size=24)
    b = write_vtab_like(tmp_path / "b", tasks=("count", "position"), num_train=8, num_val=4, num_test=4, size=24)
    c = write_vtab_like(tmp_path / "c", tasks=("count", "position"), num_train=8, num_val=4, num_test=4, size=24,
                        seed=1)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def _write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / n)


def test_cub_layout(tmp_path):
    root = tmp_path / "CUB_200_2011"
    rel = ["001.Black_footed_Albatross/a.jpg", "001.Black_footed_Albatross/b.jpg", "002.Laysan_Albatross/c.jpg",
           "003.Sooty_Albatross/d.jpg", "003.Sooty_Albatross/e.jpg"]
    _write_images(root / "images", rel)
    (root / "images.txt").write_text("".join(f"{i + 1} {r}\n" for i, r in enumerate(rel)))
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n4 3\n5 3\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n4 1\n5 0\n")
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n3 003.Sooty_Albatross\n")
    dm = DM(root=str(root), image_size=16)
    assert dm.format == "cub" and dm.recipe == "fgvc"
    assert dm.info["class_names"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    dm.setup("fit")
    assert _labels(dm, "train") == [0, 1, 2] and _labels(dm, "val") == [0, 2]
    assert next(iter(dm.val_dataloader()))["image"].shape == (2, 3, 16, 16)


def test_folder_tree_and_plain_list(tmp_path):
    root = tmp_path / "tree"
    _write_images(root, ["train/cat/1.png", "train/cat/2.png", "train/dog/3.png", "val/dog/4.png", "val/cat/5.png",
                         "test/cat/6.png"])
    dm = DM(root=str(root), image_size=16)
    assert dm.format == "folder" and dm.info["class_names"] == ["cat", "dog"]
    dm.setup("fit")
    assert _labels(dm, "train") == [0, 0, 1] and _labels(dm, "val") == [0, 1]

    flowers = tmp_path / "flowers"
    _write_images(flowers / "jpg", ["image_00001.jpg", "image_00002.jpg", "image 3.jpg"])
    (flowers / "train.txt").write_text("jpg/image_00001.jpg 4\njpg/image 3.jpg 0\n")
    (flowers / "val.txt").write_text("jpg/image_00002.jpg 2\n")
    dm = DM(root=str(flowers), image_size=16, num_classes=5)
    assert dm.format == "list" and dm.info["num_classes"] == 5
    dm.setup("fit")
    assert _labels(dm, "train") == [4, 0]  # a path with a space: the label is the last field


def test_malformed_line_names_file_and_line(vtab, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train800.txt").write_text("data/a.jpg 1\n\ndata/b.jpg one\n")
    dm = DM(root=str(tmp_path), task="bad", num_classes=2)
    with pytest.raises(DatasetLayoutError, match=r"train800\.txt:3: the label must be an integer"):
        dm.setup("fit")
    (bad / "train800.txt").write_text("data/a.jpg\n")
    with pytest.raises(DatasetLayoutError, match=r"train800\.txt:1: expected 'relative/path label'"):
        DM(root=str(tmp_path), task="bad", num_classes=2).setup("fit")


def test_corrupt_image_skipped_and_counted_missing_counted(vtab, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(vtab / "shape", root / "shape")
    (root / "shape" / "data" / "images" / "val" / "000001.jpg").write_bytes(b"not a jpeg")
    (root / "shape" / "data" / "images" / "val" / "000002.jpg").unlink()
    dm = DM(root=str(root), task="shape", image_size=32, batch_size=N_VAL)
    with pytest.warns(SkippedSampleWarning, match="000002.jpg"):
        dm.setup("validate")
    assert len(dm.setup_skipped("validate")) == 1 and dm.setup_skipped("validate")[0].reason == "missing"
    batch = next(iter(dm.val_dataloader()))
    assert int(batch["skipped"]) == 1 and batch["skipped_samples"][0].reason == "undecodable"
    assert batch["image"].shape[0] == N_VAL - 2
    with pytest.raises(OSError, match="000001.jpg"), pytest.warns(SkippedSampleWarning):
        DM(root=str(root), task="shape", image_size=32, on_error="raise").dataset("val")[1]
    for i in range(N_VAL // 2 + 1):  # more than half the split missing: a layout error, not a quiet run
        (root / "shape" / "data" / "images" / "val" / f"{i:06d}.jpg").unlink(missing_ok=True)
    with pytest.raises(DatasetLayoutError, match="max_missing_fraction"), pytest.warns(SkippedSampleWarning):
        DM(root=str(root), task="shape", image_size=32).setup("validate")


def test_no_flip_for_orientation_tasks(vtab):
    def flips(dm: DM) -> bool:
        return any(isinstance(t, T.RandomHorizontalFlip) for t in dm.dataset("train").transform.transforms)

    for task, flip in (("orientation", False), ("shape", True)):
        dm = DM(root=str(vtab), task=task, image_size=32)
        assert dm.hflip is flip and flips(dm) is flip
    assert not DM(root=str(vtab), task="dsprites_ori").hflip and not DM(root=str(vtab), task="smallnorb_azi").hflip
    assert DM(root=str(vtab), task="orientation", hflip=True).hflip  # the option wins
    # VTAB's train pipeline of a no-flip task is deterministic: the eval pipeline exactly
    dm = DM(root=str(vtab), task="orientation", image_size=32)
    same = DM(root=str(vtab), task="orientation", val_file="train800.txt", image_size=32).dataset("val")
    for _ in range(3):
        assert torch.equal(dm.dataset("train")[0]["image"], same[0]["image"])


def test_default_root_is_written_and_a_named_missing_root_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_DATA", raising=False)
    dm = DM(task="position", image_size=16, synth_options={"tasks": ["position"], "num_train": 4, "num_val": 4,
                                                           "num_test": 4, "size": 16, "shots": [1]})
    assert dm.info["num_classes"] == 4 and (dm.root / "position" / "train800.txt").is_file()
    assert "vtab-like" in str(dm.root)
    with pytest.raises(DatasetLayoutError, match="num_train: 4 here, 8 asked"):  # written with other options
        DM(task="position", synth_options={"tasks": ["position"], "num_train": 8, "num_val": 4, "num_test": 4,
                                           "size": 16, "shots": [1]}).prepare_data()
    with pytest.raises(DatasetLayoutError, match="vtab-like --out"):
        DM(root=str(tmp_path / "nope"), task="shape").setup("fit")
