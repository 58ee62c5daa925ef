"""The reproduce driver's contract with the CLI and with a user: run names and settings the CLI finds again
(``--ckpt_path last``), a pasteable ``command`` tag, the data check before the first row, no table when every row
failed."""

from __future__ import annotations

import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import benchmarks.reproduce.__main__ as driver_main
from benchmarks.reproduce import Plan, Row, run_plan, save_table, state_dir
from common.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "helpers" / "toy.yaml"
QUIET = "--trainer.enable_progress_bar=false"


@pytest.fixture()
def outputs(tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    return tmp_path / "outputs"


def _toy_config(tmp_path: Path) -> Path:
    """The toy config where a paper keeps its configs, so that its setting is ``smoke/toy`` (preset smoke)."""
    cfg = tmp_path / "toypaper" / "configs" / "smoke" / "toy.yaml"
    cfg.parent.mkdir(parents=True)
    shutil.copy(TOY, cfg)
    return cfg


def test_a_driver_row_is_a_run_the_cli_finds_and_a_user_could_have_typed(tmp_path, outputs, mlflow_store) -> None:
    cfg = _toy_config(tmp_path)
    plan = Plan("toypaper", "smoke", [Row("toy", "Toy row", str(cfg), ["--trainer.max_epochs=1", QUIET])],
                cli_module="polyhistor", experiment="cvinw")
    parent, results = run_plan(plan, log=lambda msg: None)
    row = results["toy"]
    assert row.status == "finished", row.error
    # the CLI's own run name for the setting (one naming function): <setting slug>-<date>-<time>
    assert re.fullmatch(r"smoke_toy-\d{8}-\d{6}", row.run_name), row.run_name
    row_dir = outputs / "cvinw" / row.run_name
    assert (row_dir / "last.ckpt").is_file()

    # round trip: the same config with --ckpt_path last (as a user types it) resolves to the row's last.ckpt
    cli_main(["validate", "--config", str(cfg), "--ckpt_path", "last", QUIET])
    assert (row_dir / "summary_validate.json").is_file()

    client = MlflowClient(mlflow_store)
    runs = {r.data.tags["subcommand"]: r for r in client.search_runs(
        [client.get_experiment_by_name("cvinw").experiment_id]) if r.info.run_id != parent}
    fit, validate = runs["fit"], runs["validate"]
    assert fit.info.run_id == row.run_id and fit.data.tags["mlflow.parentRunId"] == parent
    # the setting and preset are the same whichever way the config was launched
    assert fit.data.tags["setting"] == validate.data.tags["setting"] == "smoke/toy"
    assert fit.data.tags["preset"] == validate.data.tags["preset"] == "smoke"
    # the command a user pastes: the paper's CLI, the config, the row's overrides; not the driver, not its run name
    command = fit.data.tags["command"]
    assert command.startswith(f"python -m polyhistor fit --config {cfg} --trainer.max_epochs=1 "), command
    assert "benchmarks" not in command and "--run.name" not in command and "--run.setting" not in command


def _fake_paper(monkeypatch: pytest.MonkeyPatch, make_plan) -> None:
    """A reproduction ``toyrepro`` whose write_results writes its table with save_table."""
    module = types.ModuleType("benchmarks.reproduce.toyrepro")
    module.make_plan = make_plan

    def write_results(plan, results, parent, results_dir=None):
        return "table", save_table(plan, "table", "key,status\n", results_dir)

    module.write_results = write_results
    monkeypatch.setitem(sys.modules, "benchmarks.reproduce.toyrepro", module)
    monkeypatch.setattr(driver_main, "available_papers", lambda: ["toyrepro"])


def test_a_reproduction_whose_rows_all_failed_writes_no_table(tmp_path, outputs, mlflow_store, monkeypatch,
                                                                capsys) -> None:
    bad = ["--model.init_args.nan_at_step=0", "--trainer.max_epochs=1", QUIET]  # every step's loss is NaN
    _fake_paper(monkeypatch, lambda preset, data, only: Plan(
        "toyrepro", preset, [Row("a", "A", str(TOY), bad), Row("b", "B", str(TOY), bad)], cli_module="polyhistor",
        experiment="toyrepro"))
    results = tmp_path / "results"
    assert driver_main.main(["toyrepro", "--preset", "smoke", "--results-dir", str(results)]) == 1
    assert not results.exists() or not any(results.iterdir())
    err = capsys.readouterr().err
    assert "all 2 rows failed: no results table written" in err and "non-finite loss" in err
    client = MlflowClient(mlflow_store)
    parent = client.search_runs([client.get_experiment_by_name("toyrepro").experiment_id],
                                filter_string="tags.`cvinw.role` = 'parent'")[0]
    assert parent.info.status == "FAILED"


@pytest.mark.parametrize("data", [None, "missing"])
def test_the_paper_preset_checks_its_data_before_the_first_row(tmp_path, outputs, mlflow_store, capsys,
                                                               data) -> None:
    """Polyhistor's paper preset without DATA (the configs' data/PASCAL_MT is not there) or with a DATA that does
    not exist: one error naming DATA= and the PASCAL_MT layout, exit status 2, nothing trained or written."""
    results = tmp_path / "results"
    args = ["polyhistor", "--preset", "paper", "--results-dir", str(results)]
    if data:
        args += ["--data", str(tmp_path / data)]
    assert driver_main.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Polyhistor's paper preset") and len(err.splitlines()) <= 8, err  # no warnings
    assert "DATA=/path/to/PASCAL_MT" in err and "ROOT/JPEGImages/{id}.jpg" in err
    if data:
        assert f"DATA={tmp_path / data}" in err
    assert not results.exists() and not state_dir("polyhistor", "paper").exists()
    assert MlflowClient(mlflow_store).get_experiment_by_name("polyhistor") is None  # no parent run either


def test_st_adapter_paper_preset_without_data_names_data(outputs, capsys) -> None:
    assert driver_main.main(["st_adapter", "--preset", "paper"]) == 2
    err = capsys.readouterr().err
    assert "no DATA= was given" in err and "DATA=k400=" in err


def test_checkpoint_rows_follow_their_fit_and_fail_without_it(tmp_path, outputs) -> None:
    """A ``checkpoint_of`` row validates its fit's last checkpoint, also when two rows run at once (it waits for the
    fit); a row naming no earlier fit is refused; a failed fit fails its checkpoint row without running it."""
    cfg = _toy_config(tmp_path)
    fit = Row("fit", "Toy fit", str(cfg), ["--trainer.max_epochs=1", QUIET])
    check = Row("check", "Toy check", str(cfg), [QUIET], command="validate", checkpoint_of="fit")
    with pytest.raises(ValueError, match="checkpoint_of='fit' must name an earlier fit row"):
        run_plan(Plan("toypaper", "smoke", [check, fit], cli_module="polyhistor", experiment="cvinw"),
                 log=lambda msg: None)
    _, results = run_plan(Plan("toypaper", "smoke", [fit, check], cli_module="polyhistor", experiment="cvinw"),
                          jobs=2, log=lambda msg: None)
    assert results["fit"].status == results["check"].status == "finished", results["check"].error
    assert results["fit"].checkpoint == str(outputs / "cvinw" / results["fit"].run_name / "last.ckpt")
    assert (outputs / "cvinw" / results["check"].run_name / "summary_validate.json").is_file()

    broken = Row("fit", "Toy fit", str(cfg), ["--trainer.max_epochs=1", "--no.such.option=1", QUIET])
    _, results = run_plan(Plan("toypaper", "smoke", [broken, check], cli_module="polyhistor", experiment="cvinw"),
                          log=lambda msg: None)
    assert results["fit"].status == results["check"].status == "failed"
    assert results["check"].error == "nothing to evaluate: row fit has no checkpoint" and results["check"].run_id is None


@pytest.mark.parametrize("paper", ["maskclip", "vificlip", "conv_adapter"])
def test_data_argument_checks_name_the_problem(paper: str, tmp_path: Path) -> None:
    """Every driver's make_plan refuses a paper preset without DATA=, DATA= on a ShapesWorld preset, and (where
    DATA= is one folder) a folder that does not exist, each with a message saying which."""
    import importlib

    from benchmarks.reproduce import DataCheckError

    make_plan = importlib.import_module(f"benchmarks.reproduce.{paper}").make_plan
    (tmp_path / "vtab-1k").mkdir()  # a folder Conv-Adapter's DATA parser accepts
    with pytest.raises(DataCheckError, match="paper preset needs .* no DATA= was given"):
        make_plan("paper", None)
    with pytest.raises(DataCheckError, match=r"DATA= is read by the paper preset only \(the tiny preset"):
        make_plan("tiny", str(tmp_path))
    missing = tmp_path / "nowhere"
    with pytest.raises(DataCheckError, match=f"DATA={missing}.*does not exist"):
        make_plan("paper", str(missing))


def test_parallel_rows_reuse_worker_processes_with_the_results_of_fresh_ones(tmp_path, outputs) -> None:
    """jobs=2 trains rows in two reused worker processes: the same metrics as one process per row (--isolate) and
    as in this process; a row whose process dies fails alone (its log kept) and the next row gets a new worker."""
    cfg = _toy_config(tmp_path)
    rows = [Row(f"toy{i}", f"Toy {i}", str(cfg), ["--trainer.max_epochs=1", f"--seed_everything={i}", QUIET])
            for i in range(3)]  # 3 rows on 2 workers: one worker trains two
    lines: list[str] = []
    _, reused = run_plan(Plan("toypaper", "smoke", rows, cli_module="polyhistor", experiment="cvinw"),
                         jobs=2, log=lines.append)
    assert all(r.status == "finished" for r in reused.values()), [r.error for r in reused.values()]
    assert "2 worker process(es)" in lines[-1], lines[-1]
    assert all(r.cpu_seconds and r.cpu_seconds > 0 for r in reused.values())
    _, fresh = run_plan(Plan("toypaper", "smoke", rows, cli_module="polyhistor", experiment="cvinw"),
                        force=True, isolate=True, jobs=2, log=lambda msg: None)
    _, inproc = run_plan(Plan("toypaper", "smoke", rows, cli_module="polyhistor", experiment="cvinw"),
                         force=True, log=lambda msg: None)
    for k in reused:
        assert reused[k].metrics["val/loss"] == fresh[k].metrics["val/loss"] == inproc[k].metrics["val/loss"], k
    assert len({reused[k].metrics["val/loss"] for k in reused}) == 3  # the seeds did reach the rows

    crash = Row("crash", "Crashing row", str(cfg), ["--trainer.max_epochs=1", QUIET,
                                                    "--trainer.callbacks+=tests.helpers.toy.ExitInFit"])
    lines.clear()
    _, res = run_plan(Plan("toypaper", "smoke", [crash, rows[0]], cli_module="polyhistor",
                           experiment="cvinw"), force=True, jobs=2, log=lines.append)
    assert res["crash"].status == "failed" and "exited with status 7" in res["crash"].error, res["crash"].error
    assert res["toy0"].status == "finished"
    assert res["toy0"].metrics["val/loss"] == reused["toy0"].metrics["val/loss"]
    assert (state_dir("toypaper", "smoke") / "crash.log").is_file()
