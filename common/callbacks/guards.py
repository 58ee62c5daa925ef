"""Stop a run the moment its loss stops being finite, before the bad gradient reaches the weights."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; the message names the step and the loss terms."""


class NonFiniteLossGuard(pl.Callback):
    """Checks the loss before ``backward`` on every rank; if any rank sees a non-finite loss, all ranks stop.

    Raising before ``backward`` keeps the weights (and so ``last.ckpt``) from the last good step; Lightning then
    marks the MLflow run FAILED. The loss terms come from :meth:`common.module.CVModule.log_losses`.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            return
        terms: dict[str, Any] = dict(getattr(pl_module, "last_loss_terms", {}) or {})
        if not terms:
            terms = {"total": float(loss.detach().float().mean())}
        bad_terms = [k for k, v in terms.items() if not math.isfinite(v)]
        shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"non-finite loss at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1}): {shown}"
            + (f"; non-finite terms: {', '.join(bad_terms)}" if bad_terms else "; (non-finite on another rank)")
            + ". The weights of the last good step are kept; resume from last.ckpt with a lower learning rate, "
            "gradient clipping (--trainer.gradient_clip_val) or bf16/fp32 precision."
        )
