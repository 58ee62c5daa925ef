"""The spine end to end: CLI -> Lightning -> MLflow (SQLite and a real server), resume, NaN guard, DDP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from common import tracking
from common.callbacks import NonFiniteLossError
from common.cli import main

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "helpers" / "toy.yaml"
QUIET = ["--trainer.enable_progress_bar=false"]


@pytest.fixture()
def run_env(tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    return {"uri": mlflow_store, "outputs": tmp_path / "outputs", "tmp": tmp_path}


def _runs(uri: str, experiment: str = "cvinw"):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return c, c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _subprocess_env(tmp: Path, uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVINW_RUN")}
    env.update(PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=uri, CVINW_OUTPUTS=str(tmp / "outputs"),
               CVINW_ARTIFACTS=str(tmp / "mlartifacts"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_fit_logs_run_with_params_metrics_config_tags_and_budget(run_env: dict) -> None:
    main(["fit", "--config", str(TOY), *QUIET, "--run.name", "probe", "--run.tags", '{"owner": "tests"}'])
    c, runs = _runs(run_env["uri"])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "probe"
    tags = run.data.tags
    assert tags["paper"] == "cvinw" and tags["setting"] == "toy" and tags["owner"] == "tests"
    assert tags["preset"] == "custom" and len(tags["git_sha"]) >= 7 and "fit --config" in tags["command"]
    params = run.data.params
    assert params["model.init_args.lr"] == "0.1" and params["trainer.max_epochs"] == "2"
    m = run.data.metrics
    assert m["params/trainable"] == m["params/total"] == 8 * 16 + 16 + 16 * 3 + 3
    assert m["params/trainable_ratio"] == 1.0
    assert m["val/count"] == 37 and m["train/throughput_samples_per_s"] > 0 and m["train/peak_memory_mb"] > 0
    assert all(set(k) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/. -") for k in m)
    artifacts = [a.path for a in c.list_artifacts(run.info.run_id)]
    assert "config.yaml" in artifacts
    cfg = yaml.safe_load(Path(c.download_artifacts(run.info.run_id, "config.yaml", str(run_env["tmp"]))).read_text())
    assert cfg["model"]["class_path"] == "tests.helpers.toy.ToyModule"
    run_dir = run_env["outputs"] / "cvinw" / "probe"
    assert (run_dir / "last.ckpt").is_file() and list(run_dir.glob("best-*.ckpt"))
    summary = json.loads((run_dir / "summary_fit.json").read_text())
    assert summary["mlflow_run_id"] == run.info.run_id and summary["global_step"] == 16


def test_data_info_is_linked_into_the_model(run_env: dict) -> None:
    main(["fit", "--config", str(TOY), *QUIET, "--data.init_args.num_classes=5", "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"])
    _, runs = _runs(run_env["uri"])
    # 5 classes reached the model through the link: the output layer has 16*5+5 parameters
    assert runs[0].data.metrics["params/total"] == 8 * 16 + 16 + 16 * 5 + 5


def test_print_config_round_trip(run_env: dict, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(TOY), "--model.init_args.lr=0.05", "--print_config"])
    assert ex.value.code in (0, None)
    first = capsys.readouterr().out
    dumped = run_env["tmp"] / "printed.yaml"
    dumped.write_text(first)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(dumped), "--print_config"])
    second = capsys.readouterr().out
    assert yaml.safe_load(first) == yaml.safe_load(second)
    assert yaml.safe_load(first)["model"]["init_args"]["lr"] == 0.05


def test_unknown_config_key_fails_and_names_it(run_env: dict, capsys: pytest.CaptureFixture) -> None:
    bad = run_env["tmp"] / "bad.yaml"
    cfg = yaml.safe_load(TOY.read_text())
    cfg["model"]["init_args"]["lerning_rate"] = 1.0
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(bad)])
    assert ex.value.code not in (0, None)
    assert "lerning_rate" in capsys.readouterr().err


def test_resume_from_last_continues_step_and_mlflow_run(run_env: dict) -> None:
    main(["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=1"])
    c, runs = _runs(run_env["uri"])
    first_id = runs[0].info.run_id
    ckpts = list((run_env["outputs"] / "cvinw").glob("toy-*/last.ckpt"))
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=True)["global_step"] == 8
    # a changed value on resume must not trip MLflow's "Changing param values is not allowed"
    main(["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    c, runs = _runs(run_env["uri"])
    assert [r.info.run_id for r in runs] == [first_id], "resume must log into the same MLflow run"
    history = c.get_metric_history(first_id, "train/loss_step")
    assert max(h.step for h in history) >= 8, "steps after resume continue from the checkpoint's global step"
    assert torch.load(ckpts[0], weights_only=True)["global_step"] == 16
    assert c.get_run(first_id).data.tags.get("resumed_param/trainer.max_epochs") == "2"


def test_child_run_of_parent(run_env: dict) -> None:
    parent = tracking.start_parent_run("cvinw", "reproduce-test", tags={"preset": "smoke"})
    main(["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=1", "--run.parent_run_id", parent,
          "--trainer.limit_train_batches=2"])
    tracking.end_run(parent)
    kids = tracking.child_runs(parent)
    assert len(kids) == 1 and kids[0].data.tags[tracking.PARENT_TAG] == parent
    assert MlflowClient(run_env["uri"]).get_run(parent).info.status == "FINISHED"


def test_non_finite_loss_stops_keeps_last_good_checkpoint_and_fails_run(run_env: dict,
                                                                        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=3", "--model.init_args.nan_at_step=10",
              "--run.name", "nan"])
    assert ex.value.code == 3 and isinstance(ex.value.__cause__, NonFiniteLossError)
    err = capsys.readouterr().err
    assert re.search(r"global step 10 .*aux=nan.*non-finite terms: aux", err), err[-2000:]
    _, runs = _runs(run_env["uri"])
    assert runs[0].info.status == "FAILED"
    last = torch.load(run_env["outputs"] / "cvinw" / "nan" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8  # the end of the last good epoch
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_paper_entry_points_list_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "polyhistor", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out.stdout
    # --help names the project and the paper, not Lightning's generic tool
    text = " ".join(out.stdout.split())
    assert text.startswith("usage: python -m polyhistor") and "cvinw" in text
    assert "Polyhistor: parameter-efficient multi-task adaptation for dense vision tasks" in text
    assert "Lightning Trainer command line tool" not in text and "LightningCLI's args parameter" not in out.stderr


@pytest.mark.slow
def test_ddp_two_processes_fit_and_exact_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real 2-process DDP (gloo) through the CLI; its validation equals the 1-process validation exactly."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = _subprocess_env(tmp_path, uri)
    ddp = REPO / "common" / "configs" / "trainer" / "ddp-cpu.yaml"

    def run(args: list[str], in_process: bool = False) -> dict:
        summary = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
        args = [*args, *QUIET, "--run.summary_path", str(summary)]
        if in_process:
            for k in ("MLFLOW_TRACKING_URI", "CVINW_OUTPUTS", "CVINW_ARTIFACTS"):
                monkeypatch.setenv(k, env[k])
            main(args)
        else:
            proc = subprocess.run([sys.executable, "-m", "polyhistor", *args], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(summary.read_text())

    fit = run(["fit", "--config", str(TOY), "--config", str(ddp), "--trainer.max_epochs=1", "--run.name", "ddp"])
    assert fit["global_step"] == 4  # 64 samples / (2 ranks x batch 8)
    ckpt = fit["last_model_path"]
    two = run(["validate", "--config", str(TOY), "--config", str(ddp), "--ckpt_path", ckpt, "--run.name", "v2"])
    one = run(["validate", "--config", str(TOY), "--ckpt_path", ckpt, "--run.name", "v1"], in_process=True)
    for summary in (fit, one, two):
        assert summary["metrics"]["val/count"] == 37.0  # no sample seen twice, none dropped
        assert summary["metrics"]["val/index_sum"] == sum(range(37))
    # counting metrics are bit-exact; a float loss can differ in its last bits because BLAS sums a different
    # batch composition per rank (the samples are the same, their batching is not)
    for key in ("val/acc", "val/count", "val/index_sum"):
        assert one["metrics"][key] == two["metrics"][key] == fit["metrics"][key], key
    assert one["metrics"]["val/loss"] == pytest.approx(two["metrics"]["val/loss"], rel=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_logging_through_a_real_mlflow_server(tmp_path: Path) -> None:
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.time() < deadline, "mlflow server did not come up in 120 s"
            time.sleep(1)
        env = _subprocess_env(tmp_path, url)
        proc = subprocess.run([sys.executable, "-m", "polyhistor", "fit", "--config", str(TOY), *QUIET,
                               "--trainer.max_epochs=1", "--run.name", "served"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        c = MlflowClient(url)
        run = c.search_runs([c.get_experiment_by_name("polyhistor").experiment_id])[0]
        assert run.info.run_name == "served" and run.info.status == "FINISHED"
        assert run.data.metrics["val/count"] == 37
        assert "config.yaml" in [a.path for a in c.list_artifacts(run.info.run_id)]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_run_returns_the_summary_and_tags_a_command_a_user_can_paste(run_env: dict) -> None:
    from common.cli import run

    summary = run(["fit", "--config", str(TOY), *QUIET, "--run.name", "in-process"], prog="python -m tests")
    assert summary["run_name"] == "in-process" and summary["subcommand"] == "fit"
    assert summary["params"]["trainable"] > 0 and summary["global_step"] == 16
    assert Path(summary["last_model_path"]).is_file()
    c, runs = _runs(run_env["uri"])
    assert [r.info.run_id for r in runs] == [summary["mlflow_run_id"]]
    assert runs[0].data.metrics["val/acc"] == pytest.approx(summary["metrics"]["val/acc"])
    command = runs[0].data.tags["command"]
    # files inside the repository as a user types them at its root
    assert command.startswith("python -m tests fit --config tests/helpers/toy.yaml "), command


# ------------------------------------------------------------------------------------------ last.ckpt, interrupts
def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_last_ckpt_is_the_last_epoch_whatever_the_validation_schedule(run_env: dict) -> None:
    """Validation every 2 epochs, 3 epochs: last.ckpt is epoch 3's state (Lightning's own ModelCheckpoint kept epoch
    2's, written only with a new best); the best checkpoint stays the validated one."""
    main(["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=2",
          "--run.name", "sparse-val"])
    run_dir = run_env["outputs"] / "cvinw" / "sparse-val"
    assert _ckpt_step(run_dir / "last.ckpt") == 24  # 3 epochs x 8 steps
    best = list(run_dir.glob("best-*.ckpt"))
    assert [b.name for b in best] == ["best-1-16.ckpt"] and _ckpt_step(best[0]) == 16
    summary = json.loads((run_dir / "summary_fit.json").read_text())
    assert Path(summary["last_model_path"]).name == "last.ckpt" and summary["global_step"] == 24


def _metric_steps(client: MlflowClient, run_id: str) -> Counter:
    """How many times each (metric, step) was logged to the run."""
    keys = client.get_run(run_id).data.metrics
    return Counter((k, m.step) for k in keys for m in client.get_metric_history(run_id, k))


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"the run ended early (status {proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.time() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_the_last_state_and_kill_9_resume_logs_no_step_twice(run_env: dict) -> None:
    """A fit stopped by SIGTERM writes last.ckpt at the step it stopped (exit 143); one killed with kill -9 and
    resumed with --ckpt_path last replays from the last epoch's last.ckpt, and MLflow holds every (metric, step)
    exactly as often as an uninterrupted run does: no step logged twice."""
    tmp, uri = run_env["tmp"], run_env["uri"]
    args = ["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=3", "--model.init_args.step_delay=0.2",
            "--run.name", "interrupted", "--run.experiment", "interrupt"]
    cmd = [sys.executable, "-m", "polyhistor", *args]
    env = _subprocess_env(tmp, uri)
    run_dir = tmp / "outputs" / "interrupt" / "interrupted"
    client = MlflowClient(uri)

    def logged_step() -> int:
        exp = client.get_experiment_by_name("interrupt")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        hist = client.get_metric_history(runs[0].info.run_id, "train/loss_step") if runs else []
        return max((m.step for m in hist), default=-1)

    def last_step() -> int:
        try:
            return _ckpt_step(run_dir / "last.ckpt")
        except Exception:  # not there yet, or being written
            return -1

    # 1. SIGTERM in the middle of epoch 2: the batch ends, last.ckpt holds that step, exit status 143
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: last_step() == 8 and logged_step() >= 11, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped = last_step()
    assert 11 <= stopped < 16, stopped  # mid-epoch: the state at the interrupt, not the last epoch's
    assert "resume with --ckpt_path last" in err

    # 2. resumed, then kill -9 in the middle of epoch 3: last.ckpt is epoch 2's, MLflow already has later steps
    proc = subprocess.Popen(cmd + ["--ckpt_path", "last"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: last_step() == 16 and logged_step() >= 19, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert last_step() == 16 and logged_step() > 16, "the kill must leave steps logged after last.ckpt"

    # 3. resumed to the end (in this process)
    main([*args, "--ckpt_path", "last"])
    assert last_step() == 24
    exp = client.get_experiment_by_name("interrupt")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one MLflow run through all three processes

    # the same fit without interruption, for comparison
    main(["fit", "--config", str(TOY), *QUIET, "--trainer.max_epochs=3", "--run.name", "reference"])
    ref = client.search_runs([client.get_experiment_by_name("cvinw").experiment_id])[0]
    interrupted, reference = _metric_steps(client, runs[0].info.run_id), _metric_steps(client, ref.info.run_id)
    assert interrupted == reference, {k: (interrupted[k], reference[k]) for k in interrupted | reference
                                      if interrupted[k] != reference[k]}


# ----------------------------------------------------------------------------------------------------- short errors
def test_a_wrong_data_root_is_a_short_error_with_the_layout(run_env: dict) -> None:
    """The project's own error (here a DatasetLayoutError raised while jsonargparse links the datamodule's info into
    the model, which wraps it in a ValueError repeating every argument) prints as its message, a few lines."""
    missing = run_env["tmp"] / "no-such-data"
    out = subprocess.run([sys.executable, "-m", "polyhistor", "fit", "--config", str(TOY), *QUIET,
                          f"--data.init_args.root={missing}"], cwd=REPO, capture_output=True, text=True,
                         env=_subprocess_env(run_env["tmp"], run_env["uri"]), timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 6, out.stderr
    assert f"error: Toy points: dataset root {missing} does not exist" in out.stderr
    assert "Expected layout" in out.stderr and "--debug" in out.stderr
    assert "Traceback" not in out.stderr and "compute_fn" not in out.stderr


def test_the_traceback_is_behind_debug(run_env: dict, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    missing = run_env["tmp"] / "no-such-data"
    args = ["fit", "--config", str(TOY), *QUIET, f"--data.init_args.root={missing}"]
    with pytest.raises(SystemExit) as ex:
        main([*args, "--debug"])
    assert ex.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "DatasetLayoutError" in err and err.rstrip().endswith("CVINW_DEBUG=1)")
    monkeypatch.setenv("CVINW_DEBUG", "1")
    with pytest.raises(SystemExit):
        main(args)
    assert "Traceback" in capsys.readouterr().err
