"""Callbacks that put numbers and files into the run: parameter budget, throughput and memory, run identity."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from common.peft.accounting import count_parameters


def _log_to_loggers(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


class ParameterBudget(pl.Callback):
    """Logs trainable and total parameter counts and their ratio (params and metrics ``params/...``)."""

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainable, total = count_parameters(pl_module, trainable_only=True), count_parameters(pl_module)
        ratio = trainable / max(total, 1)
        pl_module.print(f"[cvinw] parameters: {trainable:,} trainable / {total:,} total ({100 * ratio:.3f}%)")
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_hyperparams({"params/trainable": trainable, "params/total": total})
        _log_to_loggers(trainer, {"params/trainable": float(trainable), "params/total": float(total),
                                  "params/trainable_ratio": ratio}, step=0)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._log(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        for v in batch.values():
            n = _batch_size(v)
            if n:
                return n
    if isinstance(batch, list | tuple):
        for v in batch:
            n = _batch_size(v)
            if n:
                return n
    return 0


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory: CUDA max allocated on a GPU, else the process's max resident set size, in MiB."""
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class Throughput(pl.Callback):
    """Logs training throughput (samples/s over all ranks, data loading included) and peak memory per epoch (after a
    mid-epoch resume, over the rest of that epoch)."""

    def __init__(self) -> None:
        self._samples = 0
        self._t0: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples = 0
        self._t0 = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._t0 is None:  # resumed mid-epoch (Lightning does not start the epoch again): time the rest of it
            self._samples = 0
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += _batch_size(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._t0 is None:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        per_rank = self._samples / elapsed
        pl_module.log("train/throughput_samples_per_s", per_rank * trainer.world_size, rank_zero_only=True,
                      sync_dist=False)
        pl_module.log("train/peak_memory_mb", peak_memory_mb(pl_module.device), rank_zero_only=True, sync_dist=False)


class RunInfoCheckpoint(pl.Callback):
    """Stores the MLflow run id and run name in every checkpoint, so that a resume logs into the same run."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["cvinw"] = {"run_name": self.run_name, "mlflow_run_id": _run_id(trainer)}


@rank_zero_only
def _rank_zero_run_id(trainer: pl.Trainer) -> str | None:
    for logger in trainer.loggers:
        rid = getattr(logger, "run_id", None)
        if rid:
            return str(rid)
    return None


def _run_id(trainer: pl.Trainer) -> str | None:
    return _rank_zero_run_id(trainer) if trainer.is_global_zero else None
