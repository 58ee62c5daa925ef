"""The MLflow UI as a user meets it: experiments open on their runs, and `make mlflow-ui` prints where they are."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from common import mlflow_ui, tracking

BASE = "http://127.0.0.1:5999"


def test_lines_give_the_runs_list_and_the_newest_reproduction(mlflow_store: str) -> None:
    c = MlflowClient(mlflow_store)
    old = c.create_experiment("made-before")
    parent = tracking.start_parent_run("paper-b", "reproduce-smoke")
    exp_b = c.get_run(parent).info.experiment_id
    for row in ("row-1", "row-2"):
        child = c.create_run(exp_b, run_name=row, tags={tracking.PARENT_TAG: parent})
        c.set_terminated(child.info.run_id)
    c.create_run(old, run_name="lonely")

    lines = mlflow_ui.experiment_lines(BASE, mlflow_store)
    text = "\n".join(lines)
    assert f"paper-b: 3 runs  {BASE}/#/experiments/{exp_b}/runs" in text
    assert f"newest reproduction 'reproduce-smoke': {BASE}/#/experiments/{exp_b}/runs/{parent}" in text
    assert f"made-before: 1 runs  {BASE}/#/experiments/{old}/runs" in text
    assert "made-before" in text and text.count("newest reproduction") == 1  # a lone run is no reproduction
