"""MLflow store handling in common.tracking (and the Lightning logger in common.loggers), on real SQLite stores;
the parameter-budget callback's counts."""

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
    from common.loggers import CVMLFlowLogger  # imports Lightning before the start signal
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



def test_tracking_needs_no_lightning() -> None:
    """The store helpers import without Lightning; the Lightning logger lives in common.loggers."""
    code = (
        "import sys; import common.tracking as t; assert 'lightning' not in sys.modules, 'lightning imported'; "
        "from common.loggers import CVMLFlowLogger; from lightning.pytorch.loggers import MLFlowLogger; "
        "assert issubclass(CVMLFlowLogger, MLFlowLogger)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_parameter_budget_counts_shared_and_frozen_once() -> None:
    """ParameterBudget logs (trainable, total) from common.peft.accounting.count_parameters: a shared tensor once,
    frozen parameters only in the total."""
    from types import SimpleNamespace

    import lightning.pytorch as pl
    import torch

    from common.callbacks import ParameterBudget

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(3, 4)  # 16 trainable
            self.b = self.a  # shared: counted once
            self.c = torch.nn.Linear(4, 2)  # 10 frozen
            self.c.requires_grad_(False)

        def print(self, *args, **kwargs) -> None:  # no trainer attached
            pass

    logged: dict = {}
    logger = SimpleNamespace(log_hyperparams=logged.update, log_metrics=lambda m, step: logged.update(m))
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])
    ParameterBudget()._log(trainer, Tiny())
    assert logged["params/trainable"] == 16 and logged["params/total"] == 26
    assert abs(logged["params/trainable_ratio"] - 16 / 26) < 1e-12
