"""A smoke reproduction of ViFi-CLIP's table: ShapesWorld data written by the driver, zero-shot rows through
``validate`` and a trained row through ``fit`` as MLflow children of one parent, the chance rows, resume; the paper
preset's data check."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.reproduce import DataCheckError, state_dir
from benchmarks.reproduce.__main__ import main
from benchmarks.reproduce.vificlip import make_plan
from common import tracking

ROWS = ["zero_shot", "zero_shot_base", "zero_shot_novel", "vificlip"]


def test_smoke_reproduction_writes_table_with_chance_row_and_tracks_rows(tmp_path, mlflow_store, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_DATA", raising=False)
    results = tmp_path / "results"
    args = ["vificlip", "--preset", "smoke", "--rows", ",".join(ROWS), "--results-dir", str(results)]
    assert main(args) == 0
    assert (tmp_path / "outputs" / "data" / "kinetics400-smoke").is_dir()

    md = (results / "vificlip_smoke.md").read_text()
    assert "| Chance (1 / classes) | - | 8.3 | - |" in md  # 12 ShapesWorld classes
    assert "| Chance (1 / classes) | 16.7 | 16.7 | 16.7 | - |" in md  # base / novel halves
    assert "| ViFi-CLIP (both towers fine-tuned) |" in md and "83.9" in md  # the paper's figure beside ours
    assert "76.4 / 61.1 / 67.9" in md
    rows = {r["key"]: r for r in csv.DictReader((results / "vificlip_smoke.csv").open())}
    assert set(rows) == {*ROWS, "chance_all", "chance_base", "chance_novel"}
    assert float(rows["chance_all"]["top1"]) == pytest.approx(100 / 12, abs=1e-3)
    assert all(rows[k]["status"] == "finished" and 0.0 <= float(rows[k]["top1"]) <= 100.0 for k in ROWS)
    assert rows["zero_shot"]["command"] == "validate" and rows["vificlip"]["command"] == "fit"
    assert int(rows["zero_shot"]["trainable"]) == 0 < int(rows["vificlip"]["trainable"])
    assert rows["zero_shot_novel"]["classes"] == "novel"

    parent = json.loads((state_dir("vificlip", "smoke") / "parent.json").read_text())["run_id"]
    client = tracking.client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = tracking.child_runs(parent)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {f.path for f in client.list_artifacts(parent, "results")} == {
        "results/vificlip_smoke.md", "results/vificlip_smoke.csv"}
    assert "table/vificlip/top1" in client.get_run(parent).data.metrics

    assert main(args) == 0  # resume: nothing run again
    assert "4 already done with the same config, 0 to run" in capsys.readouterr().out
    assert len(tracking.child_runs(parent)) == 4


def test_plans_and_the_paper_data_check(tmp_path, mlflow_store, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(DataCheckError, match="needs the real Kinetics-400.*DATA="):
        make_plan("paper", None)
    assert main(["vificlip", "--preset", "paper"]) == 2
    assert "DATA=" in capsys.readouterr().err
    assert main(["vificlip", "--preset", "paper", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(DataCheckError, match="paper preset only"):
        make_plan("smoke", str(tmp_path))
    # an empty folder: the datamodule check refuses it before anything is trained or written
    (tmp_path / "k400").mkdir()
    paper = make_plan("paper", str(tmp_path / "k400"))
    assert {r.key for r in paper.rows} == {"zero_shot", "zero_shot_base", "zero_shot_novel", "image_ft", "text_ft",
                                           "vificlip", "b2n_prompting"}
    assert all(f"--data.init_args.root={tmp_path / 'k400'}" in r.overrides for r in paper.rows)
    assert main(["vificlip", "--preset", "paper", "--data", str(tmp_path / "k400")]) == 2
    assert "DATA=" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "reproduce").exists()
    for preset in ("smoke", "tiny"):
        plan = make_plan(preset)
        assert [r.key for r in plan.rows] == ["zero_shot", "zero_shot_base", "zero_shot_novel", "image_ft",
                                              "text_ft", "vificlip", "b2n_prompting"]
        assert [r.command for r in plan.rows[:3]] == ["validate"] * 3
