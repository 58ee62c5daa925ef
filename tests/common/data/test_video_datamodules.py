"""Kinetics-400 and SSv2 datamodules on the ShapesWorld writers' output: formats, views, splits, bad input, DDP."""

from __future__ import annotations

import csv
import json
import re
import shutil
import socket
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from common.callbacks.data import SkipCounter, SkippedSamples
from common.data.kinetics import Kinetics400DataModule, read_class_csv
from common.data.ssv2 import SSv2DataModule, template_to_label
from common.data.synth.video_writers import SSV2_CLASSES, write_kinetics400, write_ssv2
from common.data.video import VideoDecodeError
from common.data.video_dataset import DatasetLayoutError, SkippedVideoWarning

K400_CLASSES = 4  # the k400 fixture of conftest.py


def _k400(root: Path, **kw) -> Kinetics400DataModule:
    kw.setdefault("input_size", 24)
    kw.setdefault("num_frames", 4)
    kw.setdefault("batch_size", 4)
    return Kinetics400DataModule(root=str(root), **kw)


def _ssv2(root: Path, **kw) -> SSv2DataModule:
    kw.setdefault("input_size", 24)
    kw.setdefault("num_frames", 4)
    kw.setdefault("batch_size", 4)
    return SSv2DataModule(root=str(root), **kw)


def _consume(counter: SkipCounter, loader) -> list[dict]:
    """Iterate a loader as the trainer would, the main-process counter of the SkippedSamples callback included."""
    batches = list(loader)
    for b in batches:
        counter.record_batch(b)
    return batches


# -- formats ---------------------------------------------------------------------------------------------------------
def test_kinetics_official_csv_and_lists_agree(k400: Path) -> None:
    with open(k400 / "annotations" / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert len(rows) == 1 + K400_CLASSES * 3
    names = read_class_csv(k400 / "labels.csv")
    assert names == sorted(names) and len(names) == K400_CLASSES  # class index = sorted label names
    for label, yid, start, end, split in rows[1:]:
        assert label in names
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", yid) and split == "train" and int(end) - int(start) == 10
        assert (k400 / "train" / f"{yid}_{int(start):06d}_{int(end):06d}.mp4").is_file()

    lists = _k400(k400)
    official = _k400(k400, train_file="annotations/train.csv", val_file="annotations/val.csv", class_file=None)
    assert official.annotation == "csv" and lists.annotation == "list"
    assert lists.info["class_names"] == official.info["class_names"] == names
    assert lists.info["num_classes"] == K400_CLASSES
    for split in ("train", "val"):
        a, b = sorted(lists.load_split(split)), sorted(official.load_split(split))
        assert a == b and len(a) == K400_CLASSES * (3 if split == "train" else 2)
    # appearance classes: the class name is the rendered colour and shape
    assert all(len(n.split()) == 2 for n in names)


def test_ssv2_official_json_parsing(ssv2: Path) -> None:
    labels = json.loads((ssv2 / "labels" / "labels.json").read_text())
    assert sorted(int(v) for v in labels.values()) == list(range(len(SSV2_CLASSES)))
    train = json.loads((ssv2 / "labels" / "train.json").read_text())
    assert {"id", "label", "template", "placeholders"} <= set(train[0])
    assert template_to_label("Putting [something] onto [something]") == "Putting something onto something"
    dm = _ssv2(ssv2)
    names = dm.info["class_names"]
    assert names == sorted(labels, key=lambda k: int(labels[k]))
    samples = dm.load_split("train")
    assert len(samples) == len(train) == 2 * len(SSV2_CLASSES)
    by_id = {e["id"]: e for e in train}
    for s in samples:
        entry = by_id[Path(s.path).stem]
        assert Path(s.path).suffix == ".webm" and Path(s.path).is_file()
        assert names[s.label] == entry["template"].replace("[", "").replace("]", "")
        assert entry["placeholders"][0] in entry["label"]
    # direction pairs: every class has its mirror image class
    assert {"Moving something from left to right", "Moving something from right to left",
            "Rotating something clockwise", "Rotating something anticlockwise"} <= set(names)
    # the list files describe the same samples
    assert sorted(_ssv2(ssv2, annotation="list").load_split("val")) == sorted(dm.load_split("val"))


def test_writer_is_deterministic(tmp_path: Path) -> None:
    kw = dict(num_classes=2, num_per_class=1, val_per_class=1, frames=4, size=16, progress=False)
    a = write_kinetics400(tmp_path / "a", seed=3, **kw)
    b = write_kinetics400(tmp_path / "b", seed=3, **kw)
    c = write_kinetics400(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train.txt").read_text() != (c / "train.txt").read_text()
    s1 = write_ssv2(tmp_path / "s1", num_per_class=1, val_per_class=0, frames=4, size=16, progress=False)
    s2 = write_ssv2(tmp_path / "s2", num_per_class=1, val_per_class=0, frames=4, size=16, progress=False)
    webms = sorted(p.relative_to(s1) for p in s1.rglob("*.webm"))
    assert len(webms) == len(SSV2_CLASSES)
    assert all((s1 / f).read_bytes() == (s2 / f).read_bytes() for f in webms)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_ssv2(s1, num_per_class=1, progress=False)


# -- batches and views -----------------------------------------------------------------------------------------------
def test_train_and_multiview_batch_shapes(k400: Path) -> None:
    dm = _k400(k400, test_clips=2, test_crops=3, val_clips=1, val_crops=1)
    dm.setup("fit")
    dm.setup("test")
    train = next(iter(dm.train_dataloader()))
    assert train["video"].shape == (4, 4, 3, 24, 24) and train["label"].shape == (4,)
    val = next(iter(dm.val_dataloader()))
    assert val["video"].shape == (4, 1, 4, 3, 24, 24)
    test = next(iter(dm.test_dataloader()))
    assert test["video"].shape == (4, 6, 4, 3, 24, 24)  # (B, clips x crops, T, C, H, W)
    assert test["skipped"].item() == 0 and test["skipped_samples"] == []
    # the 6 views differ (3 positions x 2 temporal clips)
    v = test["video"][0].flatten(1)
    assert len({tuple(row[:50].tolist()) for row in v}) == 6


def test_dense_sampling_through_the_datamodule(ssv2: Path) -> None:
    dm = _ssv2(ssv2, sampling="dense", frame_interval=2, test_clips=3, test_crops=1)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["video"].shape == (4, 3, 4, 3, 24, 24)


@pytest.mark.parametrize("which", ["k400", "ssv2"])
def test_decord_and_pyav_give_identical_batches(which: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(which)
    make = _k400 if which == "k400" else _ssv2
    out = {}
    for backend in ("decord", "pyav"):
        dm = make(root, backend=backend, test_crops=3, num_workers=0)
        dm.setup("test")
        out[backend] = torch.cat([b["video"] for b in dm.test_dataloader()])
    assert out["decord"].shape[0] > 0
    torch.testing.assert_close(out["decord"], out["pyav"], rtol=0, atol=0)


# -- protocols -------------------------------------------------------------------------------------------------------
def test_base_novel_split_and_few_shot(k400: Path) -> None:
    full = _k400(k400)
    base = _k400(k400, class_split="base", split_seed=1)
    novel = _k400(k400, class_split="novel", split_seed=1)
    assert base.info["num_classes"] == novel.info["num_classes"] == K400_CLASSES // 2
    assert sorted(base.info["class_names"] + novel.info["class_names"]) == full.info["class_names"]
    assert _k400(k400, class_split="base", split_seed=1).info["class_names"] == base.info["class_names"]
    other = {tuple(_k400(k400, class_split="base", split_seed=s).info["class_names"]) for s in range(6)}
    assert len(other) > 1  # the seed matters
    # labels are re-indexed within the split and point at the right names
    ds = base.build_dataset("val")
    full_names = dict((s.path, full.info["class_names"][s.label]) for s in full.load_split("val"))
    assert {s.label for s in ds.samples} == set(range(K400_CLASSES // 2))
    assert all(base.info["class_names"][s.label] == full_names[s.path] for s in ds.samples)

    shots = _k400(k400, num_shots=2, shot_seed=0).build_dataset("train").samples
    counts = np.bincount([s.label for s in shots])
    assert counts.tolist() == [2] * K400_CLASSES
    again = _k400(k400, num_shots=2, shot_seed=0).build_dataset("train").samples
    assert again == shots
    assert len({tuple(_k400(k400, num_shots=1, shot_seed=s).build_dataset("train").samples) for s in range(5)}) > 1
    assert len(_k400(k400, num_shots=2).build_dataset("val").samples) == K400_CLASSES * 2  # eval is never subsampled


def test_ssv2_refuses_flipping_recipes(ssv2: Path) -> None:
    with pytest.raises(ValueError, match="left/right"):
        _ssv2(ssv2, recipe="multiscale_crop")
    assert _ssv2(ssv2, recipe="multiscale_crop", transform_args={"hflip": 0.0}).transform.hflip == 0.0


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.fixture()
def broken_k400(k400: Path, tmp_path: Path) -> Path:
    """A copy of the tiny K400 whose val list also names a zero-byte, a truncated, a garbage and a missing video,
    and a line with an unknown label."""
    root = tmp_path / "broken"
    shutil.copytree(k400, root)
    good = (root / "val.txt").read_text().splitlines()
    one = next(p for p in (root / "val").iterdir())
    (root / "val" / "empty.mp4").write_bytes(b"")
    data = one.read_bytes()
    (root / "val" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "val" / "garbage.mp4").write_bytes(bytes(range(256)) * 8)
    bad = ["val/empty.mp4 0", "val/truncated.mp4 1", "val/garbage.mp4 2", "val/missing.mp4 3",
           f"{good[0].split()[0]} 99"]
    (root / "val.txt").write_text("\n".join(good[:3] + bad[:3] + good[3:] + bad[3:]) + "\n")
    return root


def test_bad_inputs_are_skipped_warned_once_and_counted(broken_k400: Path) -> None:
    dm = _k400(broken_k400, num_workers=2, eval_batch_size=3)
    counter = SkipCounter()
    with pytest.warns(SkippedVideoWarning) as rec:
        dm.setup("validate")
        # left out at setup, in the main process: the unknown label and the video that does not exist
        assert Counter(s.reason for s in dm.setup_skipped("validate")) == {"unknown_label": 1, "missing": 1}
        seen = []
        for _epoch in range(2):
            for batch in _consume(counter, dm.val_dataloader()):
                seen += batch["index"].tolist()
                assert all(s.path.rsplit("/", 1)[-1] in {"empty.mp4", "truncated.mp4", "garbage.mp4"}
                           for s in batch["skipped_samples"])
                assert batch["skipped"].item() == len(batch["skipped_samples"])
                assert batch["video"].shape[1:] == (1, 4, 3, 24, 24)
    ds = dm.datasets["val"]
    assert not any(Path(s.path).name == "missing.mp4" for s in ds.samples)  # never opened
    good = {i for i, s in enumerate(ds.samples) if Path(s.path).name not in
            {"empty.mp4", "truncated.mp4", "garbage.mp4"}}
    assert sorted(seen) == sorted(list(good) * 2)
    assert counter.by_reason == {"empty": 2, "undecodable": 4}  # 3 unreadable files x 2 epochs
    assert counter.total == 6 and counter.unique_files == 3
    messages = [str(w.message) for w in rec if issubclass(w.category, SkippedVideoWarning)]
    assert len(messages) == 5  # one warning per bad file, not per epoch or per worker
    assert any("missing.mp4" in m for m in messages) and any("unknown_label" in m for m in messages)


def test_all_bad_batch_has_empty_tensors(broken_k400: Path) -> None:
    dm = _k400(broken_k400, val_file="val.txt", eval_batch_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("validate")
        ds = dm.datasets["val"]
        bad = [i for i, s in enumerate(ds.samples) if Path(s.path).name in {"empty.mp4", "truncated.mp4", "garbage.mp4"}]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, bad), batch_size=3,
                                             collate_fn=dm._collate(ds))
        batch = next(iter(loader))
    assert batch["video"].shape == (0, 1, 4, 3, 24, 24) and batch["label"].shape == (0,)
    assert batch["skipped"].item() == 3
    assert sorted(Path(s.path).name for s in batch["skipped_samples"]) == ["empty.mp4", "garbage.mp4",
                                                                           "truncated.mp4"]


def test_on_error_raise(broken_k400: Path) -> None:
    with pytest.raises(ValueError, match="unknown label"):
        _k400(broken_k400, on_error="raise").setup("validate")
    lines = (broken_k400 / "val.txt").read_text().splitlines()
    (broken_k400 / "val.txt").write_text("\n".join(line for line in lines if not line.endswith(" 99")) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"1 videos listed in .*val\.txt do not exist.*missing\.mp4"):
        _k400(broken_k400, on_error="raise").setup("validate")
    lines = (broken_k400 / "val.txt").read_text().splitlines()
    (broken_k400 / "val.txt").write_text("\n".join(line for line in lines if "missing.mp4" not in line) + "\n")
    dm = _k400(broken_k400, on_error="raise")
    dm.setup("validate")
    with pytest.raises(VideoDecodeError) as err:
        _consume(SkipCounter(), dm.val_dataloader())
    assert err.value.reason in {"empty", "undecodable"} and "broken/val/" in err.value.path
    # from a DataLoader worker the error is re-raised in the main process through torch's ExceptionWrapper
    # (a worker test would spend 10 s in torch's worker shutdown): type, reason and path survive
    from torch._utils import ExceptionWrapper

    try:
        raise err.value
    except VideoDecodeError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(VideoDecodeError) as again:
        wrapped.reraise()
    assert (again.value.reason, again.value.path) == (err.value.reason, err.value.path)


def test_missing_root_and_annotation_errors_name_layout_and_command(tmp_path: Path, ssv2: Path) -> None:
    with pytest.raises(DatasetLayoutError) as err:
        _ = _k400(tmp_path / "nowhere").info
    msg = str(err.value)
    assert "python -m common.data.synth kinetics400 --out" in msg and "labels.csv" in msg and "train.txt" in msg
    root = tmp_path / "ssv2_no_json"
    shutil.copytree(ssv2 / "20bn-something-something-v2", root / "20bn-something-something-v2")
    with pytest.raises(DatasetLayoutError) as err:
        _ = _ssv2(root).info
    assert "labels.json" in str(err.value) and "python -m common.data.synth ssv2 --out" in str(err.value)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "labels.csv").write_text("id,name\n0,a\n1,b\n")
    (partial / "train.txt").write_text("train/x.mp4 0\n")
    with pytest.raises(DatasetLayoutError, match="val annotation file not found"):
        _k400(partial).build_dataset("val")


def test_root_null_writes_the_stand_in_at_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """root: null -> outputs/data/kinetics400 (here $CVINW_DATA), written on first use with synth_options."""
    monkeypatch.setenv("CVINW_DATA", str(tmp_path / "data"))
    root = tmp_path / "data" / "kinetics400"
    dm = Kinetics400DataModule(root=None, input_size=24, num_frames=4, batch_size=4, synth_options={
        "num_classes": 2, "num_per_class": 1, "val_per_class": 1, "frames": 4, "size": 16})
    assert dm.root == root and not dm.root_given
    assert dm.info["num_classes"] == 2 and (root / "annotations" / "val.csv").is_file()
    assert not any(p.name.startswith(".kinetics400.tmp") for p in root.parent.iterdir())
    with pytest.raises(TypeError, match="keyword arguments"):
        _k400(root, synth_options=["--num-classes", "2"])  # no argv lists
    with pytest.warns(FutureWarning, match="synth_args is deprecated, say synth_options"):
        assert _k400(root, synth_args={"size": 16}).synth_options == {"size": 16}
    # switched off, a missing default folder is the layout error with the writer command, nothing written
    monkeypatch.setenv("CVINW_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetLayoutError, match=r"(?s)synth_if_missing is false.*python -m common\.data\.synth ssv2 --out"):
        _ = SSv2DataModule(root=None, synth_if_missing=False).info
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("cls,command", [(Kinetics400DataModule, "kinetics400"), (SSv2DataModule, "ssv2")])
def test_a_typo_in_a_given_root_is_an_error_not_a_synthetic_dataset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cls: type, command: str) -> None:
    """A root the user named is never written, even with synth_if_missing: the error names the path and the writer
    command, and no folder appears (before: the stand-in was written at the typo'd path and trained on)."""
    monkeypatch.setenv("CVINW_DATA", str(tmp_path / "data"))
    typo = tmp_path / "datsets" / "k400"
    dm = cls(root=str(typo), synth_if_missing=True, input_size=24, num_frames=4)
    assert dm.root_given
    for touch in (lambda: dm.info, dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(DatasetLayoutError) as err:
            touch()
        msg = str(err.value)
        assert f"dataset root {typo} does not exist" in msg and "never written" in msg
        assert f"python -m common.data.synth {command} --out {typo}" in msg
    assert not (tmp_path / "datsets").exists() and not (tmp_path / "data").exists()


class _Recorder(pl.LightningModule):
    """Counts evaluated samples; no parameters to speak of."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.count = 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.count += batch["video"].shape[0]


def test_trainer_logs_data_skipped(broken_k400: Path) -> None:
    dm = _k400(broken_k400, eval_batch_size=4)
    model = _Recorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[SkippedSamples()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(model, datamodule=dm, verbose=False)
    assert model.count == K400_CLASSES * 2  # the good lines
    # 3 unreadable videos + 1 missing one + 1 unknown label, logged by the callback (the CLI adds it)
    assert trainer.callback_metrics["data/skipped"].item() == 5
    assert trainer.callback_metrics["data/skipped_val"].item() == 5
    assert not any(isinstance(c, SkippedSamples) for c in pl.Trainer(logger=False).callbacks)  # not self-attached


# -- DDP -------------------------------------------------------------------------------------------------------------
_DDP_SCRIPT = '''
import json, sys
import torch.distributed as dist
from common.data.kinetics import Kinetics400DataModule

root, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
dm = Kinetics400DataModule(root=root, test_file="odd.txt", input_size=24, num_frames=4, num_workers=2,
                           eval_batch_size=2, test_clips=2, test_crops=3)
dm.setup("test")
seen = []
for batch in dm.test_dataloader():
    batch = dm.on_before_batch_transfer(batch, 0)
    assert tuple(batch["video"].shape[1:]) == (6, 4, 3, 24, 24), batch["video"].shape
    seen += batch["index"].tolist()
per_rank = [None] * dist.get_world_size()
dist.all_gather_object(per_rank, seen)
if dist.get_rank() == 0:
    json.dump({"per_rank": per_rank, "n": len(dm.datasets["test"])}, open(out, "w"))
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_ranks_two_workers_read_every_sample_once(k400: Path, tmp_path: Path) -> None:
    lines = (k400 / "val.txt").read_text().splitlines() + (k400 / "train.txt").read_text().splitlines()
    (k400 / "odd.txt").write_text("\n".join(lines[:7]) + "\n")  # 7 samples: padding would duplicate one
    script = tmp_path / "ddp_worker.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "result.json"
    project = Path(__file__).resolve().parents[3]
    env = {**__import__("os").environ, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         str(script), str(k400), str(out)],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    per_rank = result["per_rank"]
    assert result["n"] == 7
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(7))
