"""A tiny LightningModule + DataModule for testing the spine (CLI, tracking, DDP, resume, NaN guard)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torchmetrics
from lightning.pytorch import Callback
from torch.utils.data import Dataset

from common.data.base import CVDataModule
from common.module import CVModule


class ToyDataset(Dataset):
    """Points in R^8 labelled by a fixed random linear rule; deterministic from the seed."""

    def __init__(self, n: int, num_classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        w = torch.randn(8, num_classes, generator=torch.Generator().manual_seed(1234))
        self.y = (self.x @ w).argmax(1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


class ToyDataModule(CVDataModule):
    """37 validation samples, so that padding duplicates under 2-process DDP would show. ``root``: a folder that
    must exist (nothing is read from it), so that a wrong data root can be tested."""

    dataset_name = "Toy points"

    def __init__(self, num_train: int = 64, num_val: int = 37, num_classes: int = 3, batch_size: int = 8,
                 num_workers: int = 0, root: str | None = None) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.num_train, self.num_val, self.num_classes = num_train, num_val, num_classes
        self.root = root

    def layout_help(self) -> str:
        return "  ROOT/ (any folder)"

    @property
    def info(self) -> dict:
        if self.root is not None and not Path(self.root).is_dir():  # read at link time, as real datamodules do
            raise self.layout_error(f"dataset root {self.root} does not exist")
        return {"num_classes": self.num_classes, "class_names": [f"class {i}" for i in range(self.num_classes)]}

    def setup(self, stage: str | None = None) -> None:
        self.train_set = ToyDataset(self.num_train, self.num_classes, seed=0)
        self.val_set = ToyDataset(self.num_val, self.num_classes, seed=1)

    def train_dataloader(self):
        return self.train_loader(self.train_set)

    def val_dataloader(self):
        return self.eval_loader(self.val_set)

    def test_dataloader(self):
        return self.eval_loader(self.val_set)

    def predict_dataloader(self):
        return self.eval_loader(self.val_set)


class ToyModule(CVModule):
    """Linear classifier. ``nan_at_step`` makes the loss NaN from that global step on (tests the guard);
    ``step_delay`` seconds of sleep per training step make a run slow enough to interrupt."""

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(self, lr: float = 0.1, hidden: int = 16, nan_at_step: int | None = None, step_delay: float = 0.0,
                 data_info: dict | None = None) -> None:
        super().__init__(data_info)
        self.save_hyperparameters()
        n = int(self.data_info.get("num_classes", 3))
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n))
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=n)
        # float64 states: sums of float32 values are then exact, so DDP equals 1 process bit for bit
        self.val_count = torchmetrics.SumMetric().set_dtype(torch.float64)
        self.val_index_sum = torchmetrics.SumMetric().set_dtype(torch.float64)
        self.val_loss = torchmetrics.MeanMetric().set_dtype(torch.float64)

    def training_step(self, batch, batch_idx):
        if self.hparams.step_delay:
            time.sleep(self.hparams.step_delay)
        logits = self.net(batch["x"])
        ce = torch.nn.functional.cross_entropy(logits, batch["y"])
        terms = {"ce": ce}
        if self.hparams.nan_at_step is not None and self.global_step >= self.hparams.nan_at_step:
            terms["aux"] = ce * float("nan")
        return self.log_losses(terms)

    def _eval(self, batch, prefix: str) -> None:
        logits = self.net(batch["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["y"], reduction="none")
        self.val_acc.update(logits, batch["y"])
        self.val_count.update(torch.ones_like(loss).sum())
        self.val_index_sum.update(batch["index"].float().sum())
        self.val_loss.update(loss.double())
        self.log(f"{prefix}/acc", self.val_acc, on_epoch=True)
        self.log(f"{prefix}/count", self.val_count, on_epoch=True)
        self.log(f"{prefix}/index_sum", self.val_index_sum, on_epoch=True)
        self.log(f"{prefix}/loss", self.val_loss, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self.net(batch["x"]).argmax(1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class ExitInFit(Callback):
    """Ends the process at the start of fit without Python's clean-up (as a native crash would)."""

    def on_fit_start(self, trainer, pl_module):
        import os

        os._exit(7)
