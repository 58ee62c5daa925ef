"""The spine end to end: CLI -> Lightning -> MLflow (SQLite and a real server), resume, NaN guard, DDP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
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
    assert command.startswith("python -m tests fit --config ") and str(TOY) in command
