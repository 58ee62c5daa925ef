"""A smoke reproduction of Conv-Adapter's table: ShapesWorld data written by the driver, parent/child runs, the chance
row, results, resume; the paper preset's data check."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.reproduce import DataCheckError, state_dir
from benchmarks.reproduce.__main__ import main
from benchmarks.reproduce.conv_adapter import make_plan, parse_data
from common import tracking

ROWS = ["resnet-tiny_linear_probe_shape_s0", "resnet-tiny_conv_parallel_shape-k1_s0"]


def test_smoke_reproduction_writes_table_with_chance_row_and_tracks_rows(tmp_path, mlflow_store, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_DATA", raising=False)
    results = tmp_path / "results"
    args = ["conv_adapter", "--preset", "smoke", "--rows", ",".join(ROWS), "--results-dir", str(results)]
    assert main(args) == 0
    assert (tmp_path / "outputs" / "data" / "vtab-like" / "shape" / "test.txt").is_file()

    md = (results / "conv_adapter_smoke.md").read_text()
    assert "| - | Chance (1 / classes) | - | - | 10.0 | 10.0 |" in md
    assert "| resnet-tiny | Linear probe |" in md and "| resnet-tiny | Conv-Adapter: Convolution Parallel |" in md
    assert "3.5%" in md  # the paper's claims beside the table
    rows = {r["key"]: r for r in csv.DictReader((results / "conv_adapter_smoke.csv").open())}
    assert set(rows) == {*ROWS, "chance_shape", "chance_shape_1-shot"}
    assert float(rows["chance_shape"]["top1"]) == 10.0
    lp, ca = rows[ROWS[0]], rows[ROWS[1]]
    assert lp["status"] == ca["status"] == "finished" and ca["shots"] == "1"
    assert 0.0 <= float(lp["top1"]) <= 100.0 and 0.0 <= float(ca["top1"]) <= 100.0
    assert 0 < int(lp["trainable"]) < int(ca["trainable"])

    parent = json.loads((state_dir("conv_adapter", "smoke") / "parent.json").read_text())["run_id"]
    client = tracking.client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = tracking.child_runs(parent)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["setting"] for c in children} == {"smoke/resnet-tiny/linear_probe",
                                                          "smoke/resnet-tiny/conv_parallel"}
    assert {f.path for f in client.list_artifacts(parent, "results")} == {
        "results/conv_adapter_smoke.md", "results/conv_adapter_smoke.csv"}
    assert f"table/{ROWS[1]}/top1" in client.get_run(parent).data.metrics

    assert main(args) == 0  # resume: nothing trained again
    assert "2 already done with the same config, 0 to run" in capsys.readouterr().out
    assert len(tracking.child_runs(parent)) == 2


def test_plans_and_the_paper_data_check(tmp_path, mlflow_store, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(DataCheckError, match="needs the real VTAB-1k.*DATA="):
        make_plan("paper", None)
    assert main(["conv_adapter", "--preset", "paper"]) == 2
    assert "DATA=" in capsys.readouterr().err
    with pytest.raises(DataCheckError, match="does not exist"):
        parse_data(str(tmp_path / "missing"))
    with pytest.raises(DataCheckError, match="unknown part"):
        parse_data("imagenet=/x")
    (tmp_path / "vtab-1k").mkdir()
    assert parse_data(str(tmp_path)) == {"vtab": tmp_path / "vtab-1k"}
    paper = make_plan("paper", str(tmp_path))
    assert len(paper.rows) == 2 * 7 * 19 and paper.check is not None
    assert all(f"--data.init_args.root={tmp_path / 'vtab-1k'}" in r.overrides for r in paper.rows)
    # the paper preset's check refuses a folder without the VTAB-1k lists: exit 2, nothing trained or written
    capsys.readouterr()
    assert main(["conv_adapter", "--preset", "paper", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "DATA=" in err and "train800val200.txt" in err
    assert not (tmp_path / "outputs" / "reproduce").exists()
    smoke = make_plan("smoke")
    assert {r.key.rsplit("_s", 1)[0] for r in smoke.rows} >= {f"resnet-tiny_{m}_shape" for m in (
        "linear_probe", "full_finetune", "bitfit", "conv_parallel", "conv_sequential", "residual_parallel",
        "residual_sequential")}
    tiny = make_plan("tiny")
    keys = {r.key for r in tiny.rows}
    assert {f"resnet-tiny_conv_parallel_shape-k{k}_s{s}" for k in (1, 2, 4, 8, 16) for s in (0, 1, 2)} <= keys
    assert "convnext-tiny_residual_sequential_orientation_s0" in keys and len(keys) == 2 * 7 * 5 + 3 * 5 * 2 + 45
    assert {f"resnet-tiny_linear_probe_{t}_s{s}" for t in ("shape", "colour", "count", "position", "orientation")
            for s in (0, 1, 2)} <= keys
