"""The one skipped-sample counter: ``data/skipped`` for every run, whatever the datamodule.

Datasets return a :class:`common.data.base.SkippedSample` for an item they cannot read, and
:class:`common.data.base.SkipCollate` drops it and writes ``batch["skipped"]`` (count) and
``batch["skipped_samples"]`` (records). Datamodules record the samples they leave out at setup (missing files,
unknown labels) in :attr:`common.data.base.CVDataModule.setup_skips`. :class:`SkippedSamples` reads both in the main
process, warns once per bad file, and logs per epoch

* ``data/skipped``: samples of the split left out in this epoch (setup-time ones + unreadable ones), summed over
  DDP ranks (setup-time ones counted on rank 0 only: every rank indexes the same split);
* ``data/skipped_<stage>`` (``train``, ``val``, ``test``): the same, named by stage;
* ``data/padded`` (and ``data/padded_<stage>``), only for datamodules that may complete samples instead of skipping
  them (:attr:`common.data.base.CVDataModule.pads_samples`, e.g. ``short_videos: repeat``): samples completed in
  this epoch (``batch["padded"]``), each file warned once with a :class:`common.data.base.PaddedSampleWarning`.

The CLI adds it to every trainer (:mod:`common.cli`); modules and datamodules do not log skipped samples themselves.
Predict epochs are counted and warned about, not logged (Lightning has no logging in predict).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import torch

from common.data.base import (
    PADDED_KEY,
    PADDED_SAMPLES_KEY,
    SKIPPED_KEY,
    SKIPPED_SAMPLES_KEY,
    PaddedSample,
    PaddedSampleWarning,
    SkippedSample,
    SkippedSampleWarning,
)

__all__ = ["SkipCounter", "SkippedSamples"]

#: Lightning stage of the hooks -> (the datamodule's stage name, metric suffix)
_STAGES = {"train": ("train", "train"), "validation": ("validate", "val"), "test": ("test", "test"),
           "predict": ("predict", "predict")}


class SkipCounter:
    """Counts skipped samples by reason and warns once per (file, reason); lives in the main process.

    ``category`` is the warning class (:class:`PaddedSampleWarning` for the counter of completed samples).
    """

    def __init__(self, category: type[Warning] = SkippedSampleWarning) -> None:
        self.category = category
        self.total = 0
        self.by_reason: Counter[str] = Counter()
        self._warned: set[tuple[str, str]] = set()

    def record(self, sample: SkippedSample | PaddedSample, warn: bool = True) -> None:
        """Count one skipped sample; warn the first time its (path, reason) is seen."""
        self.total += 1
        self.by_reason[sample.reason] += 1
        key = (sample.path, sample.reason)
        if key not in self._warned:
            self._warned.add(key)
            if warn:
                warnings.warn(sample.message(), self.category, stacklevel=2)

    def record_batch(self, batch: Any) -> int:
        """Record the ``skipped_samples`` of a :class:`common.data.base.SkipCollate` batch; returns ``skipped``."""
        if not isinstance(batch, dict) or SKIPPED_KEY not in batch:
            return 0
        for sample in batch.get(SKIPPED_SAMPLES_KEY) or ():
            self.record(sample)
        return int(batch[SKIPPED_KEY])

    @property
    def unique_files(self) -> int:
        """Distinct (file, reason) pairs seen."""
        return len(self._warned)


class SkippedSamples(pl.Callback):
    """Warns once per skipped file and logs ``data/skipped`` (+ ``data/skipped_<stage>``) at each epoch's end.

    Args:
        per_stage: also log ``data/skipped_train`` / ``_val`` / ``_test``.
    """

    def __init__(self, per_stage: bool = True) -> None:
        self.per_stage = per_stage
        self.counter = SkipCounter()
        self.padded_counter = SkipCounter(PaddedSampleWarning)
        self._epoch: dict[str, torch.Tensor | int] = {}
        self._padded: dict[str, torch.Tensor | int] = {}

    # -- per batch: count (as a tensor, no device sync) and warn ---------------------------------------------
    def _batch(self, trainer: pl.Trainer, stage: str, batch: Any) -> None:
        if trainer.sanity_checking or not isinstance(batch, dict) or SKIPPED_KEY not in batch:
            return
        count = batch[SKIPPED_KEY]
        if isinstance(count, torch.Tensor):
            count = count.detach().sum()
        self._epoch[stage] = self._epoch.get(stage, 0) + count
        samples: Iterable[SkippedSample] = batch.get(SKIPPED_SAMPLES_KEY) or ()
        for sample in samples:
            self.counter.record(sample)
        if PADDED_KEY in batch:
            padded = batch[PADDED_KEY]
            self._padded[stage] = self._padded.get(stage, 0) + (
                padded.detach().sum() if isinstance(padded, torch.Tensor) else padded)
            for rec in batch.get(PADDED_SAMPLES_KEY) or ():
                self.padded_counter.record(rec)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch(trainer, "train", batch)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch(trainer, "validation", batch)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch(trainer, "test", batch)

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                               batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch(trainer, "predict", batch)

    # -- per epoch: add the setup-time skips, log, reset -----------------------------------------------------
    def epoch_count(self, trainer: pl.Trainer, stage: str) -> float:
        """This rank's count for the epoch of ``stage`` (``train``, ``validation``, ``test``, ``predict``)."""
        runtime = self._epoch.pop(stage, 0)
        total = float(runtime.item() if isinstance(runtime, torch.Tensor) else runtime)
        dm = getattr(trainer, "datamodule", None)
        setup_skipped = getattr(dm, "setup_skipped", None)
        if callable(setup_skipped) and trainer.global_rank == 0:
            total += len(setup_skipped(_STAGES[stage][0]))
        return total

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        total = self.epoch_count(trainer, stage)
        opts: dict[str, Any] = dict(reduce_fx="sum", sync_dist=True, on_step=False, on_epoch=True)
        pl_module.log("data/skipped", total, **opts)
        if self.per_stage:
            pl_module.log(f"data/skipped_{_STAGES[stage][1]}", total, **opts)
        padded = self.padded_count(stage)
        if getattr(getattr(trainer, "datamodule", None), "pads_samples", False):  # the same on every rank
            pl_module.log("data/padded", padded, **opts)
            if self.per_stage:
                pl_module.log(f"data/padded_{_STAGES[stage][1]}", padded, **opts)

    def padded_count(self, stage: str) -> float:
        """This rank's count of completed samples for the epoch of ``stage`` (and reset it)."""
        count = self._padded.pop(stage, 0)
        return float(count.item() if isinstance(count, torch.Tensor) else count)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch.pop("train", None)
        self._padded.pop("train", None)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch.pop("validation", None)
        self._padded.pop("validation", None)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch.pop("test", None)
        self._padded.pop("test", None)

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch.pop("predict", None)
        self._padded.pop("predict", None)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "validation")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_count(trainer, "predict")  # counted and warned; Lightning does not log in predict
        self.padded_count("predict")
