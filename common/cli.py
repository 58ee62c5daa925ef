"""The one command line of cvinw: ``python -m <paper> fit|validate|test|predict --config ...``.

A :class:`lightning.pytorch.cli.LightningCLI` subclass in subclass mode (a YAML picks ``model.class_path`` and
``data.class_path``) that gives every run, without any YAML:

* an MLflow logger (:class:`common.loggers.CVMLFlowLogger`) with tags (paper, setting, preset, git sha, command),
  the resolved config uploaded as ``config.yaml`` and flattened as params (rank 0 only);
* checkpoints under ``outputs/<experiment>/<run name>/``: the best on the model's ``monitor`` and ``last.ckpt``, the
  last state (written after every training epoch, at the end of fit and on Ctrl-C / SIGTERM:
  :class:`common.callbacks.LastStateCheckpoint`; a first Ctrl-C stops after the current batch);
* LearningRateMonitor, a rich progress bar (step count for step-limited runs), parameter budget, throughput/peak memory, the non-finite loss guard;
* the datamodule's ``info`` linked into the model's ``data_info`` (num_classes, class names, tasks ...);
* ``--ckpt_path last`` resolving to the newest ``last.ckpt`` of this setting (or of ``--run.name``) and
  resuming the same MLflow run (run names and settings: :func:`common.tracking.new_run_name`,
  :func:`common.tracking.config_setting`, the same for the reproduce drivers);
* errors of the project printed as their message, without the traceback (``--debug`` or ``CVINW_DEBUG=1`` shows
  it; :mod:`common.errors`);
* ``--run.*`` options: ``name``, ``experiment``, ``parent_run_id`` (start as a child run), ``preset``, ``setting``,
  ``tags``, ``summary_path`` (write final metrics as JSON), ``output_dir``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from common import tracking
from common.callbacks import (
    GracefulInterrupt,
    LastStateCheckpoint,
    NonFiniteLossError,
    NonFiniteLossGuard,
    ParameterBudget,
    RunInfoCheckpoint,
    SkippedSamples,
    StepProgressBar,
    Throughput,
    TrainingInterrupted,
)
from common.callbacks.checkpoint import interrupt_exit_code
from common.callbacks.predict import PredictionWriter
from common.checkpoints import check_checkpoint
from common.errors import debug_requested, project_error, short_error
from common.loggers import CVMLFlowLogger
from common.paths import outputs_dir, project_root
from common.peft.accounting import count_parameters

PRESETS = tracking.PRESETS
_RUN_NAME_ENV = "CVINW_RUN_NAME"
_RUN_ID_ENV = "CVINW_MLFLOW_RUN_ID"


@dataclass
class RunOptions:
    """How the run is named and tracked.

    Args:
        name: run name (MLflow run name and checkpoint folder); default ``<setting>-<date>-<time>``
            (:func:`common.tracking.new_run_name`).
        experiment: MLflow experiment; default the paper's package name.
        parent_run_id: start this run as a child of that MLflow run (reproduce drivers use this).
        preset: smoke | tiny | paper | custom; default guessed from the config path.
        setting: the paper setting; default the first config's path under ``<paper>/configs/``.
        tags: extra MLflow tags.
        summary_path: write the final metrics, run id and checkpoint paths to this JSON file.
        output_dir: checkpoint folder; default ``outputs/<experiment>/<name>/``.
    """

    name: str | None = None
    experiment: str | None = None
    parent_run_id: str | None = None
    preset: str | None = None
    setting: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    summary_path: str | None = None
    output_dir: str | None = None


def _has_cli(package: str) -> bool:
    """Whether ``package`` is one of this project's top-level packages with a ``__main__`` module (``python -m
    <package>``)."""
    try:
        spec = importlib.util.find_spec(f"{package}.__main__")
    except (ImportError, ValueError):
        return False
    return bool(spec and spec.origin and Path(spec.origin).resolve().parent.parent == project_root().resolve())


def _package_of_prog(prog: str | None) -> str:
    """The package a command runs: ``python -m polyhistor`` -> ``polyhistor``; else ``__main__``'s package."""
    words = (prog or "").split()
    if len(words) >= 3 and words[-2] == "-m":
        return words[-1].split(".")[0]
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    return main.name.split(".")[0] if main else ""


def _description(package: str) -> str:
    """What ``--help`` says first: the project, and the paper of ``python -m <paper>`` (its package docstring)."""
    title = ""
    if package and _has_cli(package):
        doc = (importlib.import_module(package).__doc__ or "").strip()
        title = doc.splitlines()[0].rstrip(".") if doc else package
    project = "cvinw (computer vision in the wild, reproduced)"
    return (f"{title}, reimplemented in {project}. " if title else f"{project}. ") + (
        "Train, evaluate and predict with one YAML config per paper setting: fit | validate | test | predict "
        "--config FILE.yaml. Errors print without a traceback; --debug (or CVINW_DEBUG=1) shows it.")


def _data_info(datamodule: Any) -> dict[str, Any]:
    info = getattr(datamodule, "info", None)
    return dict(info) if isinstance(info, dict) else {}


class MLflowConfigSaver(SaveConfigCallback):
    """Uploads the resolved config to the MLflow run (rank 0) instead of writing into ``trainer.log_dir``.

    Lightning's own callback needs a file-system ``log_dir``, which an MLflow logger on SQLite or a server lacks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, CVMLFlowLogger):
                logger.log_text(text, "config.yaml")
                cfg = {k: v for k, v in self.config.as_dict().items() if k not in ("config", "run", "ckpt_path")}
                logger.log_hyperparams(cfg)


class CVInWCLI(LightningCLI):
    """cvinw's LightningCLI (see the module docstring)."""

    def __init__(self, args: list[str] | dict | None = None, run: bool = True, prog: str | None = None,
                 **kwargs: Any) -> None:
        self._prog = prog
        self.summary: dict[str, Any] | None = None
        self._run_name: str | None = None
        self._run_dir: Path | None = None
        self._resume_run_id: str | None = None
        self._args = [str(a) for a in args] if isinstance(args, list) else None
        package = _package_of_prog(prog)
        parser_kwargs = dict(kwargs.pop("parser_kwargs", None) or {})
        parser_kwargs.setdefault("description", _description(package))
        if package and _has_cli(package):
            parser_kwargs.setdefault("prog", f"python -m {package}")
        kwargs["parser_kwargs"] = parser_kwargs
        kwargs.setdefault("save_config_callback", MLflowConfigSaver)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 42)
        super().__init__(model_class=pl.LightningModule, datamodule_class=pl.LightningDataModule,
                         subclass_mode_model=True, subclass_mode_data=True, args=args, run=run, **kwargs)

    # ---------------------------------------------------------------- parser
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunOptions, "run")
        parser.link_arguments("data", "model.init_args.data_info", compute_fn=_data_info, apply_on="instantiate")

    # ---------------------------------------------------------------- run identity
    def _sub(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _config_paths(self) -> list[Path]:
        paths = self._sub().get("config") or []
        return [Path(str(p)) for p in paths if p is not None]

    def _paper(self) -> str:
        """The package of the model's class (a package with a ``__main__`` module, i.e. a paper's CLI), else the one
        of ``python -m <package>``, else ``cvinw``. ``common`` names no paper: the config does."""
        model = self._sub().get("model")
        class_path = getattr(model, "class_path", None) or (model.get("class_path") if isinstance(model, dict) else "")
        main = getattr(sys.modules.get("__main__"), "__spec__", None)
        for top in (str(class_path or "").split(".")[0], main.name.split(".")[0] if main else ""):
            if top and top != "common" and _has_cli(top):
                return top
        return "cvinw"

    def _setting(self) -> str:
        run = self._sub().run
        return str(run.setting) if run.setting else tracking.config_setting(self._config_paths())

    def _preset(self, setting: str) -> str:
        run = self._sub().run
        return str(run.preset) if run.preset else tracking.setting_preset(setting)

    def _experiment(self) -> str:
        return str(self._sub().run.experiment or self._paper())

    def _resolve_run(self) -> None:
        """Name the run and its folder; resolve ``--ckpt_path last``. Children of a DDP launch inherit the name."""
        run = self._sub().run
        experiment = self._experiment()
        setting = self._setting()
        ckpt_path = self._sub().get("ckpt_path")
        name = run.name or os.environ.get(_RUN_NAME_ENV)
        if ckpt_path == "last":
            last = self._find_last(experiment, name, setting, run.output_dir)
            if last is None:
                raise SystemExit(
                    f"--ckpt_path last: no last.ckpt under {outputs_dir() / experiment}/"
                    f"{name or tracking.run_slug(setting) + '-<date>-<time>'}/ (setting {setting!r}). Train first, "
                    "or pass --run.name / --ckpt_path FILE.")
            self._sub()["ckpt_path"] = str(last)
            name = name or last.parent.name
        check_checkpoint(self._sub().get("ckpt_path"))  # a truncated file: its name and the fix, not torch's zip error
        if ckpt_path and ckpt_path != "last" and not name and Path(str(ckpt_path)).is_file():
            # resuming from an explicit checkpoint of one of our runs: keep its name (and MLflow run)
            meta = _checkpoint_meta(Path(str(ckpt_path)))
            if self.subcommand == "fit" and meta.get("run_name"):
                name = meta["run_name"]
        if not name:
            name = tracking.new_run_name(setting, None if run.output_dir else outputs_dir() / experiment,
                                         claim=True)
        os.environ[_RUN_NAME_ENV] = name
        self._run_name = name
        self._run_dir = Path(run.output_dir) if run.output_dir else outputs_dir() / experiment / name
        final_ckpt = self._sub().get("ckpt_path")
        if final_ckpt and self.subcommand == "fit" and Path(str(final_ckpt)).is_file():
            self._resume_run_id = _checkpoint_meta(Path(str(final_ckpt))).get("mlflow_run_id")

    @staticmethod
    def _find_last(experiment: str, name: str | None, setting: str, output_dir: str | None) -> Path | None:
        if output_dir:
            cand = Path(output_dir) / "last.ckpt"
            return cand if cand.is_file() else None
        root = outputs_dir() / experiment
        if name:
            cand = root / name / "last.ckpt"
            return cand if cand.is_file() else None
        return tracking.latest_checkpoint(root, setting)

    def _parse_ckpt_path(self) -> None:
        self.subcommand = self.config.get("subcommand")
        if self.subcommand:
            self._resolve_run()
        super()._parse_ckpt_path()

    # ---------------------------------------------------------------- trainer with our defaults
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[pl.Callback]) -> pl.Trainer:
        if self.subcommand is None:
            return super()._instantiate_trainer(config, callbacks)
        run = self._sub().run
        experiment = self._experiment()
        setting = self._setting()
        assert self._run_name is not None and self._run_dir is not None
        user_callbacks = list(config.get("callbacks") or [])
        have = {type(cb) for cb in user_callbacks + callbacks}

        logger = config.get("logger")
        if logger is None or logger is True:
            paper = self._paper()
            prog = self._prog or (f"python -m {paper}" if paper != "cvinw" else None)
            tags = tracking.base_tags(paper, setting, self._preset(setting), run.tags, self._args, prog)
            tags["subcommand"] = self.subcommand
            if run.parent_run_id:
                tags[tracking.PARENT_TAG] = run.parent_run_id
            run_id = self._resume_run_id or os.environ.get(_RUN_ID_ENV) or None
            config["logger"] = CVMLFlowLogger(experiment, run_name=self._run_name, tags=tags,
                                                      run_id=run_id)
        defaults: list[pl.Callback] = []
        model = self.model
        if not any(issubclass(t, ModelCheckpoint) for t in have) and config.get("enable_checkpointing", True) is not False:
            defaults.append(LastStateCheckpoint(
                dirpath=str(self._run_dir), filename="best-{epoch}-{step}", monitor=getattr(model, "monitor", None),
                mode=getattr(model, "monitor_mode", "min"), save_last=True, save_top_k=1,
                auto_insert_metric_name=False, enable_version_counter=False,
            ))
        if config.get("logger") is not False and LearningRateMonitor not in have:
            defaults.append(LearningRateMonitor(logging_interval="step"))
        if config.get("enable_progress_bar", True) is not False and not any(
                issubclass(t, pl.callbacks.ProgressBar) for t in have):
            defaults.append(StepProgressBar(leave=True))
        for cls in (ParameterBudget, Throughput, NonFiniteLossGuard, SkippedSamples, GracefulInterrupt):
            if cls not in have:
                defaults.append(cls())
        defaults.append(RunInfoCheckpoint(self._run_name))
        config["callbacks"] = user_callbacks + defaults
        trainer = super()._instantiate_trainer(config, callbacks)
        where = (f"predictions in {self._run_dir / 'predictions'}" if self.subcommand == "predict"
                 else f"checkpoints in {self._run_dir}")
        rank_zero_info(f"[cvinw] run {self._run_name!r} (experiment {experiment!r}); {where}")
        return trainer

    # ---------------------------------------------------------------- after each subcommand: summary
    def after_fit(self) -> None:
        self._write_summary()

    def after_validate(self) -> None:
        self._write_summary()

    def after_test(self) -> None:
        self._write_summary()

    def after_predict(self) -> None:
        self._write_summary()

    @rank_zero_only
    def _write_summary(self) -> None:
        trainer = self.trainer
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if isinstance(v, torch.Tensor | float | int) and torch.as_tensor(v).numel() == 1}
        run_id = next((getattr(lg, "run_id", None) for lg in trainer.loggers
                       if isinstance(lg, CVMLFlowLogger)), None)
        ckpt = next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)
        trainable, total = (self.model.trainable_parameter_count() if hasattr(self.model, "trainable_parameter_count")
                            else (count_parameters(self.model, trainable_only=True), count_parameters(self.model)))
        summary = {
            "subcommand": self.subcommand, "run_name": self._run_name, "mlflow_run_id": run_id,
            "experiment": self._experiment(), "setting": self._setting(), "run_dir": str(self._run_dir),
            "metrics": metrics, "global_step": trainer.global_step, "epoch": trainer.current_epoch,
            "best_model_path": getattr(ckpt, "best_model_path", None) or None,
            "last_model_path": getattr(ckpt, "last_model_path", None) or None,
            "params": {"trainable": trainable, "total": total},
        }
        if self.subcommand == "predict":  # Lightning reloads the training run's checkpoint paths: not this run's
            writer = next((cb for cb in trainer.callbacks if isinstance(cb, PredictionWriter)), None)
            summary.update(best_model_path=None, last_model_path=None, ckpt_path=self._sub().get("ckpt_path"),
                           predictions_dir=writer.summary.get("dir") if writer else None,
                           predictions=dict(writer.summary) if writer else None)
        self.summary = summary
        text = json.dumps(summary, indent=2, sort_keys=True)
        assert self._run_dir is not None
        self._run_dir.mkdir(parents=True, exist_ok=True)
        (self._run_dir / f"summary_{self.subcommand}.json").write_text(text)
        path = self._sub().run.summary_path
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return {}
    meta = ckpt.get("cvinw") if isinstance(ckpt, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def run(args: list[str], prog: str | None = None) -> dict[str, Any]:
    """Run one command (``["fit", "--config", ...]``) in this process and return its summary: final metrics, run
    name and MLflow run id, checkpoint paths, parameter counts (what ``summary_<subcommand>.json`` holds; empty on
    ranks other than 0). ``prog`` (e.g. ``python -m polyhistor``, the default for a paper's config) makes the run's
    ``command`` tag a command a user can paste. Errors propagate as exceptions; a bad command line raises
    ``SystemExit`` (jsonargparse's); a fit stopped by Ctrl-C or SIGTERM (``last.ckpt`` saved) raises
    :class:`common.callbacks.TrainingInterrupted`, a ``KeyboardInterrupt``."""
    try:
        cli = CVInWCLI(args=[str(a) for a in args], prog=prog)
    except SIGTERMException as err:
        raise TrainingInterrupted("training stopped by an interrupt; last.ckpt holds its last state",
                                  interrupt_exit_code() - 128) from err
    return dict(cli.summary or {})


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m <paper>``: ``fit | validate | test | predict`` with ``--config`` files.

    Exit status: 0; 1 for an error (the project's own errors print as their message, see :mod:`common.errors`; with
    ``--debug`` or ``CVINW_DEBUG=1`` after the traceback); 2 for a bad command line; 3 for a non-finite loss; 130 /
    143 when Ctrl-C / SIGTERM stopped a fit (``last.ckpt`` saved).
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv itself (and warns when given both)
    try:
        CVInWCLI(args=None if args is None else argv)
    except SIGTERMException as err:
        code = interrupt_exit_code()
        print(f"[cvinw] stopped by {'Ctrl-C' if code == 130 else 'SIGTERM'}; resume with --ckpt_path last",
              file=sys.stderr)
        raise SystemExit(code) from err
    except Exception as err:
        code = 3 if isinstance(err, NonFiniteLossError) else 1
        if project_error(err) is None and not isinstance(err, NonFiniteLossError):
            raise  # not one of ours: the traceback is the message
        if debug:
            traceback.print_exception(err)
        print(short_error(err), file=sys.stderr)
        raise SystemExit(code) from err


__all__ = ["CVInWCLI", "RunOptions", "main", "project_root", "run"]
