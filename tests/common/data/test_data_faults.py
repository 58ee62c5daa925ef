"""The data seams: one skip-and-count collate, one skipped-sample counter (a real fit on CPU), setup-time checks
against the real Kinetics-400 / SSv2 annotation formats, writers called as functions under a lock."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import Logger

from common.callbacks.data import SkipCounter, SkippedSamples
from common.data.base import (
    CVDataModule,
    DatasetLayoutError,
    PaddedSample,
    PaddedSampleWarning,
    SkipCollate,
    SkippedSample,
    SkippedSampleWarning,
    check_on_error,
)
from common.data.kinetics import Kinetics400DataModule
from common.data.ssv2 import SSv2DataModule
from common.data.synth import write_once
from common.data.video import VideoDecodeError
from common.data.video_splits import DuplicateLabelError

K400_CLASSES = 4  # the k400 fixture of conftest.py


def _k400(root: Path, **kw: Any) -> Kinetics400DataModule:
    kw = {"input_size": 24, "num_frames": 4, "batch_size": 4, **kw}
    return Kinetics400DataModule(root=str(root), **kw)


# -- the collate, on_error ---------------------------------------------------------------------------------------
def test_skip_collate_drops_and_counts() -> None:
    good = {"x": torch.ones(2), "y": 1}
    bad = SkippedSample(3, "/data/b.mp4", "undecodable", "moov atom not found")
    out = SkipCollate()([good, None, bad, good])
    assert out["x"].shape == (2, 2) and out["y"].tolist() == [1, 1]
    assert out["skipped"].dtype == torch.long and int(out["skipped"]) == 2
    assert out["skipped_samples"][1] == bad and out["skipped_samples"][0].reason == "broken"
    empty = SkipCollate(empty=lambda: {"x": torch.zeros(0, 2)})([bad])
    assert empty["x"].shape == (0, 2) and int(empty["skipped"]) == 1
    with pytest.raises(TypeError, match="dict batches"):
        SkipCollate()([torch.ones(2)])
    assert check_on_error("raise") == "raise"
    with pytest.raises(ValueError, match=r"on_error must be one of \['skip', 'raise'\]"):
        check_on_error("ignore")


def test_skip_counter_warns_once_per_file() -> None:
    counter = SkipCounter()
    bad = SkippedSample(0, "/data/b.mp4", "empty")
    batch = SkipCollate()([bad, {"x": torch.ones(1)}])
    with pytest.warns(SkippedSampleWarning, match="skipping empty sample /data/b.mp4") as rec:
        for _ in range(3):
            assert counter.record_batch(batch) == 1
    assert len(rec) == 1 and counter.total == 3 and counter.unique_files == 1


# -- the counter in a real fit ----------------------------------------------------------------------------------
class _MemoryLogger(Logger):
    """Keeps every logged metric (name -> list of values)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, list[float]] = {}

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append(float(v))


class _MeanVideoClassifier(pl.LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(video.mean(dim=(-1, -2)).mean(1))  # (B, T, 3, S, S) -> (B, 3)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self(batch["video"]), batch["label"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_logs_skipped_samples_per_epoch(k400: Path, tmp_path: Path) -> None:
    root = tmp_path / "k400"
    shutil.copytree(k400, root)
    (root / "train" / "corrupt.mp4").write_bytes(bytes(range(256)) * 8)
    with open(root / "train.txt", "a") as f:
        f.write("train/corrupt.mp4 0\n")
    logger = _MemoryLogger()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[SkippedSamples()],
                         log_every_n_steps=1, num_sanity_val_steps=0)
    with pytest.warns(SkippedSampleWarning, match="corrupt.mp4") as rec:
        trainer.fit(_MeanVideoClassifier(K400_CLASSES), datamodule=_k400(root, eval_batch_size=8))
    assert sum("corrupt.mp4" in str(w.message) for w in rec) == 1  # once, not once per epoch
    assert logger.metrics["data/skipped_train"] == [1.0, 1.0]  # per epoch, not a running total
    assert logger.metrics["data/skipped_val"] == [0.0, 0.0]
    assert trainer.callback_metrics["data/skipped"].item() == 1.0  # the last one logged: train's


# -- a video shorter than one clip: skipped and counted, or completed and counted -------------------------------
def _truncated_webm(path: Path, keep: int, frames: int = 16) -> Path:
    """A real VP9 .webm of ``frames`` ShapesWorld frames cut right after its ``keep``-th packet (a download that
    stopped): decord and PyAV then decode ``keep`` frames."""
    import av

    from common.data.synth import world
    from common.data.synth.video_writers import write_video

    spec = world.sample_scene(5, num_objects=(1, 1), person_prob=0.0, motions=["left to right"])
    full = path.with_name("full_" + path.name)
    write_video(full, [s.image for s in world.render_video(spec, frames, (32, 42))], 10, "vp9")
    with av.open(str(full)) as c:
        positions = [p.pos for p in c.demux(video=0) if p.size > 0]
    path.write_bytes(full.read_bytes()[: positions[keep]])
    full.unlink()
    return path


@pytest.fixture()
def k400_with_short_video(k400: Path, tmp_path: Path) -> Path:
    """The tiny K400 (8-frame videos; the tests sample 4-frame clips) whose train list also names a 16-frame .webm
    truncated to 2 frames."""
    from common.data.video import open_video

    root = tmp_path / "k400"
    shutil.copytree(k400, root)
    short = _truncated_webm(root / "train" / "truncated.webm", keep=2)
    for backend in ("decord", "pyav"):  # real decoding: both libraries see 2 frames
        with open_video(short, backend) as r:
            assert r.num_frames == 2 and r.get_frames([0, 1]).shape[0] == 2
    with open(root / "train.txt", "a") as f:
        f.write("train/truncated.webm 0\n")
    return root


def _fit(dm: CVDataModule, epochs: int) -> tuple[pl.Trainer, _MemoryLogger]:
    logger = _MemoryLogger()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[SkippedSamples()],
                         log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(_MeanVideoClassifier(K400_CLASSES), datamodule=dm)
    return trainer, logger


def test_a_video_shorter_than_a_clip_is_a_counted_bad_sample(k400_with_short_video: Path) -> None:
    """Before, the 2 decoded frames were repeated into a 4-frame clip and trained on without a word."""
    with pytest.warns(SkippedSampleWarning, match=r"skipping short sample .*truncated\.webm \(2 frames decodable, "
                                                  r"a clip needs 4") as rec:
        _, logger = _fit(_k400(k400_with_short_video, eval_batch_size=8), epochs=2)
    assert sum("truncated.webm" in str(w.message) for w in rec) == 1
    assert logger.metrics["data/skipped_train"] == [1.0, 1.0]
    assert "data/padded" not in logger.metrics  # this datamodule never completes samples
    dm = _k400(k400_with_short_video, on_error="raise")
    dm.setup("fit")
    ds = dm.datasets["train"]
    i = next(i for i, s in enumerate(ds.samples) if s.path.endswith("truncated.webm"))
    with pytest.raises(VideoDecodeError) as err:
        ds[i]
    assert err.value.reason == "short" and "truncated.webm" in str(err.value)


def test_short_videos_repeat_completes_the_clip_and_counts_it_apart(k400_with_short_video: Path) -> None:
    dm = _k400(k400_with_short_video, eval_batch_size=8, short_videos="repeat", backend="pyav")
    dm.setup("fit")
    ds = dm.datasets["train"]
    i = next(i for i, s in enumerate(ds.samples) if s.path.endswith("truncated.webm"))
    item = ds[i]
    assert item["video"].shape == (4, 3, 24, 24)
    assert isinstance(item["padded"], PaddedSample) and item["padded"].reason == "short"
    batch = SkipCollate()([{k: v for k, v in item.items() if k != "video"}, ds[(i + 1) % len(ds)]])
    assert int(batch["padded"]) == 1 and batch["padded_samples"][0].path.endswith("truncated.webm")
    assert "padded" not in ds[(i + 1) % len(ds)]  # full-length videos carry no record
    with pytest.warns(PaddedSampleWarning, match=r"completed short sample .*truncated\.webm .*frames repeated") as rec:
        _, logger = _fit(dm, epochs=2)
    assert sum("truncated.webm" in str(w.message) for w in rec) == 1
    assert logger.metrics["data/padded_train"] == [1.0, 1.0] and logger.metrics["data/padded_val"] == [0.0, 0.0]
    assert logger.metrics["data/skipped_train"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="short_videos must be one of"):
        _k400(k400_with_short_video, short_videos="pad")


# -- setup-time checks of the listed files ----------------------------------------------------------------------
def test_wrong_layout_fails_at_setup_not_on_nothing(k400: Path, tmp_path: Path) -> None:
    """Every listed video missing (here: videos under a prefix the lists do not name) is a layout error at setup;
    before, validation ran on zero samples and logged data/skipped."""
    root = tmp_path / "k400"
    shutil.copytree(k400, root)
    (root / "videos").mkdir()
    shutil.move(root / "val", root / "videos" / "val")
    dm = _k400(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetLayoutError) as err:
            pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(
                _MeanVideoClassifier(K400_CLASSES), datamodule=dm, verbose=False)
    msg = str(err.value)
    n_val = K400_CLASSES * 2
    assert f"{n_val} of the {n_val} samples listed for the val split" in msg and "max_missing_fraction=0.5" in msg
    assert str(root / "val") in msg  # the first missing file
    assert "train.txt, ROOT/val.txt" in msg and f"python -m common.data.synth kinetics400 --out {root}" in msg
    assert _k400(root, data_prefix="videos").build_dataset("val").samples  # the fix the message points at


def test_a_few_missing_videos_are_left_out_and_counted(k400: Path, tmp_path: Path) -> None:
    root = tmp_path / "k400"
    shutil.copytree(k400, root)
    lines = (root / "val.txt").read_text().splitlines()
    (root / lines[0].split()[0]).unlink()
    dm = _k400(root)
    with pytest.warns(SkippedSampleWarning, match="skipping missing sample"):
        dm.setup("validate")
    assert len(dm.datasets["val"]) == len(lines) - 1
    assert [s.reason for s in dm.setup_skipped("validate")] == ["missing"]
    strict = _k400(root, max_missing_fraction=0.0)
    with pytest.warns(SkippedSampleWarning), pytest.raises(DatasetLayoutError, match="1 of the 8 samples"):
        strict.setup("validate")
    with pytest.raises(ValueError, match="max_missing_fraction"):
        _k400(root, max_missing_fraction=1.5)
    # K400-style lists may repeat lines on purpose (a list built by repetition): kept, not counted
    (root / "rep.txt").write_text("\n".join(lines[1:] * 2) + "\n")
    assert len(_k400(root, val_file="rep.txt").build_dataset("val")) == 2 * (len(lines) - 1)


def _ssv2_copy(ssv2: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ssv2"
    root.mkdir()
    (root / "20bn-something-something-v2").symlink_to(ssv2 / "20bn-something-something-v2")
    shutil.copytree(ssv2 / "labels", root / "labels")
    return root


def test_ssv2_duplicate_id_is_warned_and_counted(ssv2: Path, tmp_path: Path) -> None:
    root = _ssv2_copy(ssv2, tmp_path)
    path = root / "labels" / "validation.json"
    entries = json.loads(path.read_text())
    path.write_text(json.dumps([*entries, dict(entries[0])]))
    dm = SSv2DataModule(root=str(root), input_size=24, num_frames=4)
    with pytest.warns(SkippedSampleWarning, match=rf"duplicate sample .*{entries[0]['id']}\.webm"):
        dm.setup("validate")
    assert len(dm.datasets["val"]) == len(entries)  # listed once
    assert [s.reason for s in dm.setup_skipped("validate")] == ["duplicate"]


def test_ssv2_same_id_two_labels_is_an_error_naming_both(ssv2: Path, tmp_path: Path) -> None:
    root = _ssv2_copy(ssv2, tmp_path)
    path = root / "labels" / "validation.json"
    entries = json.loads(path.read_text())
    other = next(e for e in entries if e["template"] != entries[0]["template"])
    path.write_text(json.dumps([*entries, {**entries[0], "template": other["template"]}]))
    dm = SSv2DataModule(root=str(root), input_size=24, num_frames=4)
    with pytest.raises(DuplicateLabelError) as err:
        dm.setup("validate")
    msg = str(err.value)
    first, second = (t.replace("[", "").replace("]", "") for t in (entries[0]["template"], other["template"]))
    assert f"{entries[0]['id']}.webm" in msg and first in msg and second in msg and "validation.json" in msg


def _mmaction2_layout(k400: Path, tmp_path: Path) -> Path:
    """The official CSV over per-label folders renamed as mmaction2's Kinetics-400 script leaves them: spaces -> _,
    parentheses -> - ('red circle' -> red_circle; one class gets a Kinetics-style '(not cat)' suffix)."""
    root = tmp_path / "k400_mm"
    (root / "annotations").mkdir(parents=True)
    first = None
    for split in ("train", "val"):
        with open(k400 / "annotations" / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        first = first or rows[0]["label"]
        for row in rows:
            if row["label"] == first:
                row["label"] = f"{first} (not cat)"
            name = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
            folder = row["label"].replace(" ", "_").replace("(", "-").replace(")", "-")
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(k400 / split / name, root / split / folder / name)
        with open(root / "annotations" / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    assert (root / "train" / f"{first.replace(' ', '_')}_-not_cat-").is_dir()
    return root


def test_k400_csv_over_mmaction2_renamed_class_folders(k400: Path, tmp_path: Path) -> None:
    root = _mmaction2_layout(k400, tmp_path)
    template = "{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    kw = dict(train_file="annotations/train.csv", val_file="annotations/val.csv", class_file=None,
              csv_video_template=template)
    assert " " in _k400(root, **kw).info["class_names"][0]  # the CSV's names have spaces, the folders do not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetLayoutError) as err:
            _k400(root, **kw).setup("validate")
    msg = str(err.value)
    assert "does not exist but" in msg and "set class_folder_style: underscore" in msg and "mmaction2" in msg
    dm = _k400(root, class_folder_style="underscore", **kw)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == K400_CLASSES * 3 and not dm.setup_skips
    lists = _k400(k400)
    names, list_names = dm.info["class_names"], lists.info["class_names"]
    expect = {Path(s.path).name: list_names[s.label] for s in lists.load_split("val")}
    got = {Path(s.path).name: names[s.label].removesuffix(" (not cat)") for s in dm.datasets["val"].samples}
    assert got == expect  # every video found, with its class
    with pytest.raises(ValueError, match="class_folder_style"):
        _k400(root, class_folder_style="dash", **kw)


# -- writers as functions, under the lock ------------------------------------------------------------------------
def test_write_once_calls_the_writer_once_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    calls = []

    def writer(out: Path, n: int) -> None:
        calls.append(n)
        out.mkdir()
        (out / "data.txt").write_text("x" * n)

    assert write_once(tmp_path / "ds", writer, n=3) is True
    assert write_once(tmp_path / "ds", writer, n=5) is False and calls == [3]
    assert (tmp_path / "ds" / "data.txt").read_text() == "xxx"

    def failing(out: Path) -> None:
        out.mkdir()
        (out / "half").write_text("")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_once(tmp_path / "bad", failing)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ds"]


def test_generic_datamodule_needs_only_build_dataset() -> None:
    class Squares(CVDataModule):
        def build_dataset(self, split: str) -> list[dict[str, Any]]:
            items = [{"x": torch.tensor(float(i * i))} for i in range(5)]
            return items + [SkippedSample(5, "six", "broken")] if split == "val" else items

    dm = Squares(batch_size=4)
    dm.setup("fit")
    val = list(dm.val_dataloader())
    assert [int(b["skipped"]) for b in val] == [0, 1] and torch.cat([b["x"] for b in val]).tolist() == [
        0.0, 1.0, 4.0, 9.0, 16.0]
    assert len(list(dm.predict_dataloader())) == 2 and set(dm.datasets) == {"train", "val", "test"}

    class OwnLoaders(CVDataModule):  # the older style: loaders of its own, no build_dataset
        def train_dataloader(self) -> Any:
            return self.train_loader([{"x": torch.zeros(1)}])

    own = OwnLoaders()
    own.setup("fit")  # nothing to build, no error
    assert not own.datasets and next(iter(own.train_dataloader()))["x"].shape == (1, 1)


# -- DDP: summed over ranks, setup-time skips counted once -------------------------------------------------------
_DDP_SCRIPT = '''
import json, sys, warnings
import lightning.pytorch as pl
import torch
from common.callbacks.data import SkippedSamples
from common.data.kinetics import Kinetics400DataModule

class Count(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
    def validation_step(self, batch, batch_idx):
        pass

warnings.simplefilter("ignore")
root, out = sys.argv[1], sys.argv[2]
dm = Kinetics400DataModule(root=root, input_size=24, num_frames=4, eval_batch_size=2)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, callbacks=[SkippedSamples()])
trainer.validate(Count(), datamodule=dm, verbose=False)
if trainer.global_rank == 0:
    json.dump({k: float(v) for k, v in trainer.callback_metrics.items()}, open(out, "w"))
'''


@pytest.mark.slow
def test_ddp_sums_skipped_over_ranks_and_counts_setup_skips_once(k400: Path, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    root = tmp_path / "k400"
    shutil.copytree(k400, root)
    lines = (root / "val.txt").read_text().splitlines()
    for name in ("a", "b", "c"):
        (root / "val" / f"{name}.mp4").write_bytes(bytes(range(256)) * 8)  # unreadable, read at load time
    bad = ["val/a.mp4 0", "val/b.mp4 1", "val/c.mp4 2", "val/missing.mp4 0", f"{lines[0].split()[0]} 99"]
    (root / "val.txt").write_text("\n".join(lines + bad) + "\n")  # 3 unreadable + 1 missing + 1 unknown label
    script = tmp_path / "ddp_skipped.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "metrics.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               f"--master_port={port}", str(script), str(root), str(out)],
                              cwd=project, env=env, capture_output=True, text=True, timeout=600)
        # KNOWN, OPEN: in 2 of 2 idle full-suite runs on a fresh clone (never alone, never in this file or folder
        # alone, never under load) one rank aborted with "terminate called without an active exception"
        # (std::terminate in native code) before validation ended. One retry on exactly that signature, said out
        # loud, until the cause is found; any other failure, or the abort twice, fails the test.
        if proc.returncode == 0 or "terminate called without an active exception" not in proc.stderr:
            break
        print(f"attempt {attempt + 1}: a rank aborted in native code (std::terminate); retrying once", file=sys.stderr)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads(out.read_text())
    assert metrics["data/skipped"] == 5.0 and metrics["data/skipped_val"] == 5.0


def test_setup_skips_of_a_real_sized_split_are_summed_up_not_warned_one_by_one() -> None:
    class Listed(CVDataModule):
        def build_dataset(self, split: str) -> list[dict[str, Any]]:
            for i in range(30):  # K400 misses thousands of its YouTube videos: 30 of 100 here
                self.record_setup_skip(split, f"/k400/{split}/v{i}.mp4", "missing")
            return [{"x": torch.zeros(1)}] * 70

    with pytest.warns(SkippedSampleWarning) as rec:
        dm = Listed()
        dm.setup("validate")
    messages = [str(w.message) for w in rec]
    assert len(messages) == 21 and "30 samples of the val split left out at setup (30 missing)" in messages[-1]
    assert len(dm.setup_skipped("validate")) == 30  # all counted
