"""A smoke reproduction: one MLflow parent run with one child per row, the results files, Δm, and resume."""

import csv
import json

import pytest
import yaml

from benchmarks.reproduce import state_dir
from benchmarks.reproduce.__main__ import main
from common import tracking
from common.metrics.dense import delta_m
from common.paths import project_root

ST = ["single_task_semseg", "single_task_human_parts", "single_task_sal", "single_task_normals"]
ROWS = ",".join(ST + ["polyhistor"])


@pytest.fixture()
def pascal_root(tmp_path):
    from common.data.synth.pascal_mt import write_pascal_mt

    root = tmp_path / "PASCAL_MT"
    write_pascal_mt(root, num_train=4, num_val=4, size=64, progress=False)
    return root


def test_smoke_reproduction_tracks_rows_writes_the_table_and_resumes(pascal_root, tmp_path, mlflow_store,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    results = tmp_path / "results"
    args = ["polyhistor", "--preset", "smoke", "--data", str(pascal_root), "--rows", ROWS,
            "--results-dir", str(results)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "row 1/5: Single-task full fine-tuning [semseg]" in out and "ETA" in out

    parent = json.loads((state_dir("polyhistor", "smoke") / "parent.json").read_text())["run_id"]
    client = tracking.client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = tracking.child_runs(parent)
    assert len(children) == 5 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["setting"] for c in children} == {f"smoke/{k}" for k in ROWS.split(",")}
    # each child's command is the one a user pastes at the repo root (the in-process driver is not in it)
    assert all(c.data.tags["command"].startswith(f"python -m polyhistor fit --config polyhistor/configs/smoke/"
                                                 f"{c.data.tags['setting'].split('/')[1]}.yaml ") for c in children)
    assert any("val/delta_m" in c.data.metrics for c in children if c.data.tags["setting"] == "smoke/polyhistor")
    artifacts = {f.path for f in client.list_artifacts(parent, "results")}
    assert artifacts == {"results/polyhistor_smoke.md", "results/polyhistor_smoke.csv"}

    rows = {r["key"]: r for r in csv.DictReader((results / "polyhistor_smoke.csv").open())}
    assert set(rows) == {"trivial", "single_task", "polyhistor"}
    # the trivial row is the constant predictor on the same val split, scored as the rows (polyhistor.trivial)
    from common.data.pascal_context import PascalContextMTDataModule
    from polyhistor.trivial import trivial_metrics_of_datamodule

    cfg = yaml.safe_load((project_root() / "polyhistor/configs/smoke/decoders_only.yaml").read_text())
    size = cfg["data"]["init_args"]["image_size"]
    want = trivial_metrics_of_datamodule(PascalContextMTDataModule(root=str(pascal_root), image_size=size,
                                                                   batch_size=3, synth_if_missing=False))
    assert float(rows["trivial"]["human_parts"]) == pytest.approx(want["human_parts/mIoU"], abs=1e-5)
    assert float(rows["trivial"]["normals"]) == pytest.approx(want["normals/mean"], abs=1e-5)
    assert rows["trivial"]["delta_m_paper"] == ""
    base = {t: float(rows["single_task"][t]) for t in ("semseg", "human_parts", "sal", "normals")}
    metrics = {t: float(rows["polyhistor"][t]) for t in base}
    assert float(rows["polyhistor"]["delta_m"]) == pytest.approx(delta_m(metrics, base, ("normals",)), rel=1e-4, abs=1e-4)
    assert float(rows["polyhistor"]["delta_m_paper"]) == 2.34
    assert float(rows["single_task"]["delta_m"]) == 0.0
    assert "| Polyhistor |" in (results / "polyhistor_smoke.md").read_text()
    assert "| Trivial (constant per task) | 0.00 |" in (results / "polyhistor_smoke.md").read_text()

    # resume: nothing is trained again, no new child run, same parent
    assert main(args) == 0
    assert "5 already done with the same config, 0 to run" in capsys.readouterr().out
    assert len(tracking.child_runs(parent)) == 5
