"""The progress bar names the step of step-limited runs instead of Lightning's 'Epoch 6/-2'."""

import lightning.pytorch as pl

from common.callbacks import StepProgressBar


def _description(**trainer_args) -> str:
    bar = StepProgressBar()
    trainer = pl.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False, accelerator="cpu",
                         **trainer_args)
    assert trainer.progress_bar_callback is bar
    bar._trainer = trainer  # what Lightning's setup hook does
    return bar._get_train_description(6)


def test_step_limited_run_counts_the_epochs_max_steps_implies():
    bar = StepProgressBar()
    trainer = pl.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False, accelerator="cpu",
                         max_steps=250, max_epochs=-1)
    bar._trainer = trainer
    trainer.fit_loop.max_batches = 25  # 250 steps of 25 batches: epochs 0..9
    assert bar._get_train_description(6).strip() == "Epoch 6/9"
    trainer.fit_loop.max_batches = 24  # 250 / 24 -> 11 epochs, the last one partial
    assert bar._get_train_description(6).strip() == "Epoch 6/10"
    assert "-2" not in bar._get_train_description(6)


def test_epoch_limited_run_keeps_lightnings_text():
    assert _description(max_epochs=12).strip() == "Epoch 6/11"
