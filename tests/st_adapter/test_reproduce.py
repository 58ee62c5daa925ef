"""A smoke reproduction of ST-Adapter's table: smoke data written by the driver, parent/child runs, results, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import common.models
from benchmarks.reproduce import DataCheckError, state_dir
from benchmarks.reproduce.__main__ import main
from benchmarks.reproduce.st_adapter import make_plan, parse_data
from common import tracking

ROWS = ["ssv2_clip-tiny_4f_8x32", "ssv2_clip-tiny_4f_linear-probe"]


def test_smoke_reproduction_writes_results_tracks_rows_and_resumes(tmp_path, mlflow_store, monkeypatch, capsys):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_DATA", raising=False)
    results = tmp_path / "results"
    args = ["st_adapter", "--preset", "smoke", "--rows", ",".join(ROWS), "--results-dir", str(results)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "writing a small ShapesWorld ssv2" in out and "row 1/2: SSv2 (motion): ST-Adapter" in out
    assert (tmp_path / "outputs" / "data" / "ssv2-smoke" / "labels" / "labels.json").is_file()

    md = (results / "st_adapter_smoke.md").read_text()
    assert "| SSv2 (motion) | ST-Adapter | shapes-clip-tiny | 4 | 3x1 |" in md
    assert "ST-Adapter" in md and "vs frozen frame-mean probe" in md
    rows = {r["key"]: r for r in csv.DictReader((results / "st_adapter_smoke.csv").open())}
    assert set(rows) == set(ROWS) | {"ssv2_chance"}
    # the chance row: 1 / classes of the smoke SSv2 set the rows trained on (its labels.json)
    n = len(json.loads((tmp_path / "outputs" / "data" / "ssv2-smoke" / "labels" / "labels.json").read_text()))
    chance = rows.pop("ssv2_chance")
    assert int(chance["classes"]) == n and float(chance["top1"]) == pytest.approx(100 / n, abs=1e-3)
    assert float(chance["top5"]) == pytest.approx(100 * min(5, n) / n, abs=1e-3)
    assert f"| SSv2 (motion) | Chance (1 / {n} classes) | - | | | 0 | | {100 / n:.1f} |" in md
    assert md.index("| SSv2 (motion) | Chance") > md.index("| SSv2 (motion) | Linear probe")
    st, lp = rows[ROWS[0]], rows[ROWS[1]]
    assert st["status"] == lp["status"] == "finished"
    assert 0.0 <= float(st["top1"]) <= 100.0 and 0.0 <= float(lp["top1"]) <= 100.0
    # 8 adapters of width a = D / 2 on the tiny CLIP's ViT (width D from its config) + head; the probe trains the
    # head only (8 classes)
    cfg = json.loads((Path(common.models.__file__).parent / "configs" / "shapes-clip-tiny.json").read_text())
    d = cfg["vision_cfg"]["width"]
    a = d // 2
    assert int(st["trainable"]) == 8 * (d * a + a + a * 3 + a + a * d + d) + d * 8 + 8
    assert int(lp["trainable"]) == d * 8 + 8
    assert float(st["paper_top1"]) == 67.1 and lp["paper_top1"] == ""
    # one seed per smoke row: the Seeds column says 1 and the cell is the seed's own top-1
    assert f"| 3x1 | {int(st['trainable']) / 1e6:.3f} | 1 | {float(st['top1']):.1f} |" in md

    parent = json.loads((state_dir("st_adapter", "smoke") / "parent.json").read_text())["run_id"]
    client = tracking.client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = tracking.child_runs(parent)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    # the CLI's setting of each row's config (st_adapter/configs/smoke/ssv2/clip-tiny_4f_8x32.yaml), as for a user
    assert {c.data.tags["setting"] for c in children} == {"smoke/" + k.replace("_", "/", 1) for k in ROWS}
    assert all(c.data.tags["command"].startswith("python -m st_adapter fit --config st_adapter/configs/smoke/ssv2/")
               for c in children)
    assert {f.path for f in client.list_artifacts(parent, "results")} == {
        "results/st_adapter_smoke.md", "results/st_adapter_smoke.csv"}
    assert f"table/{ROWS[0]}/top1" in client.get_run(parent).data.metrics
    for child in children:  # the confusion matrix of the last validation is a picture on each run
        assert [f.path for f in client.list_artifacts(child.info.run_id, "confusion")] == ["confusion/val_epoch0.png"]

    # resume: nothing trained again, no new child
    assert main(args) == 0
    assert "2 already done with the same config, 0 to run" in capsys.readouterr().out
    assert len(tracking.child_runs(parent)) == 2


def test_data_argument_and_plans(tmp_path) -> None:
    (tmp_path / "ssv2").mkdir()
    assert parse_data(str(tmp_path)) == {"ssv2": tmp_path / "ssv2"}
    assert parse_data("k400=/a,ssv2=/b") == {"k400": tmp_path.__class__("/a"), "ssv2": tmp_path.__class__("/b")}
    with pytest.raises(DataCheckError, match="unknown dataset"):
        parse_data("ucf=/x")
    with pytest.raises(DataCheckError, match="needs the real datasets.*DATA="):
        make_plan("paper", None)
    plan = make_plan("paper", str(tmp_path))  # only SSv2 given: the K400 rows are left out
    assert plan.rows and all(r.key.startswith("ssv2_") for r in plan.rows)
    assert all(f"--data.init_args.root={tmp_path / 'ssv2'}" in r.overrides for r in plan.rows)
    assert len(plan.rows) == 6  # ViT-B/16 and ViT-L/14 at 8 and 32 frames + the two baselines
    tiny = make_plan("tiny")
    ssv2 = ["ssv2_clip-tiny_8f_8x32", "ssv2_clip-tiny_8f_linear-probe", "ssv2_clip-tiny_8f_full-finetune"]
    # every setting once (the configs' seed 42), then the SSv2 rows' seeds 43 and 44
    assert [r.key for r in tiny.rows] == ssv2 + ["k400_clip-tiny_8f_4x32", "k400_clip-tiny_8f_linear-probe",
                                                 "k400_clip-tiny_8f_full-finetune"] + [
        f"{k}_seed{s}" for k in ssv2 for s in (43, 44)]
    assert {r.key: r.overrides for r in tiny.rows}["ssv2_clip-tiny_8f_full-finetune_seed44"] == ["--seed_everything=44"]
    assert all(not r.overrides for r in tiny.rows[:6])
