"""A smoke reproduction of MaskCLIP's table: ShapesWorld COCO-panoptic written by the driver, the trivial row, the
two untrained rows through ``validate`` and MaskCLIP through ``fit`` as MLflow children of one parent (with their
panoptic overlay pictures), resume; the paper preset's data check."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.reproduce import DataCheckError, state_dir
from benchmarks.reproduce.__main__ import main
from benchmarks.reproduce.maskclip import make_plan
from common import tracking

ROWS = ["crop_classify", "no_rma", "maskclip"]


def test_smoke_reproduction_writes_the_table_and_tracks_the_rows(tmp_path, mlflow_store, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_DATA", raising=False)
    results = tmp_path / "results"
    args = ["maskclip", "--preset", "smoke", "--results-dir", str(results)]
    assert main(args) == 0
    assert (tmp_path / "outputs" / "data" / "coco_panoptic-smoke" / "annotations" / "panoptic_val2017.json").is_file()

    md = (results / "maskclip_smoke.md").read_text()
    assert "| Method | Seeds | Trainable | PQ | SQ | RQ | PQ things | PQ stuff | PQ novel | mIoU |" in md
    assert "| ADE20K-150 panoptic PQ | 15.1 |" in md and "| ADE20K-150 mIoU | 23.7 |" in md
    assert "| ADE20K-847 mIoU | 8.2 |" in md and "| PASCAL-Context-459 mIoU | 10.0 |" in md
    assert "| PASCAL-Context-59 mIoU | 45.9 |" in md
    rows = {r["key"]: r for r in csv.DictReader((results / "maskclip_smoke.csv").open())}
    assert list(rows) == ["trivial", *ROWS]
    assert rows["trivial"]["status"] == "computed" and float(rows["trivial"]["pq_st"]) > 0.0  # one stuff segment
    assert rows["trivial"]["pq_th"] == "0.0000"  # no thing predicted
    for key in ROWS:
        r = rows[key]
        assert r["status"] == "finished"
        for col in ("pq", "sq", "rq", "pq_th", "pq_st", "miou"):
            assert 0.0 <= float(r[col]) <= 100.0
    assert int(rows["crop_classify"]["trainable"]) == int(rows["no_rma"]["trainable"]) == 0
    assert int(rows["maskclip"]["trainable"]) > 0

    parent = json.loads((state_dir("maskclip", "smoke") / "parent.json").read_text())["run_id"]
    client = tracking.client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = tracking.child_runs(parent)
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        pictures = [f.path for f in client.list_artifacts(child.info.run_id, "panoptic")]
        assert pictures and all(p.endswith(".png") for p in pictures)
    assert {f.path for f in client.list_artifacts(parent, "results")} == {
        "results/maskclip_smoke.md", "results/maskclip_smoke.csv"}
    assert "table/maskclip/pq" in client.get_run(parent).data.metrics

    assert main(args) == 0  # resume: nothing run again
    assert "3 already done with the same config, 0 to run" in capsys.readouterr().out
    assert len(tracking.child_runs(parent)) == 3


def test_plans_and_the_paper_data_check(tmp_path, mlflow_store, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(DataCheckError, match="needs COCO panoptic.*DATA="):
        make_plan("paper", None)
    assert main(["maskclip", "--preset", "paper", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(DataCheckError, match="paper preset only"):
        make_plan("tiny", str(tmp_path))
    (tmp_path / "coco").mkdir()  # an empty folder: refused before anything is trained or written
    assert main(["maskclip", "--preset", "paper", "--data", str(tmp_path / "coco")]) == 2
    assert "DATA=" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "reproduce").exists()
    tiny = make_plan("tiny")
    assert [r.key for r in tiny.rows] == ["crop_classify", "no_rma", "maskclip_s0", "maskclip_s1", "maskclip_s2"]
    assert [r.command for r in tiny.rows] == ["validate", "validate", "fit", "fit", "fit"]
    assert "--seed_everything=2" in tiny.rows[-1].overrides
