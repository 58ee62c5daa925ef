"""``last.ckpt`` that is the last state, and a Ctrl-C that stops training cleanly.

Lightning's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only when it saves a top-k
checkpoint, i.e. after a validation that improved the monitored metric: with validation every few epochs (or a
score that stops improving) ``last.ckpt`` holds an old epoch, a resume replays epochs and validating it scores old
weights. :class:`LastStateCheckpoint` keeps the best checkpoint exactly as Lightning does and writes ``last.ckpt``
at the end of every training epoch, at the end of fit, and on a graceful interrupt.

A graceful interrupt is Lightning's SIGTERM path: the signal sets a flag, and the training loop stops at the end of
the current batch (all ranks together under DDP) by raising ``SIGTERMException``. :class:`GracefulInterrupt` routes a
first Ctrl-C (SIGINT) into that path; a second Ctrl-C interrupts at once (``last.ckpt`` then stays the last epoch's).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["GracefulInterrupt", "LastStateCheckpoint", "TrainingInterrupted", "interrupt_exit_code"]


class TrainingInterrupted(KeyboardInterrupt):
    """A fit stopped by Ctrl-C or SIGTERM after ``last.ckpt`` was written (raised by :func:`common.cli.run`)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = signum


class LastStateCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the last state, whatever the validation schedule.

    The best checkpoint (``monitor``, ``save_top_k``) is Lightning's unchanged. ``last.ckpt`` is written (when
    ``save_last``) after every training epoch (after that epoch's validation, if any), at the end of fit (a
    ``max_steps`` stop mid-epoch) and when training stops on SIGTERM or a first Ctrl-C; never twice for one global
    step. An error (a non-finite loss, a crash) leaves it at the last good epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_written_step: int | None = None

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def save_last_now(self, trainer: pl.Trainer) -> bool:
        """Write ``last.ckpt`` unless it already holds this global step (or nothing is being fitted)."""
        if (not self.save_last or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING
                or trainer.sanity_checking or self._last_written_step == trainer.global_step
                or trainer.global_step == 0):
            return False
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.save_last_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.save_last_now(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        # SIGTERMException is raised between batches (after the optimiser step and the loggers), so the state is
        # consistent; any other exception may come mid-step and leaves last.ckpt alone.
        if isinstance(exception, SIGTERMException) and self.save_last_now(trainer):
            rank_zero_info(f"[cvinw] interrupted at global step {trainer.global_step}: saved {self.last_model_path}; "
                           "resume with --ckpt_path last")


#: the signal of the last interrupt seen by :class:`GracefulInterrupt` in this process
_last_signal: int | None = None


def interrupt_exit_code() -> int:
    """The shell's exit status for the last interrupt: 130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + int(_last_signal or signal.SIGTERM)


class GracefulInterrupt(pl.Callback):
    """During fit, a first Ctrl-C stops training at the end of the current batch and saves ``last.ckpt`` (through
    Lightning's SIGTERM handling); a second one interrupts at once. SIGTERM is Lightning's own (same ending)."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        global _last_signal
        _last_signal = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous = signal.getsignal(signal.SIGINT)
        if self._previous is not signal.default_int_handler:
            return  # Ctrl-C ignored (a background job) or handled by the caller: leave it so

        def first_ctrl_c(signum: int, frame: Any) -> None:
            global _last_signal
            _last_signal = signal.SIGINT
            self._restore()  # the next Ctrl-C is the old handler's (KeyboardInterrupt)
            handler = signal.getsignal(signal.SIGTERM)
            if not callable(handler):  # no Lightning handler (Windows): plain interrupt
                raise KeyboardInterrupt
            print("\n[cvinw] Ctrl-C: stopping after this batch and saving last.ckpt (Ctrl-C again to abort now)",
                  file=sys.stderr, flush=True)
            handler(signal.SIGTERM, frame)

        signal.signal(signal.SIGINT, first_ctrl_c)
        self._installed = True

    def _restore(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        global _last_signal
        if isinstance(exception, SIGTERMException) and _last_signal is None:
            _last_signal = signal.SIGTERM
        self._restore()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
