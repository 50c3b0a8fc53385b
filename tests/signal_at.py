"""A Lightning callback that sends a real signal to its own process after a given training step
(``+callbacks.stop={_target_:signal_at.SignalAt,step:9}``), so that tests interrupt a run at an
exact point: mid-epoch, at an epoch's last step, at the last step. A resumed run (one Lightning
restored from a checkpoint) is not signalled again, so the same command line resumes it."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    def __init__(
        self, step: int, signum: int = signal.SIGTERM, times: int = 1, rank: int | None = None
    ) -> None:
        self.step = step
        self.signum = signum
        self.times = times
        self.rank = rank  # only this DDP process is signalled (None: every process)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)
