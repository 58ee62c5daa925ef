"""Predicting on a user's own files: the predict datamodules (real JPEG/PNG files and real mp4/webm videos, one of
each kind broken) and the prediction writer with a classifier (CSV of the top-5 classes, MLflow artifacts).

The paper commands end to end (fit, then ``predict --ckpt_path`` on a folder) are tests/polyhistor/test_predict.py
and tests/st_adapter/test_predict.py."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from common.callbacks.data import SkipCounter
from common.callbacks.predict import PredictionWriter
from common.data.base import DatasetLayoutError, SkippedSampleWarning
from common.data.kinetics import Kinetics400DataModule
from common.data.pascal_transforms import MultiTaskTransform
from common.data.predict import ImageFiles, VideoFiles, expand_inputs, unique_names
from common.data.synth.video_writers import write_kinetics400, write_video
from common.loggers import CVMLFlowLogger
from common.module import ClassificationModule


def _photo(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """Two JPEGs and a PNG of different sizes, a corrupt JPEG, an empty PNG and a text file."""
    d = tmp_path / "photos"
    d.mkdir()
    _photo(d / "beach.jpg", 40, 60, 0)
    _photo(d / "cat.JPG", 50, 30, 1)
    _photo(d / "map.png", 24, 24, 2)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    return d


def test_expand_inputs_folder_glob_list_missing(photos: Path) -> None:
    files, missing = expand_inputs(str(photos), (".jpg", ".png"))
    assert [f.name for f in files] == ["beach.jpg", "cat.JPG", "corrupt.jpg", "empty.png", "map.png"]
    assert missing == []
    files, _ = expand_inputs(str(photos / "*.jpg"), ())  # a glob is taken as the user wrote it (case-sensitive)
    assert [f.name for f in files] == ["beach.jpg", "corrupt.jpg"]
    files, missing = expand_inputs([str(photos / "map.png"), str(photos / "*.png"), str(photos / "nope.jpg"),
                                    str(photos / "*.gif")], (".png",))
    assert [f.name for f in files] == ["map.png", "empty.png"]  # named twice, taken once, first position kept
    assert [(Path(e).name, why) for e, why in missing] == [("nope.jpg", "no such file"),
                                                           ("*.gif", "the pattern matches no file")]
    assert unique_names([Path("a/x.jpg"), Path("b/x.png"), Path("c/y z.jpg")]) == ["x-0", "x-1", "y_z"]


def test_image_files_use_the_pascal_eval_transform_and_skip_bad_files(photos: Path) -> None:
    dm = ImageFiles(inputs=[str(photos), str(photos / "missing.jpg")], image_size=[16, 20], batch_size=8)
    assert dm.info == {"image_size": [16, 20]}  # no class names: the model keeps its checkpoint's
    with pytest.warns(SkippedSampleWarning, match="missing.jpg"):
        dm.setup("predict")
    assert [s.reason for s in dm.setup_skipped("predict")] == ["missing"]
    (batch,) = list(dm.predict_dataloader())
    assert batch["skipped"] == 2
    assert sorted((Path(s.path).name, s.reason) for s in batch["skipped_samples"]) == [
        ("corrupt.jpg", "undecodable"), ("empty.png", "empty")]
    assert [Path(p).name for p in batch["path"]] == ["beach.jpg", "cat.JPG", "map.png"]
    assert batch["name"] == ["beach", "cat", "map"]
    assert batch["size"].tolist() == [[40, 60], [50, 30], [24, 24]]
    assert batch["image"].shape == (3, 3, 16, 20)
    # exactly the evaluation transform of the PASCAL-Context datamodule (fixed resize, ImageNet normalisation)
    raw = np.array(Image.open(photos / "cat.JPG").convert("RGB"))
    ref = MultiTaskTransform((16, 20), train=False)({"image": raw})["image"]
    torch.testing.assert_close(batch["image"][1], ref)
    with pytest.raises(ValueError, match="use it with `predict`"):
        dm.setup("fit")
    with pytest.raises(DatasetLayoutError, match="no image files found"):
        ImageFiles(inputs=str(photos / "*.bmp")).setup("predict")


def test_video_files_read_like_the_datamodules_test_views_and_skip_bad_files(tmp_path: Path) -> None:
    root = write_kinetics400(tmp_path / "k400", num_classes=2, num_per_class=1, val_per_class=1, frames=8, size=32,
                             progress=False)
    videos = sorted((root / "val").glob("*.mp4"))
    user = tmp_path / "clips"
    user.mkdir()
    for v in videos:
        shutil.copy(v, user / v.name)
    frames = [np.full((32, 42, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    write_video(user / "own.webm", frames, fps=8, codec="vp9")  # a webm of 6 frames: short for 8-frame clips
    (user / "truncated.mp4").write_bytes(videos[0].read_bytes()[:900])
    (user / "readme.txt").write_text("not a video")
    eval_args = dict(num_frames=4, sampling="dense", frame_interval=2, recipe="short_side_jitter", input_size=24,
                     test_clips=2, test_crops=3, backend="pyav")
    dm = VideoFiles(inputs=str(user), batch_size=8, **eval_args)
    assert dm.info == {}
    dm.setup("predict")
    counter = SkipCounter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (batch,) = list(dm.predict_dataloader())
        assert counter.record_batch(batch) == 1
    assert any("truncated.mp4" in str(w.message) for w in caught)
    assert sorted(Path(p).name for p in batch["path"]) == sorted([v.name for v in videos] + ["own.webm"])
    assert batch["video"].shape == (3, 6, 4, 3, 24, 24)  # (B, clips x crops, T, 3, S, S)
    # the same views as the Kinetics datamodule's test split gives for the same file
    k400 = Kinetics400DataModule(root=str(root), batch_size=8, val_clips=2, val_crops=3, **eval_args)
    ref = k400.dataset("test")
    for i, sample in enumerate(ref.samples):
        j = [Path(p).name for p in batch["path"]].index(Path(sample.path).name)
        torch.testing.assert_close(batch["video"][j], ref[i]["video"])

    short = VideoFiles(inputs=str(user / "*.webm"), num_frames=8, sampling="segment", input_size=24,
                       backend="pyav")  # 6 frames < 8: a bad sample unless short_videos: repeat
    short.setup("predict")
    (batch,) = list(short.predict_dataloader())
    assert batch["video"].shape[0] == 0 and [s.reason for s in batch["skipped_samples"]] == ["short"]


class TinyImageClassifier(ClassificationModule):
    """Global average colour -> 6 classes."""

    def __init__(self, data_info: dict | None = None) -> None:
        super().__init__(data_info)
        self.head = torch.nn.Linear(3, self.num_classes)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(-2, -1))) * 10


def test_classifier_writes_top5_csv_and_skipped_and_logs_to_mlflow(photos: Path, tmp_path: Path,
                                                                    mlflow_store: str) -> None:
    names = ["red ball", "blue box", "green cone", "white star", "black ring", "grey cube"]
    torch.manual_seed(0)
    model = TinyImageClassifier({"num_classes": 6, "class_names": names})
    logger = CVMLFlowLogger("predict-test", run_name="p")
    out = tmp_path / "run" / "predictions"
    trainer = pl.Trainer(logger=logger, callbacks=[PredictionWriter(output_dir=str(out))], accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False)
    dm = ImageFiles(inputs=str(photos), image_size=16, batch_size=2)  # no class names: the model's are kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.predict(model, dm, return_predictions=False)
    assert model.data_info["class_names"] == names
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["input"]).name for r in rows] == ["beach.jpg", "cat.JPG", "map.png"]  # input order
    for r in rows:
        probs = [float(r[f"top{k}_prob"]) for k in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert len({r[f"top{k}_class"] for k in range(1, 6)}) == 5 and {r[f"top{k}_class"] for k in range(1, 6)} <= set(names)
    # the top-1 of each row is the model's own arg-max
    x = torch.stack([MultiTaskTransform(16)({"image": np.array(Image.open(photos / n).convert("RGB"))})["image"]
                     for n in ("beach.jpg", "cat.JPG", "map.png")])
    assert [r["top1_class"] for r in rows] == [names[i] for i in model.forward_logits(x).argmax(1).tolist()]
    skipped = list(csv.DictReader((out / "skipped.csv").open()))
    assert sorted((Path(s["input"]).name, s["reason"]) for s in skipped) == [("corrupt.jpg", "undecodable"),
                                                                             ("empty.png", "empty")]
    client = MlflowClient(mlflow_store)
    run = client.get_run(logger.run_id)
    assert run.data.metrics["data/skipped_predict"] == 2 and run.data.metrics["predict/written"] == 3
    assert {f.path for f in client.list_artifacts(logger.run_id, "predictions")} == {
        "predictions/predictions.csv", "predictions/skipped.csv"}
    assert float(trainer.callback_metrics["predict/skipped"]) == 2
