"""``python -m st_adapter predict`` on a user's own videos: a real smoke fit on a ShapesWorld Kinetics-400 stand-in,
then predict with the preset config and ``--data common.data.predict.VideoFiles`` on a folder of mp4 / webm files,
one of them truncated: a CSV of the top-5 classes (the checkpoint's class names) with probabilities per video."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from common import tracking
from common.cli import run
from common.data.base import SkippedSampleWarning
from common.data.kinetics import read_class_csv
from common.data.synth.video_writers import write_kinetics400, write_video

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "st_adapter" / "configs" / "smoke" / "k400" / "clip-tiny_4f_4x32.yaml"


def test_predict_writes_top5_classes_per_video(tmp_path, mlflow_store, monkeypatch):
    root = write_kinetics400(tmp_path / "k400", num_classes=6, num_per_class=1, val_per_class=1, frames=8, size=32,
                             progress=False)
    user = tmp_path / "my videos"
    user.mkdir()
    val = sorted((root / "val").glob("*.mp4"))
    for i, name in enumerate(("first.mp4", "second.mp4")):
        (user / name).write_bytes(val[i].read_bytes())
    write_video(user / "phone.webm", [np.full((32, 42, 3), 30 * i, dtype=np.uint8) for i in range(8)], 8, "vp9")
    (user / "cut.mp4").write_bytes(val[2].read_bytes()[:1000])  # truncated download

    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    fit = run(["fit", "--config", str(SMOKE), "--data.init_args.root", str(root), "--trainer.limit_train_batches", "1",
               "--run.name", "fit"])
    ckpt = torch.load(fit["last_model_path"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["num_classes"] == 6  # the classifier's size, for a datamodule without labels
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    with pytest.warns(SkippedSampleWarning, match="cut.mp4"):
        run(["predict", "--config", str(SMOKE), "--ckpt_path", fit["last_model_path"],
             "--data", "common.data.predict.VideoFiles", "--data.inputs", f"{user}/*", "--run.name", "pred"])

    out = tmp_path / "outputs" / "st_adapter" / "pred" / "predictions"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["input"]).name for r in rows] == ["first.mp4", "phone.webm", "second.mp4"]
    names = read_class_csv(root / "labels.csv")  # the checkpoint's class names, not indices
    for r in rows:
        classes = [r[f"top{k}_class"] for k in range(1, 6)]
        probs = [float(r[f"top{k}_prob"]) for k in range(1, 6)]
        assert len(set(classes)) == 5 and set(classes) <= set(names)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert "top6_class" not in r
    skipped = list(csv.DictReader((out / "skipped.csv").open()))
    assert [Path(s["input"]).name for s in skipped] == ["cut.mp4"] and skipped[0]["reason"]

    client = tracking.client()
    exp = client.get_experiment_by_name("st_adapter")
    (pred,) = client.search_runs([exp.experiment_id], "tags.subcommand = 'predict'")
    assert pred.data.metrics["data/skipped"] == 1 and pred.data.metrics["predict/inputs"] == 4
    assert {f.path for f in client.list_artifacts(pred.info.run_id, "predictions")} == {
        "predictions/predictions.csv", "predictions/skipped.csv"}
