"""``python -m polyhistor predict`` on a user's own images: a real smoke fit, then predict with the run's config.yaml
(downloaded from its MLflow run, as a user would) and ``--data common.data.predict.ImageFiles`` on a folder of JPEG
and PNG files, one of them corrupt."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import tracking
from common.cli import run
from common.data.base import SkippedSampleWarning

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "polyhistor" / "configs" / "smoke" / "polyhistor.yaml"
TASKS = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}


@pytest.fixture()
def photos(tmp_path: Path) -> tuple[Path, Path]:
    """A PASCAL_MT stand-in to train on, and a user's folder: two of its JPEGs, one as a PNG of another size, a
    truncated JPEG."""
    from common.data.synth.pascal_mt import write_pascal_mt

    root = tmp_path / "PASCAL_MT"
    write_pascal_mt(root, num_train=4, num_val=2, size=48, progress=False)
    jpegs = sorted((root / "JPEGImages").glob("*.jpg"))
    user = tmp_path / "my photos"
    user.mkdir()
    (user / "street.jpg").write_bytes(jpegs[0].read_bytes())
    (user / "park.jpg").write_bytes(jpegs[1].read_bytes())
    Image.open(jpegs[2]).resize((70, 45)).save(user / "wide.png")
    (user / "broken.jpg").write_bytes(jpegs[3].read_bytes()[:400])  # truncated: PIL fails to load it
    return root, user


def test_predict_writes_a_png_per_task_and_an_overlay_per_image(photos, tmp_path, mlflow_store, monkeypatch):
    root, user = photos
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    fit = run(["fit", "--config", str(SMOKE), "--data.init_args.root", str(root), "--data.init_args.image_size", "32",
               "--trainer.limit_val_batches", "1", "--run.name", "fit"])
    config = Path(tracking.client().download_artifacts(fit["mlflow_run_id"], "config.yaml", str(tmp_path)))
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    with pytest.warns(SkippedSampleWarning, match="broken.jpg"):
        summary = run(["predict", "--config", str(config), "--ckpt_path", fit["last_model_path"],
                       "--data", "common.data.predict.ImageFiles", "--data.inputs", f"{user}/*", "--run.name", "pred"])

    out = tmp_path / "outputs" / "polyhistor" / "pred" / "predictions"
    # the summary says where the files are and which checkpoint made them, not the training run's checkpoints
    assert summary["predictions_dir"] == str(out) and summary["predictions"]["written"] == 3
    assert summary["ckpt_path"] == fit["last_model_path"] and summary["best_model_path"] is None
    assert (out.parent / "summary_predict.json").is_file()
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["input"]).name for r in rows] == ["park.jpg", "street.jpg", "wide.png"]
    for r in rows:
        w, h = Image.open(r["input"]).size
        for task, channels in TASKS.items():
            assert r[task] == f"{Path(r['input']).stem}_{task}.png"
            img = Image.open(out / r[task])
            img.load()
            assert img.size == (w, h), (r[task], img.size)  # the input file's size, not the network's 32 px
            arr = np.asarray(img)
            if channels > 1 and task != "normals":
                assert img.mode == "P" and arr.max() < channels and img.getpalette()[3:6] == [128, 0, 0]
            elif task == "sal":
                assert img.mode == "L"
            else:
                assert img.mode == "RGB"
                n = arr.astype(np.float64) * 2 / 255 - 1
                assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=0.03)  # unit normals, v = 255 (n + 1) / 2
        overlay = Image.open(out / r["overlay"])
        assert overlay.mode == "RGB" and overlay.size == (5 * w + 4 * 4, h)  # input + 4 tasks side by side
    skipped = list(csv.DictReader((out / "skipped.csv").open()))
    assert [(Path(s["input"]).name, s["reason"]) for s in skipped] == [("broken.jpg", "undecodable")]

    client = tracking.client()
    exp = client.get_experiment_by_name("polyhistor")
    (pred,) = client.search_runs([exp.experiment_id], "tags.subcommand = 'predict'")
    assert pred.data.metrics["data/skipped_predict"] == 1 and pred.data.metrics["predict/written"] == 3
    artifacts = {Path(f.path).name for f in client.list_artifacts(pred.info.run_id, "predictions")}
    assert artifacts == {f.name for f in out.iterdir()} and len(artifacts) == 3 * 5 + 2
