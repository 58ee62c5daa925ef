"""The progress bar of cvinw runs: Lightning's rich bar, with a step count for step-limited runs."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """``RichProgressBar`` that numbers epochs out of the ones ``max_steps`` implies: ``Epoch 6/9``.

    Lightning's own description is ``Epoch {e}/{max_epochs - 1}``, which reads ``Epoch 6/-2`` for a run with
    ``max_steps`` and no epoch limit (``max_epochs=-1``), the setting of every tiny preset. The description is
    written once per epoch, so it names the last epoch (``ceil(max_steps / batches per epoch) - 1``) rather than a
    step count that would go stale during the epoch; the bar itself counts the batches.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        per_epoch = trainer.num_training_batches
        if trainer.max_steps and trainer.max_steps > 0 and per_epoch and math.isfinite(per_epoch):
            text += f"/{math.ceil(trainer.max_steps * trainer.accumulate_grad_batches / per_epoch) - 1}"
        if len(self.validation_description) > len(text):  # as Lightning: equal widths, no flicker
            text = f"{text:{len(self.validation_description)}}"
        return text


__all__ = ["StepProgressBar"]
