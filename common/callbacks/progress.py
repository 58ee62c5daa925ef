"""The progress bar of cvinw runs: Lightning's rich bar, with a step count for step-limited runs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """``RichProgressBar`` that says ``Epoch 6 · step 150/250`` when the run is limited by ``max_steps``.

    Lightning's own description is ``Epoch {e}/{max_epochs - 1}``, which reads ``Epoch 6/-2`` for a run with
    ``max_steps`` and no epoch limit (``max_epochs=-1``), the setting of every tiny preset.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        if trainer.max_steps and trainer.max_steps > 0:
            text += f" · step {trainer.global_step}/{trainer.max_steps}"
        return text


__all__ = ["StepProgressBar"]
