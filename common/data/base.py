"""The base LightningDataModule of cvinw.

Two duties every datamodule shares:

* :attr:`CVDataModule.info`: a dict of values the model needs from the data (``num_classes``, ``class_names``,
  ``tasks``, ...). The CLI links it into the model's ``data_info`` argument, so configs never repeat it.
* Exact distributed evaluation: :meth:`eval_loader` gives every validation/test/predict sample to exactly one
  rank (no padding duplicates, unlike torch's DistributedSampler), so DDP metrics equal 1-process metrics.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class CVDataModule(pl.LightningDataModule):
    """Base datamodule: ``info`` for CLI links and un-padded distributed evaluation loaders."""

    def __init__(self, batch_size: int = 8, num_workers: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers

    @property
    def info(self) -> dict[str, Any]:
        """Values derived from the data that the model is linked to (override in subclasses)."""
        return {}

    def train_loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """Training loader (Lightning adds the DistributedSampler under DDP)."""
        opts: dict[str, Any] = dict(
            batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers, drop_last=False,
            persistent_workers=self.num_workers > 0,
        )
        opts.update(kwargs)
        return DataLoader(dataset, **opts)

    def eval_loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """Evaluation loader; under DDP each sample goes to exactly one rank (no duplicates from padding)."""
        opts: dict[str, Any] = dict(batch_size=self.eval_batch_size, num_workers=self.num_workers, shuffle=False)
        opts.update(kwargs)
        rank, world = distributed_world()
        if world > 1:
            opts.pop("shuffle", None)
            opts["sampler"] = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, **opts)
