"""Predictions a user can open: per-sample files under the run's folder, logged to the run's MLflow store.

:class:`PredictionWriter` is a Lightning ``BasePredictionWriter`` that knows no model: after each predict batch it
calls the module's ``write_prediction(outputs, batch, out_dir)`` hook (:meth:`common.module.CVModule.write_prediction`),
which writes that batch's files (Polyhistor: a PNG per task and an overlay per image) and returns one row per sample
(a classifier: the top-5 classes with their probabilities). At the end of predict it writes

* ``predictions.csv``: the rows of every sample, in input order (rows of all DDP ranks gathered on rank 0);
* ``skipped.csv``: the inputs left out (``input,reason,detail``: unreadable files, inputs that name no file), when
  there are any;

uploads the folder to the run's MLflow run as artifacts under ``predictions/`` (every ``MLFlowLogger`` of the
trainer, :class:`common.loggers.CVMLFlowLogger` in a CLI run), logs ``predict/inputs``, ``predict/written``,
``data/skipped`` and ``data/skipped_predict`` there (Lightning has no ``self.log`` in predict), puts the same
numbers into ``trainer.callback_metrics``, and prints where the files are.

The folder (:meth:`PredictionWriter.resolve_dir`): ``output_dir`` when given, else ``predictions/`` in the run's
folder (the CLI's checkpoint folder, ``outputs/<experiment>/<run name>/``), else under ``trainer.default_root_dir``.
:meth:`common.module.CVModule.configure_callbacks` adds a writer to every predict run that has none.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from common.data.base import SKIPPED_SAMPLES_KEY, SkippedSample

__all__ = ["PredictionWriter", "write_rows"]


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows (dicts) -> a CSV with the union of their keys as header, in order of first appearance."""
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _gather(obj: Any, trainer: pl.Trainer) -> list[Any]:
    """``obj`` of every rank (a list with one item per rank; ``[obj]`` without a process group)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


class PredictionWriter(BasePredictionWriter):
    """Writes what the module's ``write_prediction`` hook makes of each predict batch (see the module docstring).

    Args:
        output_dir: the folder; None: ``predictions/`` in the run's folder (see :meth:`resolve_dir`).
        subdir: the folder's name inside the run's folder.
        artifact_path: where the files go on the MLflow run (None: not uploaded).
    """

    def __init__(self, output_dir: str | None = None, subdir: str = "predictions",
                 artifact_path: str | None = "predictions") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.subdir = subdir
        self.artifact_path = artifact_path
        self.out_dir: Path | None = None
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self.skipped: list[SkippedSample] = []
        self.summary: dict[str, Any] = {}
        self._message = ""

    def resolve_dir(self, trainer: pl.Trainer) -> Path:
        """``output_dir``, else ``<the checkpoint folder>/<subdir>`` (the CLI's run folder), else
        ``<trainer.default_root_dir>/<subdir>``."""
        if self.output_dir:
            return Path(self.output_dir)
        for cb in trainer.checkpoint_callbacks:
            dirpath = getattr(cb, "dirpath", None)
            if dirpath:
                return Path(dirpath) / self.subdir
        return Path(trainer.default_root_dir) / self.subdir

    # -- Lightning hooks -------------------------------------------------------------------------------------------
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out_dir = self.resolve_dir(trainer)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rows, self.skipped, self.summary = [], [], {}
        setup_skipped = getattr(trainer.datamodule, "setup_skipped", None) if trainer.datamodule else None
        if callable(setup_skipped) and trainer.is_global_zero:  # every rank indexes the same inputs
            self.skipped.extend(setup_skipped("predict"))

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        assert self.out_dir is not None
        if isinstance(batch, Mapping):
            self.skipped.extend(batch.get(SKIPPED_SAMPLES_KEY) or ())
        write = getattr(pl_module, "write_prediction", None)
        if prediction is None or write is None:
            return
        rows = list(write(prediction, batch, self.out_dir) or ())
        index = batch.get("index") if isinstance(batch, Mapping) else None
        order = index.tolist() if isinstance(index, torch.Tensor) and len(index) == len(rows) else None
        for i, row in enumerate(rows):
            self.rows.append((order[i] if order is not None else len(self.rows), dict(row)))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = [r for part in _gather(self.rows, trainer) for r in part]
        skipped = [s for part in _gather([tuple(s) for s in self.skipped], trainer) for s in part]
        n_written, n_skipped = len(rows), len(skipped)
        self.summary = {"inputs": n_written + n_skipped, "written": n_written, "skipped": n_skipped,
                        "dir": str(self.out_dir)}
        for key, value in (("predict/inputs", n_written + n_skipped), ("predict/written", n_written),
                           ("predict/skipped", n_skipped)):
            trainer.callback_metrics[key] = torch.tensor(float(value))
        if not trainer.is_global_zero:
            return
        assert self.out_dir is not None
        rows.sort(key=lambda r: r[0])
        if not rows and not skipped and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()
            self._message = f"[cvinw] predict: {type(pl_module).__name__} wrote no prediction files"
            return
        if rows:
            write_rows(self.out_dir / "predictions.csv", [r for _, r in rows])
        if skipped:
            write_rows(self.out_dir / "skipped.csv",
                       [{"input": s[1], "reason": s[2], "detail": s[3]} for s in skipped])
        uploaded = self._upload(trainer, n_written + n_skipped, n_written, n_skipped)
        self.summary["mlflow_run_ids"] = uploaded
        self._message = (
            f"[cvinw] predictions for {n_written} of {n_written + n_skipped} inputs written to {self.out_dir}"
            + (f" ({n_skipped} skipped, listed in skipped.csv)" if n_skipped else "")
            + "".join(f"; MLflow run {run_id}, artifacts {self.artifact_path}/" for run_id in uploaded))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Say where the files are, after the progress bar's last line."""
        if stage == "predict" and self._message:
            rank_zero_info(self._message)
            self._message = ""

    def _upload(self, trainer: pl.Trainer, inputs: int, written: int, skipped: int) -> list[str]:
        """Upload the folder and the counts to every MLflow logger; returns the run ids that took them."""
        done = []
        metrics = {"predict/inputs": float(inputs), "predict/written": float(written), "data/skipped": float(skipped),
                   "data/skipped_predict": float(skipped)}
        for logger in trainer.loggers:
            if not isinstance(logger, MLFlowLogger):
                continue
            try:
                logger.log_metrics(metrics, step=0)
                if self.artifact_path is not None:
                    logger.experiment.log_artifacts(logger.run_id, str(self.out_dir), self.artifact_path)
                done.append(str(logger.run_id))
            except Exception as err:  # noqa: BLE001 - the files are on disk; an artifact store problem is reported
                rank_zero_warn(f"could not upload the predictions in {self.out_dir} to MLflow: {err}")
        return done
