"""The base LightningModule every paper's module derives from.

It holds what the spine needs from a model and nothing paper-specific:

* ``data_info``: values derived from the data (``num_classes``, ``class_names``, ``tasks`` ...). The CLI links
  them from the datamodule's :attr:`common.data.base.CVDataModule.info` at instantiation, so a YAML never
  repeats them.
* ``monitor`` / ``monitor_mode``: the metric ModelCheckpoint keeps the best of.
* :meth:`log_losses`: logs each loss term as ``train/loss_<name>`` and remembers them, so that the non-finite
  loss guard can name the term that blew up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch


class CVModule(pl.LightningModule):
    """Base class of cvinw LightningModules."""

    #: metric that ModelCheckpoint monitors (and keeps the best of) unless the config says otherwise
    monitor: str = "val/loss"
    #: "min" or "max"
    monitor_mode: str = "min"

    def __init__(self, data_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.data_info: dict[str, Any] = dict(data_info or {})
        self.last_loss_terms: dict[str, float] = {}

    def log_losses(self, terms: Mapping[str, torch.Tensor], prefix: str = "train", **log_kwargs: Any) -> torch.Tensor:
        """Sum weighted loss ``terms``, log each one and the total, and remember them for the NaN guard."""
        if not terms:
            raise ValueError("log_losses() needs at least one loss term")
        total = torch.stack([t.float() for t in terms.values()]).sum()
        self.last_loss_terms = {k: float(v.detach()) for k, v in terms.items()}
        self.last_loss_terms["total"] = float(total.detach())
        opts: dict[str, Any] = {"on_step": prefix == "train", "on_epoch": True, "prog_bar": False}
        opts.update(log_kwargs)
        for name, value in terms.items():
            self.log(f"{prefix}/loss_{name}", value.detach(), **opts)
        self.log(f"{prefix}/loss", total.detach(), **{**opts, "prog_bar": True})
        return total

    def trainable_parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, each shared tensor counted once."""
        from common.callbacks.tracking import count_parameters

        return count_parameters(self)
