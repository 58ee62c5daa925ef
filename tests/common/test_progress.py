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


def test_step_limited_run_shows_steps():
    text = _description(max_steps=250, max_epochs=-1)
    assert text == "Epoch 6 · step 0/250"
    assert "-2" not in text


def test_epoch_limited_run_keeps_lightnings_text():
    assert _description(max_epochs=12) == "Epoch 6/11"
