"""``<run>/checkpoints/last.ckpt``: the one checkpoint a run keeps current while it trains.

It is written at the end of every training epoch, every ``every_n_steps`` optimizer steps when
set, at the end of training and when the run is interrupted: the same callback asks the run's
``InterruptGuard`` after every step and epoch whether a signal came, saves, and stops the run. A new
file replaces the old one only once it is complete, so a run killed while saving keeps its
previous checkpoint. Besides Lightning's content (weights, optimizer, loop progress, the
training loader's position) it holds the RNG states, so that a resumed run draws what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
from pytorch_lightning.callbacks import Checkpoint

from dcnn.runs.interrupt import InterruptGuard, RunInterrupted

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = Path(CHECKPOINT_DIR) / "last.ckpt"


def last_checkpoint(run_folder: Path) -> Path:
    return Path(run_folder) / LAST_CHECKPOINT


def _flush_loggers(trainer: pl.Trainer) -> None:
    for logger in trainer.loggers:
        logger.save()


class RunCheckpoint(Checkpoint):
    """Keeps ``last_checkpoint(run_folder)`` current (see the module docstring).

    As a ``Checkpoint`` callback it runs after the LightningModule's epoch-end hook (whose
    epoch metrics are then computed and reset) and replaces Lightning's default checkpointing.
    """

    def __init__(
        self,
        run_folder: Path,
        every_n_steps: int | None = None,
        guard: InterruptGuard | None = None,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(
                f"checkpoint_every_n_steps={every_n_steps}; expected a positive number of "
                "steps or null (checkpoints at epoch ends only)"
            )
        self.path = last_checkpoint(run_folder)
        self.every_n_steps = every_n_steps
        self.guard = guard
        self._saved_at_step = -1

    def save(self, trainer: pl.Trainer, again: bool = False) -> Path:
        """Write the checkpoint now (all processes call this; the main one writes), unless it
        was written at this step already and ``again`` is not set."""
        if trainer.global_step == self._saved_at_step and not again:
            return self.path
        partial = self.path.with_name(self.path.name + ".partial")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self._saved_at_step = trainer.global_step
        _flush_loggers(trainer)  # the curve up to the checkpoint survives even a SIGKILL
        return self.path

    def _signal_to_stop_on(self, trainer: pl.Trainer) -> int | None:
        return None if self.guard is None else self.guard.stop_requested(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.guard is not None:
            self.guard.install()  # over the SIGTERM handler Lightning set at fit start
            self.guard.deferring = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _flush_loggers(trainer)  # the previous epoch's end-of-epoch rows, logged after its save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # A signal during an epoch's last step, its validation or its end: the epoch-end
        # checkpoint holds this very state, and the epoch's metrics have all been logged.
        if batch_idx == 0 and (signum := self._signal_to_stop_on(trainer)) is not None:
            raise RunInterrupted(signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            # The epoch-end checkpoint, after validation and the epoch-end hooks, stands for
            # this step (a resumed run treats the epoch as finished); see on_train_batch_start.
            return
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)
        if (signum := self._signal_to_stop_on(trainer)) is not None:
            self.save(trainer)
            # Lightning logs a step's metrics after this hook; log them now, since the resumed
            # run counts this step as done and will not log it again.
            trainer._logger_connector.update_train_step_metrics()
            raise RunInterrupted(signum)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Again even when a step checkpoint was taken at this step (max_steps mid-epoch): the
        # epoch's end must be in it.
        self.save(trainer, again=True)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)  # training may stop mid-epoch (max_steps)
        if self.guard is not None:
            self.guard.deferring = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.guard is not None:
            self.guard.deferring = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rng_states"] = _collect_rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            _set_rng_states(checkpoint["rng_states"])
