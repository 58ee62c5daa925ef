"""MLflow store handling in common.tracking, on real SQLite stores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from common import tracking

_WORKER = textwrap.dedent(
    """
    import sys, time
    from common import tracking
    from common.tracking import CVMLFlowLogger  # imports Lightning before the start signal
    start = float(sys.argv[1])
    while time.time() < start:  # every worker opens the fresh store at the same moment
        time.sleep(0.001)
    logger = CVMLFlowLogger("race-logger")  # the CLI's path: the logger creates the store and the experiment
    logger.log_metrics({"x": 1.0}, step=0)
    logger.finalize("success")
    exp = tracking.get_or_create_experiment("race-" + sys.argv[2])
    shared = tracking.get_or_create_experiment("race-shared")  # the same new experiment from every process
    tracking.client().create_run(shared)
    run = tracking.client().create_run(exp)
    print(run.info.run_id)
    """
)


def test_fresh_sqlite_store_opened_by_many_processes_at_once(tmp_path: Path, monkeypatch) -> None:
    """Four processes creating runs on one new SQLite store at the same instant all succeed (MLflow alone races
    on creating the tables: 'table experiments already exists'), through the tracking helpers and through the
    Lightning logger every CLI run uses (which would create a missing experiment without handling the race)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "CVINW_ARTIFACTS": str(tmp_path / "art")}
    start = time.time() + 15.0  # after the imports of all four
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(start), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    run_ids = {o.strip() for o, _ in outs}
    assert len(run_ids) == 4
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    c = tracking.client()
    names = {e.name for e in c.search_experiments()}
    assert {f"race-{i}" for i in range(4)} | {"race-shared"} <= names
    shared = c.get_experiment_by_name("race-shared").experiment_id
    assert len(c.search_runs([shared])) == 4
    assert len(c.search_runs([c.get_experiment_by_name("race-logger").experiment_id])) == 4


def test_sqlite_path_of_uris() -> None:
    assert tracking._sqlite_path("sqlite:////abs/dir/mlflow.db") == Path("/abs/dir/mlflow.db")
    assert tracking._sqlite_path("sqlite:///rel/mlflow.db") == Path("rel/mlflow.db")
    assert tracking._sqlite_path("http://127.0.0.1:5000") is None
    assert tracking._sqlite_path("sqlite:///:memory:") is None

